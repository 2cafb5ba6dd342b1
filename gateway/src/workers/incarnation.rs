//! One running worker process and the shared-memory segment made for it: requests go
//! out through its request ring; a task drains its response ring and completes the
//! waiting requests, parking on the segment's doorbell in tokio's reactor when the ring is
//! empty (the worker rings it only then), so a response wakes the event loop directly, with
//! no thread of ours in between. When the process dies, every waiting request learns it at
//! once (and the pool sends it elsewhere).
//!
//! Every request sent and not yet answered is *outstanding*, also after its caller gave
//! up: the worker still holds it. The count is what routing balances on, and the oldest
//! one is what the supervisor's watchdog checks against its deadline.

use crate::request::OutputTarget;
use parking_lot::Mutex;
use shm_protocol::{RequestSender, ResponseReceiver, SendError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tfgate_frame::{
    decode_response, decode_response_to, Encoded, FrameError, RequestFrame, ResponseFrame,
};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// How a request sent to an incarnation ended.
#[derive(Debug)]
pub enum CallError {
    /// The worker died (or was never reachable) before answering: safe to retry.
    WorkerDied,
    /// The request can never fit in shared memory (the message names the flag to raise).
    TooLarge(String),
    /// The request waited longer than its deadline.
    DeadlineExceeded,
    /// An input could not be read where the client keeps it (a shared-memory region its
    /// owner truncated): the request's own fault, not the worker's.
    Input(String),
}

/// How a worker broke the shared-memory protocol. Each one ends the incarnation: the
/// worker wrote what ours never writes, so nothing more it writes can be believed.
#[derive(Debug, thiserror::Error)]
enum Violation {
    #[error("response ring failed: {0}")]
    Ring(shm_protocol::RecvError),
    #[error("malformed response for request {id}: {error}")]
    Malformed { id: u64, error: FrameError },
    /// Never sent, or answered already (a duplicate).
    #[error("response for request {0}, which it does not hold")]
    Unknown(u64),
}

/// A request the worker holds.
struct Outstanding {
    /// The caller, while it still waits.
    reply: Option<oneshot::Sender<ResponseFrame>>,
    deadline: Instant,
    sent_at: Instant,
    /// The version it runs (the frame names a specific one).
    servable: (String, Option<i64>),
    /// Outputs its answer writes straight into clients' files, while the caller waits.
    targets: Vec<OutputTarget>,
}

/// The oldest request a worker holds: the one it is running, since it runs them in
/// the order they were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oldest {
    pub id: u64,
    pub deadline: Instant,
}

/// A live worker incarnation.
pub struct Incarnation {
    pub generation: u64,
    /// In the worker's own pid namespace.
    pub pid: u32,
    /// The worker's hostname (an attached worker's container).
    pub host: String,
    sender: RequestSender,
    outstanding: Mutex<HashMap<u64, Outstanding, foldhash::fast::RandomState>>,
    /// Signalled whenever responses free request-arena space or ring slots.
    space: Notify,
    alive: AtomicBool,
    /// Signalled once, when the incarnation is marked dead.
    died: Notify,
    /// Why the completion task dropped the worker, if it did.
    violation: Mutex<Option<String>>,
    next_id: AtomicU64,
    answered: AtomicU64,
    /// The process's resident set, as its last heartbeat answer said.
    resident: AtomicU64,
}

/// How long the completion task parks before looking at the ring again on its own: a
/// peer that scribbled over the wake word could otherwise leave it parked.
const RECV_POLL: Duration = Duration::from_millis(100);

/// The responses' doorbell as tokio's reactor watches it: a pipe the worker writes a byte
/// into while we park.
type Chime = tokio::net::unix::pipe::Receiver;

/// Reads every ring out of the chime (it stays readable until empty); false once the
/// worker's end is closed, i.e. the worker is gone.
fn silence(chime: &Chime) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match chime.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
}

