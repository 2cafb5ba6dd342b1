//! Running one batch: its requests' inputs merged (padded as the parameters say), one run
//! on the pool, and each request answered with its own rows of the outputs. A batch of one
//! request that needs no padding runs as it is, with no copy.

use super::merge::{concat, max_dims, pad_to, padded_size, split};
use super::queue::{Answer, Batch, Task};
use super::runner::Runner;
use crate::error::ServingError;
use crate::monitoring::series;
use crate::validation::ValidRun;
use crate::workers::RunOutput;
use tfgate_tensor::tensor::Tensor;
use tokio::time::Instant;

/// Counts a batch of `tasks` requests in the statistics and TF Serving's batch-size series.
fn record<R: Runner>(batch: &Batch<R>, tasks: usize, rows: usize, padded: usize) {
    batch.queue.stats().record(tasks, rows, padded);
    series::batch(rows, padded);
}

/// Runs a request that is a batch of its own, in its caller's task.
pub async fn execute_alone<R: Runner>(mut batch: Batch<R>) -> Answer {
    batch.started();
    let Some(task) = batch.tasks.pop() else {
        return Err(ServingError::internal("an empty batch"));
    };
    record(&batch, 1, task.rows, task.rows);
    let runner = batch.queue.runner.clone();
    let out = runner.run(task.run).await;
    drop(batch); // the next batch may form
    out
}

/// Runs a formed batch in a task of its own, answering each request: what a queue does
/// with the batches it forms.
pub fn start<R: Runner>(batch: Batch<R>) {
    tokio::spawn(execute(batch));
}

/// Runs a formed batch and answers each of its requests.
async fn execute<R: Runner>(mut batch: Batch<R>) {
    batch.started();
    let formed = Instant::now();
    let tasks = std::mem::take(&mut batch.tasks);
    let sizes: Vec<usize> = tasks.iter().map(|t| t.rows).collect();
    let rows: usize = sizes.iter().sum();
    let params = &batch.queue.params;
    let padded = padded_size(rows, &params.allowed_batch_sizes);
    record(&batch, tasks.len(), rows, padded);
    let runner = batch.queue.runner.clone();
    if tasks.len() == 1 && padded == rows {
        for t in tasks {
            let out = runner.run(t.run).await.map(|mut out| {
                out.timing.queue_us = t.queue_us;
                out
            });
            let _ = t.reply.send(out);
        }
        return;
    }
    let merged = merge(&tasks, padded - rows, params.pad_variable_length_inputs);
    let merge_us = formed.elapsed().as_micros() as u64;
    let outcome = match merged {
        Ok(run) => runner.run(run).await,
        Err(e) => Err(e),
    };
    drop(batch); // the next batch may form while the answers go out
    answer(tasks, &sizes, padded, outcome, merge_us);
}

/// Splits the batch's outputs back into each request's rows and answers it.
fn answer(tasks: Vec<Task>, sizes: &[usize], padded: usize, outcome: Answer, merge_us: u64) {
    let split_up = outcome.and_then(|out| {
        let mut per_task: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); tasks.len()];
        for (alias, t) in &out.outputs {
            for (i, part) in split(t, sizes, padded)?.into_iter().enumerate() {
                per_task[i].push((alias.clone(), part));
            }
        }
        Ok((out.servable, out.timing, per_task))
    });
    match split_up {
        Ok((servable, timing, per_task)) => {
            // Each request's own queue wait; forming the batch (merging its inputs, then
            // the frame) is shared.
            for (task, outputs) in tasks.into_iter().zip(per_task) {
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
            for task in tasks {
                let _ = task.reply.send(Err(e.clone()));
            }
        }
    }
}

/// One run holding every request's inputs, concatenated by alias (each padded to the
/// batch's largest dimensions first with `pad_inputs`), plus `pad` rows.
fn merge(tasks: &[Task], pad: usize, pad_inputs: bool) -> Result<ValidRun, ServingError> {
    let like = &tasks[0].run;
    let dims = pad_inputs.then(|| max_dims(tasks.iter().map(|t| &t.run)));
    let mut inputs = Vec::with_capacity(like.inputs().len());
    for (i, (alias, _)) in like.inputs().iter().enumerate() {
        let mut padded_parts = Vec::new();
        let mut parts: Vec<&Tensor> = Vec::with_capacity(tasks.len());
        for t in tasks {
            let (a, tensor) = t.run.inputs().get(i).ok_or_else(|| {
                ServingError::internal("One or more tasks does not conform to batch signature")
            })?;
            if a != alias {
                return Err(ServingError::internal(
                    "One or more tasks does not conform to batch signature",
                ));
            }
            match &dims {
                Some(d) => padded_parts.push(pad_to(tensor, &d[i])?),
                None => parts.push(tensor),
            }
        }
        if dims.is_some() {
            parts = padded_parts.iter().collect();
        }
        inputs.push((alias.clone(), concat(&parts, pad)?));
    }
    let deadline = tasks
        .iter()
        .map(|t| t.run.deadline())
        .max()
        .unwrap_or_else(Instant::now);
    Ok(ValidRun::batched(like, inputs, deadline))
}
