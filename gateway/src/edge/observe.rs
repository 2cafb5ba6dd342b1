//! The request metric, recorded once per call whatever its API: TF Serving's
//! `:tensorflow:serving:request_count` and latency (`monitoring::series::request`),
//! counted by status, the latency when it succeeded.

use crate::error::{Code, ServingError};
use crate::request::Entrypoint;
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
