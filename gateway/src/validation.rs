//! Turns a decoded request into a validated one: the signature exists, the inputs match
//! it and the output filter names real outputs — with TF Serving's exact messages
//! (`servables/tensorflow/predict_util.cc`, TF's `cc/saved_model/util.cc`). The batch
//! scheduler and workers accept nothing else.

use crate::error::ServingError;
use crate::servables::{Servable, ServableId};
use shm_protocol::tensor::Tensor;
use std::collections::BTreeSet;

/// TF Serving's default signature key.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// A predict request that passed validation against its servable's signature.
#[derive(Debug, Clone)]
pub struct ValidPredict {
    pub servable: ServableId,
    pub signature_name: String,
    pub inputs: Vec<(String, Tensor)>,
    pub output_filter: Vec<String>,
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

/// Validates a predict request; `signature_name` may be empty (the default).
pub fn validate_predict(
    servable: &Servable,
    signature_name: &str,
    inputs: Vec<(String, Tensor)>,
    output_filter: Vec<String>,
) -> Result<ValidPredict, ServingError> {
    let key = signature_key(signature_name);
    let signature = servable.signature(key).ok_or_else(|| {
        ServingError::failed_precondition(format!("Serving signature key \"{key}\" not found."))
    })?;

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
    Ok(ValidPredict {
        servable: servable.id.clone(),
        signature_name: key.to_string(),
        inputs,
        output_filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn accepts_a_matching_request() {
        let v = validate_predict(&servable(), "", vec![("x".into(), t())], vec![]).unwrap();
        assert_eq!(v.signature_name, DEFAULT_SIGNATURE);
    }

    #[test]
    fn rejects_like_tf_serving() {
        let s = servable();
        let e = validate_predict(&s, "foo", vec![], vec![]).unwrap_err();
        assert_eq!(e.code, tonic::Code::FailedPrecondition);
        assert_eq!(e.message, "Serving signature key \"foo\" not found.");

        let e = validate_predict(&s, "", vec![("a".into(), t()), ("b".into(), t())], vec![])
            .unwrap_err();
        assert_eq!(
            e.message,
            "input size does not match signature: 2!=1 len({a,b}) != len({x}). Sent extra: {a,b}. Missing but required: {x}."
        );
        let e = validate_predict(&s, "", vec![], vec![]).unwrap_err();
        assert_eq!(
            e.message,
            "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}."
        );
        let e = validate_predict(&s, "", vec![("w".into(), t())], vec![]).unwrap_err();
        assert_eq!(
            e.message,
            "Signature input alias: x(feed name: x:0) not found in request and no default value provided. Inputs expected to be in the request {w}, or default input alias set: "
        );
        let e = validate_predict(&s, "", vec![("x".into(), t())], vec!["q".into()]).unwrap_err();
        assert_eq!(
            e.message,
            "output tensor alias not found in signature: q Outputs expected to be in the set {y,z}."
        );
        let e = validate_predict(
            &s,
            "",
            vec![("x".into(), t())],
            vec!["y".into(), "y".into()],
        )
        .unwrap_err();
        assert_eq!(e.message, "duplicate output tensor alias: y");
        assert_eq!(e.code, tonic::Code::InvalidArgument);
    }
}
