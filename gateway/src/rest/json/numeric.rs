//! A predict body that is only numbers, read without a document tree and straight into
//! the tensor's bytes: `{"instances": [[...]]}` or `{"inputs": [[...]]}` (with at most a
//! plain `signature_name`), every leaf a number at the same depth, every array at a
//! depth the same non-zero length. That is what `instances: images.tolist()` and most
//! numeric requests are, and for them the general path builds a `JsonValue` per number
//! and a `Vec` per innermost array only to walk them once.
//!
//! The reader is told the dtype the signature's one input most likely has (the caller
//! asks the servable it would resolve; float where that is not one input's), and
//! converts each number as it is read, with
//! the rules of `AddValueToTensor` (`predict::add_value`), into the packed
//! little-endian bytes the worker receives: one pass from text to tensor. Whatever
//! decides otherwise later — a `signature_name` after the array, a version loaded
//! between the read and the run whose input has another dtype — reads the array again
//! with the right dtype; the body is still at hand.
//!
//! It accepts a strict subset of what the general path accepts, and reads each number
//! with the general parser's own code ([`NumberReader`]). Anything else — another key,
//! an escape, an empty or ragged array, a value the dtype refuses, a dtype JSON numbers
//! cannot fill, more than one input — makes it answer `None`, and the caller runs the
//! general path on the same body, which then produces TF Serving's exact error or
//! result. So it can only ever return what the general path returns; a unit test and
//! the `rest_predict` fuzz target hold it to that.

use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

use super::parser::{Number, NumberReader};
use super::predict::single_input;
use super::{PredictFormat, PredictJson};

/// A numeric predict body, read: its array as a tensor of the dtype asked for.
pub struct NumericPredict {
    signature_name: Option<String>,
    format: PredictFormat,
    /// Where the tensor's outermost `[` is, to read it again with another dtype.
    array_at: usize,
    /// The array, read with the dtype the signature's input was expected to have.
    tensor: Tensor,
}

/// Deeper than any model input; deeper bodies take the general path.
const MAX_DEPTH: usize = 32;

