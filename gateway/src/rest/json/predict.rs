//! Predict requests and responses: `FillPredictRequestFromJson` and
//! `MakeJsonFromTensors` of `json_tensor.cc`.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use tfgate_tensor::tensor::{num_elements, DataType, Tensor, TensorData};

use super::b64::{decode_b64_object, is_b64_object};
use super::float::{decimal_f32, decimal_f64, push_f32};
use super::parser::JsonValue;
use super::writer::{debug_string, PrettyWriter};
use super::{format_error, status_to_string, JsonDoc, PredictFormat, PredictJson};
use crate::error::ServingError;

/// Values as a `TensorProto` holds them while the JSON is read.
enum Vals {
    Float(Vec<f32>),
    Double(Vec<f64>),
    /// `int_val`: int32, int16, int8 and uint8.
    Int(Vec<i32>),
    Int64(Vec<i64>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<Vec<u8>>),
    /// A dtype JSON cannot carry; any value is an error.
    Unsupported,
}

impl Vals {
    fn new(dtype: DataType) -> Vals {
        match dtype {
            DataType::Float => Vals::Float(Vec::new()),
            DataType::Double => Vals::Double(Vec::new()),
            DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint8 => {
                Vals::Int(Vec::new())
            }
            DataType::Int64 => Vals::Int64(Vec::new()),
            DataType::Uint32 => Vals::Uint32(Vec::new()),
            DataType::Uint64 => Vals::Uint64(Vec::new()),
            DataType::Bool => Vals::Bool(Vec::new()),
            DataType::String => Vals::Str(Vec::new()),
            _ => Vals::Unsupported,
        }
    }
}

/// Decoded inputs by name: dtype, shape, values.
type Decoded = BTreeMap<String, (DataType, Vec<i64>, Vals)>;

struct Acc {
    dtype: DataType,
    vals: Vals,
}

/// The name and dtype of a signature's only input; `None` when it has several (or
/// none), which the row and columnar forms of a plain list refuse.
pub(super) fn single_input(inputs: &[(String, DataType)]) -> Option<(String, DataType)> {
    match inputs {
        [(name, dtype)] => Some((name.clone(), *dtype)),
        _ => None,
    }
}

fn type_error(v: &JsonValue, dtype: DataType) -> ServingError {
    ServingError::invalid_argument(format!(
        "JSON Value: {} Type: {} is not of expected type: {}",
        debug_string(v),
        v.type_name(),
        dtype.name()
    ))
}

/// `AddValueToTensor`.
fn add_value(v: &JsonValue, acc: &mut Acc) -> Result<(), ServingError> {
    let dtype = acc.dtype;
    match &mut acc.vals {
        Vals::Float(out) => out.push(v.as_f32().ok_or_else(|| type_error(v, dtype))?),
        Vals::Double(out) => out.push(v.as_f64().ok_or_else(|| type_error(v, dtype))?),
        Vals::Int(out) => out.push(v.as_i32().ok_or_else(|| type_error(v, dtype))?),
        Vals::Str(out) => out.push(v.as_bytes().ok_or_else(|| type_error(v, dtype))?.to_vec()),
        Vals::Int64(out) => out.push(v.as_i64().ok_or_else(|| type_error(v, dtype))?),
        Vals::Bool(out) => match v {
            JsonValue::Bool(b) => out.push(*b),
            _ => return Err(type_error(v, dtype)),
        },
        Vals::Uint32(out) => out.push(v.as_u32().ok_or_else(|| type_error(v, dtype))?),
        Vals::Uint64(out) => out.push(v.as_u64().ok_or_else(|| type_error(v, dtype))?),
        Vals::Unsupported => {
            return Err(ServingError::unimplemented(format!(
                "Conversion of JSON Value: {} to type: {}",
                debug_string(v),
                dtype.name()
            )))
        }
    }
    Ok(())
}

/// One leaf of the DOM (`FillTensorProto` on a non-array).
fn add_leaf(v: &JsonValue, acc: &mut Acc) -> Result<(), ServingError> {
    if v.as_object().is_some() {
        if acc.dtype == DataType::String {
            let bytes = decode_b64_object(v)?;
            if let Vals::Str(out) = &mut acc.vals {
                out.push(bytes);
            }
            Ok(())
        } else {
            Err(type_error(v, acc.dtype))
        }
    } else {
        add_value(v, acc)
    }
}

