//! The REST listener: HTTP/1.1 and HTTP/2 (over TLS with `--rest_api_enable_ssl`) on the
//! listener's shared accept loop and connection life (`crate::listener`). Its bounds:
//! `--rest_api_header_timeout_ms` for the handshake and first bytes, each HTTP/1 header,
//! and an HTTP/2 connection with no stream open; `--connection_write_timeout_ms` for a
//! response the client leaves unread. While the server drains, HTTP/1 answers carry
//! `Connection: close`.

use super::RestApi;
use crate::lifecycle::Phase;
use crate::listener::{self, Listener, Port};
use hyper::header::{HeaderValue, CONNECTION};
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

/// Serves `listener` until the phase turns `Closed`, then until its connections close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: RestApi,
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
