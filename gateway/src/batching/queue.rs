//! One servable's batch queue, an actor: a task owns the queued requests; requests come
//! in as commands with a oneshot for the answer; batches go to the pool as one run each.
//!
//! Scheduling needs no tuning: while fewer batches are in flight than there are workers
//! holding the version, what is queued runs at once (a lone request is a batch of one);
//! while every such worker is busy, requests gather, and the next batch takes all of them,
//! up to the largest batch. With `batch_timeout_micros` set, an under-full batch also
//! waits until its oldest request is that old, as TF Serving's scheduler does.

use super::merge::{concat, padded_size, shape_key, split};
use super::params::Parameters;
use super::Stats;
use crate::error::ServingError;
use crate::monitoring::series;
use crate::servables::{Routes, ServableId, Servables};
use crate::validation::ValidRun;
use crate::workers::{RunOutput, WorkerPool};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tfgate_tensor::tensor::{DataType, Tensor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A request waiting for its batch.
pub struct Task {
    pub run: ValidRun,
    pub rows: usize,
    pub reply: oneshot::Sender<Result<RunOutput, ServingError>>,
    pub enqueued: Instant,
    /// How long it waited in the queue, µs (set when its batch takes it).
    pub queue_us: u64,
}

pub enum Command {
    Submit(Task),
    /// A batch finished.
    Done,
}

/// Requests that may share a batch: same signature, output filter, and input dtypes and
/// non-batch dimensions.
type GroupKey = (String, Vec<String>, Vec<(String, DataType, Vec<i64>)>);

struct Group {
    tasks: VecDeque<Task>,
    rows: usize,
}

/// The actor's state.
pub struct Queue {
    pub servable: ServableId,
    pub params: Parameters,
    pub pool: WorkerPool,
    pub servables: Servables,
    pub stats: Arc<Stats>,
    pub commands: mpsc::Receiver<Command>,
    pub done: mpsc::Sender<Command>,
}

impl Queue {
    pub async fn run(mut self) {
        let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
        let mut in_flight = 0usize;
        let mut next_timer: Option<Instant> = None;
        loop {
            let command = match next_timer {
                Some(at) => tokio::select! {
                    c = self.commands.recv() => Some(c),
                    _ = tokio::time::sleep_until(at) => None,
                },
                None => Some(self.commands.recv().await),
            };
            match command {
                Some(Some(Command::Submit(task))) => self.enqueue(&mut groups, task),
                Some(Some(Command::Done)) => in_flight = in_flight.saturating_sub(1),
                Some(None) => return, // the batcher is gone
                None => {}            // a batch's timeout is up
            }
            next_timer = self.dispatch(&mut groups, &mut in_flight);
        }
    }

    /// Queues a task, or refuses it at once when its group's queue is full.
    fn enqueue(&self, groups: &mut BTreeMap<GroupKey, Group>, task: Task) {
        let key = (
            task.run.signature_key().to_string(),
            task.run.output_filter().to_vec(),
            shape_key(task.run.inputs()),
        );
        let group = groups.entry(key).or_insert_with(|| Group {
            tasks: VecDeque::new(),
            rows: 0,
        });
        // TensorFlow's rule: a request that fits the open batch is taken; one that needs
        // a new batch is refused when max_enqueued_batches are queued already.
        let per_batch = self.params.max_execution_batch_size.max(1);
        let batches = group.rows.div_ceil(per_batch).max(1);
        let needed = (group.rows + task.rows).div_ceil(per_batch);
        if needed > self.params.max_enqueued_batches {
            let _ = task.reply.send(Err(ServingError::unavailable(format!(
                "The batch scheduling queue to which this task was submitted is full; currently {batches} batches enqueued and max_enqueued_batches is {}",
                self.params.max_enqueued_batches
            ))));
            return;
        }
        group.rows += task.rows;
        group.tasks.push_back(task);
    }

    /// How many batches may run at once: one per worker holding the version.
    fn capacity(&self) -> usize {
        match self.servables.routes(&self.servable) {
            Routes::To(workers) => workers.len().max(1),
            _ => 1,
        }
    }

    /// Starts every batch that may run now; returns when to look again for a batch that
    /// is waiting out `batch_timeout_micros`.
    fn dispatch(
        &self,
        groups: &mut BTreeMap<GroupKey, Group>,
        in_flight: &mut usize,
    ) -> Option<Instant> {
        let now = Instant::now();
        let mut wake = None;
        let capacity = self.capacity();
        let limit = self.params.max_execution_batch_size.max(1);
        // Longest-waiting group first.
        let mut order: Vec<(Instant, GroupKey)> = groups
            .iter()
            .filter_map(|(k, g)| g.tasks.front().map(|t| (t.enqueued, k.clone())))
            .collect();
        order.sort_by_key(|(t, _)| *t);
        for (oldest, key) in order {
            let Some(group) = groups.get_mut(&key) else {
                continue;
            };
            while *in_flight < capacity && !group.tasks.is_empty() {
                let due = oldest + self.params.batch_timeout;
                if group.rows < limit && now < due {
                    wake = Some(wake.map_or(due, |w: Instant| w.min(due)));
                    break;
                }
                let mut batch = Vec::new();
                let mut rows = 0;
                while let Some(t) = group.tasks.front() {
                    if !batch.is_empty() && rows + t.rows > limit {
                        break;
                    }
                    let Some(mut t) = group.tasks.pop_front() else {
                        break;
                    };
                    group.rows -= t.rows;
                    if t.run.deadline() <= now || t.reply.is_closed() {
                        // Its caller has stopped waiting: not run.
                        let _ = t.reply.send(Err(ServingError::deadline_exceeded()));
                        continue;
                    }
                    rows += t.rows;
                    t.queue_us = now.saturating_duration_since(t.enqueued).as_micros() as u64;
                    series::queuing(&self.params.thread_pool_name, t.queue_us);
                    batch.push(t);
                }
                if batch.is_empty() {
                    continue;
                }
                *in_flight += 1;
                tokio::spawn(execute(
                    batch,
                    self.params.allowed_batch_sizes.clone(),
                    self.pool.clone(),
                    self.stats.clone(),
                    self.done.clone(),
                ));
            }
            if *in_flight >= capacity {
                break;
            }
        }
        groups.retain(|_, g| !g.tasks.is_empty());
        wake
    }
}

/// Runs one batch and answers each of its requests with its own rows.
async fn execute(
    batch: Vec<Task>,
    allowed: Vec<usize>,
    pool: WorkerPool,
    stats: Arc<Stats>,
    done: mpsc::Sender<Command>,
) {
    let formed = Instant::now();
    let sizes: Vec<usize> = batch.iter().map(|t| t.rows).collect();
    let rows: usize = sizes.iter().sum();
    let padded = padded_size(rows, &allowed);
    stats.record(batch.len(), rows, padded);
    series::batch(rows, padded);
    if batch.len() == 1 && padded == rows {
        // A batch of one runs as it is: no copy.
        for t in batch {
            let out = pool.run(t.run).await.map(|mut out| {
                out.timing.queue_us = t.queue_us;
                out
            });
            let _ = t.reply.send(out);
        }
        let _ = done.send(Command::Done).await;
        return;
    }
    let batch_run = merged(&batch, padded - rows);
    let merge_us = formed.elapsed().as_micros() as u64;
    let outcome = match batch_run {
        Ok(run) => pool.run(run).await,
        Err(e) => Err(e),
    };
    match outcome.and_then(|out| {
        let mut per_task: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); batch.len()];
        for (alias, t) in &out.outputs {
            for (i, part) in split(t, &sizes, padded)?.into_iter().enumerate() {
                per_task[i].push((alias.clone(), part));
            }
        }
        Ok((out.servable, out.timing, per_task))
    }) {
        Ok((servable, timing, per_task)) => {
            // Each request's own queue wait; forming the batch (merging its inputs, then
            // the frame) is shared.
            for (task, outputs) in batch.into_iter().zip(per_task) {
                let mut timing = timing;
                timing.queue_us = task.queue_us;
                timing.formation_us += merge_us;
                let _ = task.reply.send(Ok(RunOutput {
                    servable: servable.clone(),
                    outputs,
                    timing,
                }));
            }
        }
        Err(e) => {
            for task in batch {
                let _ = task.reply.send(Err(e.clone()));
            }
        }
    }
    let _ = done.send(Command::Done).await;
}

/// One run holding every task's inputs, concatenated by alias, padded with `pad` rows.
fn merged(batch: &[Task], pad: usize) -> Result<ValidRun, ServingError> {
    let like = &batch[0].run;
    let mut inputs = Vec::with_capacity(like.inputs().len());
    for (alias, _) in like.inputs() {
        let parts: Vec<&Tensor> = batch
            .iter()
            .map(|t| {
                t.run
                    .inputs()
                    .iter()
                    .find(|(a, _)| a == alias)
                    .map(|(_, t)| t)
                    .ok_or_else(|| {
                        ServingError::internal(
                            "One or more tasks does not conform to batch signature",
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        inputs.push((alias.clone(), concat(&parts, pad)?));
    }
    let deadline = batch
        .iter()
        .map(|t| t.run.deadline())
        .max()
        .unwrap_or_else(Instant::now);
    Ok(ValidRun::batched(like, inputs, deadline))
}
