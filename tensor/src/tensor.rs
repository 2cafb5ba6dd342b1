//! The tensor value that crosses the process boundary: a TensorFlow dtype, a shape and
//! either packed little-endian elements or a list of byte strings (DT_STRING is bytes,
//! never UTF-8 text).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shm_protocol::ClientObject;
use std::sync::Arc;

/// TensorFlow's `DataType` numbering (`tensorflow/core/framework/types.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(i32)]
pub enum DataType {
    Float = 1,
    Double = 2,
    Int32 = 3,
    Uint8 = 4,
    Int16 = 5,
    Int8 = 6,
    String = 7,
    Complex64 = 8,
    Int64 = 9,
    Bool = 10,
    Bfloat16 = 14,
    Uint16 = 17,
    Complex128 = 18,
    Half = 19,
    Uint32 = 22,
    Uint64 = 23,
}

impl DataType {
    /// The dtype for a `DataType` enum value, or `None` for values tfgate does not carry
    /// (quantized types, resources, variants).
    pub fn from_i32(v: i32) -> Option<DataType> {
        use DataType::*;
        Some(match v {
            1 => Float,
            2 => Double,
            3 => Int32,
            4 => Uint8,
            5 => Int16,
            6 => Int8,
            7 => String,
            8 => Complex64,
            9 => Int64,
            10 => Bool,
            14 => Bfloat16,
            17 => Uint16,
            18 => Complex128,
            19 => Half,
            22 => Uint32,
            23 => Uint64,
            _ => return None,
        })
    }

    /// Bytes per element, `None` for DT_STRING (variable length).
    pub fn element_size(self) -> Option<usize> {
        use DataType::*;
        Some(match self {
            Bool | Int8 | Uint8 => 1,
            Int16 | Uint16 | Half | Bfloat16 => 2,
            Float | Int32 | Uint32 => 4,
            Double | Int64 | Uint64 | Complex64 => 8,
            Complex128 => 16,
            String => return None,
        })
    }

    /// TensorFlow's lower-case name (`DataTypeString`): `float`, `int64`, `string`...
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Float => "float",
            Double => "double",
            Int32 => "int32",
            Uint8 => "uint8",
            Int16 => "int16",
            Int8 => "int8",
            String => "string",
            Complex64 => "complex64",
            Int64 => "int64",
            Bool => "bool",
            Bfloat16 => "bfloat16",
            Uint16 => "uint16",
            Complex128 => "complex128",
            Half => "half",
            Uint32 => "uint32",
            Uint64 => "uint64",
        }
    }
}

/// Element storage of a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Fixed-size elements, packed, little-endian, row-major. Shared bytes: a gRPC
    /// `tensor_content` stays where it was received until it is copied into shared
    /// memory, its one copy on the way to TensorFlow.
    Bytes(Bytes),
    /// One byte string per element (DT_STRING), row-major.
    Strings(Vec<Vec<u8>>),
    /// Fixed-size elements that stay in a file another process shares with the gateway
    /// (a V2 client's system shared-memory region): they are copied once, from the file's
    /// pages straight into the shared memory a worker reads, or from a worker's answer
    /// straight into the file; they never pass through the gateway's heap. Only the
    /// gateway makes these; they never reach a worker.
    File(FileBytes),
}

/// `len` bytes at `offset` of a client's open (and, where it could be, mapped) file (see
/// [`TensorData::File`]).
#[derive(Clone, Debug)]
pub struct FileBytes {
    pub file: Arc<ClientObject>,
    pub offset: u64,
    pub len: usize,
    /// What the file is, for messages: "shared memory region 'r' (key '/k')".
    pub what: Arc<str>,
}

impl PartialEq for FileBytes {
    fn eq(&self, other: &FileBytes) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.offset == other.offset && self.len == other.len
    }
}

impl FileBytes {
    /// A copy of the bytes in memory, for what needs them there (a batch being formed, a
    /// request log); the error names the file.
    pub fn read(&self) -> Result<Bytes, String> {
        let mut buf = vec![0u8; self.len];
        self.read_into(&mut buf)?;
        Ok(buf.into())
    }

    /// Reads the bytes into `dst` (exactly `len` of them); the error names the file.
    pub fn read_into(&self, dst: &mut [u8]) -> Result<(), String> {
        if dst.len() != self.len {
            return Err(format!(
                "cannot read {}: {} bytes asked for, {} held",
                self.what,
                dst.len(),
                self.len
            ));
        }
        self.file
            .read_at(dst, self.offset)
            .map_err(|e| self.error(e))
    }

