//! The REST listener: accepts connections (over TLS with `--rest_api_enable_ssl`) and
//! serves HTTP/1.1 and HTTP/2 until the server closes; then it stops accepting and lets
//! each connection finish the request it is on.

use super::RestApi;
use crate::lifecycle::Phase;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until the phase turns `Closed`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: RestApi,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut phase: watch::Receiver<Phase>,
) {
    let graceful = GracefulShutdown::new();
    // Shared by every connection and request: one reference count, not a copy of every
    // handle the API holds, per request.
    let api = Arc::new(api);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = phase.wait_for(|p| *p == Phase::Closed) => break,
        };
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                tokio::spawn(connection(stream, api, watcher));
            }
            // The handshake runs in the connection's own task, so a slow client never
            // holds up the accept loop.
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => connection(tls_stream, api, watcher).await,
                        Ok(Err(e)) => tracing::debug!("REST TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("REST TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection, HTTP/1.1 or HTTP/2, watched for the graceful shutdown.
fn connection<S>(stream: S, api: Arc<RestApi>, watcher: Watcher) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let api = api.clone();
        async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
    });
    let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    async move {
        let _ = watcher.watch(conn).await;
    }
}
