//! TF Serving's protobuf forms of what frames carry, shared by the gateway (gRPC) and the
//! worker (warmup records): `TensorProto` ↔ [`Tensor`], and a gRPC `Input` of
//! `tf.Example`s as serialized examples.
//!
//! Inputs may use `tensor_content` or the typed `*_val` fields, with TensorFlow's
//! `FromProto` rules: fewer values than elements repeat the last one, none means zeros,
//! more is an error. Outputs use the typed fields (`AsProtoField`), or `tensor_content`
//! with `--enable_serialization_as_tensor_content`.

use crate::tensor::{num_elements, DataType, Tensor, TensorData};
use prost::Message;
use tfgate_proto::tensorflow::serving::{input, Input};
use tfgate_proto::tensorflow::{tensor_shape_proto, TensorProto, TensorShapeProto};

/// Serialized examples from a gRPC `Input`; with a context, the context's bytes come
/// first, so the example's own features win when both set one (protobuf merge order).
pub fn serialized_examples(input: Option<&Input>) -> Vec<Vec<u8>> {
    match input.and_then(|i| i.kind.as_ref()) {
        Some(input::Kind::ExampleList(list)) => {
            list.examples.iter().map(|e| e.encode_to_vec()).collect()
        }
        Some(input::Kind::ExampleListWithContext(list)) => {
            let context = list.context.as_ref().map(|c| c.encode_to_vec());
            with_context(
                context.as_deref(),
                list.examples.iter().map(|e| e.encode_to_vec()).collect(),
            )
        }
        None => Vec::new(),
    }
}

/// Prepends a serialized context to each serialized example.
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

/// Why a TensorProto cannot become a tensor (reported as `tensor parsing error: <alias>`).
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError;

fn shape_of(proto: &TensorProto) -> Result<Vec<i64>, ParseError> {
    match &proto.tensor_shape {
        None => Ok(Vec::new()),
        Some(s) if s.unknown_rank => Err(ParseError),
        Some(s) => s
            .dim
            .iter()
            .map(|d| {
                if d.size < 0 {
                    Err(ParseError)
                } else {
                    Ok(d.size)
                }
            })
            .collect(),
    }
}

/// Largest tensor (in memory) that a TensorProto may expand to by repeating its last
/// value, TensorFlow's fill rule (`float_val: [0]` with shape `[1000, 1000]` is a million
/// zeros). Values present in the message are bounded by the message size limits; a fill
/// is not, so without this a proto of a few bytes could ask for gigabytes and abort the
/// process when the allocation fails (found by `fuzz/` target `tensor_proto`).
pub const MAX_FILLED_BYTES: usize = 256 << 20;

/// True when expanding `given` values to `n` elements of `size` bytes each would repeat a
/// value beyond [`MAX_FILLED_BYTES`].
fn fill_too_large(given: usize, n: usize, size: usize) -> bool {
    given < n && n.saturating_mul(size) > MAX_FILLED_BYTES
}

/// Expands `values` to `n` elements by TensorFlow's rules.
fn fill<T: Copy + Default>(values: &[T], n: usize) -> Result<Vec<T>, ParseError> {
    if values.len() > n || fill_too_large(values.len(), n, std::mem::size_of::<T>()) {
        return Err(ParseError);
    }
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(values);
    let last = values.last().copied().unwrap_or_default();
    out.resize(n, last);
    Ok(out)
}

fn pack<T: Copy, const N: usize>(values: Vec<T>, to_le: impl Fn(T) -> [u8; N]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(values.len() * N);
    for v in values {
        out.extend_from_slice(&to_le(v));
    }
    out.into()
}

