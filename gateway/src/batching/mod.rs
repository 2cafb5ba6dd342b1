//! Server-side batching (`--enable_batching`): requests for the same servable and
//! signature are gathered in the gateway and run as one TensorFlow run — TF Serving's
//! BatchingSession, placed before the workers so that a batch can go to any worker that
//! holds the version. `params.rs` holds the settings, `policy.rs` the scheduling rules as
//! pure functions, `queue.rs` a servable's queue, `batch.rs` one batch's run, `merge.rs`
//! the tensor work, `threads.rs` the batch slots shared by every queue
//! (`num_batch_threads`), `timer.rs` the precise timer for `batch_timeout_micros`, and
//! `runner.rs` what batches run on.

mod batch;
mod merge;
mod params;
mod policy;
mod queue;
mod runner;
#[cfg(test)]
mod tests;
mod threads;
mod timer;

pub use params::{Parameters, PER_MODEL_FILE};
pub use runner::Runner;

use crate::error::ServingError;
use crate::servables::{ServableId, Servables};
use crate::validation::ValidRun;
use crate::workers::{RunOutput, WorkerPool};
use parking_lot::Mutex;
use queue::{Answer, Queue, Submitted};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tfgate_tensor::tensor::Tensor;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A request's answer, or DEADLINE_EXCEEDED once its deadline passes.
async fn wait(answer: oneshot::Receiver<Answer>, deadline: Instant) -> Answer {
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ServingError::unavailable("the batch queue has stopped")),
        Err(_) => Err(ServingError::deadline_exceeded()),
    }
}

/// Which servables batch, and how.
#[derive(Clone, Debug)]
pub struct BatchingConfig {
    /// `--batching_parameters_file` (or TF Serving's defaults). Its `num_batch_threads`
    /// bounds every queue's batches together, also with per-model parameters.
    pub global: Parameters,
    /// `--enable_per_model_batching_parameters`: each version's `batching_params.pbtxt`
    /// decides; a version without one does not batch.
    pub per_model: bool,
}

/// Counters of the batches run (TF Serving's `batching_session` series).
#[derive(Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub tasks: AtomicU64,
    pub rows: AtomicU64,
    pub padding_rows: AtomicU64,
    /// Batches by padded size: bucket i holds sizes in [2^(i-1), 2^i) (bucket 0: size 0),
    /// the last one everything from 8192.
    pub sizes: [AtomicU64; 15],
}

impl Stats {
    fn record(&self, tasks: usize, rows: usize, padded: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.tasks.fetch_add(tasks as u64, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.padding_rows
            .fetch_add((padded - rows) as u64, Ordering::Relaxed);
        let bucket = (usize::BITS - padded.leading_zeros()) as usize;
        self.sizes[bucket.min(self.sizes.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }
}

/// What every queue shares: the batch slots, the timer and the counters.
pub struct Shared {
    threads: Arc<threads::BatchThreads>,
    timer: timer::Timer,
    stats: Arc<Stats>,
}

/// A version's queue, or `None` when it does not batch (per-model parameters without a
/// file).
type Queues<R> = HashMap<ServableId, Option<Arc<Queue<R>>>, foldhash::fast::RandomState>;

/// How often queues of versions that left the servable table are looked for, besides
/// every change of the table.
const RETIRE_EVERY: Duration = Duration::from_secs(1);

/// Handle to every servable's queue.
#[derive(Clone)]
pub struct Batcher<R: Runner = WorkerPool> {
    config: Arc<BatchingConfig>,
    runner: R,
    servables: Servables,
    queues: Arc<Mutex<Queues<R>>>,
    shared: Arc<Shared>,
    pub stats: Arc<Stats>,
}

impl<R: Runner> Batcher<R> {
    /// Call within the runtime: it starts the timer thread and the task that retires the
    /// queues of versions that left the servable table.
    pub fn new(
        config: BatchingConfig,
        runner: R,
        servables: Servables,
    ) -> std::io::Result<Batcher<R>> {
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            threads: threads::BatchThreads::new(config.global.num_batch_threads),
            timer: timer::Timer::start(tokio::runtime::Handle::current())?,
            stats: stats.clone(),
        });
        let batcher = Batcher {
            config: Arc::new(config),
            runner,
            servables,
            queues: Arc::default(),
            shared,
            stats,
        };
        tokio::spawn(retire(
            Arc::downgrade(&batcher.queues),
            batcher.servables.clone(),
            batcher.runner.clone(),
        ));
        Ok(batcher)
    }

    /// The parameters a servable batches with; `None`: it does not batch.
    pub fn params(&self, servable: &ServableId) -> Result<Option<Parameters>, ServingError> {
        if !self.config.per_model {
            return Ok(Some(self.config.global.clone()));
        }
        match self.servables.batching_params(servable) {
            None => Ok(None),
            Some(text) => Parameters::parse(&text, PER_MODEL_FILE).map(Some),
        }
    }

    /// The servable's queue, made on first use.
    fn queue(&self, servable: &ServableId) -> Result<Option<Arc<Queue<R>>>, ServingError> {
        if let Some(q) = self.queues.lock().get(servable) {
            return Ok(q.clone());
        }
        let queue = self.params(servable)?.map(|p| {
            Queue::new(
                servable.clone(),
                p,
                self.runner.clone(),
                self.shared.clone(),
                batch::start,
            )
        });
        Ok(self
            .queues
            .lock()
            .entry(servable.clone())
            .or_insert(queue)
            .clone())
    }

    /// Queues that exist now.
    #[cfg(test)]
    pub fn queue_count(&self) -> usize {
        self.queues.lock().values().filter(|q| q.is_some()).count()
    }

    /// Runs `run` as part of a batch (or alone, when its servable does not batch).
    pub async fn run(&self, run: ValidRun) -> Result<RunOutput, ServingError> {
        let Some(queue) = self.queue(run.servable())? else {
            return self.runner.run(run).await;
        };
        let params = &queue.params;
        let rows = merge::task_rows(run.inputs())?;
        if rows > params.max_batch_size {
            return Err(ServingError::invalid_argument(format!(
                "Task size {rows} is larger than maximum input batch size {}",
                params.max_batch_size
            )));
        }
        if params.split && rows > params.max_execution_batch_size {
            return run_split(&queue, run, rows).await;
        }
        let deadline = run.deadline();
        match queue.submit(run, rows)? {
            Submitted::Alone(batch) => batch::execute_alone(batch).await,
            Submitted::Queued(answer) => wait(answer, deadline).await,
        }
    }
}

/// A piece's answer however it was queued: run now, or awaited.
fn answer<R: Runner>(
    submitted: Submitted<R>,
    deadline: Instant,
) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
    match submitted {
        Submitted::Alone(batch) => Box::pin(batch::execute_alone(batch)),
        Submitted::Queued(rx) => Box::pin(wait(rx, deadline)),
    }
}