impl Incarnation {
    /// Wraps a fresh segment's gateway ends and starts the completion task (the segment
    /// must have a doorbell). Call within the runtime.
    pub fn start(
        generation: u64,
        (pid, host): (u32, String),
        sender: RequestSender,
        receiver: ResponseReceiver,
    ) -> std::io::Result<Arc<Incarnation>> {
        let chime = receiver
            .doorbell()
            .ok_or_else(|| std::io::Error::other("the segment has no doorbell for responses"))?;
        let chime = Chime::from_owned_fd(chime.try_clone_fd()?)?;
        let inc = Arc::new(Incarnation {
            generation,
            pid,
            host,
            sender,
            outstanding: Mutex::new(HashMap::default()),
            space: Notify::new(),
            alive: AtomicBool::new(true),
            died: Notify::new(),
            violation: Mutex::new(None),
            next_id: AtomicU64::new(1),
            answered: AtomicU64::new(0),
            resident: AtomicU64::new(0),
        });
        tokio::spawn(inc.clone().complete_loop(receiver, chime));
        Ok(inc)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Marks the worker dead and fails everything waiting on it.
    pub fn mark_dead(&self) {
        if self.alive.swap(false, Ordering::AcqRel) {
            self.died.notify_waiters();
        }
        // Dropping the reply senders wakes the callers with WorkerDied.
        self.outstanding.lock().clear();
        self.space.notify_waiters();
    }

    /// Resolves once the incarnation has been marked dead (by its completion thread or
    /// its supervisor).
    pub async fn dead(&self) {
        let died = self.died.notified();
        tokio::pin!(died);
        died.as_mut().enable();
        if self.is_alive() {
            died.await;
        }
    }

    /// Why the worker was dropped for breaking the protocol, if it was.
    pub fn violation(&self) -> Option<String> {
        self.violation.lock().clone()
    }

    /// Requests sent to the worker and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.lock().len()
    }

    /// Requests for one version the worker holds or is about to be sent.
    pub fn outstanding_for(&self, model: &str, version: i64) -> usize {
        self.outstanding
            .lock()
            .values()
            .filter(|o| o.servable.0 == model && o.servable.1 == Some(version))
            .count()
    }

    /// Responses received so far.
    /// The request arena: bytes held by requests in shared memory, and its size.
    pub fn request_arena(&self) -> (u64, u64) {
        let capacity = self.sender.arena_capacity();
        (capacity.saturating_sub(self.sender.free_bytes()), capacity)
    }

    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    pub fn set_resident_bytes(&self, bytes: u64) {
        self.resident.store(bytes, Ordering::Relaxed);
    }

    /// The resident set the worker last reported (0 before its first heartbeat answer).
    pub fn resident_bytes(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// The request the worker has held longest.
    pub fn oldest(&self) -> Option<Oldest> {
        self.outstanding
            .lock()
            .iter()
            .min_by_key(|(_, o)| o.sent_at)
            .map(|(id, o)| Oldest {
                id: *id,
                deadline: o.deadline,
            })
    }

    /// Drains the response ring, completing each caller; parks on the doorbell when it is
    /// empty, until the worker rings, the incarnation dies, or `RECV_POLL` passes.
    async fn complete_loop(self: Arc<Self>, mut receiver: ResponseReceiver, chime: Chime) {
        'serving: while self.is_alive() {
            loop {
                let done = match receiver
                    .try_recv_for(|id, region, at, len| self.decode(id, region, at, len))
                {
                    Ok(Some((id, (waiting, result)))) => self.complete(id, waiting, result),
                    Ok(None) => break,
                    Err(e) => Err(Violation::Ring(e)),
                };
                if let Err(v) = done {
                    tracing::error!(generation = self.generation, "{v}; dropping this worker");
                    *self.violation.lock() = Some(v.to_string());
                    break 'serving;
                }
            }
            if !receiver.begin_wait() {
                // A response arrived meanwhile. Counted against tokio's cooperative budget,
                // so a worker that flips its ring's head back and forth cannot keep this
                // task from yielding to the event loop.
                tokio::task::coop::consume_budget().await;
                continue;
            }
            let open = tokio::select! {
                _ = chime.readable() => silence(&chime),
                _ = self.dead() => true,
                _ = tokio::time::sleep(RECV_POLL) => true,
            };
            receiver.end_wait();
            if !open {
                // The worker closed its end of the doorbell: it exited. What it answered
                // before is in the ring; hand that out, then let its callers go elsewhere.
                while let Ok(Some((id, (waiting, result)))) =
                    receiver.try_recv_for(|id, region, at, len| self.decode(id, region, at, len))
                {
                    if self.complete(id, waiting, result).is_err() {
                        break;
                    }
                }
                break;
            }
        }
        self.mark_dead();
    }

