//! TF Serving's series, named, labelled and bucketed as its source has them:
//! `servables/tensorflow/util.cc` (requests), `batching/batching_session.cc` and
//! `batching_util.h` (the batching session), `saved_model_warmup_util.cc` (warmup), and
//! TensorFlow's `cc/saved_model/loader.cc` (loads). Recorded where TF Serving records
//! them: request count and latency at the REST and gRPC edges (latency for successes
//! only), runtime around the run, example counts by MultiInference.

use super::handles::{counter, histogram};
use crate::error::Code;
use crate::request::Entrypoint;

const REQUEST_COUNT: &str = ":tensorflow:serving:request_count";
const REQUEST_LATENCY: &str = ":tensorflow:serving:request_latency";
const RUNTIME_LATENCY: &str = ":tensorflow:serving:runtime_latency";
const EXAMPLE_COUNTS: &str = ":tensorflow:serving:request_example_counts";
const EXAMPLE_COUNT_TOTAL: &str = ":tensorflow:serving:request_example_count_total";
const QUEUING_LATENCY: &str = ":tensorflow:serving:batching_session:queuing_latency";
const WRAPPED_RUN_COUNT: &str = ":tensorflow:serving:batching_session:wrapped_run_count";
const INPUT_BATCH_SIZE: &str = ":tensorflow:serving:batching_session:input_batch_size";
const PROCESSED_BATCH_SIZE: &str = ":tensorflow:serving:batching_session:processed_batch_size";
const PADDING_SIZE: &str = ":tensorflow:serving:batching_session:padding_size";
const WARMUP_LATENCY: &str = ":tensorflow:serving:model_warmup_latency";
const WARMUP_RECORDS_READ: &str = ":tensorflow:serving:model_warmup_records_read";
const LOAD_ATTEMPT_COUNT: &str = ":tensorflow:cc:saved_model:load_attempt_count";
const LOAD_LATENCY: &str = ":tensorflow:cc:saved_model:load_latency";

/// TensorFlow's `Buckets::Exponential(scale, growth, count)`: `count` upper limits
/// `scale · growthⁱ` (an implicit last one is `+Inf`), written with the six significant
/// digits TF Serving's exporter prints (`58.32`, not `58.32000000000001`).
pub fn exponential(scale: f64, growth: f64, count: usize) -> Vec<f64> {
    let mut limits = Vec::with_capacity(count);
    let mut bound = scale;
    for _ in 0..count {
        limits.push(format!("{bound:.5e}").parse().unwrap_or(bound));
        bound *= growth;
    }
    limits
}

/// Every histogram here with its buckets, by Prometheus name.
pub fn histograms() -> Vec<(&'static str, Vec<f64>)> {
    let latency = exponential(10.0, 1.8, 33);
    let batch = exponential(1.0, 2.0, 14);
    vec![
        (REQUEST_LATENCY, latency.clone()),
        (RUNTIME_LATENCY, latency.clone()),
        (WARMUP_LATENCY, latency),
        (EXAMPLE_COUNTS, exponential(1.0, 2.0, 15)),
        (QUEUING_LATENCY, exponential(100.0, 1.2, 52)),
        (INPUT_BATCH_SIZE, batch.clone()),
        (PROCESSED_BATCH_SIZE, batch.clone()),
        (PADDING_SIZE, batch),
    ]
}

/// The `entrypoint` label.
fn entrypoint_label(entrypoint: Entrypoint) -> &'static str {
    match entrypoint {
        Entrypoint::Rest => "REST",
        Entrypoint::Grpc => "GRPC",
    }
}

/// One request answered at an edge: counted by its status (`RecordModelRequestCount`),
/// and its latency recorded when it succeeded (`RecordRequestLatency`). `api` is what
/// TF Serving names it: `predict`/`classify`/`regress` (empty for status and metadata)
/// over REST, `Predict`/`Classify`/`Regress` over gRPC.
pub fn request(model_name: &str, api: &str, entrypoint: Entrypoint, code: Code, micros: u64) {
    counter(
        REQUEST_COUNT,
        &[("model_name", model_name), ("status", code.name())],
    )
    .increment(1);
    if code == Code::Ok {
        let labels = [
            ("model_name", model_name),
            ("API", api),
            ("entrypoint", entrypoint_label(entrypoint)),
        ];
        histogram(REQUEST_LATENCY, &labels).record(micros as f64);
    }
}

/// A run's wall time as the predictor saw it (`RecordRuntimeLatency`; with batching it
/// includes the queue, as TF Serving's BatchingSession::Run does). tfgate's runtime is a
/// TF1 session.
pub fn runtime(model_name: &str, api: &str, micros: u64) {
    let labels = [("model_name", model_name), ("API", api), ("runtime", "TF1")];
    histogram(RUNTIME_LATENCY, &labels).record(micros as f64);
}

/// Examples a MultiInference request carried (`RecordRequestExampleCount`).
pub fn examples(model_name: &str, n: usize) {
    histogram(EXAMPLE_COUNTS, &[("model", model_name)]).record(n as f64);
    counter(EXAMPLE_COUNT_TOTAL, &[("model", model_name)]).increment(n as u64);
}

/// One task's wait in a batch queue, enqueue to dequeue.
pub fn queuing(thread_pool_name: &str, micros: u64) {
    histogram(QUEUING_LATENCY, &[("thread_pool_name", thread_pool_name)]).record(micros as f64);
}

/// One batch run: its rows before padding, after padding, and the padding.
pub fn batch(input_rows: usize, padded_rows: usize) {
    counter(WRAPPED_RUN_COUNT, &[]).increment(1);
    histogram(INPUT_BATCH_SIZE, &[]).record(input_rows as f64);
    histogram(PROCESSED_BATCH_SIZE, &[]).record(padded_rows as f64);
    let mut buf = itoa::Buffer::new();
    let size = buf.format(padded_rows);
    histogram(PADDING_SIZE, &[("execution_batch_size", size)])
        .record(padded_rows.saturating_sub(input_rows) as f64);
}

/// One load attempt of the SavedModel at `model_path` (a version directory): counted by
/// outcome, and its time added up when it succeeded.
pub fn load_attempt(model_path: &str, success: bool, micros: u64) {
    let status = if success { "success" } else { "fail" };
    counter(
        LOAD_ATTEMPT_COUNT,
        &[("model_path", model_path), ("status", status)],
    )
    .increment(1);
    if success {
        counter(LOAD_LATENCY, &[("model_path", model_path)]).increment(micros);
    }
}

/// One warmup of the SavedModel at `model_path`: its time and the records it read,
/// labelled with its status as TF prints one (`OK`, or `CODE: message`).
pub fn warmup(model_path: &str, status: &str, micros: u64, records: u64) {
    let labels = [("model_path", model_path), ("status", status)];
    histogram(WARMUP_LATENCY, &labels).record(micros as f64);
    counter(WARMUP_RECORDS_READ, &labels).increment(records);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_as_tensorflow_computes_them() {
        let latency = exponential(10.0, 1.8, 33);
        assert_eq!(latency.len(), 33);
        assert_eq!(&latency[..5], &[10.0, 18.0, 32.4, 58.32, 104.976]);
        assert_eq!(latency[32], 1.47476e9);
        assert_eq!(
            exponential(1.0, 2.0, 14).last().map(|b| b.to_string()),
            Some("8192".into())
        );
    }
}
