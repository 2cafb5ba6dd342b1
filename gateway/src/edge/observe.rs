//! What one call records, whatever its API, in one place: TF Serving's request metric
//! (`:tensorflow:serving:request_count` and latency, counted by status, the latency when
//! it succeeded) and runtime latency, and tfgate's split of a request's latency into
//! phases (`:tfgate:request:phase_latency`): the run's phases as the pool measured them,
//! and the response's encoding at the edge.

use crate::error::{Code, ServingError};
use crate::monitoring::own_series::{self, Phase};
use crate::request::Entrypoint;
use crate::servables::ServableId;
use crate::workers::RunTiming;
use tokio::time::Instant;

/// Records a call to `api` of `model` that started at `started` and ended in `result`.
pub fn call<T>(
    model: &str,
    api: &str,
    entrypoint: Entrypoint,
    started: Instant,
    result: Result<T, ServingError>,
) -> Result<T, ServingError> {
    let code = result.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
    let micros = started.elapsed().as_micros() as u64;
    crate::monitoring::series::request(model, api, entrypoint, code, micros);
    result
}

/// Records a run of `servable`'s `signature` that took `micros` in all: its phases
/// (`queue` only when it went through a batch queue) and, for a run made for `api`, TF
/// Serving's runtime latency (MultiInference's runs have none, as in TF Serving).
pub fn run(
    servable: &ServableId,
    signature: &str,
    timing: &RunTiming,
    batched: bool,
    api: Option<&str>,
    micros: u64,
) {
    let phases = [
        (Phase::Queue, timing.queue_us),
        (Phase::BatchFormation, timing.formation_us),
        (Phase::Transfer, timing.transfer_us),
        (Phase::Worker, timing.worker_us),
        (Phase::SessionRun, timing.run_us),
    ];
    let from = usize::from(!batched);
    own_series::phases(&servable.name, servable.version, signature, &phases[from..]);
    if let Some(api) = api {
        crate::monitoring::series::runtime(&servable.name, api, micros);
    }
}

/// Records how long encoding the answer of `servable`'s `signature` took at the edge.
pub fn encoding(servable: &ServableId, signature: &str, micros: u64) {
    own_series::phases(
        &servable.name,
        servable.version,
        signature,
        &[(Phase::ResponseEncoding, micros)],
    );
}
