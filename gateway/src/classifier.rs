//! Classify and Regress over serialized `tf.Example`s (TF Serving's `classifier.cc`,
//! `regressor.cc`): the examples are fed as one DT_STRING `[N]` tensor to the signature's
//! `inputs`, through the same worker path as predict, and the outputs are checked and
//! reshaped into per-example results with TF Serving's messages.

use crate::error::ServingError;
use crate::predictor::Predictor;
use crate::servables::Servable;
use crate::validation::signature_key;
use prost::Message;
use shm_protocol::tensor::{DataType, Tensor, TensorData};
use std::time::Duration;
use tfgate_proto::tensorflow::serving::{input, Input};
use tfgate_proto::tensorflow::SignatureDef;

const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
const REGRESS_METHOD: &str = "tensorflow/serving/regress";

/// One class of one example: label (empty without a `classes` output) and score.
pub type Class = (Vec<u8>, f32);

/// A Classify or Regress call, as both front ends decode it.
pub struct ExamplesRequest {
    pub servable: Servable,
    /// As requested; empty means `serving_default`.
    pub signature_name: String,
    /// Serialized `tf.Example`s, context already merged in.
    pub examples: Vec<Vec<u8>>,
    pub timeout: Duration,
}

/// Serialized examples from a gRPC `Input`; with a context, the context's bytes come
/// first, so the example's own features win when both set one (protobuf merge order).
pub fn serialized_examples(input: Option<&Input>) -> Vec<Vec<u8>> {
    match input.and_then(|i| i.kind.as_ref()) {
        Some(input::Kind::ExampleList(list)) => {
            list.examples.iter().map(|e| e.encode_to_vec()).collect()
        }
        Some(input::Kind::ExampleListWithContext(list)) => {
            let context = list
                .context
                .as_ref()
                .map(|c| c.encode_to_vec())
                .unwrap_or_default();
            list.examples
                .iter()
                .map(|e| {
                    let mut bytes = context.clone();
                    bytes.extend_from_slice(&e.encode_to_vec());
                    bytes
                })
                .collect()
        }
        None => Vec::new(),
    }
}

/// Prepends a serialized context to each serialized example (REST's `context`).
pub fn with_context(context: Option<&[u8]>, examples: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    match context {
        None => examples,
        Some(c) => examples
            .into_iter()
            .map(|e| {
                let mut bytes = c.to_vec();
                bytes.extend_from_slice(&e);
                bytes
            })
            .collect(),
    }
}

fn signature<'a>(
    servable: &'a Servable,
    name: &str,
    method: &str,
    kind: &str,
) -> Result<(&'a SignatureDef, String), ServingError> {
    let key = signature_key(name).to_string();
    let sig = servable.signature(&key).ok_or_else(|| {
        ServingError::invalid_argument(format!("No signature was found with the name: {key}"))
    })?;
    if sig.method_name != method {
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

fn shape_string(shape: &[i64]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Feeds the examples as one DT_STRING `[N]` tensor to the signature's `inputs` and
/// fetches `outputs`.
async fn run_examples(
    predictor: &Predictor,
    servable: &Servable,
    signature_key: &str,
    examples: Vec<Vec<u8>>,
    request: &str,
    outputs: Vec<String>,
    timeout: Duration,
) -> Result<crate::predictor::PredictResult, ServingError> {
    if examples.is_empty() {
        return Err(ServingError::invalid_argument(format!(
            "{request}::input is empty."
        )));
    }
    let input = Tensor::new(
        DataType::String,
        vec![examples.len() as i64],
        TensorData::Strings(examples),
    )
    .map_err(|e| ServingError::internal(e.to_string()))?;
    predictor
        .run(
            servable,
            signature_key,
            vec![("inputs".into(), input)],
            outputs,
            timeout,
        )
        .await
}

fn floats(t: &Tensor, what: &str) -> Result<Vec<f32>, ServingError> {
    t.to_f32().ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "Expected {what} Tensor of DT_FLOAT. Got: DT_{}",
            t.dtype.name().to_uppercase()
        ))
    })
}

/// Runs a classify signature.
pub async fn classify(
    predictor: &Predictor,
    req: ExamplesRequest,
) -> Result<Vec<Vec<Class>>, ServingError> {
    let ExamplesRequest {
        servable,
        signature_name,
        examples,
        timeout,
    } = req;
    let servable = &servable;
    let (sig, key) = signature(servable, &signature_name, CLASSIFY_METHOD, "classification")?;
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
    let n = examples.len();
    let result = run_examples(
        predictor,
        servable,
        &key,
        examples,
        "ClassificationRequest",
        wanted,
        timeout,
    )
    .await?;
    let mut classes = None;
    let mut scores = None;
    for (alias, t) in &result.outputs {
        if t.shape.len() != 2 {
            return Err(ServingError::invalid_argument(format!(
                "Expected Tensor shape: [batch_size num_classes] but got {}",
                shape_string(&t.shape)
            )));
        }
        if t.shape[0] as usize != n {
            return Err(ServingError::invalid_argument(format!(
                "Expected {alias} output batch size of {n}. Got: {}",
                t.shape[0]
            )));
        }
        match alias.as_str() {
            "classes" => match &t.data {
                TensorData::Strings(s) => classes = Some((t.shape[1] as usize, s.clone())),
                _ => {
                    return Err(ServingError::invalid_argument(format!(
                        "Expected classes Tensor of DT_STRING. Got: DT_{}",
                        t.dtype.name().to_uppercase()
                    )))
                }
            },
            _ => scores = Some((t.shape[1] as usize, floats(t, "scores")?)),
        }
    }
    let num_classes = match (&classes, &scores) {
        (Some((c, _)), Some((s, _))) if c != s => {
            return Err(ServingError::invalid_argument(format!(
                "Tensors class and score should match in dim_size(1). Got {c} vs. {s}"
            )))
        }
        (Some((c, _)), _) => *c,
        (None, Some((s, _))) => *s,
        (None, None) => 0,
    };
    Ok((0..n)
        .map(|i| {
            (0..num_classes)
                .map(|c| {
                    let idx = i * num_classes + c;
                    let label = classes
                        .as_ref()
                        .and_then(|(_, l)| l.get(idx).cloned())
                        .unwrap_or_default();
                    let score = scores
                        .as_ref()
                        .and_then(|(_, s)| s.get(idx).copied())
                        .unwrap_or(0.0);
                    (label, score)
                })
                .collect()
        })
        .collect())
}

/// Runs a regress signature: one float per example.
pub async fn regress(
    predictor: &Predictor,
    req: ExamplesRequest,
) -> Result<Vec<f32>, ServingError> {
    let ExamplesRequest {
        servable,
        signature_name,
        examples,
        timeout,
    } = req;
    let servable = &servable;
    let (sig, key) = signature(servable, &signature_name, REGRESS_METHOD, "regression")?;
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
    let n = examples.len();
    let result = run_examples(
        predictor,
        servable,
        &key,
        examples,
        "RegressionRequest",
        vec!["outputs".into()],
        timeout,
    )
    .await?;
    let (_, t) = result
        .outputs
        .first()
        .ok_or_else(|| ServingError::internal("regression returned no output"))?;
    let ok_shape = t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1);
    if !ok_shape {
        return Err(ServingError::invalid_argument(format!(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {}",
            shape_string(&t.shape)
        )));
    }
    if t.shape[0] as usize != n {
        return Err(ServingError::invalid_argument(format!(
            "Input batch size did not match output batch size: {n} vs. {}",
            t.shape[0]
        )));
    }
    floats(t, "output")
}
