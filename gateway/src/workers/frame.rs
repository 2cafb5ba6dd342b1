//! A validated run as a shared-memory request frame, and a response frame as the run's
//! outcome: the only place the gateway speaks the frame format.

use crate::error::ServingError;
use crate::servables::ServableId;
use crate::validation::ValidRun;
use shm_protocol::frame::{RequestFrame, RequestKind, ResponseFrame};
use shm_protocol::tensor::Tensor;
use tokio::time::Instant;

/// What a worker answered for a run.
#[derive(Debug)]
pub struct RunOutput {
    /// The version that ran.
    pub servable: ServableId,
    /// The outputs by alias.
    pub outputs: Vec<(String, Tensor)>,
}

/// `deadline` on the host's monotonic clock, which the worker reads too.
pub fn deadline_ns(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    shm_protocol::monotonic_ns().saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
}

/// The frame for `run` (taking its tensors); returns it with the servable it names.
pub fn request_frame(run: ValidRun) -> (RequestFrame, ServableId, Instant) {
    let deadline = run.deadline();
    let servable = run.servable().clone();
    let (signature_name, inputs, output_filter) = run.into_parts();
    let frame = RequestFrame {
        kind: RequestKind::Predict,
        model_name: servable.name.clone(),
        version: Some(servable.version),
        signature_name,
        output_filter,
        inputs,
        deadline_ns: deadline_ns(deadline),
    };
    (frame, servable, deadline)
}

/// A response frame as the run's outcome; the worker's error codes arrive named.
pub fn run_output(name: &str, response: ResponseFrame) -> Result<RunOutput, ServingError> {
    match response {
        ResponseFrame::Ok {
            model_version,
            outputs,
        } => Ok(RunOutput {
            servable: ServableId {
                name: name.to_string(),
                version: model_version,
            },
            outputs,
        }),
        ResponseFrame::Err { code, message } => Err(ServingError::new(code, message)),
    }
}
