//! What the batch queues run batches on: a small trait, so that the scheduling can be
//! tested with a fake, and the worker pool in production.

use crate::error::ServingError;
use crate::servables::{Routes, ServableId};
use crate::validation::ValidRun;
use crate::workers::{RunOutput, WorkerPool};
use std::future::Future;

/// Runs batches.
pub trait Runner: Clone + Send + Sync + 'static {
    /// Runs one batch (or one request of a servable that does not batch).
    fn run(&self, run: ValidRun) -> impl Future<Output = Result<RunOutput, ServingError>> + Send;

    /// How many batches of `servable` may run at once: one per worker holding it
    /// AVAILABLE (at least one, so that a request for a version on its way back waits in
    /// the pool for it).
    fn capacity(&self, servable: &ServableId) -> usize;

    /// Whether `servable` has left the servable table (its queue can go).
    fn is_gone(&self, servable: &ServableId) -> bool;
}

impl Runner for WorkerPool {
    fn run(&self, run: ValidRun) -> impl Future<Output = Result<RunOutput, ServingError>> + Send {
        WorkerPool::run(self, run)
    }

    fn capacity(&self, servable: &ServableId) -> usize {
        match self.servables().routes(servable) {
            Routes::To(workers) => workers.len().max(1),
            Routes::Awaited | Routes::Gone => 1,
        }
    }

    fn is_gone(&self, servable: &ServableId) -> bool {
        self.servables().routes(servable) == Routes::Gone
    }
}
