//! Model status and metadata as TF Serving's REST API prints them: proto3 JSON with
//! default fields, int64 as strings, enum names, original field names, one-space indent.

use serde::Serialize;
use serde_json::{json, Map, Value};
use tfgate_proto::tensorflow::error::Code;
use tfgate_proto::tensorflow::serving::{
    model_version_status::State, GetModelStatusResponse, SignatureDefMap,
};
use tfgate_proto::tensorflow::{tensor_info, DataType, TensorInfo, TensorShapeProto};

fn pretty(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    match v.serialize(&mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::from("{}"),
    }
}

/// `GET /v1/models/NAME[/versions/N]`.
pub fn status_json(status: &GetModelStatusResponse) -> String {
    let versions: Vec<Value> = status
        .model_version_status
        .iter()
        .map(|v| {
            let st = v.status.clone().unwrap_or_default();
            json!({
                "version": v.version.to_string(),
                "state": State::try_from(v.state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
                "status": {
                    "error_code": Code::try_from(st.error_code).map(|c| c.as_str_name()).unwrap_or("UNKNOWN"),
                    "error_message": st.error_message,
                }
            })
        })
        .collect();
    pretty(&json!({ "model_version_status": versions }))
}

fn shape_json(shape: &Option<TensorShapeProto>) -> Value {
    let shape = shape.clone().unwrap_or_default();
    json!({
        "dim": shape.dim.iter().map(|d| json!({"size": d.size.to_string(), "name": d.name})).collect::<Vec<_>>(),
        "unknown_rank": shape.unknown_rank,
    })
}

fn tensor_info_json(info: &TensorInfo) -> Value {
    let mut m = Map::new();
    m.insert(
        "dtype".into(),
        Value::from(
            DataType::try_from(info.dtype)
                .map(|d| d.as_str_name())
                .unwrap_or("DT_INVALID"),
        ),
    );
    m.insert("tensor_shape".into(), shape_json(&info.tensor_shape));
    if let Some(tensor_info::Encoding::Name(n)) = &info.encoding {
        m.insert("name".into(), Value::from(n.clone()));
    }
    Value::Object(m)
}

/// `GET /v1/models/NAME[/versions/N]/metadata`.
pub fn metadata_json(name: &str, version: i64, signatures: &SignatureDefMap) -> String {
    let mut defs = Map::new();
    for (key, def) in &signatures.signature_def {
        let map = |m: &std::collections::BTreeMap<String, TensorInfo>| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), tensor_info_json(v)))
                    .collect(),
            )
        };
        defs.insert(
            key.clone(),
            json!({
                "inputs": map(&def.inputs),
                "outputs": map(&def.outputs),
                "method_name": def.method_name,
                "defaults": {},
            }),
        );
    }
    pretty(&json!({
        "model_spec": {"name": name, "signature_name": "", "version": version.to_string()},
        "metadata": {"signature_def": {"signature_def": Value::Object(defs)}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfgate_proto::tensorflow::serving::{ModelVersionStatus, StatusProto};

    #[test]
    fn status_prints_like_tf_serving() {
        let s = GetModelStatusResponse {
            model_version_status: vec![ModelVersionStatus {
                version: 123,
                state: State::Available as i32,
                status: Some(StatusProto::default()),
            }],
        };
        let v: Value = serde_json::from_str(&status_json(&s)).unwrap();
        assert_eq!(
            v,
            json!({"model_version_status": [{"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
        );
        assert!(status_json(&s)
            .starts_with("{\n \"model_version_status\": [\n  {\n   \"version\": \"123\""));
    }
}
