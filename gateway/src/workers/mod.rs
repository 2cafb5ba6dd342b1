//! The worker pool: one supervised `tfgate-worker` per slot, and dispatch of validated
//! requests to a live one. A request whose worker dies before answering is sent again
//! to the next incarnation, so a crash costs latency, not the request.

mod incarnation;
mod supervisor;

pub use incarnation::{CallError, Incarnation};
pub use supervisor::SupervisorConfig;

use crate::error::ServingError;
use shm_protocol::frame::{RequestFrame, ResponseFrame};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Attempts per request across worker deaths.
const MAX_ATTEMPTS: usize = 3;

/// Handle to the supervised workers.
#[derive(Clone)]
pub struct WorkerPool {
    slots: Arc<Vec<watch::Receiver<Option<Arc<Incarnation>>>>>,
}

impl WorkerPool {
    /// Starts one supervisor per config. The receiver turns `Some(reason)` if a slot's
    /// workers keep dying before they ever serve (startup must then fail).
    pub fn start(configs: Vec<SupervisorConfig>) -> (WorkerPool, watch::Receiver<Option<String>>) {
        let (failed_tx, failed_rx) = watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        let mut slots = Vec::new();
        for cfg in configs {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(supervisor::supervise(cfg, tx, failed_tx.clone()));
            slots.push(rx);
        }
        let pool = WorkerPool {
            slots: Arc::new(slots),
        };
        (pool, failed_rx)
    }

    /// A live incarnation, waiting (until `deadline`) while workers restart.
    async fn live(&self, deadline: tokio::time::Instant) -> Result<Arc<Incarnation>, ServingError> {
        // One slot today; more slots arrive with multi-worker scaling.
        let mut rx = self
            .slots
            .first()
            .cloned()
            .ok_or_else(|| ServingError::unavailable("no workers configured"))?;
        let wait = async {
            rx.wait_for(|inc| inc.as_ref().is_some_and(|i| i.is_alive()))
                .await
                .map(|inc| inc.clone())
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(inc)) => inc.ok_or_else(|| ServingError::unavailable("worker unavailable")),
            Ok(Err(_)) => Err(ServingError::unavailable("worker supervisor stopped")),
            Err(_) => Err(ServingError::new(
                tonic::Code::DeadlineExceeded,
                "Deadline Exceeded",
            )),
        }
    }

    /// Sends a request to a live worker and waits for the response.
    pub async fn dispatch(
        &self,
        frame: &RequestFrame,
        timeout: Duration,
    ) -> Result<ResponseFrame, ServingError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let inc = self.live(deadline).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match inc.call(frame, left).await {
                Ok(resp) => return Ok(resp),
                Err(CallError::WorkerDied) => {
                    tracing::warn!(
                        generation = inc.generation,
                        "worker died with a request in flight; retrying"
                    );
                    last = Some(CallError::WorkerDied);
                }
                Err(CallError::TooLarge(msg)) => return Err(ServingError::resource_exhausted(msg)),
                Err(CallError::BadResponse(e)) => {
                    return Err(ServingError::internal(format!(
                        "malformed response from worker: {e}"
                    )))
                }
                Err(CallError::DeadlineExceeded) => {
                    return Err(ServingError::new(
                        tonic::Code::DeadlineExceeded,
                        "Deadline Exceeded",
                    ))
                }
            }
        }
        tracing::error!("giving up after {MAX_ATTEMPTS} attempts: {last:?}");
        Err(ServingError::unavailable(
            "the worker serving this model crashed repeatedly while running this request",
        ))
    }
}
