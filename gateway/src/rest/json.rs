//! The REST JSON codec: TF Serving's `tensorflow_serving/util/json_tensor.cc` (with the
//! rapidjson 1.1.0 reader and pretty-writer it uses), reproduced so that bodies and
//! error messages match byte for byte.
//!
//! Flow for `:predict`: [`parse`] the body, read [`predict_signature_name`], resolve the
//! servable and signature, then [`decode_predict`] with the signature's input dtypes;
//! answer with [`encode_predict`] in the request's [`PredictFormat`]. For `:classify` /
//! `:regress`: [`parse`], [`decode_examples`], then [`encode_classify`] /
//! [`encode_regress`]. Errors become bodies with [`error_body`].
//!
//! Matched on purpose, because clients see it: rapidjson's error codes and offsets
//! (`kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag`: trailing bytes
//! after the root are ignored, a NUL byte ends the input), its number typing (`1` is an
//! integer, `1.0` is not) and decimal conversion, its pretty-printer's exact layout
//! (`"predictions": [2.5, 3.0\n    ]`), Grisu2 digits for doubles echoed in error
//! messages, `absl::Base64Unescape`'s leniency, `WriteDecimal`'s float text, int8/int16/
//! uint8 inputs narrowed from int32 like TF's `int_val`, and wrapped row errors turning
//! UNIMPLEMENTED into INVALID_ARGUMENT.
//!
//! Where tfgate knowingly differs from TF Serving:
//! - Several outputs (or inputs) are handled in name order. TF Serving walks a protobuf
//!   map, whose order is unspecified.
//! - Error messages are `String`s: invalid UTF-8 from the request is shown as U+FFFD
//!   where TF Serving would echo the raw bytes. Response bodies are bytes and keep raw
//!   string outputs and labels exactly, invalid UTF-8 included, as TF Serving does.
//! - A decoded input of more than 254 dimensions (TF's limit) is refused here with TF's
//!   later message, `tensor parsing error: <name>`.
//! - `tf.Example` features are serialized in key order (protobuf map order is
//!   unspecified); the messages are equal.

mod b64;
mod classify;
mod dtoa;
pub(crate) mod float;
mod numeric;
pub mod parser;
mod predict;
mod writer;

pub use classify::{decode_examples, encode_classify, encode_regress};
pub use predict::{decode_predict, encode_predict, predict_signature_name};

use crate::error::ServingError;
use parser::JsonValue;
use tfgate_tensor::tensor::{DataType, Tensor};

/// Which request shape the body used; the response uses the matching one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictFormat {
    /// `{"instances": [...]}` in, `{"predictions": [...]}` out.
    Row,
    /// `{"inputs": ...}` in, `{"outputs": ...}` out.
    Columnar,
}

/// A decoded predict request.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictJson {
    /// `signature_name` as sent (`None` if absent; may be `Some("")`).
    pub signature_name: Option<String>,
    pub format: PredictFormat,
    /// The tensors built, sorted by name: one per signature input (row requests whose
    /// first instance is a `{"b64": ...}` object feed only the first input, as TF
    /// Serving does).
    pub inputs: Vec<(String, Tensor)>,
}

/// A decoded classify or regress request.
#[derive(Debug, Clone, PartialEq)]
pub struct ExamplesJson {
    /// `signature_name` as sent (`None` if absent).
    pub signature_name: Option<String>,
    /// The serialized context `Example` when `context` was given: the request is then
    /// an `ExampleListWithContext`, else an `ExampleList`.
    pub context: Option<Vec<u8>>,
    /// One serialized `tensorflow.Example` per element of `examples`.
    pub examples: Vec<Vec<u8>>,
}

/// A parsed request body whose root is an object.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonDoc {
    root: JsonValue,
}

impl JsonDoc {
    /// The root object.
    pub fn root(&self) -> &JsonValue {
        &self.root
    }
}

/// `ParseJson`: the body must be one JSON object (anything after it is ignored).
pub fn parse(body: &[u8]) -> Result<JsonDoc, ServingError> {
    if body.is_empty() {
        return Err(ServingError::invalid_argument(
            "JSON Parse error: The document is empty",
        ));
    }
    let root = parser::parse_value(body).map_err(|e| {
        ServingError::invalid_argument(format!(
            "JSON Parse error: {} at offset: {}",
            e.code.message(),
            e.offset
        ))
    })?;
    if root.as_object().is_none() {
        return Err(ServingError::invalid_argument(format!(
            "JSON Value: {} Is not object",
            writer::debug_string(&root)
        )));
    }
    Ok(JsonDoc { root })
}

/// A `:predict` body, read: a body of numbers only without a document tree
/// ([`numeric`]), any other as a document. Both answer as the document alone would.
pub enum PredictBody<'a> {
    Numeric(numeric::NumericPredict, &'a [u8]),
    Doc(JsonDoc),
}

impl<'a> PredictBody<'a> {
    /// `ParseJson` of a `:predict` body. `dtype_for` tells the dtype the signature a
    /// name (as sent; `None` if absent) resolves to most likely takes as its one input,
    /// for a body of numbers to be read straight into it ([`numeric`]); a guess only.
    pub fn read(
        body: &'a [u8],
        dtype_for: impl Fn(Option<&str>) -> Option<DataType>,
    ) -> Result<PredictBody<'a>, ServingError> {
        match numeric::scan_predict(body, dtype_for) {
            Some(n) => Ok(PredictBody::Numeric(n, body)),
            None => parse(body).map(PredictBody::Doc),
        }
    }

    /// [`predict_signature_name`].
    pub fn signature_name(&self) -> Result<Option<String>, ServingError> {
        match self {
            PredictBody::Numeric(n, _) => Ok(n.signature_name().map(str::to_string)),
            PredictBody::Doc(doc) => predict_signature_name(doc),
        }
    }

    /// [`decode_predict`]; a numeric body its signature does not take as it is (several
    /// inputs, a value its dtype refuses) is parsed as a document for TF Serving's answer.
    pub fn decode(
        &self,
        signature_inputs: &[(String, DataType)],
    ) -> Result<PredictJson, ServingError> {
        match self {
            PredictBody::Numeric(n, body) => match n.decode(body, signature_inputs) {
                Some(decoded) => Ok(decoded),
                None => decode_predict(&parse(body)?, signature_inputs),
            },
            PredictBody::Doc(doc) => decode_predict(doc, signature_inputs),
        }
    }
}

/// `MakeJsonFromStatus`: `{"error": "<message>"}`, pretty-printed like TF Serving.
pub fn error_body(message: &str) -> String {
    let mut w = writer::PrettyWriter::new();
    w.start_object();
    w.key(b"error");
    w.string(message.as_bytes());
    w.end_object();
    // Escaping only adds ASCII to valid UTF-8 input.
    String::from_utf8_lossy(&w.into_bytes()).into_owned()
}

/// `FormatError(doc, ...)`: the whole document, then the message.
fn format_error(doc: &JsonDoc, message: &str) -> ServingError {
    ServingError::invalid_argument(format!(
        "JSON Value: {} {}",
        writer::debug_string(doc.root()),
        message
    ))
}

/// `absl::Status::ToString()`: `INVALID_ARGUMENT: message`.
fn status_to_string(e: &ServingError) -> String {
    format!("{}: {}", e.code.name(), e.message)
}

#[cfg(test)]
mod tests;
