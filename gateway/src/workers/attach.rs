//! Attach mode (`--worker_socket`): workers started on their own — separate containers
//! sharing a volume with the gateway, or pods' sidecars — connect to one Unix socket
//! instead of being spawned. Each connection says Hello and waits in the lobby until a
//! slot whose supervisor is free takes it; when none is free the pool opens a new slot,
//! so starting more workers is all scaling takes. A worker that dies is restarted by
//! whoever started it (Docker's `restart:` policy, the kubelet) and simply connects again.
//!
//! Only the gateway's own user may attach (a peer would be handed requests and their
//! tensors): the socket lies in a directory of that user's that no one else may enter
//! (mode 0700, created so if missing), is created mode 0600 (never wider, not even for a
//! moment), and a peer whose uid (`SO_PEERCRED`) differs is refused all the same.
//!
//! A local process must not be able to grow the gateway without bound: at most
//! `--max_attached_workers` slots are open (a worker beyond them is turned away), as
//! many connections at most may be waiting to say Hello, and a slot opens only for a
//! worker that said Hello.

use super::control::read_message;
use anyhow::{bail, Context};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tfgate_proto::control::worker_message as wm;
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

/// Binds the workers' socket in a private directory: a stale socket left by a gateway
/// that died is replaced, but never a file that is not a socket.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    private_dir(path)?;
    crate::stale_socket::clear_for_bind("--worker_socket", path, crate::stale_socket::Live::Refuse)
        .map_err(anyhow::Error::msg)?;
    // The umask makes bind(2) create the socket 0600; a chmod after it would leave it
    // open to others for a moment.
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(umask);
    bound.with_context(|| format!("cannot bind --worker_socket {}", path.display()))
}

/// Makes sure the socket's directory is the gateway user's own and closed to everyone
/// else (mode 0700): created so when missing; an existing one that others may enter or
/// write is refused rather than changed (it may be /tmp or a volume's root).
fn private_dir(socket: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let own = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != own || meta.mode() & 0o077 != 0 {
        bail!(
            "--worker_socket={}: its directory {} is mode {:04o}, owned by uid {}; it must be \
             a directory of the gateway's user (uid {own}) that no one else may enter (mode \
             0700), or not exist yet (it is then created so)",
            socket.display(),
            dir.display(),
            meta.mode() & 0o7777,
            meta.uid(),
        );
    }
    Ok(())
}

/// Accepts workers until the server stops. `open_slot` is called when a worker said
/// Hello and no slot is free to take it; it returns false when no more may open
/// (`--max_attached_workers`), and the worker is turned away. At most `max_pending`
/// connections may be waiting to say Hello.
pub fn start(
    listener: UnixListener,
    mut stop: watch::Receiver<bool>,
    max_pending: usize,
    open_slot: impl Fn() -> bool + Send + Sync + 'static,
) -> Arc<Lobby> {
    let (tx, rx) = mpsc::channel(64);
    let lobby = Arc::new(Lobby {
        arrivals: tokio::sync::Mutex::new(rx),
        waiting: AtomicUsize::new(0),
        unclaimed: AtomicUsize::new(0),
    });
    let accepting = lobby.clone();
    let open_slot = Arc::new(open_slot);
    let pending = Arc::new(tokio::sync::Semaphore::new(max_pending.max(1)));
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
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tracing::warn!(
                    "refused a worker connection: {max_pending} connections are already waiting to say Hello"
                );
                continue;
            };
            let tx = tx.clone();
            let lobby = accepting.clone();
            let open_slot = open_slot.clone();
            // Hello is read beside the accept loop: a silent peer delays nobody.
            tokio::spawn(async move {
                let arrival = match tokio::time::timeout(HELLO_TIMEOUT, hello(stream)).await {
                    Ok(Ok(arrival)) => arrival,
                    Ok(Err(e)) => {
                        tracing::warn!("a connecting worker failed: {e:#}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("a connecting worker said nothing for {HELLO_TIMEOUT:?}");
                        return;
                    }
                };
                drop(permit);
                if lobby.arrived() && !open_slot() {
                    lobby.turned_away();
                    tracing::warn!(
                        host = %arrival.hello.host,
                        pid = arrival.hello.pid,
                        "turned a worker away: every slot is taken and no more may open (--max_attached_workers)"
                    );
                    return;
                }
                tracing::info!(
                    host = %arrival.hello.host,
                    pid = arrival.hello.pid,
                    "worker attached to the socket"
                );
                if tx.send(arrival).await.is_err() {
                    lobby.turned_away();
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
