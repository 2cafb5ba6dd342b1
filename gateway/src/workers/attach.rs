//! Attach mode (`--worker_socket`): workers started on their own — separate containers
//! sharing a volume with the gateway, or pods' sidecars — connect to one Unix socket
//! instead of being spawned. Each connection says Hello and waits in the lobby until a
//! slot whose supervisor is free takes it; when none is free the pool opens a new slot,
//! so starting more workers is all scaling takes. A worker that dies is restarted by
//! whoever started it (Docker's `restart:` policy, the kubelet) and simply connects again.
//!
//! Only the gateway's own user may attach: the socket is created mode 0600 and a peer
//! whose uid differs is refused (it would otherwise be handed requests and their
//! tensors).

use super::control::read_message;
use anyhow::{bail, Context};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tfgate_proto::tfgate::control::worker_message as wm;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

/// How long a connected peer may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker that connected and said Hello, waiting for a slot.
pub struct Arrival {
    pub stream: UnixStream,
    pub hello: wm::Hello,
}

/// Where attached workers wait for a slot.
pub struct Lobby {
    arrivals: tokio::sync::Mutex<mpsc::Receiver<Arrival>>,
    /// Supervisors waiting for a worker right now.
    waiting: AtomicUsize,
    /// Workers accepted and not yet taken by a slot (or turned away).
    unclaimed: AtomicUsize,
}

impl Lobby {
    /// The next worker to attach; waits as long as it takes.
    pub async fn next(&self) -> Arrival {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        match self.arrivals.lock().await.recv().await {
            Some(arrival) => {
                self.unclaimed.fetch_sub(1, Ordering::AcqRel);
                arrival
            }
            // The acceptor has stopped: the server is shutting down.
            None => std::future::pending().await,
        }
    }

    /// Counts a new worker in; true when no free slot is left to take it.
    fn arrived(&self) -> bool {
        let unclaimed = self.unclaimed.fetch_add(1, Ordering::AcqRel) + 1;
        unclaimed > self.waiting.load(Ordering::Acquire)
    }

    /// A worker that never said Hello is counted out again.
    fn turned_away(&self) {
        self.unclaimed.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds the workers' socket: a stale one left by a gateway that died is replaced, but
/// never a file that is not a socket.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    crate::stale_socket::clear_for_bind("--worker_socket", path, crate::stale_socket::Live::Refuse)
        .map_err(anyhow::Error::msg)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind --worker_socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts workers until the server stops; `open_slot` is called when a worker arrives
/// and no slot is free to take it.
pub fn start(
    listener: UnixListener,
    mut stop: watch::Receiver<bool>,
    open_slot: impl Fn() + Send + 'static,
) -> std::sync::Arc<Lobby> {
    let (tx, rx) = mpsc::channel(64);
    let lobby = std::sync::Arc::new(Lobby {
        arrivals: tokio::sync::Mutex::new(rx),
        waiting: AtomicUsize::new(0),
        unclaimed: AtomicUsize::new(0),
    });
    let accepting = lobby.clone();
    tokio::spawn(async move {
        let own_uid = rustix::process::geteuid().as_raw();
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("cannot accept a worker: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => return,
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == own_uid => {}
                Ok(cred) => {
                    tracing::warn!(
                        uid = cred.uid(),
                        "refused a worker connection from another user"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("refused a worker connection without credentials: {e}");
                    continue;
                }
            }
            let tx = tx.clone();
            let lobby = accepting.clone();
            if lobby.arrived() {
                open_slot();
            }
            // Hello is read beside the accept loop: a silent peer delays nobody.
            tokio::spawn(async move {
                match tokio::time::timeout(HELLO_TIMEOUT, hello(stream)).await {
                    Ok(Ok(arrival)) => {
                        tracing::info!(
                            host = %arrival.hello.host,
                            pid = arrival.hello.pid,
                            "worker attached to the socket"
                        );
                        if tx.send(arrival).await.is_err() {
                            lobby.turned_away();
                        }
                    }
                    Ok(Err(e)) => {
                        lobby.turned_away();
                        tracing::warn!("a connecting worker failed: {e:#}");
                    }
                    Err(_) => {
                        lobby.turned_away();
                        tracing::warn!("a connecting worker said nothing for {HELLO_TIMEOUT:?}");
                    }
                }
            });
        }
    });
    lobby
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Reads the first message, which must be Hello.
pub async fn hello(mut stream: UnixStream) -> anyhow::Result<Arrival> {
    match read_message(&mut stream).await? {
        wm::Message::Hello(hello) => Ok(Arrival { stream, hello }),
        other => bail!("expected Hello, got {other:?}"),
    }
}
