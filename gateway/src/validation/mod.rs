//! Turns a decoded request into a [`ValidRun`]: the servable's signature exists, the
//! inputs match it and the output filter names real outputs — with TF Serving's exact
//! messages (`servables/tensorflow/predict_util.cc`, TF's `cc/saved_model/util.cc`).
//! Classify and Regress have their own rules ([`examples`]). The worker pool accepts
//! nothing but a `ValidRun`, and only this module can make one.

pub mod examples;

use crate::error::ServingError;
use crate::request::{DecodeInputs, Entrypoint, OutputTarget, PredictRequest};
use crate::servables::{Servable, ServableId};
use std::collections::BTreeSet;
use tfgate_tensor::tensor::Tensor;
use tokio::time::Instant;

/// TF Serving's default signature key.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// A request checked against its servable's signature, ready for a worker.
#[derive(Debug)]
pub struct ValidRun {
    servable: ServableId,
    signature_key: String,
    inputs: Vec<(String, Tensor)>,
    output_filter: Vec<String>,
    deadline: Instant,
    output_targets: Vec<OutputTarget>,
}

impl ValidRun {
    /// The version to run.
    pub fn servable(&self) -> &ServableId {
        &self.servable
    }
    /// The signature key (never empty).
    pub fn signature_key(&self) -> &str {
        &self.signature_key
    }
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// The inputs by alias.
    pub fn inputs(&self) -> &[(String, Tensor)] {
        &self.inputs
    }
    /// Output aliases to fetch; empty: all of the signature's.
    pub fn output_filter(&self) -> &[String] {
        &self.output_filter
    }

    /// A batch of runs that were each validated against the same servable, signature
    /// and output filter as `like`: the same run with `inputs` (theirs concatenated).
    pub fn batched(like: &ValidRun, inputs: Vec<(String, Tensor)>, deadline: Instant) -> ValidRun {
        ValidRun {
            servable: like.servable.clone(),
            signature_key: like.signature_key.clone(),
            inputs,
            output_filter: like.output_filter.clone(),
            deadline,
            // A batch's outputs are split in memory.
            output_targets: Vec::new(),
        }
    }

    /// A run as validation would make it, for the batching tests.
    #[cfg(test)]
    pub fn for_tests(
        servable: ServableId,
        signature_key: &str,
        inputs: Vec<(String, Tensor)>,
        deadline: Instant,
    ) -> ValidRun {
        ValidRun {
            servable,
            signature_key: signature_key.to_string(),
            inputs,
            output_filter: Vec::new(),
            deadline,
            output_targets: Vec::new(),
        }
    }

    /// What goes into a request frame, moved out, and the outputs to write straight
    /// into clients' files.
    pub fn into_parts(self) -> RunParts {
        RunParts {
            signature_key: self.signature_key,
            inputs: self.inputs,
            output_filter: self.output_filter,
            output_targets: self.output_targets,
        }
    }
}

