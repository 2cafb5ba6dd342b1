//! Health as load balancers and orchestrators ask for it: readiness (every configured
//! model has a version AVAILABLE on a live worker, and the server is not draining), the
//! gRPC health service that follows it, and the workers' own report. TF Serving has
//! none of this beyond `--enable_grpc_healthcheck_service` (its issues #671, #1754).

use crate::lifecycle::{Lifecycle, Phase};
use crate::servables::Servables;
use crate::workers::WorkerPool;
use serde_json::{json, Value};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The service names gRPC health reports: the server as a whole (`""`) and TF Serving's
/// two services by the names TF Serving registers, plus their full names.
pub const GRPC_SERVICES: [&str; 5] = [
    "",
    "ModelService",
    "PredictionService",
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
];

/// Whether the server should get traffic, and if not, why.
#[derive(Debug, PartialEq, Eq)]
pub struct Readiness {
    pub waiting_for: Vec<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.waiting_for.is_empty()
    }
}

/// What health answers from.
#[derive(Clone)]
pub struct Health {
    pub servables: Servables,
    pub lifecycle: Lifecycle,
    pub pool: WorkerPool,
    /// The configured models.
    pub models: tokio::sync::watch::Receiver<crate::server_core::Models>,
    /// The batch queues' counters, with `--enable_batching`.
    pub batching: Option<std::sync::Arc<crate::batching::Stats>>,
}

impl Health {
    pub fn readiness(&self) -> Readiness {
        let mut waiting_for = Vec::new();
        match self.lifecycle.phase() {
            Phase::Starting => waiting_for.push("the server is starting".to_string()),
            Phase::Draining | Phase::Closed => {
                waiting_for.push("the server is shutting down".to_string())
            }
            Phase::Serving => {}
        }
        for m in self.models.borrow().iter() {
            if !self.servables.is_routable(&m.name) {
                waiting_for.push(format!(
                    "model {}: no version is AVAILABLE on a live worker",
                    m.name
                ));
            }
        }
        Readiness { waiting_for }
    }

    /// `GET /readyz`'s body.
    pub fn readiness_json(&self) -> (bool, Value) {
        let r = self.readiness();
        let ready = r.is_ready();
        (
            ready,
            if ready {
                json!({ "ready": true })
            } else {
                json!({ "ready": false, "waiting_for": r.waiting_for })
            },
        )
    }

    /// `GET /tfgate/workers`: each worker slot and what it serves.
    pub fn workers_json(&self) -> Value {
        let workers: Vec<Value> = self
            .pool
            .report()
            .into_iter()
            .map(|w| {
                let versions: Vec<Value> = self
                    .servables
                    .on_worker(w.id)
                    .into_iter()
                    .map(|(id, state)| {
                        json!({
                            "model": id.name,
                            "version": id.version,
                            "state": crate::status::state_name(state),
                        })
                    })
                    .collect();
                json!({
                    "id": w.id.0,
                    "pid": w.pid,
                    "host": w.host,
                    "generation": w.generation,
                    "device": w.plan.device.to_string(),
                    "cpus": w.plan.cpu_list(),
                    "state": w.state.name(),
                    "restarts": w.restarts,
                    "replacements": w.replacements,
                    "in_flight": w.outstanding,
                    "requests_answered": w.answered,
                    "last_exit": w.last_exit,
                    "versions": versions,
                })
            })
            .collect();
        json!({ "workers": workers })
    }

    /// Sets the pool's gauges for a metrics page about to be rendered.
    pub fn sample_metrics(&self) {
        for w in self.pool.report() {
            crate::monitoring::own_series::worker(&crate::monitoring::own_series::WorkerSample {
                worker: w.id.to_string(),
                state: w.state.name(),
                restarts: w.restarts,
                replacements: w.replacements,
                in_flight: w.outstanding,
                answered: w.answered,
                resident_bytes: w.resident_bytes,
                arena_in_use: w.arena_in_use,
                arena_capacity: w.arena_capacity,
            });
        }
    }

    /// `GET /tfgate/batching`: the batches run so far (404 without `--enable_batching`).
    pub fn batching_json(&self) -> Option<Value> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.batching.as_ref()?;
        let sizes: serde_json::Map<String, Value> = s
            .sizes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.load(Relaxed) > 0)
            .map(|(i, n)| {
                let range = match i {
                    0 => "0".to_string(),
                    1 => "1".to_string(),
                    i if i == s.sizes.len() - 1 => format!("{}+", 1u64 << (i - 1)),
                    i => format!("{}-{}", 1u64 << (i - 1), (1u64 << i) - 1),
                };
                (range, Value::from(n.load(Relaxed)))
            })
            .collect();
        Some(json!({
            "batches": s.batches.load(Relaxed),
            "requests": s.tasks.load(Relaxed),
            "rows": s.rows.load(Relaxed),
            "padding_rows": s.padding_rows.load(Relaxed),
            "batch_sizes": sizes,
        }))
    }

    /// Keeps gRPC health in step with readiness, for as long as the server runs.
    pub async fn drive_grpc_health(self, reporter: HealthReporter) {
        let mut servables = self.servables.subscribe();
        let mut phase = self.lifecycle.subscribe();
        let mut models = self.models.clone();
        let mut last = None;
        loop {
            let status = if self.readiness().is_ready() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if last != Some(status) {
                for service in GRPC_SERVICES {
                    reporter.set_service_status(service, status).await;
                }
                last = Some(status);
            }
            tokio::select! {
                r = servables.changed() => if r.is_err() { return },
                r = phase.changed() => if r.is_err() { return },
                r = models.changed() => if r.is_err() { return },
            }
        }
    }
}
