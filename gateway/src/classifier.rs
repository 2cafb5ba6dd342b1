//! Classify and Regress results (TF Serving's `classifier.cc`, `regressor.cc`): the
//! signature's `classes`/`scores` or `outputs` tensors checked and reshaped into
//! per-example results, with TF Serving's messages. Validation of the request is in
//! `validation::examples`.

use crate::error::ServingError;
use tfgate_proto::tensorflow::serving as pb;
use tfgate_tensor::tensor::{Tensor, TensorData};

/// One class of one example: label (empty without a `classes` output) and score.
pub type Class = (Vec<u8>, f32);

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

fn floats(t: &Tensor, what: &str) -> Result<Vec<f32>, ServingError> {
    t.to_f32().ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "Expected {what} Tensor of DT_FLOAT. Got: DT_{}",
            t.dtype.name().to_uppercase()
        ))
    })
}

/// Classify's outputs as per-example classes, checked like TF Serving's
/// `PostProcessClassificationResult`; `n` is the number of examples sent.
pub fn classifications(
    outputs: &[(String, Tensor)],
    n: usize,
) -> Result<Vec<Vec<Class>>, ServingError> {
    let mut classes = None;
    let mut scores = None;
    for (alias, t) in outputs {
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

/// Regress's output as one float per example (`PostProcessRegressionResult`).
pub fn regressions(outputs: &[(String, Tensor)], n: usize) -> Result<Vec<f32>, ServingError> {
    let (_, t) = outputs
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

/// Per-example classes as TF Serving's `ClassificationResult`.
pub fn classification_result(classifications: Vec<Vec<Class>>) -> pb::ClassificationResult {
    pb::ClassificationResult {
        classifications: classifications
            .into_iter()
            .map(|classes| pb::Classifications {
                classes: classes
                    .into_iter()
                    .map(|(label, score)| pb::Class {
                        label: String::from_utf8_lossy(&label).into_owned(),
                        score,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Per-example values as TF Serving's `RegressionResult`.
pub fn regression_result(values: Vec<f32>) -> pb::RegressionResult {
    pb::RegressionResult {
        regressions: values
            .into_iter()
            .map(|value| pb::Regression { value })
            .collect(),
    }
}
