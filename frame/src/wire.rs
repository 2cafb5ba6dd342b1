//! The postcard metadata at the end of every frame (names, dtypes, shapes, payload
//! offsets): borrowed `*Out` forms to encode, owned forms to decode, and their helpers.

use serde::{Deserialize, Serialize};

use super::{FrameError, WorkerTiming};
use tfgate_tensor::code::Code;

#[derive(Serialize)]
pub(super) struct WireTensorOut<'a> {
    pub(super) name: &'a str,
    pub(super) dtype: i32,
    pub(super) shape: &'a [i64],
    pub(super) offset: u64,
    pub(super) len: u64,
}

#[derive(Deserialize)]
pub(super) struct WireTensor {
    pub(super) name: String,
    pub(super) dtype: i32,
    pub(super) shape: Vec<i64>,
    pub(super) offset: u64,
    pub(super) len: u64,
}

#[derive(Serialize)]
pub(super) struct WireRequestOut<'a> {
    pub(super) kind: u32,
    pub(super) model_name: &'a str,
    pub(super) version: Option<i64>,
    pub(super) signature_name: &'a str,
    pub(super) output_filter: &'a [String],
    pub(super) inputs: Vec<WireTensorOut<'a>>,
    pub(super) deadline_ns: u64,
}

#[derive(Deserialize)]
pub(super) struct WireRequest {
    pub(super) kind: u32,
    pub(super) model_name: String,
    pub(super) version: Option<i64>,
    pub(super) signature_name: String,
    pub(super) output_filter: Vec<String>,
    pub(super) inputs: Vec<WireTensor>,
    pub(super) deadline_ns: u64,
}

#[derive(Serialize)]
pub(super) enum WireResponseOut<'a> {
    Ok {
        model_version: i64,
        outputs: Vec<WireTensorOut<'a>>,
        timing: WorkerTiming,
    },
    Err {
        code: Code,
        message: &'a str,
    },
}

#[derive(Deserialize)]
pub(super) enum WireResponse {
    Ok {
        model_version: i64,
        outputs: Vec<WireTensor>,
        timing: WorkerTiming,
    },
    Err {
        code: Code,
        message: String,
    },
}

pub(super) fn meta_err(e: postcard::Error) -> FrameError {
    FrameError::Meta(e.to_string())
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(meta: &[u8]) -> Result<T, FrameError> {
    let (v, rest) = postcard::take_from_bytes(meta).map_err(meta_err)?;
    if !rest.is_empty() {
        return Err(FrameError::Meta("trailing bytes".into()));
    }
    Ok(v)
}
