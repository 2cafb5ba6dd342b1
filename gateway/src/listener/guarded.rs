//! A connection's byte stream, watched and bounded where hyper has no timer of its own:
//! the client must show its protocol (the HTTP/2 preface, or an HTTP/1 request's first
//! byte) before a deadline set at accept, and a write the client leaves unread must
//! make progress within a bound. Either failing ends the connection with `TimedOut`.
//! It also tells the connection's task which protocol the client speaks and whether an
//! HTTP/1 request is half received (a drain must not drop one).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 connection preface a client opens with.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's traffic says about it, shared with its task.
pub struct Seen(AtomicU8);

impl Seen {
    /// Bytes were read since the last response bytes were written: an HTTP/1 request
    /// is (partly) received and not yet answered.
    const READ_SINCE_WRITE: u8 = 1;
    /// The client opened with the HTTP/2 preface.
    const H2: u8 = 2;

    /// Whether a graceful shutdown loses nothing: HTTP/2 (GOAWAY keeps the streams it
    /// has), or HTTP/1 with no request pending.
    pub fn may_close(&self) -> bool {
        // Relaxed: the flags are read in the task that does the I/O that sets them.
        let s = self.0.load(Ordering::Relaxed);
        s & Self::H2 != 0 || s & Self::READ_SINCE_WRITE == 0
    }
}

/// Why a guarded stream ended the connection.
fn timed_out(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what)
}

/// The stream, watched and bounded.
pub struct Guarded<S> {
    inner: S,
    seen: Arc<Seen>,
    /// Bytes of the HTTP/2 preface matched so far; None once the protocol is known.
    preface: Option<usize>,
    /// Until the protocol is known: when the client must have shown it.
    first_bytes: Option<Pin<Box<Sleep>>>,
    /// How long a write may wait on a client that reads nothing.
    write_stall: Option<Duration>,
    /// Armed while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> Guarded<S> {
    /// `inner` must show its protocol by `deadline` (None: no bound); its writes may wait
    /// at most `write_stall` each.
    pub fn new(
        inner: S,
        deadline: Option<Instant>,
        write_stall: Option<Duration>,
    ) -> (Guarded<S>, Arc<Seen>) {
        let seen = Arc::new(Seen(AtomicU8::new(0)));
        let guarded = Guarded {
            inner,
            seen: seen.clone(),
            preface: Some(0),
            first_bytes: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            write_stall,
            stalled: None,
        };
        (guarded, seen)
    }

    fn saw(&mut self, bytes: &[u8]) {
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
            if self.preface.is_none() {
                // The protocol is known: hyper's own timers (HTTP/1 headers) and the
                // connection's (HTTP/2 idle, keepalive) take over.
                self.first_bytes = None;
            }
        }
        self.seen
            .0
            .fetch_or(Seen::READ_SINCE_WRITE, Ordering::Relaxed);
    }

    fn wrote(&mut self, n: usize) {
        self.stalled = None;
        if n > 0 {
            self.seen
                .0
                .fetch_and(!Seen::READ_SINCE_WRITE, Ordering::Relaxed);
        }
    }

    /// A write is pending: Err once it has waited past the bound.
    fn write_waits(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        let Some(limit) = self.write_stall else {
            return Ok(());
        };
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Err(timed_out("the client read nothing of a response in time")),
            Poll::Pending => Ok(()),
        }
    }

    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
        n: impl Fn(&T) -> usize,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(Ok(v)) => {
                self.wrote(n(&v));
                Poll::Ready(Ok(v))
            }
            Poll::Pending => match self.write_waits(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Checked before reading, so a client trickling the preface a byte at a time is
        // bounded too.
        if let Some(deadline) = self.first_bytes.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(timed_out(
                    "the client sent no request within the handshake timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if buf.filled().len() > before {
                let this = &mut *self;
                this.saw(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(cx, r, |n| *n)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, r, |n| *n)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.written(cx, r, |()| 0)
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
        let (mut w, seen) = Guarded::new((), None, None);
        assert!(seen.may_close(), "nothing received");
        w.saw(b"PO");
        assert!(!seen.may_close(), "an HTTP/1 request half received");
        w.saw(b"ST / HTTP/1.1\r\n\r\n");
        w.wrote(1);
        assert!(seen.may_close(), "answered");

        let (mut w, seen) = Guarded::new((), None, None);
        w.saw(&H2_PREFACE[..3]);
        assert!(!seen.may_close(), "undecided yet");
        assert!(w.preface.is_some());
        w.saw(&H2_PREFACE[3..]);
        assert!(w.preface.is_none());
        w.saw(b"frames");
        assert!(seen.may_close(), "HTTP/2: GOAWAY keeps its streams");
    }

    /// A client that never sends its first bytes, or trickles the preface, is cut off at
    /// the deadline; one that has shown its protocol is not.
    #[tokio::test]
    async fn the_first_bytes_have_a_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limit = Duration::from_millis(200);
        // Silent.
        let (client, server) = tokio::io::duplex(64);
        let (mut g, _) = Guarded::new(server, Some(Instant::now() + limit), None);
        let mut buf = [0u8; 8];
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        drop(client);
        // Trickling the preface.
        let (mut client, server) = tokio::io::duplex(64);
        let (mut g, _) = Guarded::new(server, Some(Instant::now() + limit), None);
        let trickle = tokio::spawn(async move {
            for b in H2_PREFACE {
                if client.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            client
        });
        let mut got = 0;
        let e = loop {
            match g.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(got < H2_PREFACE.len(), "{got}");
        drop(trickle.await.unwrap());
        // Shown in time: reads wait past the deadline.
        let (mut client, server) = tokio::io::duplex(64);
        let (mut g, _) = Guarded::new(server, Some(Instant::now() + limit), None);
        client.write_all(b"GET / ").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 6);
        let more = tokio::time::timeout(limit * 2, g.read(&mut buf)).await;
        assert!(
            more.is_err(),
            "a known protocol has no first-bytes deadline"
        );
    }

    /// A write to a client that reads nothing fails after the stall bound.
    #[tokio::test]
    async fn a_stalled_write_fails() {
        use tokio::io::AsyncWriteExt;
        let (_client, server) = tokio::io::duplex(16);
        let (mut g, _) = Guarded::new(server, None, Some(Duration::from_millis(100)));
        let t = std::time::Instant::now();
        let e = g.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(100));
    }
}
