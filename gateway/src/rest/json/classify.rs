//! Classify and regress: `FillClassifyRegressRequestFromJson` (JSON examples to
//! serialized `tensorflow.Example` protos) and `MakeJsonFromClassificationResult` /
//! `MakeJsonFromRegressionResult`.

use std::collections::BTreeMap;

use super::b64::{decode_b64_object, is_b64_object};
use super::float::decimal_f32;
use super::parser::JsonValue;
use super::predict::predict_signature_name;
use super::writer::PrettyWriter;
use super::{format_error, ExamplesJson, JsonDoc};
use crate::error::ServingError;

/// A `tensorflow.Feature` being filled.
#[derive(Debug, Default)]
enum Feature {
    #[default]
    NotSet,
    Bytes(Vec<Vec<u8>>),
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

impl Feature {
    fn kind_name(&self) -> &'static str {
        match self {
            Feature::NotSet => "UNKNOWN",
            Feature::Bytes(_) => "bytes",
            Feature::Float(_) => "float",
            Feature::Int64(_) => "int64",
        }
    }
}

fn incompatible(name: &str, f: &Feature) -> ServingError {
    ServingError::invalid_argument(format!(
        "Unexpected element type in feature: {name} expecting type: {}",
        f.kind_name()
    ))
}

fn unexpected_type(name: &str, v: &JsonValue) -> ServingError {
    ServingError::invalid_argument(format!(
        "Feature: {name} has element with unexpected JSON type: {}",
        v.type_name()
    ))
}

fn push_int64(name: &str, f: &mut Feature, x: i64) -> Result<(), ServingError> {
    if let Feature::NotSet = f {
        *f = Feature::Int64(Vec::new());
    }
    match f {
        Feature::Int64(v) => {
            v.push(x);
            Ok(())
        }
        _ => Err(incompatible(name, f)),
    }
}

fn push_float(name: &str, f: &mut Feature, x: f32) -> Result<(), ServingError> {
    if let Feature::NotSet = f {
        *f = Feature::Float(Vec::new());
    }
    match f {
        Feature::Float(v) => {
            v.push(x);
            Ok(())
        }
        _ => Err(incompatible(name, f)),
    }
}

fn check_bytes(name: &str, f: &mut Feature) -> Result<(), ServingError> {
    if let Feature::NotSet = f {
        *f = Feature::Bytes(Vec::new());
    }
    match f {
        Feature::Bytes(_) => Ok(()),
        _ => Err(incompatible(name, f)),
    }
}

fn push_bytes(f: &mut Feature, b: Vec<u8>) {
    if let Feature::Bytes(v) = f {
        v.push(b);
    }
}

