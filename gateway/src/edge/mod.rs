//! The edge: what every call passes through, whatever its API (TF Serving's REST and
//! gRPC, KServe V2's HTTP and gRPC) — its deadline (`deadline.rs`, each API's rule side
//! by side), its request metric (`observe.rs`), its body (`body.rs`), and the HTTP status
//! or gRPC code of its error (the tables beside `ServingError`, `error.rs`). The front
//! ends (`rest/`, `grpc/`, `v2/`) are routers and codecs that use this and not each
//! other; `ports/` mounts them side by side on the listeners.

pub mod admin;
pub mod body;
pub mod cors;
pub mod deadline;
pub mod observe;

use crate::error::ServingError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::time::Duration;
use tokio::time::Instant;

/// What bounds one HTTP call, `/v1` and `/v2` alike (from the flags).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// `--rest_api_timeout_in_ms`; `None`: no limit.
    pub timeout: Option<Duration>,
    /// `--max_request_body_mb`.
    pub max_body_bytes: usize,
    /// `--rest_api_body_timeout_ms`; `None`: no limit.
    pub body_timeout: Option<Duration>,
}

impl HttpLimits {
    /// The deadline of a call received now (`deadline::rest`).
    pub fn deadline(&self) -> Instant {
        deadline::rest(self.timeout)
    }

    /// The call's body, within the size and time bounds.
    pub async fn body(&self, req: Request<Incoming>) -> Result<Bytes, ServingError> {
        body::read(req, self.max_body_bytes, self.body_timeout).await
    }
}

/// An HTTP answer with a JSON body.
pub fn json_response(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `message`, unless it is larger than `grpc.max_send_message_length` (`limit`): then
/// gRPC C++'s RESOURCE_EXHAUSTED (tonic would answer OUT_OF_RANGE in its own words).
/// Every gRPC service's responses pass here.
pub fn within_send_limit<T: prost::Message>(message: T, limit: usize) -> Result<T, ServingError> {
    let len = message.encoded_len();
    if len > limit {
        return Err(ServingError::resource_exhausted(format!(
            "Sent message larger than max ({len} vs. {limit})"
        )));
    }
    Ok(message)
}
