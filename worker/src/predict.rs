//! Predict on a loaded servable. The gateway has validated the request against the
//! signature already; the worker checks again only what it needs to run safely.

use crate::manager::Manager;
use crate::signature::{run_signature, Ran};
use crate::tf::{Feed, TfError};
use tfgate_tensor::code::Code;

/// A predict request as the worker sees it.
pub struct PredictCall<'a> {
    pub model_name: &'a str,
    pub version: Option<i64>,
    pub signature_name: &'a str,
    pub inputs: Vec<(String, Feed)>,
    pub output_filter: &'a [String],
    /// How long the session may run (`RunOptions.timeout_in_ms`); 0: no limit.
    pub timeout_ms: u64,
}

/// Runs the request; returns the version that served it and the outputs.
pub fn predict(manager: &Manager, call: PredictCall<'_>) -> Result<(i64, Ran), TfError> {
    let servable = manager
        .servable(call.model_name, call.version)
        .ok_or_else(|| {
            let request = match call.version {
                Some(v) => format!("Specific({}, {v})", call.model_name),
                None => format!("Latest({})", call.model_name),
            };
            TfError::new(
                Code::NotFound,
                format!("Servable not found for request: {request}"),
            )
        })?;
    let outputs = run_signature(
        &servable,
        call.signature_name,
        call.inputs,
        call.output_filter,
        call.timeout_ms,
    )?;
    Ok((servable.version, outputs))
}
