//! The REST listener: HTTP/1.1 and HTTP/2 (over TLS with `--rest_api_enable_ssl`) on the
//! listener's shared accept loop and connection life (`crate::listener`), dispatching by
//! prefix to routers that know nothing of each other: TF Serving's `/v1` (`rest`),
//! KServe V2's `/v2` (`v2::rest`), the Prometheus page, and tfgate's own endpoints
//! (`edge::admin`); CORS (`--rest_api_enable_cors_support`) over all of them. Its bounds:
//! `--rest_api_header_timeout_ms` for the handshake and first bytes, each HTTP/1 header,
//! and an HTTP/2 connection with no stream open; `--connection_write_timeout_ms` for a
//! response the client leaves unread. While the server drains, HTTP/1 answers carry
//! `Connection: close`.

use crate::edge::{admin, cors, json_response};
use crate::health::Health;
use crate::lifecycle::Phase;
use crate::listener::{self, Listener, Port};
use crate::rest::RestApi;
use crate::v2::rest::V2Http;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response};
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

/// Everything the REST port answers.
#[derive(Clone)]
pub struct HttpRoutes {
    /// TF Serving's `/v1/models/...`.
    pub v1: RestApi,
    /// KServe V2's `/v2/...`.
    pub v2: V2Http,
    /// `/healthz`, `/readyz`, `/tfgate/workers`, the metrics page's samples, the drain.
    pub health: Health,
    /// Where the Prometheus page is, if `--monitoring_config_file` turns it on.
    pub metrics_path: Option<String>,
    /// `--rest_api_enable_cors_support`.
    pub cors: bool,
}

impl HttpRoutes {
    /// Answers one HTTP request. An OPTIONS preflight always gets TF Serving's Origin
    /// check; the CORS headers depend on `--rest_api_enable_cors_support`.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut resp = if req.method() == hyper::Method::OPTIONS {
            match cors::preflight(req.headers()) {
                Ok(()) => json_response(200, Bytes::new()),
                Err(e) => crate::rest::error_response(&e),
            }
        } else {
            self.route(req).await
        };
        if self.cors {
            cors::add_headers(resp.headers_mut());
        }
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if self.metrics_path.as_deref() == Some(path) {
            return self.metrics_page();
        }
        if path == "/v2" || path.starts_with("/v2/") {
            return crate::v2::rest::handle(&self.v2, req).await;
        }
        if let Some((status, body)) = admin::handle(&self.health, req.method(), path) {
            let text = serde_json::to_string_pretty(&body).unwrap_or_default();
            return json_response(status, text);
        }
        self.v1.handle(req).await
    }

    /// The Prometheus page, `Content-Type: text/plain` as TF Serving sends it.
    fn metrics_page(&self) -> Response<Full<Bytes>> {
        self.health.sample_metrics();
        let mut resp = Response::new(Full::new(Bytes::from(crate::monitoring::render())));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        resp
    }
}

/// Serves `listener` until the phase turns `Closed`, then until its connections close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: HttpRoutes,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: listener::Limits,
    phase: watch::Receiver<Phase>,
    places: Arc<Semaphore>,
) {
    let http = Arc::new(listener::connection::builder(
        &limits,
        false,
        &listener::H2Settings::default(),
    ));
    // Shared by every connection and request: one reference count, not a copy of every
    // handle the API holds, per request.
    let api = Arc::new(api);
    let service = move || {
        let api = api.clone();
        hyper::service::service_fn(move |req: hyper::Request<_>| {
            let api = api.clone();
            async move {
                let http1 = req.version() < hyper::Version::HTTP_2;
                let mut resp = api.handle(req).await;
                // Draining: this connection's client should go elsewhere next time.
                if http1
                    && matches!(
                        api.health.lifecycle.phase(),
                        Phase::Draining | Phase::Closed
                    )
                {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let port = Port {
        name: "REST",
        tls,
        limits,
        http,
        service,
        uds_authority_shim: false,
    };
    port.serve(Listener::Tcp(listener), phase, places).await;
}
