//! The REST listener: accepts connections (over TLS with `--rest_api_enable_ssl`) and
//! serves HTTP/1.1 and HTTP/2 until the server closes. Then it takes the connections the
//! kernel already completed, stops listening, and lets every connection answer what it
//! has received — a request still in the socket, or with its headers half read,
//! included — before closing it: HTTP/1 answers with `Connection: close` (from the
//! moment the drain begins), HTTP/2 sends GOAWAY and finishes its streams. `serve`
//! returns when the last connection has closed.

use super::RestApi;
use crate::lifecycle::Phase;
use hyper::header::{HeaderValue, CONNECTION};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until the phase turns `Closed`, then until its connections close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: RestApi,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut phase: watch::Receiver<Phase>,
    places: Arc<Semaphore>,
) {
    // Every connection holds a sender; when all are gone, `open` yields None.
    let (open_tx, mut open) = mpsc::channel::<()>(1);
    // Shared by every connection and request: one reference count, not a copy of every
    // handle the API holds, per request.
    let api = Arc::new(api);
    let conn_phase = phase.clone();
    let start = |stream: tokio::net::TcpStream, place: Option<OwnedSemaphorePermit>| {
        let _ = stream.set_nodelay(true);
        // Closed first by the server (`Connection: close`, GOAWAY), it lingers: `linger`.
        let stream = crate::linger::LingerStream::new(stream, place);
        let api = api.clone();
        let open = open_tx.clone();
        let phase = conn_phase.clone();
        match tls.clone() {
            None => {
                tokio::spawn(connection(stream, api, phase, open));
            }
            // The handshake runs in the connection's own task, so a slow client never
            // holds up the accept loop.
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => connection(tls_stream, api, phase, open).await,
                        Ok(Err(e)) => tracing::debug!("REST TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("REST TLS handshake timed out"),
                    }
                });
            }
        }
    };
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
        // At `--max_connections` this one waits for a place, and the next ones wait in the
        // backlog; once the server closes, what was accepted is served regardless. (A place
        // is taken after the accept, never before: one held in advance would be a place no
        // connection uses.)
        let place = tokio::select! {
            p = places.clone().acquire_owned() => p.ok(),
            _ = phase.wait_for(|p| *p == Phase::Closed) => None,
        };
        start(stream, place);
    }
    // Connections already completed by the kernel may hold whole requests: take them too,
    // with or without a place.
    while let Poll::Ready(Ok((s, _))) =
        std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await
    {
        start(s, places.clone().try_acquire_owned().ok());
    }
    drop(listener);
    drop(open_tx);
    let _ = open.recv().await;
}

/// One connection, HTTP/1.1 or HTTP/2, until it closes; `_open` is dropped with it.
async fn connection<S>(
    stream: S,
    api: Arc<RestApi>,
    mut phase: watch::Receiver<Phase>,
    _open: mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let api_header_timeout = api.config.header_timeout;
    let (stream, seen) = Watched::new(stream);
    let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
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
    });
    let header_timeout = api_header_timeout;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = phase.wait_for(|p| *p == Phase::Closed) => {}
    }
    // Closed. The connection is polled first, so bytes already in the socket are read;
    // hyper's graceful shutdown would drop an HTTP/1 request whose headers it has not
    // parsed yet, so it is asked only once nothing of a request is pending (an HTTP/1
    // request in progress ends the connection itself, with `Connection: close`).
    let mut asked = false;
    std::future::poll_fn(|cx| loop {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if asked || !seen.may_close() {
            return Poll::Pending;
        }
        conn.as_mut().graceful_shutdown();
        asked = true;
    })
    .await;
}

/// The HTTP/2 connection preface a client opens with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's traffic says about it, shared with its task.
struct Seen(AtomicU8);

impl Seen {
    /// Bytes were read since the last response bytes were written: an HTTP/1 request
    /// is (partly) received and not yet answered.
    const READ_SINCE_WRITE: u8 = 1;
    /// The client opened with the HTTP/2 preface.
    const H2: u8 = 2;

    /// Whether a graceful shutdown loses nothing: HTTP/2 (GOAWAY keeps the streams it
    /// has), or HTTP/1 with no request pending.
    fn may_close(&self) -> bool {
        // Relaxed: the flags are read in the task that does the I/O that sets them.
        let s = self.0.load(Ordering::Relaxed);
        s & Self::H2 != 0 || s & Self::READ_SINCE_WRITE == 0
    }
}

/// The connection's stream, watched: which protocol, and whether a request is pending.
struct Watched<S> {
    inner: S,
    seen: Arc<Seen>,
    /// Bytes of the HTTP/2 preface matched so far; None once decided.
    preface: Option<usize>,
}

impl<S> Watched<S> {
    fn new(inner: S) -> (Watched<S>, Arc<Seen>) {
        let seen = Arc::new(Seen(AtomicU8::new(0)));
        let watched = Watched {
            inner,
            seen: seen.clone(),
            preface: Some(0),
        };
        (watched, seen)
    }

    fn read(&mut self, bytes: &[u8]) {
        if let Some(matched) = self.preface {
            let n = bytes.len().min(H2_PREFACE.len() - matched);
            self.preface = if bytes[..n] != H2_PREFACE[matched..matched + n] {
                None
            } else if matched + n == H2_PREFACE.len() {
                self.seen.0.fetch_or(Seen::H2, Ordering::Relaxed);
                None
            } else {
                Some(matched + n)
            };
        }
        self.seen
            .0
            .fetch_or(Seen::READ_SINCE_WRITE, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.seen
            .0
            .fetch_and(!Seen::READ_SINCE_WRITE, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if buf.filled().len() > before {
                let this = &mut *self;
                this.read(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.wrote();
            }
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.wrote();
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_pending_http1_request_from_http2_and_idle() {
        let (mut w, seen) = Watched::new(());
        assert!(seen.may_close(), "nothing received");
        w.read(b"PO");
        assert!(!seen.may_close(), "an HTTP/1 request half received");
        w.read(b"ST / HTTP/1.1\r\n\r\n");
        w.wrote();
        assert!(seen.may_close(), "answered");

        let (mut w, seen) = Watched::new(());
        w.read(&H2_PREFACE[..3]);
        assert!(!seen.may_close(), "undecided yet");
        w.read(&H2_PREFACE[3..]);
        w.read(b"frames");
        assert!(seen.may_close(), "HTTP/2: GOAWAY keeps its streams");
    }
}