/// A request larger than the largest batch runs in pieces (queued together), whose
/// outputs are joined in order.
async fn run_split<R: Runner>(
    queue: &Queue<R>,
    run: ValidRun,
    rows: usize,
) -> Result<RunOutput, ServingError> {
    let chunk = queue.params.max_execution_batch_size.max(1);
    let deadline = run.deadline();
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = chunk.min(rows - start);
        let inputs = run
            .inputs()
            .iter()
            .map(|(alias, t)| {
                let mut parts = merge::split(t, &[start, n], rows)?;
                Ok((alias.clone(), parts.remove(1)))
            })
            .collect::<Result<Vec<_>, ServingError>>()?;
        let piece = ValidRun::batched(&run, inputs, deadline);
        pieces.push(answer(queue.submit(piece, n)?, deadline));
        start += n;
    }
    let mut servable = None;
    let mut timing = Default::default();
    let mut joined: Vec<(String, Vec<Tensor>)> = Vec::new();
    for out in futures_util::future::join_all(pieces).await {
        let out = out?;
        // The request waits for its last piece: that piece's split is its own.
        timing = out.timing;
        if joined.is_empty() {
            joined = out
                .outputs
                .iter()
                .map(|(a, _)| (a.clone(), Vec::new()))
                .collect();
        }
        for ((_, parts), (_, t)) in joined.iter_mut().zip(out.outputs) {
            parts.push(t);
        }
        servable.get_or_insert(out.servable);
    }
    let servable = servable.ok_or_else(|| ServingError::internal("no rows to run"))?;
    let outputs = joined
        .into_iter()
        .map(|(alias, parts)| {
            let refs: Vec<&Tensor> = parts.iter().collect();
            Ok((alias, merge::concat(&refs, 0)?))
        })
        .collect::<Result<_, ServingError>>()?;
    Ok(RunOutput {
        servable,
        outputs,
        timing,
    })
}

/// Drops the queues of versions that left the servable table once they are idle, at
/// every change of the table and every `RETIRE_EVERY`; ends with the batcher.
async fn retire<R: Runner>(
    queues: std::sync::Weak<Mutex<Queues<R>>>,
    servables: Servables,
    runner: R,
) {
    let mut changes = servables.subscribe();
    loop {
        let _ = tokio::time::timeout(RETIRE_EVERY, changes.changed()).await;
        let Some(queues) = queues.upgrade() else {
            return;
        };
        queues
            .lock()
            .retain(|id, q| !runner.is_gone(id) || q.as_ref().is_some_and(|q| !q.is_idle()));
    }
}