/// `GetDenseTensorShape`: array sizes, following first elements.
fn dense_shape(mut v: &JsonValue) -> Vec<i64> {
    let mut shape = Vec::new();
    while let Some(items) = v.as_array() {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => v = first,
            None => break,
        }
    }
    shape
}

/// `FillTensorProto`, iterative: checks that every list sits at the expected level with
/// the expected size, and every leaf at the last level; returns the number of leaves.
fn fill(root: &JsonValue, shape: &[i64], acc: &mut Acc) -> Result<usize, ServingError> {
    let rank = shape.len();
    let mut count = 0usize;
    // (remaining items of an open list, level of those items)
    let mut stack: Vec<(std::slice::Iter<'_, JsonValue>, usize)> = Vec::new();
    let mut next: Option<(&JsonValue, usize)> = Some((root, 0));
    loop {
        if let Some((v, level)) = next.take() {
            match v.as_array() {
                None => {
                    if level != rank {
                        return Err(ServingError::invalid_argument(format!(
                            "JSON Value: {} found at incorrect level: {} in the JSON DOM. \
                             Expected at level: {}",
                            debug_string(v),
                            level + 1,
                            rank
                        )));
                    }
                    add_leaf(v, acc)?;
                    count += 1;
                }
                Some(items) => {
                    if level >= rank {
                        return Err(ServingError::invalid_argument(format!(
                            "Encountered list at unexpected level: {level} expected < {rank}"
                        )));
                    }
                    let want = shape.get(level).copied().unwrap_or(0);
                    if items.len() as i64 != want {
                        return Err(ServingError::invalid_argument(format!(
                            "Encountered list at unexpected size: {} at level: {} expected \
                             size: {}",
                            items.len(),
                            level,
                            want
                        )));
                    }
                    stack.push((items.iter(), level + 1));
                }
            }
        }
        match stack.last_mut() {
            None => return Ok(count),
            Some((iter, level)) => match iter.next() {
                Some(v) => next = Some((v, *level)),
                None => {
                    stack.pop();
                }
            },
        }
    }
}

fn shape_to_string(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct RowState {
    tensors: BTreeMap<String, Acc>,
    sizes: BTreeMap<String, usize>,
    shapes: BTreeMap<String, Vec<i64>>,
}

/// `AddInstanceItem`.
fn add_instance_item(
    item: &JsonValue,
    name: &str,
    inputs: &BTreeMap<String, DataType>,
    st: &mut RowState,
) -> Result<(), ServingError> {
    let Some(&dtype) = inputs.get(name) else {
        return Err(ServingError::invalid_argument(format!(
            "JSON object: does not have named input: {name}"
        )));
    };
    let shape = dense_shape(item);
    let acc = st.tensors.entry(name.to_string()).or_insert_with(|| Acc {
        dtype,
        vals: Vals::new(dtype),
    });
    let size = fill(item, &shape, acc)?;
    match (st.sizes.get(name), st.shapes.get(name)) {
        (Some(&want), _) if want != size => Err(ServingError::invalid_argument(format!(
            "Expecting tensor size: {want} but got: {size}"
        ))),
        (Some(_), Some(want)) if *want != shape => Err(ServingError::invalid_argument(format!(
            "Expecting shape {} but got: {}",
            shape_to_string(want),
            shape_to_string(&shape)
        ))),
        (Some(_), _) => Ok(()),
        (None, _) => {
            st.sizes.insert(name.to_string(), size);
            st.shapes.insert(name.to_string(), shape);
            Ok(())
        }
    }
}

/// `FillTensorMapFromInstancesList`.
fn from_instances(
    instances: &[JsonValue],
    inputs: &BTreeMap<String, DataType>,
) -> Result<Decoded, ServingError> {
    let Some(first) = instances.first() else {
        return Ok(BTreeMap::new());
    };
    if first.as_object().is_none() && inputs.len() > 1 {
        return Err(ServingError::invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input \
             tensors required as per tensorinfo_map",
        ));
    }
    let is_element_object = |v: &JsonValue| v.as_object().is_some() && !is_b64_object(v);
    let elements_are_objects = is_element_object(first);
    let input_names: BTreeSet<&[u8]> = inputs.keys().map(|k| k.as_bytes()).collect();
    let mut st = RowState {
        tensors: BTreeMap::new(),
        sizes: BTreeMap::new(),
        shapes: BTreeMap::new(),
    };
    let mut count = 0usize;
    for elem in instances {
        if elements_are_objects {
            let Some(members) = elem.as_object().filter(|_| is_element_object(elem)) else {
                return Err(ServingError::invalid_argument(format!(
                    "Expecting object but got list at item {count} of input list"
                )));
            };
            let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
            for (k, v) in members {
                keys.insert(k);
                let name = lossy(k);
                add_instance_item(v, &name, inputs, &mut st).map_err(|e| {
                    ServingError::invalid_argument(format!(
                        "Failed to process element: {count} key: {name} of 'instances' list. \
                         Error: {}",
                        status_to_string(&e)
                    ))
                })?;
            }
            if keys != input_names {
                let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
                return Err(ServingError::invalid_argument(format!(
                    "Failed to process element: {count} of 'instances' list. JSON object: {} \
                     keys must be equal to: {}",
                    debug_string(elem),
                    names.join(",")
                )));
            }
        } else {
            if is_element_object(elem) {
                return Err(ServingError::invalid_argument(format!(
                    "Expecting value/list but got object at item {count} of input list"
                )));
            }
            let name = inputs.keys().next().cloned().unwrap_or_default();
            add_instance_item(elem, &name, inputs, &mut st).map_err(|e| {
                ServingError::invalid_argument(format!(
                    "Failed to process element: {count} of 'instances' list. Error: {}",
                    status_to_string(&e)
                ))
            })?;
        }
        count += 1;
    }
    let mut out = BTreeMap::new();
    for (name, acc) in st.tensors {
        let mut shape = vec![count as i64];
        shape.extend(st.shapes.get(&name).cloned().unwrap_or_default());
        out.insert(name, (acc.dtype, shape, acc.vals));
    }
    Ok(out)
}

/// `FillTensorMapFromInputsMap`.
fn from_inputs(
    val: &JsonValue,
    inputs: &BTreeMap<String, DataType>,
) -> Result<Decoded, ServingError> {
    let mut out = BTreeMap::new();
    let mut one = |name: &str, dtype: DataType, v: &JsonValue| -> Result<(), ServingError> {
        let shape = dense_shape(v);
        let mut acc = Acc {
            dtype,
            vals: Vals::new(dtype),
        };
        fill(v, &shape, &mut acc)?;
        out.insert(name.to_string(), (dtype, shape, acc.vals));
        Ok(())
    };
    if val.as_object().is_none() || is_b64_object(val) {
        if inputs.len() > 1 {
            return Err(ServingError::invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input \
                 tensors required as per tensorinfo_map",
            ));
        }
        if let Some((name, &dtype)) = inputs.iter().next() {
            one(name, dtype, val)?;
        }
    } else {
        for (name, &dtype) in inputs {
            let Some(item) = val.get(name) else {
                return Err(ServingError::invalid_argument(format!(
                    "Missing named input: {name} in 'inputs' object."
                )));
            };
            one(name, dtype, item)?;
        }
    }
    Ok(out)
}

