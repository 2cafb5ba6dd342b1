//! One signature of a loaded servable, run: inputs fed and outputs fetched by alias. Predict,
//! warmup and the model ceiling all run signatures this way.

use crate::loader::Servable;
use crate::run_mode::RunMode;
use crate::tf::{Feed, RunOutputs, TfError};
use tfgate_tensor::code::Code;

/// A signature's run: the output aliases, in the order of the outputs.
pub struct Ran {
    pub aliases: Vec<String>,
    pub outputs: RunOutputs,
}

/// Runs one signature of a loaded servable: feeds the inputs by alias and fetches the
/// outputs in `output_filter` (all of the signature's when empty), inline or on the
/// inter-op pool, whichever the servable has found faster for runs this size.
pub fn run_signature(
    servable: &Servable,
    signature_name: &str,
    inputs: Vec<(String, Feed)>,
    output_filter: &[String],
    timeout_ms: u64,
) -> Result<Ran, TfError> {
    let rows = inputs.first().map_or(1, |(_, f)| f.rows());
    let mode = servable.run_modes.choose(signature_name, rows);
    let started = std::time::Instant::now();
    let ran = run_signature_in(
        servable,
        signature_name,
        inputs,
        output_filter,
        timeout_ms,
        mode,
    )?;
    let ns = started.elapsed().as_nanos() as u64;
    servable.run_modes.record(signature_name, rows, mode, ns);
    Ok(ran)
}

/// [`run_signature`] in the given mode (the model ceiling measures both).
pub fn run_signature_in(
    servable: &Servable,
    signature_name: &str,
    inputs: Vec<(String, Feed)>,
    output_filter: &[String],
    timeout_ms: u64,
    mode: RunMode,
) -> Result<Ran, TfError> {
    let signature_name = if signature_name.is_empty() {
        "serving_default"
    } else {
        signature_name
    };
    let signature = servable.signatures.get(signature_name).ok_or_else(|| {
        TfError::new(
            Code::FailedPrecondition,
            format!("Serving signature key \"{signature_name}\" not found."),
        )
    })?;
    let mut feeds = Vec::with_capacity(inputs.len());
    for (alias, feed) in inputs {
        let input = signature.inputs.get(&alias).ok_or_else(|| {
            TfError::invalid_argument(format!(
                "input tensor alias not found in signature: {alias}"
            ))
        })?;
        feeds.push((input.tensor, feed));
    }
    let aliases: Vec<&String> = if output_filter.is_empty() {
        signature.outputs.keys().collect()
    } else {
        output_filter.iter().collect()
    };
    let mut fetches = Vec::with_capacity(aliases.len());
    for alias in &aliases {
        let output = signature.outputs.get(*alias).ok_or_else(|| {
            TfError::invalid_argument(format!(
                "output tensor alias not found in signature: {alias}"
            ))
        })?;
        fetches.push(output.tensor);
    }
    let outputs = servable
        .model
        .run(feeds, &fetches, timeout_ms, mode == RunMode::Inline)?;
    Ok(Ran {
        aliases: aliases.into_iter().cloned().collect(),
        outputs,
    })
}
