//! The worker pool: one supervised `tfgate-worker` per slot, and routing of validated
//! runs to them. A run goes to the worker with the fewest outstanding requests among
//! those holding its version AVAILABLE. When that worker dies with the run in flight,
//! the run goes at once to another worker with the version, or waits (within its
//! deadline) for the restarted one, so a crash costs latency, not the request.

mod attach;
mod control;
mod frame;
mod harness;
mod incarnation;
mod placement;
#[cfg(test)]
mod pool_tests;
mod process;
mod slot;
mod succession;
mod supervisor;
mod worker_logs;

pub use frame::{RunOutput, RunTiming};
pub use placement::{allowed_cpus, plan, Device, WorkerPlan};
pub use slot::SlotReport;
pub use supervisor::SupervisorConfig;

use crate::error::ServingError;
use crate::servables::{Routes, ServableId, Servables};
use crate::validation::ValidRun;
use incarnation::{CallError, Incarnation};
use parking_lot::RwLock;
use slot::Slot;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use supervisor::Supervisor;
use tokio::sync::watch;
use tokio::time::Instant;

/// Worker deaths one run may live through; a run that keeps killing its workers is a
/// "query of death" and gets UNAVAILABLE instead of taking the whole pool down.
const MAX_DEATHS_PER_RUN: usize = 3;

/// Handle to the supervised workers.
#[derive(Clone)]
pub struct WorkerPool {
    /// By slot id; attach mode opens a slot when more workers connect (taking the lowest
    /// free id) and closes one whose worker left for good.
    slots: Slots,
    servables: Servables,
    /// Where the tie-break among equally loaded workers starts.
    next: Arc<AtomicUsize>,
    stop: Arc<watch::Sender<bool>>,
    supervisors: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// What a new slot's supervisor is made of.
    parts: Arc<SupervisorParts>,
}

/// The pool's slots by id, shared with the supervisors (which close their own slot).
pub(super) type Slots = Arc<RwLock<BTreeMap<crate::servables::WorkerId, Arc<Slot>>>>;

/// Shared by every supervisor of the pool.
struct SupervisorParts {
    config: Arc<SupervisorConfig>,
    startup_failed: Arc<watch::Sender<Option<String>>>,
    models: watch::Receiver<crate::server_core::Models>,
    /// Attach mode's lobby, set once at start.
    lobby: std::sync::OnceLock<Arc<attach::Lobby>>,
}

impl WorkerPool {
    /// Starts one supervisor per planned slot; with `worker_socket` (attach mode) the
    /// slots take workers that connect there, and more slots open as more connect. The
    /// receiver turns `Some(reason)` if a slot's workers keep dying before they ever
    /// serve, or the socket cannot be bound (startup must then fail).
    pub fn start(
        config: SupervisorConfig,
        plans: Vec<WorkerPlan>,
        servables: Servables,
        models: watch::Receiver<crate::server_core::Models>,
    ) -> (WorkerPool, watch::Receiver<Option<String>>) {
        let (failed_tx, failed_rx) = watch::channel(None);
        let (stop_tx, _) = watch::channel(false);
        let worker_socket = config.worker_socket.clone();
        if worker_socket.is_some() && !config.op_libraries.is_empty() {
            tracing::warn!(
                "--op_libraries names libraries for the workers this gateway starts; with \
                 --worker_socket it starts none: pass --op_libraries to each tfgate-worker"
            );
        }
        let max_attached = config.max_attached_workers;
        let pool = WorkerPool {
            slots: Arc::default(),
            servables,
            next: Arc::default(),
            stop: Arc::new(stop_tx),
            supervisors: Arc::default(),
            parts: Arc::new(SupervisorParts {
                config: Arc::new(config),
                startup_failed: Arc::new(failed_tx),
                models,
                lobby: std::sync::OnceLock::new(),
            }),
        };
        if let Some(path) = worker_socket {
            match attach::bind(&path) {
                Ok(listener) => {
                    tracing::info!(socket = %path.display(), "waiting for workers to attach");
                    let growing = pool.clone();
                    let lobby =
                        attach::start(listener, pool.stop.subscribe(), max_attached, move || {
                            growing.open_slot(None)
                        });
                    let _ = pool.parts.lobby.set(lobby);
                }
                Err(e) => {
                    pool.parts
                        .startup_failed
                        .send_replace(Some(format!("{e:#}")));
                    return (pool, failed_rx);
                }
            }
        }
        for plan in plans {
            pool.open_slot(Some(plan));
        }
        (pool, failed_rx)
    }