/// TF's `Tensor::FromProto` for typed value fields: extra values are ignored, missing
/// ones repeat the last value (or the default if there is none).
fn fit<T: Clone + Default>(mut v: Vec<T>, n: usize) -> Vec<T> {
    if v.len() >= n {
        v.truncate(n);
    } else {
        let last = v.last().cloned().unwrap_or_default();
        v.resize(n, last);
    }
    v
}

fn le_bytes<T, const N: usize>(v: Vec<T>, n: usize, f: impl Fn(T) -> [u8; N]) -> bytes::Bytes
where
    T: Clone + Default,
{
    fit(v, n)
        .into_iter()
        .flat_map(f)
        .collect::<Vec<u8>>()
        .into()
}

/// The `TensorProto` as TF would turn it into a tensor; `None` where TF's `FromProto`
/// fails (more than 254 dimensions, or a dtype that has no JSON form).
fn to_tensor(dtype: DataType, shape: Vec<i64>, vals: Vals) -> Option<Tensor> {
    const MAX_DIMS: usize = 254;
    if shape.len() > MAX_DIMS {
        return None;
    }
    let n = num_elements(&shape).ok()?;
    let data = match vals {
        Vals::Float(v) => TensorData::Bytes(le_bytes(v, n, f32::to_le_bytes)),
        Vals::Double(v) => TensorData::Bytes(le_bytes(v, n, f64::to_le_bytes)),
        Vals::Int(v) => TensorData::Bytes(match dtype {
            // int_val narrows like a C++ integer conversion.
            DataType::Int8 => le_bytes(v, n, |x| (x as i8).to_le_bytes()),
            DataType::Uint8 => le_bytes(v, n, |x| (x as u8).to_le_bytes()),
            DataType::Int16 => le_bytes(v, n, |x| (x as i16).to_le_bytes()),
            _ => le_bytes(v, n, i32::to_le_bytes),
        }),
        Vals::Int64(v) => TensorData::Bytes(le_bytes(v, n, i64::to_le_bytes)),
        Vals::Uint32(v) => TensorData::Bytes(le_bytes(v, n, u32::to_le_bytes)),
        Vals::Uint64(v) => TensorData::Bytes(le_bytes(v, n, u64::to_le_bytes)),
        Vals::Bool(v) => TensorData::Bytes(le_bytes(v, n, |b| [u8::from(b)])),
        Vals::Str(v) => TensorData::Strings(fit(v, n)),
        Vals::Unsupported => {
            // Only reachable with zero elements (any value fails to convert).
            let size = dtype.element_size()?;
            TensorData::Bytes(vec![0; n.checked_mul(size)?].into())
        }
    };
    Tensor::new(dtype, shape, data).ok()
}

