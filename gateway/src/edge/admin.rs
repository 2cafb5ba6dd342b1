//! tfgate's own endpoints, outside TF Serving's `/v1/`: liveness (`/healthz`), readiness
//! (`/readyz`) and the worker pool (`/tfgate/workers`), all JSON.

use crate::health::Health;
use hyper::Method;
use serde_json::{json, Value};

/// Answers `method path` if it is one of tfgate's own endpoints: (status, JSON body).
pub fn handle(health: &Health, method: &Method, path: &str) -> Option<(u16, Value)> {
    if method != Method::GET {
        return None;
    }
    match path {
        // The gateway answers: it is alive, whatever its workers are doing.
        "/healthz" => Some((200, json!({ "alive": true }))),
        "/readyz" => {
            let (ready, body) = health.readiness_json();
            Some((if ready { 200 } else { 503 }, body))
        }
        "/tfgate/workers" => Some((200, health.workers_json())),
        "/tfgate/batching" => Some(match health.batching_json() {
            Some(stats) => (200, stats),
            None => (
                404,
                json!({ "error": "batching is off (--enable_batching)" }),
            ),
        }),
        _ => None,
    }
}