    /// Takes request `id` off the outstanding ones (`None`: the worker does not hold it)
    /// and reads its response out of the response arena before that space is released:
    /// the outputs its caller (still waiting) wants in its own files are written there
    /// straight from the arena, the rest copied into memory. A caller whose deadline
    /// passes during that write waits for it and gets the answer ([`Incarnation::call`]):
    /// no region is written after its caller was told DEADLINE_EXCEEDED.
    fn decode(
        &self,
        id: u64,
        region: &shm_protocol::Region,
        at: u64,
        len: u64,
    ) -> (Option<Outstanding>, Result<ResponseFrame, FrameError>) {
        let waiting = self.outstanding.lock().remove(&id);
        let result = match &waiting {
            Some(o) if o.reply.is_some() && !o.targets.is_empty() => {
                decode_response_to(region, at, len, &o.targets)
            }
            _ => decode_response(region, at, len),
        };
        (waiting, result)
    }

    /// Hands one response to its caller, if it still waits. A malformed frame, or an
    /// answer to a request the worker does not hold, is a violation: nothing is handed
    /// out, and the caller (woken when the incarnation is marked dead) goes elsewhere.
    fn complete(
        &self,
        id: u64,
        waiting: Option<Outstanding>,
        result: Result<ResponseFrame, FrameError>,
    ) -> Result<(), Violation> {
        let Some(waiting) = waiting else {
            return Err(Violation::Unknown(id));
        };
        let response = result.map_err(|error| Violation::Malformed { id, error })?;
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.space.notify_waiters();
        if let Some(tx) = waiting.reply {
            let _ = tx.send(response);
        }
        Ok(())
    }

    /// Sends one request (`encoded`, laid out from `frame`) and waits for its response
    /// until `deadline` (past it only for an answer the completion task has already
    /// taken); with the response, when the frame was pushed and when the answer
    /// came ([`shm_protocol::monotonic_ns`]).
    pub async fn call(
        &self,
        frame: &RequestFrame,
        encoded: &Encoded<'_>,
        deadline: Instant,
        targets: &[OutputTarget],
    ) -> Result<(ResponseFrame, u64, u64), CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        // Registered before the send: the response can arrive before `try_send` returns.
        self.outstanding.lock().insert(
            id,
            Outstanding {
                reply: Some(tx),
                deadline,
                sent_at: Instant::now(),
                servable: (frame.model_name.clone(), frame.version),
                targets: targets.to_vec(),
            },
        );
        // A caller that stops waiting leaves the entry (the worker still holds the
        // request) but drops its reply; one whose send failed leaves nothing.
        struct GiveUp<'a> {
            inc: &'a Incarnation,
            id: u64,
            sent: bool,
        }
        impl GiveUp<'_> {
            /// Stops waiting for a sent request: true, unless the completion task has
            /// already taken its answer off the outstanding ones (it may be writing the
            /// caller's outputs into its regions right now).
            fn give_up(&self) -> bool {
                match self.inc.outstanding.lock().get_mut(&self.id) {
                    Some(o) => {
                        o.reply = None;
                        true
                    }
                    None => false,
                }
            }
        }
        impl Drop for GiveUp<'_> {
            fn drop(&mut self) {
                if self.sent {
                    self.give_up();
                } else {
                    self.inc.outstanding.lock().remove(&self.id);
                }
            }
        }
        let mut guard = GiveUp {
            inc: self,
            id,
            sent: false,
        };
        // When the frame was pushed: the end of its formation, before the worker's wake-up.
        let pushed_ns = loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_alive() {
                return Err(CallError::WorkerDied);
            }
            match self.sender.try_send_at(id, encoded) {
                Ok(pushed_ns) => break pushed_ns,
                Err(SendError::Full) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(CallError::DeadlineExceeded);
                    }
                }
                Err(e @ SendError::TooLarge { .. }) => {
                    return Err(CallError::TooLarge(format!(
                        "{e}; raise --shm_request_arena_mb"
                    )))
                }
                Err(SendError::Source(e)) => return Err(CallError::Input(e.to_string())),
                Err(_) => return Err(CallError::WorkerDied),
            }
        };
        guard.sent = true;
        if let Some(o) = self.outstanding.lock().get_mut(&id) {
            o.sent_at = Instant::now();
        }
        let mut rx = rx;
        let answer = match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(answer) => answer,
            Err(_) if guard.give_up() => return Err(CallError::DeadlineExceeded),
            // Past the deadline, but the answer is already being read out of the response
            // arena (a copy, bounded by its size): wait for it, so that a caller told
            // DEADLINE_EXCEEDED never has a region written afterwards.
            Err(_) => rx.await,
        };
        match answer {
            Err(_) => Err(CallError::WorkerDied),
            Ok(response) => Ok((response, pushed_ns, shm_protocol::monotonic_ns())),
        }
    }
}

