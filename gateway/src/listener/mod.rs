//! The listeners (REST, gRPC over TCP, gRPC over its Unix socket): one accept loop and one
//! connection life for all of them, so every listener bounds the same phases.
//!
//! - **Places.** Each accepted connection takes a place under `--max_connections`
//!   (shared by every listener) before it is served; at the limit it waits, and the next
//!   ones wait in the backlog. A TCP connection keeps its place while it lingers.
//! - **Accept errors** other than a client's own abort (EMFILE and ENFILE at the
//!   descriptor limit, ENOBUFS, ENOMEM) pause the loop for [`ACCEPT_BACKOFF`], with one
//!   warning a second at most, instead of spinning on a failure that repeats.
//! - **Phases**: the TLS handshake and the client's first bytes within
//!   `Limits::handshake` of the accept, then `connection`'s bounds.
//! - **Closing**: when the server closes, connections the kernel already completed are
//!   taken too (they may hold whole requests), the listener is dropped, and `serve`
//!   returns once the last connection has closed.

pub mod connection;
pub mod guarded;

use crate::lifecycle::Phase;
pub use connection::{H2Settings, Limits};
use guarded::Guarded;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long the accept loop pauses after an error that is not one client's.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted connection.
pub enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    fn poll_accept(&self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<Accepted>> {
        match self {
            Listener::Tcp(l) => l.poll_accept(cx).map_ok(|(s, _)| Accepted::Tcp(s)),
            Listener::Unix(l) => l.poll_accept(cx).map_ok(|(s, _)| Accepted::Unix(s)),
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }
}

/// What one port serves and how.
pub struct Port<F> {
    /// For logs: "REST", "gRPC".
    pub name: &'static str,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub limits: Limits,
    pub http: Arc<auto::Builder<TokioExecutor>>,
    /// A service for each connection.
    pub service: F,
    /// Plaintext Unix-socket connections pass through gRPC's `:authority` shim.
    pub uds_authority_shim: bool,
}

impl<F, S, B> Port<F>
where
    F: Fn() -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Serves `listener` until the phase turns `Closed`, then until its connections
    /// close.
    pub async fn serve(
        self,
        listener: Listener,
        mut phase: watch::Receiver<Phase>,
        places: Arc<Semaphore>,
    ) {
        // Every connection holds a sender; when all are gone, `open` yields None.
        let (open_tx, mut open) = mpsc::channel::<()>(1);
        let port = Arc::new(self);
        let conn_phase = phase.clone();
        let start = |accepted: Accepted, place: Option<OwnedSemaphorePermit>| {
            let port = port.clone();
            let open = open_tx.clone();
            let phase = conn_phase.clone();
            tokio::spawn(async move {
                let _open = open;
                port.connection(accepted, place, phase).await;
            });
        };
        let mut errors = AcceptErrors::default();
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = phase.wait_for(|p| *p == Phase::Closed) => break,
            };
            let accepted = match accepted {
                Ok(a) => a,
                Err(e) => {
                    if let Some(pause) = errors.failed(&e, port.name) {
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = phase.wait_for(|p| *p == Phase::Closed) => break,
                        }
                    }
                    continue;
                }
            };
            // (A place is taken after the accept, never before: one held in advance would be
            // a place no connection uses.) Once the server closes, what was accepted is served
            // regardless.
            let place = tokio::select! {
                p = places.clone().acquire_owned() => p.ok(),
                _ = phase.wait_for(|p| *p == Phase::Closed) => None,
            };
            start(accepted, place);
        }
        while let Poll::Ready(Ok(a)) =
            std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await
        {
            start(a, places.clone().try_acquire_owned().ok());
        }
        drop(listener);
        drop(open_tx);
        let _ = open.recv().await;
    }

    /// One connection's whole life, holding `place` until it has closed.
    async fn connection(
        &self,
        accepted: Accepted,
        place: Option<OwnedSemaphorePermit>,
        phase: watch::Receiver<Phase>,
    ) {
        let deadline = self.limits.handshake.map(|d| Instant::now() + d);
        match accepted {
            Accepted::Tcp(s) => {
                let _ = s.set_nodelay(true);
                // Closed first by the server (`Connection: close`, GOAWAY), it lingers.
                let s = crate::linger::LingerStream::new(s, place);
                self.secured(s, deadline, phase).await;
            }
            Accepted::Unix(s) => {
                let _place = place;
                if self.uds_authority_shim && self.tls.is_none() {
                    let shimmed = crate::grpc::uds_authority::shim(s);
                    self.http(shimmed, deadline, phase).await;
                } else {
                    self.secured(s, deadline, phase).await;
                }
            }
        }
    }

    /// The TLS handshake when the port has one, within the handshake deadline.
    async fn secured<IO>(&self, io: IO, deadline: Option<Instant>, phase: watch::Receiver<Phase>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(acceptor) = &self.tls else {
            return self.http(io, deadline, phase).await;
        };
        let handshake = acceptor.accept(io);
        let done = match deadline {
            Some(d) => tokio::time::timeout_at(d, handshake).await,
            None => Ok(handshake.await),
        };
        match done {
            Ok(Ok(tls)) => self.http(tls, deadline, phase).await,
            Ok(Err(e)) => tracing::debug!("{} TLS handshake failed: {e}", self.name),
            Err(_) => tracing::debug!("{} TLS handshake timed out", self.name),
        }
    }

    async fn http<IO>(&self, io: IO, deadline: Option<Instant>, phase: watch::Receiver<Phase>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (io, seen) = Guarded::new(io, deadline, self.limits.write_stall);
        connection::serve(
            io,
            seen,
            (self.service)(),
            self.http.clone(),
            self.limits.clone(),
            phase,
        )
        .await;
    }
}

/// The accept loop's failures, and when to say so.
#[derive(Default)]
struct AcceptErrors {
    last_warned: Option<Instant>,
    unsaid: u64,
}

impl AcceptErrors {
    /// How long to pause after `e` (None: at once, it was one client's).
    fn failed(&mut self, e: &std::io::Error, listener: &str) -> Option<Duration> {
        use std::io::ErrorKind::*;
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            return None;
        }
        let now = Instant::now();
        if self
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let also = match self.unsaid {
                0 => String::new(),
                n => format!(" ({n} more since the last warning)"),
            };
            tracing::warn!(
                "{listener} accept failed: {e}{also}; pausing {} ms",
                ACCEPT_BACKOFF.as_millis()
            );
            self.last_warned = Some(now);
            self.unsaid = 0;
        } else {
            self.unsaid += 1;
        }
        Some(ACCEPT_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accept_errors_pause_unless_one_clients() {
        let mut errors = AcceptErrors::default();
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.failed(&aborted, "REST"), None);
        let emfile = std::io::Error::from_raw_os_error(libc_emfile());
        assert_eq!(errors.failed(&emfile, "REST"), Some(ACCEPT_BACKOFF));
        assert_eq!(errors.failed(&emfile, "REST"), Some(ACCEPT_BACKOFF));
        assert_eq!(errors.unsaid, 1, "the second within a second is not logged");
    }

    fn libc_emfile() -> i32 {
        rustix::io::Errno::MFILE.raw_os_error()
    }
}
