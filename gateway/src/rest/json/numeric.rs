//! A predict body that is only numbers, read without a document tree: `{"instances":
//! [[...]]}` or `{"inputs": [[...]]}` (with at most a plain `signature_name`), every
//! leaf a number at the same depth, every array at a depth the same non-zero length.
//! That is what `instances: images.tolist()` and most numeric requests are, and for
//! them the general path builds a `JsonValue` per number and a `Vec` per innermost
//! array only to walk them once.
//!
//! This reader accepts a strict subset of what the general path accepts, reads each
//! number with the general parser's own code ([`NumberReader`]), and converts it with
//! the same `AddValueToTensor` (`predict::add_value`). Anything else — another key, an
//! escape, an empty or ragged array, a value of the wrong type, more than one input —
//! makes it answer `None`, and the caller runs the general path on the same body,
//! which then produces TF Serving's exact error or result. So it can only ever
//! return what the general path returns; a unit test and the `rest_predict` fuzz
//! target hold it to that.

use tfgate_tensor::tensor::DataType;

use super::parser::{Number, NumberReader};
use super::predict::{single_input, Acc, Vals};
use super::{PredictFormat, PredictJson};

/// A numeric predict body, read; its values still to be typed by the signature.
pub struct NumericPredict {
    signature_name: Option<String>,
    format: PredictFormat,
    /// The dense shape of `instances` (batch first) or of `inputs`.
    shape: Vec<i64>,
    numbers: Vec<Number>,
}

/// Deeper than any model input; deeper bodies take the general path.
const MAX_DEPTH: usize = 32;

/// Reads `body` if it is a numeric predict body; `None` for anything else.
pub fn scan_predict(body: &[u8]) -> Option<NumericPredict> {
    let mut s = Scan {
        body,
        pos: 0,
        numbers: NumberReader::new(body),
    };
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
                signature_name = Some(String::from_utf8(name.to_vec()).ok()?);
            }
            b"instances" | b"inputs" if tensor.is_none() => {
                let format = if key == b"instances" {
                    PredictFormat::Row
                } else {
                    PredictFormat::Columnar
                };
                tensor = Some((format, s.nested_array()?));
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
    let (format, (shape, numbers)) = tensor?;
    Some(NumericPredict {
        signature_name,
        format,
        shape,
        numbers,
    })
}

impl NumericPredict {
    /// `signature_name` as sent, as `predict_signature_name` reads it.
    pub fn signature_name(&self) -> Option<&str> {
        self.signature_name.as_deref()
    }

    /// `decode_predict` for this body: `None` wherever that would not return a tensor
    /// made of these numbers (more than one input, a value its dtype refuses, a dtype
    /// JSON cannot carry), for the caller to run it on the general path.
    pub fn decode(&self, signature_inputs: &[(String, DataType)]) -> Option<PredictJson> {
        let (name, dtype) = single_input(signature_inputs)?;
        let mut acc = Acc {
            dtype,
            vals: Vals::with_capacity(dtype, self.numbers.len()),
        };
        for &n in &self.numbers {
            // `AddValueToTensor`: floats and int32s as `JsonValue::as_f32`/`as_f64`/
            // `as_i32` take them, without making each number a `JsonValue` first; any
            // other value through the document's own code.
            match (&mut acc.vals, n) {
                (Vals::Float(out), n) => out.push(n.as_f64() as f32),
                (Vals::Double(out), n) => out.push(n.as_f64()),
                (Vals::Int(out), Number::Int(i)) if i32::try_from(i).is_ok() => out.push(i as i32),
                (_, n) => acc.push(&n.value()).ok()?,
            }
        }
        let tensor = acc.into_tensor(self.shape.clone())?;
        Some(PredictJson {
            signature_name: self.signature_name.clone(),
            format: self.format,
            inputs: vec![(name, tensor)],
        })
    }
}

struct Scan<'a> {
    body: &'a [u8],
    pos: usize,
    numbers: NumberReader<'a>,
}

impl<'a> Scan<'a> {
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

    /// A rectangular array of numbers: its dense shape and its numbers in order.
    fn nested_array(&mut self) -> Option<(Vec<i64>, Vec<Number>)> {
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
        // longer ones leave it spare, more grow it.
        let room = self.body.len().saturating_sub(self.pos) / 5;
        let mut numbers = Vec::with_capacity(room.min(1 << 24));
        // How many elements the open array at each depth has had so far.
        let mut counts = vec![0i64; rank];
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
            loop {
                let (n, end) = self.numbers.number(self.pos)?;
                numbers.push(n);
                counts[depth] += 1;
                self.pos = end;
                self.ws();
                match self.next()? {
                    b',' => self.ws(),
                    b']' => break,
                    _ => return None,
                }
            }
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
                    return Some((shape, numbers));
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
