//! One connection, HTTP/1.1 or HTTP/2, from its first byte to its close, with every phase
//! bounded (the table is `Limits`'): the first bytes by the stream's guard, HTTP/1
//! headers by hyper's timer, a stalled write by the guard, HTTP/2 with no stream open
//! and connection age by a GOAWAY from here, a silent HTTP/2 peer by keepalive pings.
//! A GOAWAY this task sends is followed by the close as soon as no stream is open.
//!
//! When the server closes, the connection is polled first, so bytes already in the
//! socket are read; hyper's graceful shutdown would drop an HTTP/1 request whose
//! headers it has not parsed yet, so it is asked only once nothing of a request is
//! pending (an HTTP/1 request in progress ends the connection itself, with
//! `Connection: close`). HTTP/2 gets GOAWAY and finishes its streams.

use super::guarded::Seen;
use crate::lifecycle::Phase;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Bounds on a connection's phases; `None`: unbounded.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From accept until the client has finished its TLS handshake and shown its
    /// protocol (the HTTP/2 preface, an HTTP/1 request's first byte).
    pub handshake: Option<Duration>,
    /// HTTP/1: a request's headers, from its first byte or from the previous answer.
    pub header: Option<Duration>,
    /// No stream open for this long: GOAWAY, then closed.
    pub idle: Option<Duration>,
    /// A write the client leaves unread.
    pub write_stall: Option<Duration>,
    /// The connection's age: GOAWAY, then closed once its streams end.
    pub max_age: Option<Duration>,
    /// After the age's GOAWAY, how long streams may still run.
    pub max_age_grace: Option<Duration>,
    /// HTTP/2 keepalive: a ping after this long without a frame from the client...
    pub keepalive_time: Option<Duration>,
    /// ...which must be answered within this, else the connection closes.
    pub keepalive_timeout: Duration,
}

/// After a GOAWAY, no stream open for this long closes the connection (frames the
/// client sent before it saw the GOAWAY may still open one).
const AFTER_GOAWAY: Duration = Duration::from_secs(1);

/// How the server's HTTP speaks on one port.
pub fn builder(limits: &Limits, http2_only: bool, h2: &H2Settings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http2_only {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(limits.keepalive_time)
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_frame_size(h2.max_frame_size);
    builder
}

/// HTTP/2 settings a port may choose (gRPC's channel arguments).
#[derive(Clone, Debug, Default)]
pub struct H2Settings {
    pub max_concurrent_streams: Option<u32>,
    pub max_frame_size: Option<u32>,
}

/// Serves one connection until it closes.
pub async fn serve<IO, S, B>(
    io: IO,
    seen: Arc<Seen>,
    service: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    mut phase: watch::Receiver<Phase>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (streams, mut open) = watch::channel(0usize);
    let service = Counted {
        inner: Arc::new(service),
        streams: Arc::new(streams),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = async {
        match limits.idle {
            Some(limit) => quiet_for(&mut open.clone(), limit).await,
            None => std::future::pending().await,
        }
    };
    let age = async {
        match limits.max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    // Until one of these asks for a GOAWAY (or the connection ends by itself).
    enum Then {
        Ended,
        Idle,
        Old,
        Closed,
    }
    let then = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection ended: {e}");
            }
            Then::Ended
        }
        _ = idle => Then::Idle,
        _ = age => Then::Old,
        _ = phase.wait_for(|p| *p == Phase::Closed) => Then::Closed,
    };
    match then {
        Then::Ended => {}
        Then::Idle => {
            tracing::debug!("connection idle: GOAWAY");
            shut_when_safe(conn.as_mut(), &seen).await;
            close_after_streams(conn, &mut open, None).await;
        }
        Then::Old => {
            tracing::debug!("connection at its maximum age: GOAWAY");
            shut_when_safe(conn.as_mut(), &seen).await;
            close_after_streams(conn, &mut open, limits.max_age_grace).await;
        }
        Then::Closed => {
            shut_when_safe(conn.as_mut(), &seen).await;
            // Draining: the drain's own timeout bounds what is left.
            let _ = conn.await;
        }
    }
}

/// Asks `conn` for a graceful shutdown once that loses nothing (see the module docs);
/// returns once asked, or when the connection has ended.
async fn shut_when_safe<C: Future + GracefulShutdown>(mut conn: Pin<&mut C>, seen: &Seen) {
    std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !seen.may_close() {
            return Poll::Pending;
        }
        conn.as_mut().shutdown();
        Poll::Ready(())
    })
    .await;
}

/// After a GOAWAY: runs `conn` until it ends, until no stream has been open for
/// [`AFTER_GOAWAY`], or past `grace`.
async fn close_after_streams<C: Future>(
    conn: Pin<&mut C>,
    open: &mut watch::Receiver<usize>,
    grace: Option<Duration>,
) {
    let grace = async {
        match grace {
            Some(g) => tokio::time::sleep(g).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = conn => {}
        _ = quiet_for(open, AFTER_GOAWAY) => tracing::debug!("closed after GOAWAY"),
        _ = grace => tracing::debug!("closed at the end of its grace"),
    }
}

/// Resolves once no stream has been open for `limit`.
async fn quiet_for(open: &mut watch::Receiver<usize>, limit: Duration) {
    loop {
        // The sender lives as long as the connection's service: never closed here.
        if open.wait_for(|n| *n == 0).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(limit) => return,
            r = open.wait_for(|n| *n > 0) => if r.is_err() { return },
        }
    }
}

/// hyper's connection types' graceful shutdown, by one name.
trait GracefulShutdown {
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulShutdown for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The connection's service, counting its open streams: a stream is open from its
/// request until its response body has been sent or dropped (a reset drops both).
struct Counted<S> {
    inner: Arc<S>,
    streams: Arc<watch::Sender<usize>>,
}

/// One open stream, until dropped.
struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn new(streams: Arc<watch::Sender<usize>>) -> Open {
        streams.send_modify(|n| *n += 1);
        Open(streams)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let open = Open::new(self.streams.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| CountedBody { body, _open: open }))
        })
    }
}

/// A response body that holds its stream open until sent or dropped.
pub struct CountedBody<B> {
    body: B,
    _open: Open,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
