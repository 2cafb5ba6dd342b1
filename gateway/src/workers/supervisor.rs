//! Supervises one worker slot: spawns `tfgate-worker` (pinned to the slot's cores, with
//! the slot's GPU), hands it a fresh shared-memory segment over the Unix socket, relays
//! its servable reports, and watches it. An incarnation ends when the process dies, its
//! control socket closes, its response ring breaks, it misses heartbeats
//! (`--worker_heartbeat_timeout_ms`: a stopped or wedged process), or the request it is
//! running outlives that request's deadline by `--worker_run_grace_ms` (a kernel stuck in
//! a loop). Whatever the cause, its requests fail over (the pool re-dispatches them), its
//! versions leave routing, and the next incarnation starts at once (with a short backoff
//! if crashes repeat). In attach mode (`--worker_socket`) the slot spawns nothing: it
//! takes the next worker that connects on its own, and a worker that ends is replaced by
//! whichever connects next (its container restarted, or a new one); a slot whose worker
//! left for good (it asked to stop: a scale-down) is closed, down to `--num_workers`.
//!
//! What the slot does next is decided in one place, `lifecycle.rs`'s state machine. This
//! file binds the slot's socket, waits for what the last transition said comes next (a
//! worker to start or arrive, the backoff, the reaping; `monitor.rs` watches an attached
//! one, `launch.rs` starts one), feeds what it saw to the machine as an event, and
//! carries out the actions it returns.

mod launch;
mod monitor;

use super::attach::{self, Lobby};
use super::harness::{self, Action, Event, Harness, Mode};
use super::incarnation::{Attached, Incarnation};
use super::process::WorkerProcess;
use super::slot::{Slot, SlotState};
use super::succession::Successor;
use crate::servables::Servables;
use crate::server_core::Models;
use launch::WorkerRefused;
use shm_protocol::SegmentConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tfgate_proto::control::{LoadConfig, SessionConfig};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// What every slot's supervisor needs (from the flags).
pub struct SupervisorConfig {
    pub worker_binary: PathBuf,
    /// Attach mode (`--worker_socket`): spawn nothing; take workers that connect here.
    pub worker_socket: Option<PathBuf>,
    /// Attach mode: slots open at most (`--max_attached_workers`); a worker beyond them
    /// is turned away.
    pub max_attached_workers: usize,
    /// Attach mode: slots kept open with no worker (`--num_workers`); above them, a
    /// slot whose worker left for good is closed.
    pub min_attached_slots: usize,
    /// The private directory holding the workers' sockets.
    pub runtime_dir: PathBuf,
    pub segment: SegmentConfig,
    pub session: SessionConfig,
    pub load: LoadConfig,
    /// `--file_system_poll_wait_seconds`, handed to the worker's Source.
    pub file_system_poll_wait_seconds: i32,
    /// A worker silent for this long is killed (`--worker_heartbeat_timeout_ms`).
    pub heartbeat_timeout: Duration,
    /// A run this far past its request's deadline gets its worker killed
    /// (`--worker_run_grace_ms`).
    pub run_grace: Duration,
    /// A worker holding this many bytes more than a fresh one would after an unload is
    /// replaced (`--replace_worker_after_unload_excess_mb`); 0: never.
    pub replace_after_unload_excess: u64,
    /// `--log_format`, passed on to the workers.
    pub log_format: String,
    /// `--op_libraries`, passed on to the workers this gateway starts.
    pub op_libraries: Vec<PathBuf>,
}

/// A slot's supervisor task and what it shares with the rest of the gateway.
pub struct Supervisor {
    pub config: Arc<SupervisorConfig>,
    pub slot: Arc<Slot>,
    pub(super) servables: Servables,
    /// Set to why, if the slot's workers keep dying before they ever serve.
    pub startup_failed: Arc<watch::Sender<Option<String>>>,
    /// Turns true when the server shuts down.
    pub stop: watch::Receiver<bool>,
    /// The model list to serve; a change (a config reload) is passed on to the worker.
    pub models: watch::Receiver<Models>,
    /// Attach mode: where workers that connect on their own wait for a slot.
    pub lobby: Option<Arc<Lobby>>,
    /// The pool's slots, from which an attach-mode slot removes itself.
    pub(super) slots: super::Slots,
}

/// Where a slot's next worker comes from.
pub(super) enum WorkerSource {
    /// Spawned by the supervisor; it connects to the slot's own socket.
    Spawn {
        listener: UnixListener,
        socket_path: PathBuf,
    },
    /// Started on its own; it connects to the pool's socket and waits in the lobby.
    Attach(Arc<Lobby>),
}

/// Resolves once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What the supervisor waits for next, as the last transition's actions said.
enum Next {
    Launch(u64),
    Handshake(u64),
    Watch,
    Reap,
    Backoff(Duration),
    CloseIfSpare,
    Exit,
}

