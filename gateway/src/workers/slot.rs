//! A worker slot: one place in the pool (a GPU, or a share of the cores) and whichever
//! incarnation of its worker runs there now. The supervisor writes it; routing and
//! `/tfgate/workers` read it.

use super::incarnation::Incarnation;
use super::placement::WorkerPlan;
use crate::servables::WorkerId;
use parking_lot::Mutex;
use std::sync::Arc;

/// What a slot's worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Attach mode: no worker has connected to take this slot yet.
    Waiting,
    /// The process is starting or attaching its segment.
    Starting,
    /// Attached; loading its models for the first time.
    Loading,
    /// Its initial load is done; it serves what it loaded.
    Serving,
    /// The last incarnation died or was killed; a new one is on its way.
    Restarting,
    /// Shut down with the server.
    Stopped,
}

impl SlotState {
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Waiting => "waiting",
            SlotState::Starting => "starting",
            SlotState::Loading => "loading",
            SlotState::Serving => "serving",
            SlotState::Restarting => "restarting",
            SlotState::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug)]
struct Info {
    state: SlotState,
    restarts: u64,
    /// Why the last incarnation ended.
    last_exit: Option<String>,
    /// Responses from incarnations that have ended.
    answered_before: u64,
    /// Times a successor took over from a worker that had drifted in memory.
    replacements: u64,
    /// When the last incarnation was lost, until its replacement serves.
    lost_at: Option<std::time::Instant>,
}

/// One slot of the pool.
pub struct Slot {
    pub plan: WorkerPlan,
    current: Mutex<Option<Arc<Incarnation>>>,
    info: Mutex<Info>,
}

/// A slot as `/tfgate/workers` shows it.
#[derive(Clone, Debug)]
pub struct SlotReport {
    pub id: WorkerId,
    pub plan: WorkerPlan,
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub generation: Option<u64>,
    pub state: SlotState,
    pub restarts: u64,
    pub replacements: u64,
    pub last_exit: Option<String>,
    pub outstanding: usize,
    /// Responses from every incarnation of the slot.
    pub answered: u64,
    /// Bytes requests hold in the live incarnation's request arena, and its size.
    pub arena_in_use: u64,
    pub arena_capacity: u64,
    /// The live worker's resident set, as it reported it.
    pub resident_bytes: u64,
}

impl Slot {
    pub fn new(plan: WorkerPlan) -> Slot {
        Slot {
            plan,
            current: Mutex::new(None),
            info: Mutex::new(Info {
                state: SlotState::Starting,
                restarts: 0,
                last_exit: None,
                answered_before: 0,
                replacements: 0,
                lost_at: None,
            }),
        }
    }

    pub fn id(&self) -> WorkerId {
        self.plan.id
    }

    /// The live incarnation, if any.
    pub fn live(&self) -> Option<Arc<Incarnation>> {
        self.current.lock().clone().filter(|i| i.is_alive())
    }

    /// Shows the lifecycle's state; only the supervisor's transitions call it.
    pub fn set_state(&self, state: SlotState) {
        self.info.lock().state = state;
    }

    /// The slot serves again: records how long it went without a worker, if it lost one.
    pub fn recovered(&self) {
        if let Some(lost) = self.info.lock().lost_at.take() {
            crate::monitoring::own_series::recovered(
                self.id().to_string(),
                lost.elapsed().as_micros() as u64,
            );
        }
    }

    /// A new incarnation attached.
    pub fn attached(&self, incarnation: Arc<Incarnation>) {
        *self.current.lock() = Some(incarnation);
    }

    /// A successor took over from the current incarnation (which retires).
    pub fn replaced(&self, successor: Arc<Incarnation>, why: String) {
        let old = self.current.lock().replace(successor);
        let mut info = self.info.lock();
        info.answered_before += old.as_ref().map_or(0, |i| i.answered());
        info.replacements += 1;
        info.last_exit = Some(why);
    }

    /// The current incarnation ended; `restart` tells whether another follows (which
    /// counts a restart, and starts the recovery clock, if there was one).
    pub fn ended(&self, why: String, restart: bool) {
        let had = self.current.lock().take();
        let mut info = self.info.lock();
        info.answered_before += had.as_ref().map_or(0, |i| i.answered());
        if had.is_some() && restart {
            info.restarts += 1;
            info.lost_at.get_or_insert_with(std::time::Instant::now);
        }
        info.last_exit = Some(why);
    }

    pub fn report(&self) -> SlotReport {
        let current = self.current.lock().clone();
        let info = self.info.lock().clone();
        SlotReport {
            id: self.id(),
            plan: self.plan.clone(),
            pid: current.as_ref().map(|i| i.pid),
            host: current.as_ref().map(|i| i.host.clone()),
            generation: current.as_ref().map(|i| i.generation),
            state: info.state,
            restarts: info.restarts,
            replacements: info.replacements,
            last_exit: info.last_exit,
            outstanding: current.as_ref().map_or(0, |i| i.outstanding()),
            answered: info.answered_before + current.as_ref().map_or(0, |i| i.answered()),
            arena_in_use: current.as_ref().map_or(0, |i| i.request_arena().0),
            arena_capacity: current.as_ref().map_or(0, |i| i.request_arena().1),
            resident_bytes: current.as_ref().map_or(0, |i| i.resident_bytes()),
        }
    }
}
