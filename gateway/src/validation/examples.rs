//! Classify and Regress validation (TF Serving's `classifier.cc`, `regressor.cc`): the
//! signature has the right method, one `inputs` tensor and the expected outputs; the
//! serialized `tf.Example`s become one DT_STRING `[N]` tensor fed to `inputs`.

use super::{signature_key, ValidRun};
use crate::error::ServingError;
use crate::request::ExamplesRequest;
use crate::servables::Servable;
use shm_protocol::tensor::{DataType, Tensor, TensorData};
use tfgate_proto::tensorflow::SignatureDef;

const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
const REGRESS_METHOD: &str = "tensorflow/serving/regress";

/// Whether a signature's `method_name` must be the classify/regress one
/// (`--enable_signature_method_name_check`; TF Serving's default is not to check, so TF2
/// signatures, whose method is predict, serve Classify and Regress too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MethodNameCheck(pub bool);

fn signature<'a>(
    servable: &'a Servable,
    name: &str,
    (method, check): (&str, MethodNameCheck),
    kind: &str,
) -> Result<(&'a SignatureDef, String), ServingError> {
    let key = signature_key(name).to_string();
    let sig = servable.signature(&key).ok_or_else(|| {
        ServingError::invalid_argument(format!("No signature was found with the name: {key}"))
    })?;
    if check.0 && sig.method_name != method {
        return Err(ServingError::invalid_argument(format!(
            "Expected {kind} signature method_name to be {method}. Was: {}",
            sig.method_name
        )));
    }
    if sig.inputs.len() != 1 {
        return Err(ServingError::invalid_argument("Expected one input Tensor."));
    }
    if !sig.inputs.contains_key("inputs") {
        return Err(ServingError::failed_precondition(format!(
            "No {kind} inputs found in SignatureDef"
        )));
    }
    Ok((sig, key))
}

/// The run: examples as one DT_STRING `[N]` tensor to `inputs`, fetching `outputs`.
fn run(
    servable: &Servable,
    key: String,
    request: ExamplesRequest,
    what: &str,
    outputs: Vec<String>,
) -> Result<ValidRun, ServingError> {
    if request.examples.is_empty() {
        return Err(ServingError::invalid_argument(format!(
            "{what}::input is empty."
        )));
    }
    let n = request.examples.len() as i64;
    let input = Tensor::new(
        DataType::String,
        vec![n],
        TensorData::Strings(request.examples),
    )
    .map_err(|e| ServingError::internal(e.to_string()))?;
    Ok(ValidRun {
        servable: servable.id.clone(),
        signature_key: key,
        inputs: vec![("inputs".into(), input)],
        output_filter: outputs,
        deadline: request.deadline,
    })
}

/// A classify signature fetches `classes` and/or `scores`.
pub fn validate_classify(
    servable: &Servable,
    request: ExamplesRequest,
    check: MethodNameCheck,
) -> Result<ValidRun, ServingError> {
    let (sig, key) = signature(
        servable,
        &request.signature_name,
        (CLASSIFY_METHOD, check),
        "classification",
    )?;
    if sig.outputs.is_empty() || sig.outputs.len() > 2 {
        return Err(ServingError::invalid_argument(format!(
            "Expected one or two output Tensors, found {}",
            sig.outputs.len()
        )));
    }
    let wanted: Vec<String> = ["classes", "scores"]
        .iter()
        .filter(|k| sig.outputs.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    if wanted.is_empty() {
        return Err(ServingError::failed_precondition(
            "Expected classification signature outputs to contain at least one of \"classes\" or \"scores\".",
        ));
    }
    run(servable, key, request, "ClassificationRequest", wanted)
}

/// A regress signature fetches `outputs`.
pub fn validate_regress(
    servable: &Servable,
    request: ExamplesRequest,
    check: MethodNameCheck,
) -> Result<ValidRun, ServingError> {
    let (sig, key) = signature(
        servable,
        &request.signature_name,
        (REGRESS_METHOD, check),
        "regression",
    )?;
    if sig.outputs.len() != 1 {
        return Err(ServingError::invalid_argument(
            "Expected one output Tensor.",
        ));
    }
    if !sig.outputs.contains_key("outputs") {
        return Err(ServingError::failed_precondition(
            "No regression outputs found in SignatureDef",
        ));
    }
    run(
        servable,
        key,
        request,
        "RegressionRequest",
        vec!["outputs".into()],
    )
}