/// `signature_name` of a predict, classify or regress body (`FillSignature`).
pub fn predict_signature_name(doc: &JsonDoc) -> Result<Option<String>, ServingError> {
    match doc.root().get("signature_name") {
        None => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(lossy(s))),
        Some(_) => Err(ServingError::invalid_argument(format!(
            "JSON Value: {} not formatted correctly. 'signature_name' key must be a string \
             value.",
            debug_string(doc.root())
        ))),
    }
}

/// `FillPredictRequestFromJson` once the signature is known: `signature_inputs` are
/// the signature's input aliases and dtypes (any order). Shapes are not checked against
/// the signature, as TF Serving does not.
pub fn decode_predict(
    doc: &JsonDoc,
    signature_inputs: &[(String, DataType)],
) -> Result<PredictJson, ServingError> {
    let signature_name = predict_signature_name(doc)?;
    let inputs: BTreeMap<String, DataType> = signature_inputs.iter().cloned().collect();
    if inputs.is_empty() {
        let name = match signature_name.as_deref() {
            None | Some("") => "DEFAULT",
            Some(s) => s,
        };
        return Err(ServingError::invalid_argument(format!(
            "Failed to get input map for signature: {name}"
        )));
    }
    let root = doc.root();
    let (format, tensors) = match (root.get("instances"), root.get("inputs")) {
        (Some(_), Some(_)) => {
            return Err(format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys \
                 to exist ",
            ))
        }
        (Some(instances), None) => {
            let Some(items) = instances.as_array() else {
                return Err(format_error(
                    doc,
                    "Expecting 'instances' to be an list/array",
                ));
            };
            if items.is_empty() {
                return Err(format_error(doc, "No values in 'instances' array"));
            }
            (PredictFormat::Row, from_instances(items, &inputs)?)
        }
        (None, Some(val)) => (PredictFormat::Columnar, from_inputs(val, &inputs)?),
        (None, None) => {
            return Err(ServingError::invalid_argument(
                "Missing 'inputs' or 'instances' key",
            ))
        }
    };
    let mut out = Vec::with_capacity(tensors.len());
    for (name, (dtype, shape, vals)) in tensors {
        let Some(t) = to_tensor(dtype, shape, vals) else {
            return Err(ServingError::invalid_argument(format!(
                "tensor parsing error: {name}"
            )));
        };
        out.push((name, t));
    }
    Ok(PredictJson {
        signature_name,
        format,
        inputs: out,
    })
}

