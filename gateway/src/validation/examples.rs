//! Classify, Regress and MultiInference validation (TF Serving's `classifier.cc`,
//! `regressor.cc`, `multi_inference.cc`): the signature takes one `inputs` tensor and
//! has the method's outputs; the serialized `tf.Example`s become one DT_STRING `[N]`
//! tensor fed to `inputs`.

use super::{signature_key, ValidRun};
use crate::error::ServingError;
use crate::request::{ExamplesRequest, MultiInferenceRequest};
use crate::servables::Servable;
use crate::text_format::debug_string;
use std::collections::BTreeSet;
use tfgate_proto::tensorflow::SignatureDef;
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};
use tokio::time::Instant;

/// Whether a signature's `method_name` must be the classify/regress one
/// (`--enable_signature_method_name_check`; TF Serving's default is not to check, so TF2
/// signatures, whose method is predict, serve Classify and Regress too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MethodNameCheck(pub bool);

/// The two methods that take `tf.Example`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExamplesMethod {
    Classify,
    Regress,
}

impl ExamplesMethod {
    /// A MultiInference task's `method_name`.
    pub fn from_method_name(name: &str) -> Option<ExamplesMethod> {
        match name {
            CLASSIFY_METHOD => Some(ExamplesMethod::Classify),
            REGRESS_METHOD => Some(ExamplesMethod::Regress),
            _ => None,
        }
    }

    fn method_name(self) -> &'static str {
        match self {
            ExamplesMethod::Classify => CLASSIFY_METHOD,
            ExamplesMethod::Regress => REGRESS_METHOD,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            ExamplesMethod::Classify => "classification",
            ExamplesMethod::Regress => "regression",
        }
    }
}

const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
const REGRESS_METHOD: &str = "tensorflow/serving/regress";

/// `PreProcessClassification` / `PreProcessRegression`: the checks in TF Serving's order,
/// and the output aliases to fetch.
fn preprocess(
    sig: &SignatureDef,
    method: ExamplesMethod,
    check: MethodNameCheck,
) -> Result<Vec<String>, ServingError> {
    let kind = method.kind();
    if check.0 && sig.method_name != method.method_name() {
        return Err(ServingError::invalid_argument(format!(
            "Expected {kind} signature method_name to be {}. Was: {}",
            method.method_name(),
            sig.method_name
        )));
    }
    if sig.inputs.len() != 1 {
        return Err(ServingError::invalid_argument("Expected one input Tensor."));
    }
    match method {
        ExamplesMethod::Classify if sig.outputs.is_empty() || sig.outputs.len() > 2 => {
            return Err(ServingError::invalid_argument(format!(
                "Expected one or two output Tensors, found {}",
                sig.outputs.len()
            )));
        }
        ExamplesMethod::Regress if sig.outputs.len() != 1 => {
            return Err(ServingError::invalid_argument(
                "Expected one output Tensor.",
            ));
        }
        _ => {}
    }
    let quoted = || debug_string("tensorflow.SignatureDef", sig);
    if !sig.inputs.contains_key("inputs") {
        return Err(ServingError::invalid_argument(format!(
            "No {kind} inputs found in SignatureDef: {}",
            quoted()
        )));
    }
    match method {
        ExamplesMethod::Classify => {
            let wanted: Vec<String> = ["classes", "scores"]
                .iter()
                .filter(|k| sig.outputs.contains_key(**k))
                .map(|k| k.to_string())
                .collect();
            if wanted.is_empty() {
                return Err(ServingError::invalid_argument(format!(
                    "Expected classification signature outputs to contain at least one of \"classes\" or \"scores\". Signature was: {}",
                    quoted()
                )));
            }
            Ok(wanted)
        }
        ExamplesMethod::Regress => {
            if !sig.outputs.contains_key("outputs") {
                return Err(ServingError::invalid_argument(format!(
                    "No regression outputs found in SignatureDef: {}",
                    quoted()
                )));
            }
            Ok(vec!["outputs".into()])
        }
    }
}

/// `InputToSerializedExampleTensor`: the examples as one DT_STRING `[N]` tensor.
fn examples_tensor(examples: Vec<Vec<u8>>) -> Result<Tensor, ServingError> {
    if examples.is_empty() {
        return Err(ServingError::invalid_argument("Input is empty."));
    }
    let n = examples.len() as i64;
    Tensor::new(DataType::String, vec![n], TensorData::Strings(examples))
        .map_err(|e| ServingError::internal(e.to_string()))
}

fn examples_run(
    servable: &Servable,
    signature_key: String,
    input: Tensor,
    output_filter: Vec<String>,
    deadline: Instant,
) -> ValidRun {
    ValidRun {
        servable: servable.id.clone(),
        signature_key,
        inputs: vec![("inputs".into(), input)],
        output_filter,
        deadline,
        output_targets: Vec::new(),
    }
}

/// Classify or Regress: the examples fed to `inputs`, fetching the method's outputs.
pub fn validate_examples(
    servable: &Servable,
    request: ExamplesRequest,
    method: ExamplesMethod,
    check: MethodNameCheck,
) -> Result<ValidRun, ServingError> {
    let key = signature_key(&request.signature_name).to_string();
    let sig = servable.signature(&key).ok_or_else(|| {
        ServingError::invalid_argument(format!("No signature was found with the name: {key}"))
    })?;
    let outputs = preprocess(sig, method, check)?;
    let input = examples_tensor(request.examples)?;
    Ok(examples_run(
        servable,
        key,
        input,
        outputs,
        request.deadline,
    ))
}

/// MultiInference: every task is checked (one model, distinct signatures that exist,
/// classify or regress) before any runs; then one run per task over the same examples.
/// TF Serving makes one session run fetching every task's outputs; tfgate's workers run
/// one signature at a time, so each task is its own run (the same outputs for any
/// deterministic model).
pub fn validate_multi_inference(
    servable: &Servable,
    request: MultiInferenceRequest,
    check: MethodNameCheck,
) -> Result<Vec<(ExamplesMethod, ValidRun)>, ServingError> {
    let mut seen = BTreeSet::new();
    let mut planned = Vec::with_capacity(request.tasks.len());
    for task in &request.tasks {
        if task.model_name.is_empty() {
            return Err(ServingError::invalid_argument(
                "Found ModelSpec with an empty model name.",
            ));
        }
        if task.model_name != request.tasks[0].model_name {
            return Err(ServingError::invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            ));
        }
        let key = signature_key(&task.signature_name).to_string();
        if !seen.insert(key.clone()) {
            return Err(ServingError::invalid_argument(format!(
                "Duplicate evaluation of signature: {key}"
            )));
        }
        let sig = servable.signature(&key).ok_or_else(|| {
            ServingError::invalid_argument(format!(
                "Requested signature not found in model graph: {key}"
            ))
        })?;
        let method = ExamplesMethod::from_method_name(&task.method_name).ok_or_else(|| {
            ServingError::unimplemented(format!(
                "Unsupported signature method_name: {}",
                task.method_name
            ))
        })?;
        let outputs = preprocess(sig, method, check)?;
        planned.push((method, key, outputs));
    }
    let input = examples_tensor(request.examples)?;
    Ok(planned
        .into_iter()
        .map(|(method, key, outputs)| {
            let run = examples_run(servable, key, input.clone(), outputs, request.deadline);
            (method, run)
        })
        .collect())
}
