//! One V2 inference request, whichever transport brought it: its inputs (raw bytes or
//! values already packed) checked against the signature and made tensors, and its
//! outputs chosen, ordered and turned back into V2's raw layout. Nothing here knows JSON
//! or protobuf.

use crate::error::ServingError;
use crate::predictor::{Outputs, Predictor, Served};
use crate::request::{DecodeInputs, Entrypoint, OutputTarget, PredictRequest};
use crate::servables::ServableRequest;
use crate::v2::datatype;
use crate::v2::shared_memory::Held;
use bytes::{Bytes, BytesMut};
use std::collections::HashSet;
use tfgate_proto::tensorflow::{SignatureDef, TensorInfo};
use tfgate_tensor::tensor::{num_elements, DataType, Tensor, TensorData};
use tokio::time::Instant;

/// One inference call, decoded from either transport.
pub struct Call {
    pub servable: ServableRequest,
    /// `serving_default` when empty (the request parameter `signature_name`).
    pub signature_name: String,
    pub inputs: Given,
    /// Output names in the order asked for; empty: every output of the signature.
    pub outputs: Vec<String>,
    /// Outputs asked for in a shared-memory region: written there straight from the
    /// worker's answer.
    pub output_targets: Vec<OutputTarget>,
    pub deadline: Instant,
    pub entrypoint: Entrypoint,
}

/// Runs `call` on the one predictor every front end shares; the outputs come in the
/// order asked for.
pub async fn run(predictor: &Predictor, call: Call) -> Result<Served<Outputs>, ServingError> {
    let requested = call.outputs.clone();
    let request = |inputs| PredictRequest {
        servable: call.servable,
        signature_name: call.signature_name,
        inputs,
        output_filter: call.outputs,
        deadline: call.deadline,
        entrypoint: call.entrypoint,
        output_targets: call.output_targets,
    };
    let served = match call.inputs {
        Given::Listed(inputs) => predictor.predict(request(Given::Listed(inputs))).await?,
        Given::Raw(body) => predictor.predict(request(Given::Raw(body))).await?,
    };
    Ok(Served {
        value: ordered(served.value, &requested),
        ..served
    })
}

/// An input's elements as they arrived.
#[derive(Debug)]
pub enum InputData {
    /// V2's raw layout (the binary extension, gRPC `raw_input_contents`, a shared-memory
    /// region): little-endian elements; BYTES elements each a 4-byte little-endian
    /// length, then the bytes.
    Raw(Bytes),
    /// Elements already packed for the input's datatype (from JSON or typed contents).
    Packed(TensorData),
    /// A shared-memory region's bytes, at most the given limit of them: numeric elements
    /// stay there until the frame's writer copies them into the worker's shared memory
    /// (their one copy); BYTES and BOOL elements, which are checked here, are read first.
    Region(Held, usize),
}

/// One input as a V2 request names it.
#[derive(Debug)]
pub struct Input {
    pub name: String,
    /// As sent (`FP32`, ...); checked against the signature.
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: InputData,
}

/// A request's inputs, decoded once the signature is known.
pub struct Inputs(pub Vec<Input>);

/// What a request carries as inputs.
pub enum Given {
    /// Named inputs.
    Listed(Vec<Input>),
    /// A raw binary request (`Inference-Header-Content-Length: 0`, Triton's binary data
    /// extension): the body is the raw data of the signature's one input, whose datatype
    /// comes from the signature and whose shape follows from the byte size where at most
    /// one dimension is variable (a BYTES input: the body is one element).
    Raw(Bytes),
}

impl DecodeInputs for Given {
    fn decode(self, signature: &SignatureDef) -> Result<Vec<(String, Tensor)>, ServingError> {
        match self {
            Given::Listed(inputs) => Inputs(inputs).decode(signature),
            Given::Raw(body) => Inputs(vec![raw_input(signature, body)?]).decode(signature),
        }
    }
}