/// `AddValueToFeature`.
fn add_value(v: &JsonValue, name: &str, f: &mut Feature) -> Result<(), ServingError> {
    match v {
        JsonValue::Null | JsonValue::Array(_) => Err(unexpected_type(name, v)),
        JsonValue::Bool(b) => push_int64(name, f, i64::from(*b)),
        JsonValue::Object(_) => {
            if !is_b64_object(v) {
                return Err(unexpected_type(name, v));
            }
            check_bytes(name, f)?;
            let bytes = decode_b64_object(v)?;
            push_bytes(f, bytes);
            Ok(())
        }
        JsonValue::String(s) => {
            check_bytes(name, f)?;
            push_bytes(f, s.clone());
            Ok(())
        }
        JsonValue::Double(d) => push_float(name, f, *d as f32),
        JsonValue::Int(i) => {
            if !matches!(f, Feature::NotSet | Feature::Int64(_)) {
                return Err(incompatible(name, f));
            }
            match i64::try_from(*i) {
                Ok(x) => push_int64(name, f, x),
                Err(_) => Err(ServingError::invalid_argument(format!(
                    "Feature: {name} has uint64_t element. Only int64_t is supported."
                ))),
            }
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_delimited(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// `tensorflow.Feature` wire format (`bytes_list = 1`, `float_list = 2`,
/// `int64_list = 3`; each list's `value = 1`, numbers packed).
fn encode_feature(f: &Feature) -> Vec<u8> {
    let mut list = Vec::new();
    let tag = match f {
        Feature::NotSet => return Vec::new(),
        Feature::Bytes(v) => {
            for b in v {
                put_len_delimited(&mut list, 0x0A, b);
            }
            0x0A
        }
        Feature::Float(v) => {
            let packed: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            if !packed.is_empty() {
                put_len_delimited(&mut list, 0x0A, &packed);
            }
            0x12
        }
        Feature::Int64(v) => {
            let mut packed = Vec::new();
            for &x in v {
                put_varint(&mut packed, x as u64);
            }
            if !packed.is_empty() {
                put_len_delimited(&mut list, 0x0A, &packed);
            }
            0x1A
        }
    };
    let mut out = Vec::new();
    put_len_delimited(&mut out, tag, &list);
    out
}

/// `tensorflow.Example { Features features = 1 }`, `Features { map<string, Feature>
/// feature = 1 }`; map entries sorted by key.
fn encode_example(features: &BTreeMap<Vec<u8>, Feature>) -> Vec<u8> {
    if features.is_empty() {
        return Vec::new();
    }
    let mut map = Vec::new();
    for (k, f) in features {
        let mut entry = Vec::new();
        put_len_delimited(&mut entry, 0x0A, k);
        put_len_delimited(&mut entry, 0x12, &encode_feature(f));
        put_len_delimited(&mut map, 0x0A, &entry);
    }
    let mut out = Vec::new();
    put_len_delimited(&mut out, 0x0A, &map);
    out
}

/// `MakeExampleFromJsonObject`: a later duplicate key replaces an earlier one.
fn make_example(v: &JsonValue) -> Result<Vec<u8>, ServingError> {
    let Some(members) = v.as_object() else {
        return Err(ServingError::invalid_argument(format!(
            "Example must be JSON object but got JSON {}",
            v.type_name()
        )));
    };
    let mut features = BTreeMap::new();
    for (k, content) in members {
        // A feature name is a protobuf `string` (the key of `Features.feature`): raw bytes
        // there would make a serialized Example that protobuf refuses to parse.
        let Ok(name) = std::str::from_utf8(k) else {
            return Err(ServingError::invalid_argument(format!(
                "Example feature name '{}' is not valid UTF-8",
                String::from_utf8_lossy(k)
            )));
        };
        let mut f = Feature::NotSet;
        match content.as_array() {
            Some(items) => {
                for item in items {
                    add_value(item, name, &mut f)?;
                }
            }
            None => add_value(content, name, &mut f)?,
        }
        features.insert(k.clone(), f);
    }
    Ok(encode_example(&features))
}

/// `FillClassifyRegressRequestFromJson`.
pub fn decode_examples(doc: &JsonDoc) -> Result<ExamplesJson, ServingError> {
    let signature_name = predict_signature_name(doc)?;
    let root = doc.root();
    let context = match root.get("context") {
        Some(c) => Some(make_example(c)?),
        None => None,
    };
    let Some(examples) = root.get("examples") else {
        return Err(format_error(
            doc,
            "When method is classify, key 'examples' is expected and was not found",
        ));
    };
    let Some(items) = examples.as_array() else {
        return Err(format_error(
            doc,
            "Expecting 'examples' value to be an list/array",
        ));
    };
    if items.is_empty() {
        return Err(format_error(doc, "'examples' value is an empty array"));
    }
    let examples = items.iter().map(make_example).collect::<Result<_, _>>()?;
    Ok(ExamplesJson {
        signature_name,
        context,
        examples,
    })
}

/// `MakeJsonFromClassificationResult`: per example, a list of `[label, score]`.
/// Bytes, because labels are written raw, like TF Serving.
pub fn encode_classify(results: &[Vec<(Vec<u8>, f32)>]) -> Result<Vec<u8>, ServingError> {
    if results.is_empty() {
        return Err(ServingError::invalid_argument(
            "Cannot convert empty ClassificationResults to JSON",
        ));
    }
    let mut w = PrettyWriter::new();
    w.start_object();
    w.key(b"results");
    w.start_array();
    for classes in results {
        w.set_single_line_array(true);
        w.start_array();
        for (label, score) in classes {
            w.start_array();
            w.string(label);
            w.raw_number(decimal_f32(*score).as_bytes());
            w.end_array();
        }
        w.end_array();
        w.set_single_line_array(false);
    }
    w.end_array();
    w.end_object();
    Ok(w.into_bytes())
}

/// `MakeJsonFromRegressionResult`: one number per example.
pub fn encode_regress(values: &[f32]) -> Result<String, ServingError> {
    if values.is_empty() {
        return Err(ServingError::invalid_argument(
            "Cannot convert empty RegressionResults to JSON",
        ));
    }
    let mut w = PrettyWriter::new();
    w.start_object();
    w.key(b"results");
    w.set_single_line_array(true);
    w.start_array();
    for v in values {
        w.raw_number(decimal_f32(*v).as_bytes());
    }
    w.end_array();
    w.end_object();
    Ok(String::from_utf8_lossy(&w.into_bytes()).into_owned())
}
