//! Lingering close, as Apache and nginx do it. When the server closes a TCP connection
//! first (a drain's GOAWAY or `Connection: close`), the client may still be sending:
//! HTTP/2 WINDOW_UPDATE, PING or SETTINGS acknowledgements. Closing a socket with unread
//! bytes in it makes the kernel send RST instead of FIN, and a client receiving RST loses
//! whatever of the response it had not read yet. So a closed connection first sends FIN
//! (`shutdown(SHUT_WR)`), then reads and discards what the client still sends until it
//! closes too, for at most [`LINGER`]. The drain waits for lingering connections before
//! the process exits.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// How long a closed connection waits for its client to close.
pub const LINGER: Duration = Duration::from_secs(2);

/// Connections lingering now.
struct Tracker {
    count: AtomicUsize,
    none: Notify,
}

static TRACKER: LazyLock<Tracker> = LazyLock::new(|| Tracker {
    count: AtomicUsize::new(0),
    none: Notify::new(),
});

/// Counts one lingering connection until dropped.
struct Lingering;

impl Lingering {
    fn new() -> Lingering {
        TRACKER.count.fetch_add(1, Ordering::AcqRel);
        Lingering
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if TRACKER.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            TRACKER.none.notify_waiters();
        }
    }
}

/// Resolves once no connection is lingering.
pub async fn idle() {
    loop {
        let notified = TRACKER.none.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if TRACKER.count.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

/// A TCP connection that lingers when it is closed (dropped). It holds its place under
/// `--max_connections` until it has finished lingering.
pub struct LingerStream(Option<TcpStream>, Option<OwnedSemaphorePermit>);

impl LingerStream {
    pub fn new(stream: TcpStream, place: Option<OwnedSemaphorePermit>) -> LingerStream {
        LingerStream(Some(stream), place)
    }
}

impl Drop for LingerStream {
    fn drop(&mut self) {
        let place = self.1.take();
        let Some(mut stream) = self.0.take() else {
            return;
        };
        // Outside a runtime (never, in practice) the socket just closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let lingering = Lingering::new();
        runtime.spawn(async move {
            let _lingering = lingering;
            let _place = place;
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(LINGER, async {
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for LingerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for LingerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl tonic::transport::server::Connected for LingerStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.0 {
            Some(s) => s.connect_info(),
            None => tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The server closes first while the client has sent bytes it never read: the client
    /// still reads the whole answer and a clean end (FIN), not a reset.
    #[tokio::test]
    async fn a_server_closing_first_ends_with_fin_not_reset() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = LingerStream::new(server, None);
        // Unread by the server when it closes.
        client.write_all(b"window update").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let answer = vec![7u8; 1 << 20];
        let writer = tokio::spawn(async move {
            server.write_all(&answer).await.unwrap();
            drop(server);
        });
        let mut got = Vec::new();
        let read = client.read_to_end(&mut got).await;
        writer.await.unwrap();
        assert!(read.is_ok(), "the client saw {read:?}");
        assert_eq!(got.len(), 1 << 20);
        drop(client);
        tokio::time::timeout(Duration::from_secs(3), idle())
            .await
            .expect("no connection lingers once the client closed");
    }
}