/// The one input a raw binary request carries, named and shaped from the signature.
fn raw_input(signature: &SignatureDef, body: Bytes) -> Result<Input, ServingError> {
    const RAW: &str = "a raw binary request (Inference-Header-Content-Length: 0)";
    let mut inputs = signature.inputs.iter();
    let (name, info) = match (inputs.next(), inputs.next()) {
        (Some(one), None) => one,
        _ => {
            return Err(bad(format!(
                "{RAW} needs a model with exactly one input; this signature has {}",
                signature.inputs.len()
            )))
        }
    };
    let datatype = signature_datatype(info);
    let dtype = DataType::from_i32(info.dtype)
        .filter(|_| !datatype.is_empty())
        .ok_or_else(|| bad(format!("input '{name}' has a type V2 cannot carry")))?;
    let expected = signature_shape(info).ok_or_else(|| {
        bad(format!(
            "{RAW} cannot deduce the shape of input '{name}', whose rank is unknown; send the JSON header"
        ))
    })?;
    let variable = expected.iter().filter(|&&d| d < 0).count();
    if variable > 1 {
        return Err(bad(format!(
            "{RAW} cannot deduce the shape of input '{name}' {}: more than one dimension is variable; send the JSON header",
            shape_text(&expected)
        )));
    }
    let (elements, data) = match dtype.element_size() {
        // BYTES: the body is one element, in V2's raw layout.
        None => {
            let len = u32::try_from(body.len())
                .map_err(|_| bad(format!("{RAW}: the body is too large for one element")))?;
            let mut raw = BytesMut::with_capacity(4 + body.len());
            raw.extend_from_slice(&len.to_le_bytes());
            raw.extend_from_slice(&body);
            (1, raw.freeze())
        }
        Some(size) => {
            if !body.len().is_multiple_of(size) {
                return Err(bad(format!(
                    "{RAW} of {} bytes is not a whole number of {datatype} elements ({size} bytes each) for input '{name}'",
                    body.len()
                )));
            }
            (body.len() / size, body)
        }
    };
    let fixed: usize = expected
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as usize)
        .product();
    let shape: Vec<i64> = match (variable, fixed) {
        (0, _) if fixed == elements => expected,
        (1, f) if f > 0 && elements.is_multiple_of(f) => expected
            .iter()
            .map(|&d| if d < 0 { (elements / f) as i64 } else { d })
            .collect(),
        _ => {
            return Err(bad(format!(
                "{RAW} of {elements} {datatype} elements does not fit input '{name}' of shape {}",
                shape_text(&expected)
            )))
        }
    };
    Ok(Input {
        name: name.clone(),
        datatype: datatype.to_string(),
        shape,
        data: InputData::Raw(data),
    })
}

fn bad(message: String) -> ServingError {
    ServingError::invalid_argument(message)
}

/// `[1,-1,3]` as V2 writes shapes.
fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// The signature's shape of a tensor: `None` for an unknown rank, `-1` for unknown dims.
pub fn signature_shape(info: &TensorInfo) -> Option<Vec<i64>> {
    let shape = info.tensor_shape.as_ref()?;
    if shape.unknown_rank {
        return None;
    }
    Some(shape.dim.iter().map(|d| d.size.max(-1)).collect())
}

/// The V2 datatype of a signature tensor, `""` where V2 has none.
pub fn signature_datatype(info: &TensorInfo) -> &'static str {
    DataType::from_i32(info.dtype)
        .and_then(datatype::name)
        .unwrap_or("")
}

