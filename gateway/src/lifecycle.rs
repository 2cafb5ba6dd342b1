//! The server's phase — starting, serving, draining, closed — and the inference requests
//! in flight. Readiness and gRPC health follow the phase; on SIGTERM the gateway drains:
//! it reports not-ready at once, closes its listeners after `--drain_delay_ms`, and waits
//! (at most `--drain_timeout_ms`) for the requests its connections already received to
//! be answered. What is new is refused by the front ends (a closed listener, HTTP/2
//! GOAWAY, HTTP/1 `Connection: close`), never here: a request that reaches the predictor
//! came on a connection accepted before the close, and is served.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Where the server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for every model's first version.
    Starting,
    Serving,
    /// Shutting down: not ready, still answering.
    Draining,
    /// Shutting down: the listeners are closed; what connections already received is
    /// still answered.
    Closed,
}

struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Shared by the front ends (through the predictor), health and `main`.
#[derive(Clone)]
pub struct Lifecycle {
    phase: Arc<watch::Sender<Phase>>,
    in_flight: Arc<InFlight>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: Arc::new(watch::channel(Phase::Starting).0),
            in_flight: Arc::new(InFlight {
                count: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }
}

/// An admitted request; dropping it ends it.
pub struct Admitted(Arc<InFlight>);

impl Drop for Admitted {
    fn drop(&mut self) {
        // AcqRel: the last one out must see every earlier decrement before notifying.
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn set(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// A receiver that sees every phase change.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Counts an inference request in flight until the returned guard is dropped.
    pub fn admit(&self) -> Admitted {
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        Admitted(self.in_flight.clone())
    }

    /// Inference requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.count.load(Ordering::Acquire)
    }

    /// Waits until no admitted request is left.
    pub async fn idle(&self) {
        loop {
            let idle = self.in_flight.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_admitted_request() {
        let l = Lifecycle::default();
        l.set(Phase::Serving);
        let a = l.admit();
        l.set(Phase::Closed);
        // Received before the close, parsed after it: still served, still counted.
        let b = l.admit();
        assert_eq!(l.in_flight(), 2);
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.idle().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
