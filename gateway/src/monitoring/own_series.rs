//! tfgate's own series (prefix `:tfgate:`): the worker pool, which TF Serving has no
//! word for. Gauges are sampled when the page is rendered; the recovery histogram is
//! recorded when a restarted worker serves again.

use super::handles::histogram_set;
use super::series::exponential;

const WORKER_STATE: &str = ":tfgate:worker:state";
const WORKER_RESTARTS: &str = ":tfgate:worker:restarts";
const WORKER_REPLACEMENTS: &str = ":tfgate:worker:replacements";
const WORKER_IN_FLIGHT: &str = ":tfgate:worker:requests_in_flight";
const WORKER_ANSWERED: &str = ":tfgate:worker:requests_answered";
const WORKER_RSS: &str = ":tfgate:worker:resident_bytes";
const ARENA_IN_USE: &str = ":tfgate:worker:request_arena_bytes_in_use";
const ARENA_SIZE: &str = ":tfgate:worker:request_arena_bytes";
const WORKER_RECOVERY: &str = ":tfgate:worker:recovery_latency";
const REQUEST_PHASE: &str = ":tfgate:request:phase_latency";
const REQUEST_LOG_DROPPED: &str = ":tfgate:request_log:dropped";

/// The states a worker slot can be in (`/tfgate/workers`' `state`).
pub const SLOT_STATES: [&str; 5] = ["starting", "loading", "serving", "restarting", "stopped"];

/// Every histogram here with its buckets (µs, TF Serving's latency buckets).
pub fn histograms() -> Vec<(&'static str, Vec<f64>)> {
    vec![
        (WORKER_RECOVERY, exponential(10.0, 1.8, 33)),
        (REQUEST_PHASE, exponential(1.0, 1.8, 33)),
    ]
}

/// One worker slot as sampled now.
pub struct WorkerSample<'a> {
    pub worker: String,
    pub state: &'a str,
    pub restarts: u64,
    pub replacements: u64,
    pub in_flight: usize,
    pub answered: u64,
    /// Its process's resident set (0 when there is no process).
    pub resident_bytes: u64,
    /// Bytes requests hold in its shared-memory request arena, and the arena's size.
    pub arena_in_use: u64,
    pub arena_capacity: u64,
}

/// Sets the pool's gauges: per worker, 1 for its state and 0 for the others, its
/// restarts and replacements so far, requests in flight and answered, its memory, and
/// how full its request arena is.
pub fn worker(s: &WorkerSample<'_>) {
    for state in SLOT_STATES {
        metrics::gauge!(WORKER_STATE, "worker" => s.worker.clone(), "state" => state)
            .set(if state == s.state { 1.0 } else { 0.0 });
    }
    metrics::counter!(WORKER_RESTARTS, "worker" => s.worker.clone()).absolute(s.restarts);
    metrics::counter!(WORKER_REPLACEMENTS, "worker" => s.worker.clone()).absolute(s.replacements);
    metrics::gauge!(WORKER_IN_FLIGHT, "worker" => s.worker.clone()).set(s.in_flight as f64);
    metrics::counter!(WORKER_ANSWERED, "worker" => s.worker.clone()).absolute(s.answered);
    metrics::gauge!(WORKER_RSS, "worker" => s.worker.clone()).set(s.resident_bytes as f64);
    metrics::gauge!(ARENA_IN_USE, "worker" => s.worker.clone()).set(s.arena_in_use as f64);
    metrics::gauge!(ARENA_SIZE, "worker" => s.worker.clone()).set(s.arena_capacity as f64);
}

/// A restarted worker serves again, this long after its predecessor was lost (µs).
pub fn recovered(worker: String, micros: u64) {
    metrics::histogram!(WORKER_RECOVERY, "worker" => worker).record(micros as f64);
}

/// The phases of a request's latency split, in the order `PHASES` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Queue,
    BatchFormation,
    Transfer,
    Worker,
    SessionRun,
    ResponseEncoding,
}

/// The `phase` label of each [`Phase`].
const PHASES: [&str; 6] = [
    "queue",
    "batch_formation",
    "transfer",
    "worker",
    "session_run",
    "response_encoding",
];

/// Time one request spent in some of its phases (µs), by model, version and signature,
/// with one lookup of the version's histograms. The phases: `queue` (a batch queue;
/// with batching only), `batch_formation` (the batch and its frame, up to the push into
/// the request ring), `transfer` (shared memory, both ways, wake-ups included), `worker`
/// (the worker's frame handling around the run), `session_run`, and `response_encoding`
/// (at the REST or gRPC edge). `edge::observe` records them.
pub fn phases(model_name: &str, version: i64, signature: &str, values: &[(Phase, u64)]) {
    let mut buf = itoa::Buffer::new();
    let version = buf.format(version);
    let labels = [
        ("model_name", model_name),
        ("version", version),
        ("signature", signature),
    ];
    let set = histogram_set(REQUEST_PHASE, &labels, "phase", &PHASES);
    for &(phase, micros) in values {
        set[phase as usize].record(micros as f64);
    }
}

/// A sampled request not logged because the log writer was behind.
pub fn request_log_dropped(model_name: &str) {
    metrics::counter!(REQUEST_LOG_DROPPED, "model_name" => model_name.to_string()).increment(1);
}
