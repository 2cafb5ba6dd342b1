//! One running worker process and the shared-memory segment made for it: requests go
//! out through its request ring; a dedicated thread drains its response ring and
//! completes the waiting requests. When the process dies, every waiting request learns
//! it at once (and is retried on the next incarnation by the pool).

use parking_lot::Mutex;
use shm_protocol::frame::{FrameError, RequestFrame, ResponseFrame};
use shm_protocol::{RequestSender, ResponseReceiver, SendError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// How a request sent to an incarnation ended.
#[derive(Debug)]
pub enum CallError {
    /// The worker died (or was never reachable) before answering: safe to retry.
    WorkerDied,
    /// The request can never fit in shared memory (the message names the flag to raise).
    TooLarge(String),
    /// The response frame was malformed.
    BadResponse(FrameError),
    /// The request waited longer than its deadline.
    DeadlineExceeded,
}

type Completion = Result<ResponseFrame, FrameError>;

/// A live worker incarnation.
pub struct Incarnation {
    pub generation: u64,
    sender: RequestSender,
    pending: Mutex<HashMap<u64, oneshot::Sender<Completion>>>,
    /// Signalled whenever responses free request-arena space or ring slots.
    space: Notify,
    alive: AtomicBool,
    next_id: AtomicU64,
}

/// How often the completion thread re-checks that its worker is alive while idle.
const RECV_POLL: Duration = Duration::from_millis(20);

impl Incarnation {
    /// Wraps a fresh segment's gateway ends and starts the completion thread.
    pub fn start(
        generation: u64,
        sender: RequestSender,
        receiver: ResponseReceiver,
    ) -> std::io::Result<Arc<Incarnation>> {
        let inc = Arc::new(Incarnation {
            generation,
            sender,
            pending: Mutex::new(HashMap::new()),
            space: Notify::new(),
            alive: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
        });
        let thread_inc = inc.clone();
        std::thread::Builder::new()
            .name(format!("tfgate-completions-{generation}"))
            .spawn(move || thread_inc.complete_loop(receiver))?;
        Ok(inc)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Marks the worker dead and fails everything waiting on it.
    pub fn mark_dead(&self) {
        self.alive.store(false, Ordering::Release);
        self.pending.lock().clear(); // dropping the senders wakes the callers with WorkerDied
        self.space.notify_waiters();
    }

    fn complete_loop(&self, mut receiver: ResponseReceiver) {
        while self.is_alive() {
            match receiver.recv(RECV_POLL) {
                Ok(Some((id, result))) => {
                    self.space.notify_waiters();
                    if let Some(tx) = self.pending.lock().remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(
                        generation = self.generation,
                        "response ring failed: {e}; dropping this worker"
                    );
                    break;
                }
            }
        }
        self.mark_dead();
    }

    /// Sends one request and waits for its response.
    pub async fn call(
        &self,
        frame: &RequestFrame,
        timeout: Duration,
    ) -> Result<ResponseFrame, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        // Whatever happens below, a request that never got a response leaves no entry.
        struct Forget<'a>(&'a Incarnation, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.pending.lock().remove(&self.1);
            }
        }
        let _forget = Forget(self, id);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_alive() {
                return Err(CallError::WorkerDied);
            }
            match self.sender.try_send(id, frame) {
                Ok(()) => break,
                Err(SendError::Full) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(CallError::DeadlineExceeded);
                    }
                }
                Err(e @ SendError::TooLarge { .. }) => {
                    return Err(CallError::TooLarge(e.to_string()))
                }
                Err(_) => return Err(CallError::WorkerDied),
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(CallError::DeadlineExceeded),
            Ok(Err(_)) => Err(CallError::WorkerDied),
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(e))) => Err(CallError::BadResponse(e)),
        }
    }
}