/// A worker process attached to its own fresh segment.
pub struct Attached {
    pub process: super::process::WorkerProcess,
    pub stream: UnixStream,
    pub incarnation: Arc<Incarnation>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_protocol::{Segment, SegmentConfig, SpinConfig};
    use tfgate_frame::RequestKind;
    use tfgate_tensor::tensor::Tensor;

    /// An incarnation on a fresh segment whose worker end this test plays by hand: its
    /// request receiver, and what must stay open for the worker to count as alive (a
    /// closed response side or doorbell reads as the worker's exit).
    fn started() -> (
        Arc<Incarnation>,
        shm_protocol::RequestReceiver,
        (shm_protocol::ResponseSender, shm_protocol::Ringer),
    ) {
        let config = SegmentConfig {
            ring_capacity: 8,
            request_arena_bytes: 1 << 20,
            response_arena_bytes: 1 << 20,
            spin: SpinConfig {
                spin: Duration::from_micros(20),
            },
            prefault: false,
        };
        let (ringer, chime) = shm_protocol::doorbell().expect("doorbell");
        let segment = Segment::create(&config, 1)
            .expect("segment")
            .with_chime(chime);
        let worker =
            Segment::attach(segment.fd().try_clone_to_owned().expect("fd"), 1).expect("attach");
        let (sender, receiver) = segment.into_gateway();
        let inc = Incarnation::start(1, (0, "test".into()), sender, receiver).expect("start");
        let (requests, responses) = worker.into_worker();
        (inc, requests, (responses, ringer))
    }

    /// A one-float predict request: what it asks does not matter here.
    fn request() -> RequestFrame {
        let x = Tensor::from_f32(vec![1], &[0.5]).expect("tensor");
        RequestFrame {
            kind: RequestKind::Predict,
            model_name: "m".into(),
            inputs: vec![("x".into(), x)],
            deadline_ns: 0,
            version: None,
            signature_name: String::new(),
            output_filter: vec![],
        }
    }

    /// Sends a request with a deadline `after` from now; the worker end receives it.
    async fn sent(
        inc: &Arc<Incarnation>,
        requests: shm_protocol::RequestReceiver,
        after: Duration,
    ) -> (
        tokio::task::JoinHandle<Result<(ResponseFrame, u64, u64), CallError>>,
        u64,
        Instant,
    ) {
        let deadline = Instant::now() + after;
        let call = {
            let inc = inc.clone();
            tokio::spawn(async move {
                let frame = request();
                let encoded = frame.encode().expect("encode");
                inc.call(&frame, &encoded, deadline, &[]).await
            })
        };
        let id = tokio::task::spawn_blocking(move || {
            let mut requests = requests;
            requests
                .recv(Duration::from_secs(5))
                .expect("ring")
                .map(|r| r.id())
        })
        .await
        .expect("worker end");
        let Some(id) = id else {
            panic!("no request: {:?}", call.await);
        };
        (call, id, deadline)
    }

    #[tokio::test]
    async fn a_caller_past_its_deadline_waits_for_an_answer_already_taken() {
        let (inc, requests, _open) = started();
        let (call, id, deadline) = sent(&inc, requests, Duration::from_millis(200)).await;
        // What the completion task does first with an answer: take the request off the
        // outstanding ones (then it writes the outputs the caller wants in its regions).
        let taken = inc.outstanding.lock().remove(&id).expect("outstanding");
        tokio::time::sleep_until(deadline + Duration::from_millis(100)).await;
        assert!(
            !call.is_finished(),
            "answered while its answer was being read"
        );
        let answer = ResponseFrame::Err {
            code: tfgate_tensor::code::Code::InvalidArgument,
            message: "read out after the deadline".into(),
        };
        let _ = taken.reply.expect("still waiting").send(answer.clone());
        let (response, _, _) = call.await.expect("call task").expect("the answer");
        assert_eq!(response, answer);
    }

    #[tokio::test]
    async fn a_caller_past_its_deadline_gives_up_an_answer_not_taken() {
        let (inc, requests, _open) = started();
        let (call, id, _) = sent(&inc, requests, Duration::from_millis(100)).await;
        let result = call.await.expect("call task");
        assert!(
            matches!(result, Err(CallError::DeadlineExceeded)),
            "{result:?}"
        );
        // Still outstanding (the worker holds it), but nobody waits: the completion task
        // writes no region for it.
        assert!(inc
            .outstanding
            .lock()
            .get(&id)
            .is_some_and(|o| o.reply.is_none()));
    }
}