/// Reads element `i` of a checked tensor.
fn element<const N: usize>(t: &Tensor, i: usize) -> Option<[u8; N]> {
    match &t.data {
        TensorData::Bytes(b) => b.get(i * N..i * N + N)?.try_into().ok(),
        TensorData::Strings(_) | TensorData::File(_) => None,
    }
}

/// `AddSingleValueAndAdvance`.
fn write_single(
    t: &Tensor,
    as_bytes: bool,
    w: &mut PrettyWriter,
    offset: &mut usize,
) -> Result<(), ServingError> {
    let i = *offset;
    let ok = match t.dtype {
        DataType::Float => {
            element(t, i).map(|b| w.raw_number(decimal_f32(f32::from_le_bytes(b)).as_bytes()))
        }
        DataType::Double => {
            element(t, i).map(|b| w.raw_number(decimal_f64(f64::from_le_bytes(b)).as_bytes()))
        }
        DataType::Int32 => element(t, i).map(|b| w.integer(i32::from_le_bytes(b))),
        DataType::Int16 => element(t, i).map(|b| w.integer(i16::from_le_bytes(b))),
        DataType::Int8 => element(t, i).map(|b| w.integer(i8::from_le_bytes(b))),
        DataType::Uint8 => element(t, i).map(|b: [u8; 1]| w.integer(b[0])),
        DataType::Int64 => element(t, i).map(|b| w.integer(i64::from_le_bytes(b))),
        DataType::Bool => element(t, i).map(|b: [u8; 1]| w.bool(b[0] != 0)),
        DataType::Uint32 => element(t, i).map(|b| w.integer(u32::from_le_bytes(b))),
        DataType::Uint64 => element(t, i).map(|b| w.integer(u64::from_le_bytes(b))),
        DataType::String => match &t.data {
            TensorData::Strings(s) => s.get(i).map(|s| {
                if as_bytes {
                    w.start_object();
                    w.key(b"b64");
                    w.string(
                        base64::engine::general_purpose::STANDARD
                            .encode(s)
                            .as_bytes(),
                    );
                    w.end_object();
                } else {
                    w.string(s);
                }
            }),
            TensorData::Bytes(_) | TensorData::File(_) => None,
        },
        _ => None,
    };
    if ok.is_none() {
        return Err(ServingError::invalid_argument(format!(
            "Failed to write JSON value for tensor type: {}",
            t.dtype.name()
        )));
    }
    *offset += 1;
    Ok(())
}

/// The innermost row of a numeric tensor in one pass (what `write_single` would write
/// for each of its `size` values); false, writing nothing, for other dtypes or a row
/// past the data, which then go value by value.
fn write_numbers(t: &Tensor, size: usize, w: &mut PrettyWriter, offset: &mut usize) -> bool {
    fn row<const N: usize>(
        t: &Tensor,
        size: usize,
        offset: usize,
        w: &mut PrettyWriter,
        text: impl Fn([u8; N], &mut Vec<u8>),
    ) -> bool {
        let TensorData::Bytes(b) = &t.data else {
            return false;
        };
        let Some(row) = offset
            .checked_add(size)
            .and_then(|end| b.get(offset * N..end.checked_mul(N)?))
        else {
            return false;
        };
        w.numbers(size, |i, out| {
            let mut e = [0u8; N];
            e.copy_from_slice(&row[i * N..i * N + N]);
            text(e, out);
        });
        true
    }
    let done = match t.dtype {
        DataType::Float => row(t, size, *offset, w, |b, out| {
            push_f32(out, f32::from_le_bytes(b))
        }),
        DataType::Double => row(t, size, *offset, w, |b, out| {
            out.extend_from_slice(decimal_f64(f64::from_le_bytes(b)).as_bytes())
        }),
        DataType::Int32 => row(t, size, *offset, w, |b, out| {
            out.extend_from_slice(itoa::Buffer::new().format(i32::from_le_bytes(b)).as_bytes())
        }),
        DataType::Int64 => row(t, size, *offset, w, |b, out| {
            out.extend_from_slice(itoa::Buffer::new().format(i64::from_le_bytes(b)).as_bytes())
        }),
        _ => false,
    };
    if done {
        *offset += size;
    }
    done
}