/// Converts an input TensorProto.
pub fn from_proto(proto: &TensorProto) -> Result<Tensor, ParseError> {
    let dtype = DataType::from_i32(proto.dtype).ok_or(ParseError)?;
    let shape = shape_of(proto)?;
    let n = num_elements(&shape).map_err(|_| ParseError)?;
    // Refuse absurd element counts before allocating (values are repeated to fill).
    if n > (1usize << 34) {
        return Err(ParseError);
    }
    let data = if let Some(size) = dtype.element_size() {
        if !proto.tensor_content.is_empty() {
            if proto.tensor_content.len() != n.checked_mul(size).ok_or(ParseError)? {
                return Err(ParseError);
            }
            TensorData::Bytes(proto.tensor_content.clone())
        } else {
            TensorData::Bytes(match dtype {
                DataType::Float => pack(fill(&proto.float_val, n)?, f32::to_le_bytes),
                DataType::Double => pack(fill(&proto.double_val, n)?, f64::to_le_bytes),
                DataType::Int32 => pack(fill(&proto.int_val, n)?, i32::to_le_bytes),
                DataType::Int16 => pack(fill(&proto.int_val, n)?, |v| (v as i16).to_le_bytes()),
                DataType::Int8 => pack(fill(&proto.int_val, n)?, |v| (v as i8).to_le_bytes()),
                DataType::Uint8 => pack(fill(&proto.int_val, n)?, |v| (v as u8).to_le_bytes()),
                DataType::Uint16 => pack(fill(&proto.int_val, n)?, |v| (v as u16).to_le_bytes()),
                DataType::Half | DataType::Bfloat16 => {
                    pack(fill(&proto.half_val, n)?, |v| (v as u16).to_le_bytes())
                }
                DataType::Int64 => pack(fill(&proto.int64_val, n)?, i64::to_le_bytes),
                DataType::Uint32 => pack(fill(&proto.uint32_val, n)?, u32::to_le_bytes),
                DataType::Uint64 => pack(fill(&proto.uint64_val, n)?, u64::to_le_bytes),
                DataType::Bool => pack(fill(&proto.bool_val, n)?, |v| [v as u8]),
                DataType::Complex64 => {
                    let pairs: Vec<[f32; 2]> = proto
                        .scomplex_val
                        .chunks_exact(2)
                        .map(|c| [c[0], c[1]])
                        .collect();
                    pack(fill(&pairs, n)?, |[re, im]| {
                        let mut b = [0u8; 8];
                        b[..4].copy_from_slice(&re.to_le_bytes());
                        b[4..].copy_from_slice(&im.to_le_bytes());
                        b
                    })
                }
                DataType::Complex128 => {
                    let pairs: Vec<[f64; 2]> = proto
                        .dcomplex_val
                        .chunks_exact(2)
                        .map(|c| [c[0], c[1]])
                        .collect();
                    pack(fill(&pairs, n)?, |[re, im]| {
                        let mut b = [0u8; 16];
                        b[..8].copy_from_slice(&re.to_le_bytes());
                        b[8..].copy_from_slice(&im.to_le_bytes());
                        b
                    })
                }
                DataType::String => return Err(ParseError),
            })
        }
    } else {
        let vals = &proto.string_val;
        if vals.len() > n {
            return Err(ParseError);
        }
        let last = vals.last().cloned().unwrap_or_default();
        let size = std::mem::size_of::<Vec<u8>>() + last.len();
        if fill_too_large(vals.len(), n, size) {
            return Err(ParseError);
        }
        let mut out: Vec<Vec<u8>> = vals.clone();
        out.resize(n, last);
        TensorData::Strings(out)
    };
    Tensor::new(dtype, shape, data).map_err(|_| ParseError)
}

fn unpack<T, const N: usize>(bytes: &[u8], from_le: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from_le(a)
        })
        .collect()
}