/// A [`ValidRun`]'s parts, for its request frame.
pub struct RunParts {
    pub signature_key: String,
    pub inputs: Vec<(String, Tensor)>,
    pub output_filter: Vec<String>,
    pub output_targets: Vec<OutputTarget>,
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The signature key a request names, defaulting to `serving_default`.
pub fn signature_key(requested: &str) -> &str {
    if requested.is_empty() {
        DEFAULT_SIGNATURE
    } else {
        requested
    }
}

/// Validates a predict request against `servable` (already resolved): finds the
/// signature, decodes the inputs with it, and checks inputs and output filter.
pub fn validate_predict<D: DecodeInputs>(
    servable: &Servable,
    request: PredictRequest<D>,
) -> Result<ValidRun, ServingError> {
    let key = signature_key(&request.signature_name);
    let signature = servable
        .signature(key)
        .ok_or_else(|| match request.entrypoint {
            Entrypoint::Grpc => ServingError::failed_precondition(format!(
                "Serving signature key \"{key}\" not found."
            )),
            Entrypoint::Rest => ServingError::invalid_argument(format!(
                "Serving signature name: \"{key}\" not found in signature def"
            )),
        })?;
    let inputs = request.inputs.decode(signature)?;
    let output_filter = request.output_filter;

    let requested: BTreeSet<&String> = inputs.iter().map(|(k, _)| k).collect();
    let expected: BTreeSet<&String> = signature.inputs.keys().collect();
    let has_defaults = !signature.defaults.is_empty();
    if requested.len() > expected.len() || (requested.len() < expected.len() && !has_defaults) {
        return Err(ServingError::invalid_argument(format!(
            "input size does not match signature: {}!={} len({{{}}}) != len({{{}}}). Sent extra: {{{}}}. Missing but required: {{{}}}.",
            requested.len(),
            expected.len(),
            join(requested.iter().copied()),
            join(expected.iter().copied()),
            join(requested.difference(&expected).copied()),
            join(expected.difference(&requested).copied()),
        )));
    }
    for (alias, info) in &signature.inputs {
        if !requested.contains(alias) && !signature.defaults.contains_key(alias) {
            let feed = match &info.encoding {
                Some(tfgate_proto::tensorflow::tensor_info::Encoding::Name(n)) => n.as_str(),
                _ => "",
            };
            return Err(ServingError::invalid_argument(format!(
                "Signature input alias: {alias}(feed name: {feed}) not found in request and no default value provided. Inputs expected to be in the request {{{}}}, or default input alias set: {}",
                join(requested.iter().copied()),
                join(signature.defaults.keys()),
            )));
        }
    }
    let used: BTreeSet<&String> = requested.intersection(&expected).copied().collect();
    if !requested.is_empty() && used.len() != requested.len() {
        return Err(ServingError::invalid_argument(format!(
            "Inputs contains invalid name. Used request inputs: {}, request input: {}",
            join(used.iter().copied()),
            join(requested.iter().copied()),
        )));
    }

    let mut seen = BTreeSet::new();
    for alias in &output_filter {
        if !signature.outputs.contains_key(alias) {
            return Err(ServingError::invalid_argument(format!(
                "output tensor alias not found in signature: {alias} Outputs expected to be in the set {{{}}}.",
                join(signature.outputs.keys()),
            )));
        }
        if !seen.insert(alias) {
            return Err(ServingError::invalid_argument(format!(
                "duplicate output tensor alias: {alias}"
            )));
        }
    }
    Ok(ValidRun {
        servable: servable.id.clone(),
        signature_key: key.to_string(),
        inputs,
        output_filter,
        deadline: request.deadline,
        output_targets: request.output_targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use std::sync::Arc;
    use tfgate_proto::tensorflow::serving::SignatureDefMap;
    use tfgate_proto::tensorflow::{tensor_info, SignatureDef, TensorInfo};

    fn info(name: &str) -> TensorInfo {
        TensorInfo {
            dtype: 1,
            encoding: Some(tensor_info::Encoding::Name(name.into())),
            ..Default::default()
        }
    }

    fn servable() -> Servable {
        let mut def = SignatureDef::default();
        def.inputs.insert("x".into(), info("x:0"));
        def.outputs.insert("y".into(), info("y:0"));
        def.outputs.insert("z".into(), info("z:0"));
        let mut map = SignatureDefMap::default();
        map.signature_def.insert(DEFAULT_SIGNATURE.into(), def);
        Servable {
            id: ServableId {
                name: "m".into(),
                version: 1,
            },
            signatures: Arc::new(map),
        }
    }

    fn t() -> Tensor {
        Tensor::from_f32(vec![1], &[1.0]).unwrap()
    }

    fn check(
        signature: &str,
        inputs: &[&str],
        output_filter: &[&str],
        entrypoint: Entrypoint,
    ) -> Result<ValidRun, ServingError> {
        validate_predict(
            &servable(),
            PredictRequest {
                servable: crate::servables::ServableRequest::Latest("m".into()),
                signature_name: signature.into(),
                inputs: inputs
                    .iter()
                    .map(|n| (n.to_string(), t()))
                    .collect::<Vec<_>>(),
                output_filter: output_filter.iter().map(|s| s.to_string()).collect(),
                deadline: Instant::now(),
                entrypoint,
                output_targets: Vec::new(),
            },
        )
    }

    fn err(signature: &str, inputs: &[&str], output_filter: &[&str]) -> ServingError {
        check(signature, inputs, output_filter, Entrypoint::Grpc).unwrap_err()
    }

    #[test]
    fn accepts_a_matching_request() {
        let v = check("", &["x"], &[], Entrypoint::Rest).unwrap();
        assert_eq!(v.signature_key(), DEFAULT_SIGNATURE);
        assert_eq!(v.servable().version, 1);
        let RunParts {
            inputs,
            output_filter: filter,
            ..
        } = v.into_parts();
        assert_eq!((inputs.len(), filter.len()), (1, 0));
    }

    #[test]
    fn rejects_like_tf_serving() {
        let e = err("foo", &[], &[]);
        assert_eq!(e.code, Code::FailedPrecondition);
        assert_eq!(e.message, "Serving signature key \"foo\" not found.");
        let e = check("foo", &[], &[], Entrypoint::Rest).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(
            e.message,
            "Serving signature name: \"foo\" not found in signature def"
        );

        let e = err("", &["a", "b"], &[]);
        assert_eq!(
            e.message,
            "input size does not match signature: 2!=1 len({a,b}) != len({x}). Sent extra: {a,b}. Missing but required: {x}."
        );
        let e = err("", &[], &[]);
        assert_eq!(
            e.message,
            "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}."
        );
        let e = err("", &["w"], &[]);
        assert_eq!(
            e.message,
            "Signature input alias: x(feed name: x:0) not found in request and no default value provided. Inputs expected to be in the request {w}, or default input alias set: "
        );
        let e = err("", &["x"], &["q"]);
        assert_eq!(
            e.message,
            "output tensor alias not found in signature: q Outputs expected to be in the set {y,z}."
        );
        let e = err("", &["x"], &["y", "y"]);
        assert_eq!(e.message, "duplicate output tensor alias: y");
        assert_eq!(e.code, Code::InvalidArgument);
    }
}