impl DecodeInputs for Inputs {
    fn decode(self, signature: &SignatureDef) -> Result<Vec<(String, Tensor)>, ServingError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(self.0.len());
        for input in self.0 {
            if !seen.insert(input.name.clone()) {
                return Err(bad(format!("input '{}' is given twice", input.name)));
            }
            let dtype = datatype::parse(&input.datatype).ok_or_else(|| {
                bad(format!(
                    "input '{}' has unknown datatype '{}'",
                    input.name, input.datatype
                ))
            })?;
            // An input the signature lacks is left to validation, which names it among
            // the extra ones as TF Serving does.
            if let Some(info) = signature.inputs.get(&input.name) {
                let expected = signature_datatype(info);
                if expected != input.datatype {
                    return Err(bad(format!(
                        "input '{}' has datatype {}, the model expects {}",
                        input.name,
                        input.datatype,
                        if expected.is_empty() {
                            "a type V2 cannot carry"
                        } else {
                            expected
                        }
                    )));
                }
                if let Some(expected) = signature_shape(info) {
                    let fits = expected.len() == input.shape.len()
                        && expected
                            .iter()
                            .zip(&input.shape)
                            .all(|(&e, &g)| e < 0 || e == g);
                    if !fits {
                        return Err(bad(format!(
                            "input '{}' has shape {}, the model expects {}",
                            input.name,
                            shape_text(&input.shape),
                            shape_text(&expected)
                        )));
                    }
                }
            }
            let tensor = tensor(&input.name, dtype, input.shape, input.data)?;
            out.push((input.name, tensor));
        }
        Ok(out)
    }
}

/// The elements `shape` holds, or the V2 error naming the input.
pub fn element_count(name: &str, shape: &[i64]) -> Result<usize, ServingError> {
    num_elements(shape).map_err(|e| {
        bad(format!(
            "input '{name}' has an invalid shape {}: {e}",
            shape_text(shape)
        ))
    })
}

fn tensor(
    name: &str,
    dtype: DataType,
    shape: Vec<i64>,
    data: InputData,
) -> Result<Tensor, ServingError> {
    let elements = element_count(name, &shape)?;
    let data = match data {
        InputData::Packed(data) => data,
        InputData::Raw(raw) => raw_data(name, dtype, &shape, elements, raw)?,
        InputData::Region(held, limit) => match dtype {
            DataType::String | DataType::Bool => {
                raw_data(name, dtype, &shape, elements, held.read(limit)?)?
            }
            _ => {
                let file = held.input(limit)?;
                byte_size_matches(name, dtype, &shape, elements, file.len)?;
                TensorData::File(file)
            }
        },
    };
    Tensor::new(dtype, shape, data).map_err(|e| bad(format!("input '{name}': {e}")))
}

/// Elements in V2's raw layout, checked against the datatype and shape.
fn raw_data(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    elements: usize,
    raw: Bytes,
) -> Result<TensorData, ServingError> {
    if dtype.element_size().is_none() {
        return Ok(TensorData::Strings(split_bytes(name, &raw, elements)?));
    }
    byte_size_matches(name, dtype, shape, elements, raw.len())?;
    if dtype == DataType::Bool && raw.iter().any(|&b| b > 1) {
        return Err(bad(format!(
            "input '{name}' is BOOL but holds a byte other than 0 or 1"
        )));
    }
    Ok(TensorData::Bytes(raw))
}

/// Checks `len` bytes of raw data hold `elements` elements of `dtype`.
fn byte_size_matches(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    elements: usize,
    len: usize,
) -> Result<(), ServingError> {
    let expected = dtype
        .element_size()
        .and_then(|size| elements.checked_mul(size))
        .ok_or_else(|| bad(format!("input '{name}' has too many elements ({elements})")))?;
    if len != expected {
        return Err(bad(format!(
            "input '{name}' has {len} bytes of data, its shape {} of {} needs {expected}",
            shape_text(shape),
            datatype::name(dtype).unwrap_or("?"),
        )));
    }
    Ok(())
}

/// BYTES elements in V2's raw layout: each a 4-byte little-endian length, then the bytes.
fn split_bytes(name: &str, mut raw: &[u8], elements: usize) -> Result<Vec<Vec<u8>>, ServingError> {
    let mut out = Vec::with_capacity(elements.min(raw.len() / 4 + 1));
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(bad(format!(
                "input '{name}': BYTES data ends inside an element's 4-byte length"
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad(format!(
                "input '{name}': a BYTES element of {len} bytes runs past the data's end"
            )));
        }
        out.push(rest[..len].to_vec());
        raw = &rest[len..];
    }
    if out.len() != elements {
        return Err(bad(format!(
            "input '{name}' holds {} BYTES elements, its shape needs {elements}",
            out.len()
        )));
    }
    Ok(out)
}