    /// "cannot read <what>: <e>".
    pub fn error(&self, e: impl std::fmt::Display) -> String {
        format!("cannot read {}: {e}", self.what)
    }
}

impl TensorData {
    /// Bytes of fixed-size elements (0 for strings).
    pub fn byte_len(&self) -> usize {
        match self {
            TensorData::Bytes(b) => b.len(),
            TensorData::File(f) => f.len,
            TensorData::Strings(_) => 0,
        }
    }
}

/// A dense tensor owned by this process.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// Why a tensor's parts do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("negative dimension {0}")]
    NegativeDim(i64),
    #[error("element count overflows")]
    Overflow,
    #[error("dtype {dtype:?} with {elements} elements needs {expected} bytes, got {actual}")]
    ByteLength {
        dtype: DataType,
        elements: usize,
        expected: usize,
        actual: usize,
    },
    #[error("{elements} elements expected, {actual} strings given")]
    StringCount { elements: usize, actual: usize },
    #[error("dtype {0:?} does not match its storage")]
    Storage(DataType),
}

/// Number of elements of `shape` (1 for a scalar), checked for overflow and negative dims.
pub fn num_elements(shape: &[i64]) -> Result<usize, TensorError> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| TensorError::NegativeDim(d))?;
        acc.checked_mul(d).ok_or(TensorError::Overflow)
    })
}

impl Tensor {
    /// Builds a tensor after checking that shape, dtype and storage agree.
    pub fn new(dtype: DataType, shape: Vec<i64>, data: TensorData) -> Result<Tensor, TensorError> {
        let t = Tensor { dtype, shape, data };
        t.check()?;
        Ok(t)
    }

    /// Checks that shape, dtype and storage agree.
    pub fn check(&self) -> Result<(), TensorError> {
        let elements = num_elements(&self.shape)?;
        match (&self.data, self.dtype.element_size()) {
            (TensorData::Bytes(_) | TensorData::File(_), Some(size)) => {
                let expected = elements.checked_mul(size).ok_or(TensorError::Overflow)?;
                let actual = self.data.byte_len();
                if actual != expected {
                    return Err(TensorError::ByteLength {
                        dtype: self.dtype,
                        elements,
                        expected,
                        actual,
                    });
                }
                Ok(())
            }
            (TensorData::Strings(s), None) => {
                if s.len() != elements {
                    return Err(TensorError::StringCount {
                        elements,
                        actual: s.len(),
                    });
                }
                Ok(())
            }
            _ => Err(TensorError::Storage(self.dtype)),
        }
    }

    /// Number of elements (1 for a scalar).
    pub fn num_elements(&self) -> usize {
        match &self.data {
            TensorData::Strings(s) => s.len(),
            TensorData::Bytes(_) | TensorData::File(_) => {
                self.data.byte_len() / self.dtype.element_size().unwrap_or(1).max(1)
            }
        }
    }

    /// A float32 tensor, for tests and tools.
    pub fn from_f32(shape: Vec<i64>, values: &[f32]) -> Result<Tensor, TensorError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(
            DataType::Float,
            shape,
            TensorData::Bytes(Bytes::from(bytes)),
        )
    }

    /// The elements as f32 if this is a float tensor.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match (&self.data, self.dtype) {
            (TensorData::Bytes(b), DataType::Float) => Some(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_byte_length_against_shape() {
        assert!(Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).is_ok());
        let err = Tensor::new(
            DataType::Float,
            vec![3],
            TensorData::Bytes(vec![0; 8].into()),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TensorError::ByteLength {
                expected: 12,
                actual: 8,
                ..
            }
        ));
        assert_eq!(num_elements(&[]), Ok(1));
        assert_eq!(num_elements(&[-1]), Err(TensorError::NegativeDim(-1)));
        assert_eq!(
            num_elements(&[i64::MAX, i64::MAX]),
            Err(TensorError::Overflow)
        );
    }

    #[test]
    fn strings_are_bytes() {
        let t = Tensor::new(
            DataType::String,
            vec![2],
            TensorData::Strings(vec![vec![0xff, 0], b"ok".to_vec()]),
        );
        assert!(t.is_ok());
        assert!(Tensor::new(DataType::String, vec![2], TensorData::Bytes(Bytes::new())).is_err());
    }
}
