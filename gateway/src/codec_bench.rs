//! Entry points for `codec-bench` (`tests/codec_bench.rs`, docs/benchmarks.md): the REST
//! JSON codec run on a body the way the server runs it, without a socket or a worker, so
//! that its speed is measured on its own. Public only so the benchmark can link them;
//! nothing in the server calls them.

use crate::rest::json::{self, PredictFormat};
use tfgate_tensor::tensor::{DataType, Tensor};

/// Parses a `:predict` body and decodes it against a signature of one input, `input` of
/// `dtype`, as the REST front end does: the tensor it would send to the worker.
pub fn rest_decode(body: &[u8], input: &str, dtype: DataType) -> Result<Tensor, String> {
    let body = json::PredictBody::read(body, |_| Some(dtype)).map_err(|e| e.message)?;
    let signature = [(input.to_string(), dtype)];
    let mut decoded = body.decode(&signature).map_err(|e| e.message)?;
    decoded
        .inputs
        .pop()
        .map(|(_, t)| t)
        .ok_or_else(|| "no input decoded".to_string())
}

/// The general path's first step: the body parsed into its document (what
/// [`rest_decode`] skips for a body of numbers only).
pub fn rest_parse(body: &[u8]) -> Result<(), String> {
    json::parse(body).map(drop).map_err(|e| e.message)
}

/// Encodes `outputs` as the REST front end answers a row (`instances`) request, or a
/// columnar (`inputs`) one.
pub fn rest_encode(outputs: &[(String, Tensor)], row: bool) -> Result<Vec<u8>, String> {
    let format = if row {
        PredictFormat::Row
    } else {
        PredictFormat::Columnar
    };
    json::encode_predict(format, outputs).map_err(|e| e.message)
}

/// Decodes a V2 REST infer body (JSON only) as the V2 front end does, its inputs packed
/// for their datatypes; `as_values` reads the head all as one `serde_json::Value`, as
/// before `v2/json_head.rs`. The body is `'static` so that each run takes it as the
/// server does, a `Bytes`, without a copy.
pub fn v2_decode(body: &'static [u8], as_values: bool) -> Result<(), String> {
    use crate::v2::rest::{decode_request, decode_request_as_values};
    let decode = if as_values {
        decode_request_as_values
    } else {
        decode_request
    };
    let regions = crate::v2::shared_memory::Registry::default();
    decode(None, bytes::Bytes::from_static(body), &regions, usize::MAX)
        .map(drop)
        .map_err(|e| e.message)
}