/// A tensor in V2's raw layout: fixed-size elements as they are (no copy), strings with
/// their 4-byte length prefixes.
pub fn raw(tensor: &Tensor) -> Result<Bytes, ServingError> {
    Ok(match &tensor.data {
        TensorData::Bytes(b) => b.clone(),
        TensorData::File(f) => f.read().map_err(ServingError::internal)?,
        TensorData::Strings(items) => {
            let len = items.iter().map(|s| 4 + s.len()).sum();
            let mut out = BytesMut::with_capacity(len);
            for s in items {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
            out.freeze()
        }
    })
}

/// Answers output `name` in the shared-memory region `held` names; the bytes written.
/// An output the worker's answer already wrote there (see `workers::OutputTarget`) is
/// not written again.
pub fn write_output(held: &Held, name: &str, tensor: &Tensor) -> Result<usize, ServingError> {
    if let TensorData::File(f) = &tensor.data {
        if held.holds(f) {
            return Ok(f.len);
        }
    }
    held.write(name, &raw(tensor)?)
}

/// The outputs in the order asked for (`requested` empty: as the run gave them). The
/// names were validated against the signature already.
pub fn ordered(mut outputs: Vec<(String, Tensor)>, requested: &[String]) -> Vec<(String, Tensor)> {
    if requested.is_empty() {
        return outputs;
    }
    let mut out = Vec::with_capacity(requested.len());
    for name in requested {
        if let Some(i) = outputs.iter().position(|(n, _)| n == name) {
            out.push(outputs.swap_remove(i));
        }
    }
    out
}

/// Packs integers for an integer or boolean datatype, each checked to fit.
pub fn pack_ints(
    name: &str,
    dtype: DataType,
    values: impl ExactSizeIterator<Item = i128>,
) -> Result<TensorData, ServingError> {
    use DataType::*;
    let size = dtype.element_size().unwrap_or(0);
    let mut out = Vec::with_capacity(values.len() * size);
    let (min, max): (i128, i128) = match dtype {
        Bool => (0, 1),
        Uint8 => (0, u8::MAX.into()),
        Uint16 => (0, u16::MAX.into()),
        Uint32 => (0, u32::MAX.into()),
        Uint64 => (0, u64::MAX.into()),
        Int8 => (i8::MIN.into(), i8::MAX.into()),
        Int16 => (i16::MIN.into(), i16::MAX.into()),
        Int32 => (i32::MIN.into(), i32::MAX.into()),
        Int64 => (i64::MIN.into(), i64::MAX.into()),
        _ => {
            return Err(bad(format!(
                "input '{name}': integer data for {}",
                datatype::name(dtype).unwrap_or("?")
            )))
        }
    };
    for v in values {
        if v < min || v > max {
            return Err(bad(format!(
                "input '{name}': {v} is out of range for {}",
                datatype::name(dtype).unwrap_or("?")
            )));
        }
        // In range: the low `size` bytes of the two's complement are the value.
        out.extend_from_slice(&v.to_le_bytes()[..size]);
    }
    Ok(TensorData::Bytes(out.into()))
}

/// Packs floating-point values for FP32 or FP64.
pub fn pack_floats(
    name: &str,
    dtype: DataType,
    values: impl ExactSizeIterator<Item = f64>,
) -> Result<TensorData, ServingError> {
    let mut out = Vec::with_capacity(values.len() * 8);
    match dtype {
        DataType::Float => values.for_each(|v| out.extend_from_slice(&(v as f32).to_le_bytes())),
        DataType::Double => values.for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::Half | DataType::Bfloat16 => {
            return Err(bad(format!(
                "input '{name}' is {}, which travels only as binary data",
                datatype::name(dtype).unwrap_or("?")
            )))
        }
        _ => {
            return Err(bad(format!(
                "input '{name}': floating-point data for {}",
                datatype::name(dtype).unwrap_or("?")
            )))
        }
    }
    Ok(TensorData::Bytes(out.into()))
}

/// An IEEE half's value.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: the value is frac * 2^-24.
        (0, _) => return sign_of(h) * (frac as f32) * 2f32.powi(-24),
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000,
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

fn sign_of(h: u16) -> f32 {
    if h >> 15 == 1 {
        -1.0
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::tests::info;

    fn signature() -> SignatureDef {
        let mut s = SignatureDef::default();
        s.inputs.insert("x".into(), info(DataType::Float, &[-1, 2]));
        s.inputs.insert("s".into(), info(DataType::String, &[-1]));
        s
    }

    fn one_input(dtype: DataType, dims: &[i64]) -> SignatureDef {
        let mut s = SignatureDef::default();
        s.inputs.insert("in".into(), info(dtype, dims));
        s
    }

    /// Triton's raw binary request: the shape follows from the byte size where at most
    /// one dimension is variable.
    #[test]
    fn a_raw_request_takes_its_shape_from_the_signature() {
        let raw = |dtype, dims: &[i64], n: usize| {
            raw_input(&one_input(dtype, dims), Bytes::from(vec![0u8; n])).map(|i| i.shape)
        };
        assert_eq!(raw(DataType::Float, &[-1, 3], 24).unwrap(), [2, 3]);
        assert_eq!(raw(DataType::Float, &[2, 3], 24).unwrap(), [2, 3]);
        assert_eq!(raw(DataType::Uint8, &[-1], 5).unwrap(), [5]);
        assert_eq!(raw(DataType::String, &[-1], 5).unwrap(), [1]);
        let bytes = raw_input(
            &one_input(DataType::String, &[]),
            Bytes::from_static(b"abc"),
        )
        .unwrap();
        match bytes.data {
            InputData::Raw(b) => assert_eq!(&b[..], b"\x03\0\0\0abc"),
            other => panic!("{other:?}"),
        }
        let e = |dtype, dims: &[i64], n| raw(dtype, dims, n).unwrap_err().message;
        assert_eq!(
            e(DataType::Float, &[-1, -1], 8),
            "a raw binary request (Inference-Header-Content-Length: 0) cannot deduce the shape of input 'in' [-1,-1]: more than one dimension is variable; send the JSON header"
        );
        assert_eq!(
            e(DataType::Float, &[-1, 3], 8),
            "a raw binary request (Inference-Header-Content-Length: 0) of 2 FP32 elements does not fit input 'in' of shape [-1,3]"
        );
        assert_eq!(
            e(DataType::Float, &[2, 3], 20),
            "a raw binary request (Inference-Header-Content-Length: 0) of 5 FP32 elements does not fit input 'in' of shape [2,3]"
        );
        assert!(raw_input(&signature(), Bytes::new())
            .unwrap_err()
            .message
            .ends_with("needs a model with exactly one input; this signature has 2"));
    }

    fn input(name: &str, datatype: &str, shape: &[i64], data: InputData) -> Input {
        Input {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            data,
        }
    }

    fn floats(v: &[f32]) -> Bytes {
        v.iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<_>>()
            .into()
    }

    fn err(inputs: Vec<Input>) -> String {
        Inputs(inputs).decode(&signature()).unwrap_err().message
    }

    #[test]
    fn raw_inputs_become_tensors_without_a_copy() {
        let bytes = floats(&[1.0, 2.0, 3.0, 4.0]);
        let mut strings = Vec::new();
        for s in [&b"ab"[..], b""] {
            strings.extend_from_slice(&(s.len() as u32).to_le_bytes());
            strings.extend_from_slice(s);
        }
        let got = Inputs(vec![
            input("x", "FP32", &[2, 2], InputData::Raw(bytes.clone())),
            input("s", "BYTES", &[2], InputData::Raw(strings.into())),
        ])
        .decode(&signature())
        .unwrap();
        match &got[0].1.data {
            TensorData::Bytes(b) => assert_eq!(b.as_ptr(), bytes.as_ptr(), "the same buffer"),
            other => panic!("{other:?}"),
        }
        assert_eq!(got[0].1.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            got[1].1.data,
            TensorData::Strings(vec![b"ab".to_vec(), Vec::new()])
        );
        assert_eq!(raw(&got[1].1).unwrap().as_ref(), b"\x02\0\0\0ab\0\0\0\0");
    }

    #[test]
    fn mismatches_name_the_input() {
        let x = || InputData::Raw(floats(&[1.0, 2.0]));
        assert_eq!(
            err(vec![input("x", "FP64", &[1, 2], x())]),
            "input 'x' has datatype FP64, the model expects FP32"
        );
        assert_eq!(
            err(vec![input("x", "FP32", &[2, 1], x())]),
            "input 'x' has shape [2,1], the model expects [-1,2]"
        );
        assert_eq!(
            err(vec![input("x", "FP32", &[1, 2, 1], x())]),
            "input 'x' has shape [1,2,1], the model expects [-1,2]"
        );
        assert_eq!(
            err(vec![input("x", "FP32", &[3, 2], x())]),
            "input 'x' has 8 bytes of data, its shape [3,2] of FP32 needs 24"
        );
        assert_eq!(
            err(vec![input("x", "FLOAT", &[1, 2], x())]),
            "input 'x' has unknown datatype 'FLOAT'"
        );
        assert_eq!(
            err(vec![
                input("x", "FP32", &[1, 2], x()),
                input("x", "FP32", &[1, 2], x())
            ]),
            "input 'x' is given twice"
        );
        assert_eq!(
            err(vec![input(
                "s",
                "BYTES",
                &[1],
                InputData::Raw(Bytes::from_static(b"\x09\0\0\0ab"))
            )]),
            "input 's': a BYTES element of 9 bytes runs past the data's end"
        );
        assert_eq!(
            err(vec![input(
                "s",
                "BYTES",
                &[2],
                InputData::Raw(Bytes::from_static(b"\x01\0\0\0a"))
            )]),
            "input 's' holds 1 BYTES elements, its shape needs 2"
        );
        assert_eq!(
            err(vec![input(
                "s",
                "BYTES",
                &[1],
                InputData::Raw(Bytes::from_static(b"\x01\0"))
            )]),
            "input 's': BYTES data ends inside an element's 4-byte length"
        );
    }

    #[test]
    fn integers_are_range_checked_and_packed_little_endian() {
        let d = pack_ints("i", DataType::Int16, [-2i128, 300].into_iter()).unwrap();
        assert_eq!(
            d,
            TensorData::Bytes(Bytes::from_static(&[0xfe, 0xff, 0x2c, 0x01]))
        );
        let d = pack_ints("b", DataType::Bool, [1i128, 0].into_iter()).unwrap();
        assert_eq!(d, TensorData::Bytes(Bytes::from_static(&[1, 0])));
        let d = pack_ints("u", DataType::Uint64, [u64::MAX as i128].into_iter()).unwrap();
        assert_eq!(
            d,
            TensorData::Bytes(Bytes::from(u64::MAX.to_le_bytes().to_vec()))
        );
        assert_eq!(
            pack_ints("u", DataType::Uint8, [256i128].into_iter())
                .unwrap_err()
                .message,
            "input 'u': 256 is out of range for UINT8"
        );
        assert_eq!(
            pack_floats("h", DataType::Half, [1.0].into_iter())
                .unwrap_err()
                .message,
            "input 'h' is FP16, which travels only as binary data"
        );
    }

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }

    #[test]
    fn outputs_come_in_the_order_asked_for() {
        let t = |v: f32| Tensor::from_f32(vec![1], &[v]).unwrap();
        let outs = vec![("a".to_string(), t(1.0)), ("b".to_string(), t(2.0))];
        let got = ordered(outs, &["b".into(), "a".into()]);
        assert_eq!(got[0].0, "b");
        assert_eq!(got[1].0, "a");
    }
}