/// An incarnation's parts the supervisor holds while it is watched, then reaps.
struct Watched {
    process: WorkerProcess,
    writer: OwnedWriteHalf,
    incarnation: Arc<Incarnation>,
}

/// What the lifecycle's actions act on, from one wait to the next.
struct Parts {
    next: Option<Next>,
    /// The model list, one receiver per incarnation from its handshake on: a change
    /// after the list was sent is seen.
    models: watch::Receiver<Models>,
    /// When the current incarnation was begun (a long-lived one resets the backoff).
    started: Instant,
    /// Attach mode: the worker taken from the lobby, until its handshake.
    arrival: Option<attach::Arrival>,
    /// An incarnation (or successor) attached and not yet watched.
    attached: Option<Attached>,
    /// An incarnation that ended, to reap.
    watched: Option<Watched>,
}

impl Supervisor {
    /// Runs the slot until the server stops (or, in attach mode, the slot closes).
    pub async fn run(self) {
        let Some(source) = self.bind() else { return };
        let mode = match source {
            WorkerSource::Spawn { .. } => Mode::Spawn,
            WorkerSource::Attach(_) => Mode::Attach,
        };
        let mut lc = Harness::new(mode, self.config.replace_after_unload_excess);
        let mut parts = Parts {
            next: None,
            models: self.models.clone(),
            started: Instant::now(),
            arrival: None,
            attached: None,
            watched: None,
        };
        let mut event = Some(Event::Begin);
        while let Some(seen) = event {
            for action in self.transit(&mut lc, seen) {
                self.apply(action, &mut parts);
            }
            event = self.next_event(&source, &mut lc, &mut parts).await;
        }
    }

    /// Binds the slot's own socket, for a worker it spawns (none in attach mode); a
    /// failure fails startup.
    fn bind(&self) -> Option<WorkerSource> {
        if let Some(lobby) = &self.lobby {
            return Some(WorkerSource::Attach(lobby.clone()));
        }
        let socket_path = self
            .config
            .runtime_dir
            .join(format!("worker-{}.sock", self.slot.id()));
        let _ = std::fs::remove_file(&socket_path);
        match UnixListener::bind(&socket_path) {
            Ok(listener) => Some(WorkerSource::Spawn {
                listener,
                socket_path,
            }),
            Err(e) => {
                let why = format!("cannot bind worker socket {}: {e}", socket_path.display());
                self.startup_failed.send_replace(Some(why));
                None
            }
        }
    }

    /// Feeds an event to the lifecycle: the slot shows the state that follows, and the
    /// actions to carry out are returned.
    fn transit(&self, lc: &mut Harness, event: Event) -> Vec<Action> {
        let transition = harness::transition(lc, event);
        *lc = transition.next;
        self.slot.set_state(lc.shown());
        transition.actions
    }

    /// Carries out an action on the slot (those on a watched incarnation are `monitor.rs`'s).
    fn apply(&self, action: Action, parts: &mut Parts) {
        let worker = self.slot.id();
        match action {
            Action::Launch { generation } => parts.next = Some(Next::Launch(generation)),
            Action::Handshake { generation } => parts.next = Some(Next::Handshake(generation)),
            Action::Install => {
                if let Some(attached) = &parts.attached {
                    self.slot.attached(attached.incarnation.clone());
                }
                parts.next = Some(Next::Watch);
            }
            Action::Unroute => self.servables.worker_lost(worker),
            Action::RecordEnd { why, restart } => self.slot.ended(why, restart),
            Action::LogExit {
                generation,
                message,
            } => tracing::warn!(worker = %worker, generation, "{message}"),
            Action::LogLeft { generation } => {
                tracing::info!(worker = %worker, generation, "worker left")
            }
            Action::LogRefused(why) => {
                tracing::error!(worker = %worker, "worker refused to start: {why}")
            }
            Action::FailStartup(why) => {
                self.startup_failed.send_replace(Some(why));
            }
            Action::Backoff(backoff) => parts.next = Some(Next::Backoff(backoff)),
            Action::CloseIfSpare => parts.next = Some(Next::CloseIfSpare),
            Action::Exit => parts.next = Some(Next::Exit),
            other => {
                tracing::error!(worker = %worker, action = ?other, "no incarnation to act on")
            }
        }
    }

    /// Waits for what the last actions said comes next; None once the supervisor is done.
    async fn next_event(
        &self,
        source: &WorkerSource,
        lc: &mut Harness,
        parts: &mut Parts,
    ) -> Option<Event> {
        loop {
            let event = match parts.next.take() {
                Some(Next::Launch(generation)) => self.launching(source, generation, parts).await,
                Some(Next::Handshake(generation)) => self.handshaking(generation, parts).await,
                // The watch feeds its own events, until it says what follows.
                Some(Next::Watch) => {
                    self.watch(source, lc, parts).await;
                    continue;
                }
                Some(Next::Reap) => self.reap(parts).await,
                Some(Next::Backoff(backoff)) => self.backing_off(backoff).await,
                Some(Next::CloseIfSpare) => Event::SpareChecked {
                    closed: self.close_if_spare(),
                },
                Some(Next::Exit) => return None,
                None => {
                    tracing::error!(worker = %self.slot.id(), state = ?lc.state, "the slot's lifecycle stalled");
                    return None;
                }
            };
            return Some(event);
        }
    }