    /// Opens a slot with its supervisor (`None`: the next attach-mode slot, which takes
    /// the lowest free id). False when the server is stopping or attach mode already has
    /// `--max_attached_workers` slots.
    fn open_slot(&self, plan: Option<WorkerPlan>) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        let parts = &self.parts;
        let slot = {
            let mut slots = self.slots.write();
            let plan = match plan {
                Some(plan) => plan,
                None if slots.len() >= parts.config.max_attached_workers => return false,
                None => {
                    let free = (0u32..)
                        .map(crate::servables::WorkerId)
                        .find(|id| !slots.contains_key(id));
                    let Some(id) = free else { return false };
                    WorkerPlan {
                        id,
                        device: Device::Attached,
                        cpus: Vec::new(),
                    }
                }
            };
            let slot = Arc::new(Slot::new(plan));
            slots.insert(slot.id(), slot.clone());
            slot
        };
        let supervisor = Supervisor {
            config: parts.config.clone(),
            slot,
            servables: self.servables.clone(),
            startup_failed: parts.startup_failed.clone(),
            stop: self.stop.subscribe(),
            models: parts.models.clone(),
            lobby: parts.lobby.get().cloned(),
            slots: self.slots.clone(),
        };
        let mut supervisors = self.supervisors.lock();
        // Supervisors of closed slots have finished; keep the list as long as the pool.
        supervisors.retain(|h| !h.is_finished());
        supervisors.push(tokio::spawn(supervisor.run()));
        true
    }

    /// Runs a validated request on a worker holding its version.
    pub async fn run(&self, run: ValidRun) -> Result<RunOutput, ServingError> {
        let started_ns = shm_protocol::monotonic_ns();
        let (request, servable, deadline, targets) = frame::request_frame(run);
        // Laid out once, whichever worker (or workers, if one dies) takes it.
        let encoded = request
            .encode()
            .map_err(|e| ServingError::invalid_argument(e.to_string()))?;
        let mut deaths = 0;
        loop {
            let incarnation = self.pick(&servable, deadline).await?;
            match incarnation
                .call(&request, &encoded, deadline, &targets)
                .await
            {
                Ok((response, pushed_ns, completed_ns)) => {
                    let stamps = frame::Stamps {
                        started_ns,
                        pushed_ns,
                        completed_ns,
                    };
                    return frame::run_output(&servable.name, response, stamps);
                }
                Err(CallError::WorkerDied) => {
                    deaths += 1;
                    tracing::warn!(
                        pid = incarnation.pid,
                        generation = incarnation.generation,
                        "worker died (or was dropped) with a request in flight; re-dispatching"
                    );
                    if deaths >= MAX_DEATHS_PER_RUN {
                        tracing::error!("a request was in flight on {deaths} workers that died");
                        return Err(ServingError::unavailable(
                            "the workers serving this model crashed repeatedly while running this request",
                        ));
                    }
                }
                Err(CallError::TooLarge(msg)) => return Err(ServingError::resource_exhausted(msg)),
                Err(CallError::DeadlineExceeded) => return Err(ServingError::deadline_exceeded()),
                Err(CallError::Input(msg)) => return Err(ServingError::invalid_argument(msg)),
            }
        }
    }

    /// The live worker with the fewest outstanding requests among those holding
    /// `servable` AVAILABLE; waits (until `deadline`) while none does but one is expected.
    async fn pick(
        &self,
        servable: &ServableId,
        deadline: Instant,
    ) -> Result<Arc<Incarnation>, ServingError> {
        let mut changes = self.servables.subscribe();
        loop {
            changes.borrow_and_update();
            match self.servables.routes(servable) {
                Routes::To(workers) => {
                    let live: Vec<Arc<Incarnation>> = {
                        let slots = self.slots.read();
                        workers
                            .iter()
                            .filter_map(|w| slots.get(w))
                            .filter_map(|slot| slot.live())
                            .collect()
                    };
                    if !live.is_empty() {
                        let start = self.next.fetch_add(1, Ordering::Relaxed);
                        let best = (0..live.len())
                            .map(|i| &live[(start + i) % live.len()])
                            .min_by_key(|inc| inc.outstanding());
                        if let Some(best) = best {
                            return Ok(best.clone());
                        }
                    }
                    // Died a moment ago; its supervisor is about to say so.
                }
                Routes::Awaited => {}
                Routes::Gone => {
                    return Err(ServingError::not_found(format!(
                        "Servable not found for request: Specific({}, {})",
                        servable.name, servable.version
                    )))
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(ServingError::deadline_exceeded());
            }
        }
    }

    /// The servable table the pool routes by.
    pub fn servables(&self) -> &Servables {
        &self.servables
    }

    /// Every slot, as `/tfgate/workers` shows it.
    pub fn report(&self) -> Vec<SlotReport> {
        self.slots.read().values().map(|s| s.report()).collect()
    }

    /// Asks every worker to exit and waits for the supervisors to finish.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let handles: Vec<_> = std::mem::take(&mut *self.supervisors.lock());
        for h in handles {
            let _ = h.await;
        }
    }
}