/// Converts an output tensor, in the typed fields or as `tensor_content`.
pub fn to_proto(t: &Tensor, as_content: bool) -> TensorProto {
    let mut p = TensorProto {
        dtype: t.dtype as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: t
                .shape
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..Default::default()
    };
    // A tensor still in a file is read first (a request log's copy of a V2 request); one
    // whose file can no longer be read is logged with no values.
    let read;
    let data = match &t.data {
        TensorData::File(f) => {
            read = TensorData::Bytes(f.read().unwrap_or_default());
            &read
        }
        data => data,
    };
    match data {
        TensorData::File(_) => {}
        TensorData::Strings(s) => p.string_val = s.clone(),
        TensorData::Bytes(b) if as_content => p.tensor_content = b.clone(),
        TensorData::Bytes(b) => match t.dtype {
            DataType::Float => p.float_val = unpack(b, f32::from_le_bytes),
            DataType::Double => p.double_val = unpack(b, f64::from_le_bytes),
            DataType::Int32 => p.int_val = unpack(b, i32::from_le_bytes),
            DataType::Int16 => p.int_val = unpack(b, |a| i16::from_le_bytes(a) as i32),
            DataType::Int8 => p.int_val = unpack(b, |a: [u8; 1]| a[0] as i8 as i32),
            DataType::Uint8 => p.int_val = unpack(b, |a: [u8; 1]| a[0] as i32),
            DataType::Uint16 => p.int_val = unpack(b, |a| u16::from_le_bytes(a) as i32),
            DataType::Half | DataType::Bfloat16 => {
                p.half_val = unpack(b, |a| u16::from_le_bytes(a) as i32)
            }
            DataType::Int64 => p.int64_val = unpack(b, i64::from_le_bytes),
            DataType::Uint32 => p.uint32_val = unpack(b, u32::from_le_bytes),
            DataType::Uint64 => p.uint64_val = unpack(b, u64::from_le_bytes),
            DataType::Bool => p.bool_val = b.iter().map(|&v| v != 0).collect(),
            DataType::Complex64 => p.scomplex_val = unpack(b, f32::from_le_bytes),
            DataType::Complex128 => p.dcomplex_val = unpack(b, f64::from_le_bytes),
            DataType::String => {}
        },
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        })
    }

    #[test]
    fn typed_values_content_and_broadcast() {
        let p = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[3]),
            float_val: vec![1.0, 2.0, 5.0],
            ..Default::default()
        };
        let t = from_proto(&p).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, 2.0, 5.0]);
        assert_eq!(to_proto(&t, false).float_val, vec![1.0, 2.0, 5.0]);
        assert_eq!(from_proto(&to_proto(&t, true)).unwrap(), t);

        let scalar_broadcast = TensorProto {
            dtype: 9,
            tensor_shape: shape(&[2, 2]),
            int64_val: vec![7],
            ..Default::default()
        };
        let t = from_proto(&scalar_broadcast).unwrap();
        assert_eq!(to_proto(&t, false).int64_val, vec![7, 7, 7, 7]);

        let too_many = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[1]),
            float_val: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(from_proto(&too_many), Err(ParseError));
        let bad_content = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[2]),
            tensor_content: vec![0u8; 7].into(),
            ..Default::default()
        };
        assert_eq!(from_proto(&bad_content), Err(ParseError));
    }

    #[test]
    fn strings_are_bytes() {
        let p = TensorProto {
            dtype: 7,
            tensor_shape: shape(&[2]),
            string_val: vec![vec![0xffu8, 0], b"a".to_vec()],
            ..Default::default()
        };
        let t = from_proto(&p).unwrap();
        assert_eq!(to_proto(&t, false).string_val, p.string_val);
    }

    /// Regression (fuzz target `tensor_proto`): a few bytes of proto that repeat a value
    /// to gigabytes are refused instead of aborting on the allocation; a moderate fill
    /// and a fully given tensor still convert.
    #[test]
    fn fills_are_bounded() {
        let strings = TensorProto {
            dtype: 7,
            tensor_shape: shape(&[1 << 30]),
            string_val: vec![b"x".to_vec()],
            ..Default::default()
        };
        assert_eq!(from_proto(&strings), Err(ParseError));
        let floats = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[1 << 16, 1 << 14]),
            float_val: vec![0.5],
            ..Default::default()
        };
        assert_eq!(from_proto(&floats), Err(ParseError));
        let empty = TensorProto {
            dtype: 18, // DT_COMPLEX128, no values: zeros.
            tensor_shape: shape(&[1 << 25]),
            ..Default::default()
        };
        assert_eq!(from_proto(&empty), Err(ParseError));

        let zeros = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[1000, 1000]),
            float_val: vec![0.0],
            ..Default::default()
        };
        assert_eq!(from_proto(&zeros).unwrap().num_elements(), 1_000_000);
        let repeated = TensorProto {
            dtype: 7,
            tensor_shape: shape(&[1000]),
            string_val: vec![b"abc".to_vec()],
            ..Default::default()
        };
        assert_eq!(from_proto(&repeated).unwrap().num_elements(), 1000);
    }
}