/// Reads `body` if it is a numeric predict body whose numbers all convert to the dtype
/// `dtype_for` gives for its signature name (as sent, `None` if absent), or to float
/// where it knows none (no such signature, or one of several inputs: the answer will be
/// an error or the document's, but a name may still follow the array); `None` for
/// anything else.
pub fn scan_predict(
    body: &[u8],
    dtype_for: impl Fn(Option<&str>) -> Option<DataType>,
) -> Option<NumericPredict> {
    let dtype_for = |name: Option<&str>| dtype_for(name).unwrap_or(DataType::Float);
    let mut s = Scan::new(body, 0);
    s.ws();
    s.byte(b'{')?;
    let (mut signature_name, mut tensor) = (None, None);
    loop {
        s.ws();
        s.byte(b'"')?;
        let key = s.plain_string()?;
        s.ws();
        s.byte(b':')?;
        s.ws();
        match key {
            b"signature_name" if signature_name.is_none() => {
                s.byte(b'"')?;
                let name = s.plain_string()?;
                // Printable ASCII only, so the bytes are the String as is.
                let name = String::from_utf8(name.to_vec()).ok()?;
                // A name after the array: read it again if its signature takes another
                // dtype than the one it was read with.
                if let Some((_, at, dtype, read)) = &mut tensor {
                    let named = dtype_for(Some(&name));
                    if named != *dtype {
                        *read = read_array(body, *at, named)?;
                        *dtype = named;
                    }
                }
                signature_name = Some(name);
            }
            b"instances" | b"inputs" if tensor.is_none() => {
                let format = if key == b"instances" {
                    PredictFormat::Row
                } else {
                    PredictFormat::Columnar
                };
                let array_at = s.pos;
                let dtype = dtype_for(signature_name.as_deref());
                tensor = Some((format, array_at, dtype, s.typed_array(dtype)?));
            }
            _ => return None,
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    // Whatever follows the root is ignored, as the general parser ignores it.
    let (format, array_at, _, tensor) = tensor?;
    Some(NumericPredict {
        signature_name,
        format,
        array_at,
        tensor,
    })
}

/// The array at `at` of `body`, as a tensor of `dtype`.
fn read_array(body: &[u8], at: usize, dtype: DataType) -> Option<Tensor> {
    Scan::new(body, at).typed_array(dtype)
}

impl NumericPredict {
    /// `signature_name` as sent, as `predict_signature_name` reads it.
    pub fn signature_name(&self) -> Option<&str> {
        self.signature_name.as_deref()
    }

    /// `decode_predict` for this body: `None` wherever that would not return a tensor
    /// made of these numbers (more than one input, a value its dtype refuses, a dtype
    /// JSON numbers cannot fill), for the caller to run it on the general path. `body`
    /// is the body this was read from.
    pub fn decode(
        &self,
        body: &[u8],
        signature_inputs: &[(String, DataType)],
    ) -> Option<PredictJson> {
        let (name, dtype) = single_input(signature_inputs)?;
        let tensor = if dtype == self.tensor.dtype {
            self.tensor.clone()
        } else {
            read_array(body, self.array_at, dtype)?
        };
        Some(PredictJson {
            signature_name: self.signature_name.clone(),
            format: self.format,
            inputs: vec![(name, tensor)],
        })
    }
}

/// `AddValueToTensor` of one number for a dtype that packs it in `N` bytes: its bytes,
/// or `None` where the general path answers an error. Integers are typed as rapidjson
/// types them (`Int` for any that fits `i64`), so `IsInt()` is `i32::try_from`.
trait Element<const N: usize> {
    fn convert(n: Number) -> Option<[u8; N]>;
}

/// `GetFloat()`: `static_cast<float>(GetDouble())`, for any number.
struct F32;
impl Element<4> for F32 {
    #[inline(always)]
    fn convert(n: Number) -> Option<[u8; 4]> {
        Some((n.as_f64() as f32).to_le_bytes())
    }
}

struct F64;
impl Element<8> for F64 {
    #[inline(always)]
    fn convert(n: Number) -> Option<[u8; 8]> {
        Some(n.as_f64().to_le_bytes())
    }
}

/// `int_val`, narrowed to `N` bytes as a C++ integer conversion narrows it (int32,
/// int16, int8 and uint8 all take `IsInt()` values).
struct IntVal;
impl<const N: usize> Element<N> for IntVal {
    #[inline(always)]
    fn convert(n: Number) -> Option<[u8; N]> {
        let Number::Int(i) = n else { return None };
        let bytes = i32::try_from(i).ok()?.to_le_bytes();
        let mut out = [0u8; N];
        out.copy_from_slice(bytes.get(..N)?);
        Some(out)
    }
}

struct I64;
impl Element<8> for I64 {
    #[inline(always)]
    fn convert(n: Number) -> Option<[u8; 8]> {
        match n {
            Number::Int(i) => Some(i.to_le_bytes()),
            _ => None,
        }
    }
}

/// uint32 and uint64: `IsUint()` / `IsUint64()`, any non-negative integer that fits.
struct Unsigned;
impl Element<4> for Unsigned {
    #[inline(always)]
    fn convert(n: Number) -> Option<[u8; 4]> {
        unsigned(n).map(u32::to_le_bytes)
    }
}

impl Element<8> for Unsigned {
    #[inline(always)]
    fn convert(n: Number) -> Option<[u8; 8]> {
        unsigned(n).map(u64::to_le_bytes)
    }
}

#[inline(always)]
fn unsigned<T: TryFrom<i64> + TryFrom<u64>>(n: Number) -> Option<T> {
    match n {
        Number::Int(i) => T::try_from(i).ok(),
        Number::Uint(u) => T::try_from(u).ok(),
        Number::Double(_) => None,
    }
}

struct Scan<'a> {
    body: &'a [u8],
    pos: usize,
    numbers: NumberReader<'a>,
}

impl<'a> Scan<'a> {
    fn new(body: &'a [u8], pos: usize) -> Scan<'a> {
        Scan {
            body,
            pos,
            numbers: NumberReader::new(body),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// The parser's whitespace.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }

    /// The rest of a string after its opening quote, if it is printable ASCII without
    /// escapes.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        let (body, start) = (self.body, self.pos);
        loop {
            match self.next()? {
                b'"' => return body.get(start..self.pos - 1),
                b'\\' => return None,
                0x20..=0x7E => {}
                _ => return None,
            }
        }
    }

    /// The array here as a tensor of `dtype`; `None` for a dtype numbers cannot fill.
    fn typed_array(&mut self, dtype: DataType) -> Option<Tensor> {
        let (shape, bytes) = match dtype {
            DataType::Float => self.nested_array::<4, F32>(),
            DataType::Double => self.nested_array::<8, F64>(),
            DataType::Int32 => self.nested_array::<4, IntVal>(),
            DataType::Int16 => self.nested_array::<2, IntVal>(),
            DataType::Int8 | DataType::Uint8 => self.nested_array::<1, IntVal>(),
            DataType::Int64 => self.nested_array::<8, I64>(),
            DataType::Uint32 => self.nested_array::<4, Unsigned>(),
            DataType::Uint64 => self.nested_array::<8, Unsigned>(),
            _ => None,
        }?;
        Tensor::new(dtype, shape, TensorData::Bytes(bytes.into())).ok()
    }

    /// A rectangular array of numbers: its dense shape and its numbers, each converted
    /// by `E` into `N` bytes, in order.
    fn nested_array<const N: usize, E: Element<N>>(&mut self) -> Option<(Vec<i64>, Vec<u8>)> {
        // The shape, following first elements (`GetDenseTensorShape`).
        let mut shape = Vec::new();
        let mut at = self.pos;
        while self.body.get(at) == Some(&b'[') {
            shape.push(0);
            at += 1;
            while matches!(self.body.get(at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                at += 1;
            }
            if shape.len() > MAX_DEPTH {
                return None;
            }
        }
        let rank = shape.len();
        if rank == 0 {
            return None;
        }
        // Room for as many numbers as a body of short ones (`0.5, `) holds, bounded;
        // longer ones leave it spare (untouched, so never resident), more grow it.
        let room = self.body.len().saturating_sub(self.pos) / 5;
        let mut out: Vec<u8> = Vec::with_capacity(room.min(1 << 24) * N);
        // How many elements the open array at each depth has had so far.
        let mut counts = [0i64; MAX_DEPTH];
        let mut depth = 0;
        self.byte(b'[')?;
        loop {
            self.ws();
            if depth + 1 < rank {
                self.byte(b'[')?;
                depth += 1;
                continue;
            }
            // The innermost level: `number (, number)* ]`.
            let mut row = 0;
            loop {
                let (n, end) = self.numbers.number(self.pos)?;
                out.extend_from_slice(&E::convert(n)?);
                row += 1;
                self.pos = end;
                self.ws();
                match self.next()? {
                    b',' => self.ws(),
                    b']' => break,
                    _ => return None,
                }
            }
            counts[depth] = row;
            // Close arrays until one continues.
            loop {
                let size = std::mem::take(&mut counts[depth]);
                if shape[depth] == 0 {
                    // The first array at this depth sets its size.
                    shape[depth] = size;
                } else if shape[depth] != size {
                    return None;
                }
                if size == 0 {
                    return None;
                }
                if depth == 0 {
                    return Some((shape, out));
                }
                depth -= 1;
                counts[depth] += 1;
                self.ws();
                match self.next()? {
                    b',' => break,
                    b']' => continue,
                    _ => return None,
                }
            }
        }
    }
}
