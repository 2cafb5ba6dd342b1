//! Server-side batching (`--enable_batching`): requests for the same servable and
//! signature are gathered in the gateway and run as one TensorFlow run — TF Serving's
//! BatchingSession, placed before the workers so that a batch can go to any worker that
//! holds the version. `params.rs` holds the settings, `queue.rs` the per-servable actor,
//! `merge.rs` the tensor work.

mod merge;
mod params;
mod queue;

pub use params::{Parameters, PER_MODEL_FILE};

use crate::error::ServingError;
use crate::servables::{ServableId, Servables};
use crate::validation::ValidRun;
use crate::workers::{RunOutput, WorkerPool};
use parking_lot::Mutex;
use queue::{Command, Queue, Task};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tfgate_tensor::tensor::Tensor;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A request's answer, or DEADLINE_EXCEEDED once its deadline passes.
async fn wait(
    answer: oneshot::Receiver<Result<RunOutput, ServingError>>,
    deadline: Instant,
) -> Result<RunOutput, ServingError> {
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ServingError::unavailable("the batch queue has stopped")),
        Err(_) => Err(ServingError::deadline_exceeded()),
    }
}

/// Commands a queue may hold before senders are refused (its requests are bounded by
/// `max_enqueued_batches`; this bounds the channel in front of it).
const COMMAND_QUEUE: usize = 65_536;

/// Which servables batch, and how.
#[derive(Clone, Debug)]
pub struct BatchingConfig {
    /// `--batching_parameters_file` (or TF Serving's defaults).
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

/// Handle to every servable's queue.
#[derive(Clone)]
pub struct Batcher {
    config: Arc<BatchingConfig>,
    pool: WorkerPool,
    servables: Servables,
    queues: Arc<Mutex<HashMap<ServableId, mpsc::Sender<Command>>>>,
    pub stats: Arc<Stats>,
}

impl Batcher {
    pub fn new(config: BatchingConfig, pool: WorkerPool, servables: Servables) -> Batcher {
        Batcher {
            config: Arc::new(config),
            pool,
            servables,
            queues: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The parameters a servable batches with; `None`: it does not batch.
    fn params(&self, servable: &ServableId) -> Result<Option<Parameters>, ServingError> {
        if !self.config.per_model {
            return Ok(Some(self.config.global.clone()));
        }
        match self.servables.batching_params(servable) {
            None => Ok(None),
            Some(text) => Parameters::parse(&text, PER_MODEL_FILE).map(Some),
        }
    }

    /// Runs `run` as part of a batch (or alone, when its servable does not batch).
    pub async fn run(&self, run: ValidRun) -> Result<RunOutput, ServingError> {
        let Some(params) = self.params(run.servable())? else {
            return self.pool.run(run).await;
        };
        let rows = merge::task_rows(run.inputs())?;
        if rows > params.max_batch_size {
            return Err(ServingError::invalid_argument(format!(
                "Task size {rows} is larger than maximum input batch size {}",
                params.max_batch_size
            )));
        }
        if params.split && rows > params.max_execution_batch_size {
            return self.run_split(run, rows, &params).await;
        }
        self.submit(run, rows, &params).await
    }

    /// A request larger than the largest batch runs in pieces (queued together), whose
    /// outputs are joined in order.
    async fn run_split(
        &self,
        run: ValidRun,
        rows: usize,
        params: &Parameters,
    ) -> Result<RunOutput, ServingError> {
        let chunk = params.max_execution_batch_size.max(1);
        let deadline = run.deadline();
        let mut answers = Vec::new();
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
            answers.push(self.enqueue(ValidRun::batched(&run, inputs, deadline), n, params)?);
            start += n;
        }
        let mut servable = None;
        let mut timing = Default::default();
        let mut joined: Vec<(String, Vec<Tensor>)> = Vec::new();
        for answer in answers {
            let out = wait(answer, deadline).await?;
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

    /// Queues one request and waits for its share of a batch, until its deadline.
    async fn submit(
        &self,
        run: ValidRun,
        rows: usize,
        params: &Parameters,
    ) -> Result<RunOutput, ServingError> {
        let deadline = run.deadline();
        wait(self.enqueue(run, rows, params)?, deadline).await
    }

    /// Hands a request to its queue; the receiver gets its answer.
    fn enqueue(
        &self,
        run: ValidRun,
        rows: usize,
        params: &Parameters,
    ) -> Result<oneshot::Receiver<Result<RunOutput, ServingError>>, ServingError> {
        let (reply, answer) = oneshot::channel();
        let task = Task {
            run,
            rows,
            reply,
            enqueued: Instant::now(),
            queue_us: 0,
        };
        let queue = self.queue(task.run.servable(), params);
        if let Err(e) = queue.try_send(Command::Submit(task)) {
            let refused = match e {
                mpsc::error::TrySendError::Full(_) => {
                    "The batch scheduling queue to which this task was submitted is full"
                }
                mpsc::error::TrySendError::Closed(_) => "the batch queue has stopped",
            };
            return Err(ServingError::unavailable(refused));
        }
        Ok(answer)
    }

    /// The servable's queue, started on first use.
    fn queue(&self, servable: &ServableId, params: &Parameters) -> mpsc::Sender<Command> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(servable).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        tokio::spawn(
            Queue {
                servable: servable.clone(),
                params: params.clone(),
                pool: self.pool.clone(),
                servables: self.servables.clone(),
                stats: self.stats.clone(),
                commands: rx,
                done: tx.clone(),
            }
            .run(),
        );
        queues.insert(servable.clone(), tx.clone());
        tx
    }
}
