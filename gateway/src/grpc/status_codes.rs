//! gRPC C++'s status for a request over `grpc.max_receive_message_length`:
//! RESOURCE_EXHAUSTED "Received message larger than max (N vs. M)", where tonic answers
//! OUT_OF_RANGE in its own words. tonic rejects such a request before any handler runs,
//! with the status in the headers or the trailers, so this layer rewrites it in both.

use hyper::body::{Body, Frame, SizeHint};
use hyper::header::HeaderValue;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Wraps the gRPC routes.
#[derive(Clone, Copy, Debug, Default)]
pub struct TfStatusCodes;

impl<S> tower_layer::Layer<S> for TfStatusCodes {
    type Service = WithTfStatusCodes<S>;
    fn layer(&self, inner: S) -> WithTfStatusCodes<S> {
        WithTfStatusCodes(inner)
    }
}

#[derive(Clone, Debug)]
pub struct WithTfStatusCodes<S>(S);

impl<S, Req, B> tower_service::Service<Req> for WithTfStatusCodes<S>
where
    S: tower_service::Service<Req, Response = hyper::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = hyper::Response<TfTrailers<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let answer = self.0.call(req);
        Box::pin(async move {
            let mut response = answer.await?;
            rewrite(response.headers_mut());
            Ok(response.map(TfTrailers))
        })
    }
}

/// A response body whose trailers get the same rewrite.
#[derive(Debug)]
pub struct TfTrailers<B>(B);

impl<B: Body + Unpin> Body for TfTrailers<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut polled = Pin::new(&mut self.0).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled {
            if let Some(trailers) = frame.trailers_mut() {
                rewrite(trailers);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

fn rewrite(headers: &mut hyper::HeaderMap) {
    if headers.get("grpc-status").map(HeaderValue::as_bytes) != Some(OUT_OF_RANGE.as_bytes()) {
        return;
    }
    // grpc-message is percent-encoded on the wire.
    let Some((found, limit)) = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .and_then(|m| percent_encoding::percent_decode_str(m).decode_utf8().ok())
        .and_then(|m| too_large(&m))
    else {
        return;
    };
    // Nothing here needs percent-encoding.
    let message = format!("Received message larger than max ({found} vs. {limit})");
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
        headers.insert("grpc-message", message);
    }
}

/// The sizes in tonic's "Error, decoded message length too large: found N bytes, the
/// limit is: M bytes".
fn too_large(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_size_limit_is_reworded() {
        let mut h = hyper::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large:%20found%201100%20bytes,%20the%20limit%20is:%201024%20bytes",
            ),
        );
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(
            h["grpc-message"],
            "Received message larger than max (1100 vs. 1024)"
        );
        let mut other = hyper::HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("11"));
        other.insert("grpc-message", HeaderValue::from_static("something else"));
        rewrite(&mut other);
        assert_eq!(other["grpc-status"], "11");
    }
}
