//! A validated run as a shared-memory request frame, and a response frame as the run's
//! outcome: the only place the gateway speaks the frame format.

use crate::error::ServingError;
use crate::request::OutputTarget;
use crate::servables::ServableId;
use crate::validation::{RunParts, ValidRun};
use tfgate_frame::{RequestFrame, RequestKind, ResponseFrame, WorkerTiming};
use tfgate_tensor::tensor::Tensor;
use tokio::time::Instant;

/// What a worker answered for a run.
#[derive(Debug)]
pub struct RunOutput {
    /// The version that ran.
    pub servable: ServableId,
    /// The outputs by alias.
    pub outputs: Vec<(String, Tensor)>,
    /// Where the run's time went.
    pub timing: RunTiming,
}

/// Where a run's time went, µs: the run's part of a request's latency split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTiming {
    /// Waiting in a batch queue (batching only).
    pub queue_us: u64,
    /// Forming the batch and its frame, up to the push into the request ring.
    pub formation_us: u64,
    /// Through shared memory both ways: from the push to the worker's pop, and from its
    /// reply to the caller's wake-up.
    pub transfer_us: u64,
    /// In the worker around the run: the frame read, inputs fed, outputs fetched.
    pub worker_us: u64,
    /// The session run.
    pub run_us: u64,
}

/// When the gateway began a run, pushed its frame, and was handed the answer
/// ([`shm_protocol::monotonic_ns`]).
#[derive(Clone, Copy, Debug)]
pub struct Stamps {
    pub started_ns: u64,
    pub pushed_ns: u64,
    pub completed_ns: u64,
}

impl RunTiming {
    /// The split from the gateway's stamps and the worker's; the worker's are clamped
    /// into the gateway's window, as a peer's numbers are not trusted.
    fn new(s: Stamps, w: &WorkerTiming) -> RunTiming {
        let received = w
            .received_ns
            .clamp(s.pushed_ns, s.completed_ns.max(s.pushed_ns));
        let replied = w.replied_ns.clamp(received, s.completed_ns.max(received));
        let in_worker = replied - received;
        let run = w.run_ns.min(in_worker);
        let us = |ns: u64| ns / 1000;
        RunTiming {
            queue_us: 0,
            formation_us: us(s.pushed_ns.saturating_sub(s.started_ns)),
            transfer_us: us((received - s.pushed_ns) + s.completed_ns.saturating_sub(replied)),
            worker_us: us(in_worker - run),
            run_us: us(run),
        }
    }
}

/// `deadline` on the host's monotonic clock, which the worker reads too.
pub fn deadline_ns(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    shm_protocol::monotonic_ns().saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
}

/// The frame for `run` (taking its tensors); returns it with the servable it names, its
/// deadline and the outputs to write straight into clients' files.
pub fn request_frame(run: ValidRun) -> (RequestFrame, ServableId, Instant, Vec<OutputTarget>) {
    let deadline = run.deadline();
    let servable = run.servable().clone();
    let RunParts {
        signature_key: signature_name,
        inputs,
        output_filter,
        output_targets: targets,
    } = run.into_parts();
    let frame = RequestFrame {
        kind: RequestKind::Predict,
        model_name: servable.name.clone(),
        version: Some(servable.version),
        signature_name,
        output_filter,
        inputs,
        deadline_ns: deadline_ns(deadline),
    };
    (frame, servable, deadline, targets)
}

/// A response frame as the run's outcome; the worker's error codes arrive named.
pub fn run_output(
    name: &str,
    response: ResponseFrame,
    stamps: Stamps,
) -> Result<RunOutput, ServingError> {
    match response {
        ResponseFrame::Ok {
            model_version,
            outputs,
            timing,
        } => Ok(RunOutput {
            servable: ServableId {
                name: name.to_string(),
                version: model_version,
            },
            outputs,
            timing: RunTiming::new(stamps, &timing),
        }),
        ResponseFrame::Err { code, message } => Err(ServingError::new(code, message)),
    }
}
