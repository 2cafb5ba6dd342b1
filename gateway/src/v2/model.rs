//! What V2 says about a model, from what is true of it: its metadata (versions, platform,
//! inputs and outputs of `serving_default` with V2 datatypes and shapes) and the model
//! configuration clients such as `perf_analyzer` ask for before they send anything
//! (`max_batch_size` and `dynamic_batching` follow tfgate's batching of that version).

use crate::batching::Parameters;
use crate::servables::Servable;
use crate::v2::infer::{signature_datatype, signature_shape};
use crate::validation::DEFAULT_SIGNATURE;
use tfgate_proto::inference as v2;
use tfgate_proto::tensorflow::{SignatureDef, TensorInfo};

/// The platform V2 names a TensorFlow SavedModel by.
pub const PLATFORM: &str = "tensorflow_savedmodel";

/// One input or output as metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    pub name: String,
    /// `""` for a dtype V2 cannot carry (complex).
    pub datatype: &'static str,
    /// `-1` for an unknown dimension; `[-1]` for an unknown rank.
    pub shape: Vec<i64>,
}

/// A model's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub name: String,
    /// The versions AVAILABLE now, as strings (V2's type), ascending.
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

fn tensors(map: &std::collections::BTreeMap<String, TensorInfo>) -> Vec<TensorMeta> {
    map.iter()
        .map(|(name, info)| TensorMeta {
            name: name.clone(),
            datatype: signature_datatype(info),
            shape: signature_shape(info).unwrap_or_else(|| vec![-1]),
        })
        .collect()
}

/// The signature V2 describes: `serving_default`.
fn described(servable: &Servable) -> Option<&SignatureDef> {
    servable.signature(DEFAULT_SIGNATURE)
}

/// The metadata of `servable`, listing `available` versions.
pub fn metadata(servable: &Servable, available: &[i64]) -> ModelMeta {
    let (inputs, outputs) = described(servable)
        .map(|s| (tensors(&s.inputs), tensors(&s.outputs)))
        .unwrap_or_default();
    ModelMeta {
        name: servable.id.name.clone(),
        versions: available.iter().map(i64::to_string).collect(),
        platform: PLATFORM,
        inputs,
        outputs,
    }
}

/// The model configuration of `servable`. With batching (`batching` is its queue's
/// parameters), the first dimension of every input and output is the batch dimension:
/// `max_batch_size` is the queue's and the dims leave it out, as V2 clients expect.
pub fn config(servable: &Servable, batching: Option<&Parameters>) -> v2::ModelConfig {
    let meta = metadata(servable, &[]);
    let batched = batching.filter(|_| {
        meta.inputs
            .iter()
            .chain(&meta.outputs)
            .all(|t| !t.shape.is_empty())
    });
    let dims = |t: &TensorMeta| -> Vec<i64> {
        if batched.is_some() {
            t.shape[1..].to_vec()
        } else {
            t.shape.clone()
        }
    };
    let data_type = |t: &TensorMeta| {
        crate::v2::datatype::parse(t.datatype)
            .map_or(v2::DataType::TypeInvalid, crate::v2::datatype::config_type) as i32
    };
    v2::ModelConfig {
        name: servable.id.name.clone(),
        platform: PLATFORM.into(),
        max_batch_size: batched.map_or(0, |p| i32::try_from(p.max_batch_size).unwrap_or(i32::MAX)),
        input: meta
            .inputs
            .iter()
            .map(|t| v2::ModelInput {
                name: t.name.clone(),
                data_type: data_type(t),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        output: meta
            .outputs
            .iter()
            .map(|t| v2::ModelOutput {
                name: t.name.clone(),
                data_type: data_type(t),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        scheduling_choice: batched.map(|p| {
            v2::model_config::SchedulingChoice::DynamicBatching(v2::ModelDynamicBatching {
                preferred_batch_size: p
                    .allowed_batch_sizes
                    .iter()
                    .map(|&s| i32::try_from(s).unwrap_or(i32::MAX))
                    .collect(),
                max_queue_delay_microseconds: p.batch_timeout.as_micros() as u64,
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

/// The model configuration as V2's REST API writes it: the protobuf's field names, enums
/// by name (`TYPE_FP32`), numbers as numbers.
pub fn config_json(c: &v2::ModelConfig) -> serde_json::Value {
    use serde_json::json;
    let type_name = |t: i32| {
        v2::DataType::try_from(t)
            .unwrap_or(v2::DataType::TypeInvalid)
            .as_str_name()
    };
    let mut out = json!({
        "name": c.name,
        "platform": c.platform,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|i| json!({
            "name": i.name,
            "data_type": type_name(i.data_type),
            "format": "FORMAT_NONE",
            "dims": i.dims,
        })).collect::<Vec<_>>(),
        "output": c.output.iter().map(|o| json!({
            "name": o.name,
            "data_type": type_name(o.data_type),
            "dims": o.dims,
        })).collect::<Vec<_>>(),
    });
    if let Some(v2::model_config::SchedulingChoice::DynamicBatching(d)) = &c.scheduling_choice {
        out["dynamic_batching"] = json!({
            "preferred_batch_size": d.preferred_batch_size,
            "max_queue_delay_microseconds": d.max_queue_delay_microseconds,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servables::ServableId;
    use crate::v2::tests::info;
    use std::sync::Arc;
    use std::time::Duration;
    use tfgate_proto::tensorflow::serving::SignatureDefMap;
    use tfgate_tensor::tensor::DataType;

    fn servable() -> Servable {
        let mut sig = SignatureDef::default();
        sig.inputs
            .insert("x".into(), info(DataType::Float, &[-1, 64]));
        sig.outputs.insert("y".into(), info(DataType::Int64, &[-1]));
        let mut map = SignatureDefMap::default();
        map.signature_def.insert(DEFAULT_SIGNATURE.into(), sig);
        Servable {
            id: ServableId {
                name: "mlp".into(),
                version: 3,
            },
            signatures: Arc::new(map),
        }
    }

    #[test]
    fn metadata_uses_v2_names() {
        let m = metadata(&servable(), &[1, 3]);
        assert_eq!(m.versions, vec!["1", "3"]);
        assert_eq!(m.platform, "tensorflow_savedmodel");
        assert_eq!(
            m.inputs,
            vec![TensorMeta {
                name: "x".into(),
                datatype: "FP32",
                shape: vec![-1, 64]
            }]
        );
        assert_eq!(m.outputs[0].datatype, "INT64");
    }

    #[test]
    fn batching_makes_the_first_dimension_the_batch_dimension() {
        let c = config(&servable(), None);
        assert_eq!(c.max_batch_size, 0);
        assert_eq!(c.input[0].dims, vec![-1, 64]);
        assert!(c.scheduling_choice.is_none());

        let mut p = crate::batching::Parameters::parse("max_batch_size { value: 32 }", "t")
            .expect("parameters");
        p.batch_timeout = Duration::from_micros(500);
        p.allowed_batch_sizes = vec![8, 32];
        let c = config(&servable(), Some(&p));
        assert_eq!(c.max_batch_size, 32);
        assert_eq!(c.input[0].dims, vec![64]);
        assert_eq!(c.output[0].dims, Vec::<i64>::new());
        let j = config_json(&c);
        assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(j["output"][0]["data_type"], "TYPE_INT64");
        assert_eq!(j["dynamic_batching"]["max_queue_delay_microseconds"], 500);
        assert_eq!(j["dynamic_batching"]["preferred_batch_size"][1], 32);
    }
}