/// `AddTensorValues`: dimensions from `dim` on, as nested arrays.
fn write_values(
    t: &Tensor,
    as_bytes: bool,
    dim: usize,
    w: &mut PrettyWriter,
    offset: &mut usize,
) -> Result<(), ServingError> {
    let rank = t.shape.len();
    if dim >= rank {
        return write_single(t, as_bytes, w, offset);
    }
    w.start_array();
    let size = t.shape[dim].max(0);
    if dim == rank - 1 && write_numbers(t, size as usize, w, offset) {
        w.end_array();
        return Ok(());
    }
    for _ in 0..size {
        if dim == rank - 1 {
            write_single(t, as_bytes, w, offset)?;
        } else {
            write_values(t, as_bytes, dim + 1, w, offset)?;
        }
    }
    w.end_array();
    Ok(())
}

/// `IsNamedTensorBytes`.
fn is_bytes(name: &str, t: &Tensor) -> bool {
    t.dtype == DataType::String && name.ends_with("_bytes")
}

/// `MakeJsonFromTensors`: the predict response body. Outputs are written sorted by name.
///
/// The body is bytes, not `String`: string outputs not named `*_bytes` are written as
/// their raw bytes, as TF Serving does, so the body is invalid UTF-8 when they are.
pub fn encode_predict(
    format: PredictFormat,
    outputs: &[(String, Tensor)],
) -> Result<Vec<u8>, ServingError> {
    if outputs.is_empty() {
        return Err(ServingError::invalid_argument(
            "Cannot convert empty tensor map to JSON",
        ));
    }
    let mut sorted: Vec<&(String, Tensor)> = outputs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in &sorted {
        t.check().map_err(|e| {
            ServingError::internal(format!("Output tensor {name} is malformed: {e}"))
        })?;
    }
    // Room for every number's text up front (about 13 bytes a float, `-0.123456789, `,
    // fewer for integers): a body of megabytes is not copied on each doubling.
    let estimate: usize = sorted
        .iter()
        .map(|(_, t)| {
            t.num_elements().saturating_mul(match t.dtype {
                DataType::Float => 14,
                DataType::Double => 22,
                _ => 8,
            })
        })
        .fold(256usize, usize::saturating_add);
    let mut w = PrettyWriter::with_capacity(estimate.min(1 << 30));
    let several = sorted.len() > 1;
    match format {
        PredictFormat::Row => {
            let mut batch: Option<i64> = None;
            for (name, t) in &sorted {
                let Some(&cur) = t.shape.first() else {
                    return Err(ServingError::invalid_argument(format!(
                        "Tensor name: {name} has no shape information "
                    )));
                };
                if let Some(b) = batch.filter(|&b| b != cur) {
                    return Err(ServingError::invalid_argument(format!(
                        "Tensor name: {name} has inconsistent batch size: {cur} expecting: {b}"
                    )));
                }
                batch = Some(cur);
            }
            let mut offsets = vec![0usize; sorted.len()];
            w.start_object();
            w.key(b"predictions");
            w.start_array();
            for _ in 0..batch.unwrap_or(0) {
                if several {
                    w.start_object();
                }
                w.set_single_line_array(true);
                for ((name, t), offset) in sorted.iter().zip(offsets.iter_mut()) {
                    if several {
                        w.key(name.as_bytes());
                    }
                    write_values(t, is_bytes(name, t), 1, &mut w, offset)?;
                }
                w.set_single_line_array(false);
                if several {
                    w.end_object();
                }
            }
            w.end_array();
            w.end_object();
        }
        PredictFormat::Columnar => {
            w.start_object();
            w.key(b"outputs");
            if several {
                w.start_object();
            }
            for (name, t) in &sorted {
                if several {
                    w.key(name.as_bytes());
                }
                let mut offset = 0;
                write_values(t, is_bytes(name, t), 0, &mut w, &mut offset)?;
            }
            if several {
                w.end_object();
            }
            w.end_object();
        }
    }
    Ok(w.into_bytes())
}