    /// Begins an incarnation: spawns a worker (spawn mode) or waits for one in the
    /// lobby (attach mode), unless the server stops first.
    async fn launching(&self, source: &WorkerSource, generation: u64, parts: &mut Parts) -> Event {
        parts.started = Instant::now();
        parts.models = self.models.clone();
        let mut stop = self.stop.clone();
        let launched = match source {
            WorkerSource::Attach(lobby) => tokio::select! {
                arrival = lobby.next() => {
                    parts.arrival = Some(arrival);
                    return Event::Arrived;
                }
                _ = stopped(&mut stop) => return Event::Stop,
            },
            WorkerSource::Spawn {
                listener,
                socket_path,
            } => tokio::select! {
                r = self.launch((listener, socket_path), generation, &mut parts.models) => r,
                _ = stopped(&mut stop) => return Event::Stop,
            },
        };
        self.launched(launched, parts)
    }

    /// Attach mode: hands the worker taken from the lobby its segment, unless the server
    /// stops first.
    async fn handshaking(&self, generation: u64, parts: &mut Parts) -> Event {
        let Some(arrival) = parts.arrival.take() else {
            return self.launched(Err(anyhow::anyhow!("no worker arrived")), parts);
        };
        let mut stop = self.stop.clone();
        let admitted = tokio::select! {
            r = self.admit(arrival, generation, &mut parts.models) => r,
            _ = stopped(&mut stop) => return Event::Stop,
        };
        self.launched(admitted, parts)
    }

    /// A launch's outcome as the lifecycle takes it.
    fn launched(&self, launched: anyhow::Result<Attached>, parts: &mut Parts) -> Event {
        match launched {
            Ok(attached) => {
                parts.attached = Some(attached);
                Event::Connected
            }
            Err(e) => Event::LaunchFailed {
                refused: e.downcast_ref::<WorkerRefused>().map(|r| r.0.clone()),
                why: format!("worker failed: {e:#}"),
                lived: parts.started.elapsed(),
            },
        }
    }

    /// Marks an ended incarnation dead (waking what waits on it), closes its control
    /// socket (what makes an attached worker go) and reaps its process.
    async fn reap(&self, parts: &mut Parts) -> Event {
        let status = match parts.watched.take() {
            Some(Watched {
                mut process,
                writer,
                incarnation,
            }) => {
                incarnation.mark_dead();
                drop(writer);
                process.reap().await
            }
            None => String::new(),
        };
        Event::Reaped {
            status,
            lived: parts.started.elapsed(),
        }
    }

    /// The restart backoff, cut short when the server stops.
    async fn backing_off(&self, backoff: Duration) -> Event {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => Event::BackoffElapsed,
            _ = stopped(&mut stop) => Event::Stop,
        }
    }

    /// A successor's reports become the slot's states, and it becomes the slot's worker.
    fn take_over(&self, next: Successor, parts: &mut Parts) {
        parts.started = Instant::now();
        parts.models = self.models.clone();
        // Each version's last state in the successor's reports, in one switch.
        let mut last = std::collections::BTreeMap::new();
        for r in next.reports {
            last.insert(r.id.clone(), r);
        }
        self.servables
            .replace_worker(self.slot.id(), last.into_values().collect());
        self.slot
            .replaced(next.attached.incarnation.clone(), next.why);
        // The list may have changed while the successor loaded: send it again (a worker
        // given the list it serves does nothing).
        parts.models.mark_changed();
        parts.attached = Some(next.attached);
        parts.next = Some(Next::Watch);
    }

    /// Closes this attach-mode slot, whose worker left for good, if the pool holds more
    /// than `--num_workers` slots; true when it was closed. Its versions leave the
    /// servable table (nothing will bring them back) and its gauges read "stopped".
    fn close_if_spare(&self) -> bool {
        {
            let mut slots = self.slots.write();
            if slots.len() <= self.config.min_attached_slots {
                return false;
            }
            slots.remove(&self.slot.id());
        }
        self.servables.worker_removed(self.slot.id());
        let last = self.slot.report();
        crate::monitoring::own_series::worker(&crate::monitoring::own_series::WorkerSample {
            worker: last.id.to_string(),
            state: SlotState::Stopped.name(),
            restarts: last.restarts,
            replacements: last.replacements,
            in_flight: 0,
            answered: last.answered,
            resident_bytes: 0,
            arena_in_use: 0,
            arena_capacity: 0,
        });
        tracing::info!(worker = %self.slot.id(), "slot closed: its worker left for good");
        true
    }
}
