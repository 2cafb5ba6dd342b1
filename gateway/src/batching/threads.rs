//! `num_batch_threads`: how many batches may run at once over every model and version that
//! batches. TF Serving runs all of them on one shared scheduler whose thread pool has that
//! many threads (taken from `--batching_parameters_file` even with per-model parameters);
//! here a batch holds one of these slots from the moment it is formed until it is answered.
//! A queue that finds none free waits to be told when one frees up.

use parking_lot::Mutex;
use std::sync::{Arc, Weak};

/// Something to tell when a slot frees up (a queue, which then forms its next batch).
pub trait Waiter: Send + Sync {
    fn slot_free(&self);
}

/// The shared batch slots.
pub struct BatchThreads {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    busy: usize,
    waiting: Vec<Weak<dyn Waiter>>,
}

impl BatchThreads {
    pub fn new(limit: usize) -> Arc<BatchThreads> {
        Arc::new(BatchThreads {
            limit: limit.max(1),
            state: Mutex::default(),
        })
    }

    /// Takes a slot if one is free; otherwise `waiter` is told when one frees up.
    pub fn try_acquire(&self, waiter: &Weak<dyn Waiter>) -> bool {
        let mut s = self.state.lock();
        if s.busy < self.limit {
            s.busy += 1;
            return true;
        }
        if !s.waiting.iter().any(|w| w.ptr_eq(waiter)) {
            s.waiting.push(waiter.clone());
        }
        false
    }

    /// Gives a slot back and tells every waiting queue (each takes one if it still has a
    /// batch to run). Call with no queue's lock held.
    pub fn release(&self) {
        let waiting = {
            let mut s = self.state.lock();
            s.busy = s.busy.saturating_sub(1);
            std::mem::take(&mut s.waiting)
        };
        for w in waiting.iter().filter_map(Weak::upgrade) {
            w.slot_free();
        }
    }

    /// Slots in use.
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        self.state.lock().busy
    }
}
