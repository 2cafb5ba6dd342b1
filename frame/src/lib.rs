//! What the bytes between the gateway and its workers mean: request and response frames
//! (what a descriptor of `shm-protocol`'s rings points to) and the control socket's
//! messages ([`control`]). `shm-protocol` moves bytes and guards memory; this crate, with
//! no `unsafe`, gives them meaning for tfgate: tensors, model names, status codes.
//!
//! ```text
//!  +0        FrameHeader: magic "TFFR", kind (1 request, 2 response),
//!            meta_offset, meta_len, total_len           (32 B, little-endian)
//!  +64       tensor payloads, each at a 64-byte aligned offset:
//!              fixed-size dtypes: packed little-endian elements
//!              DT_STRING: (n+1) u64 LE offsets (0 = first, last = total bytes), then bytes
//!  +meta_off postcard metadata: names, dtype, shape, payload offset/len per tensor
//! ```
//!
//! Encoding writes the payloads straight into the arena block (only the small metadata
//! is serialized to a private `Vec` first). Decoding trusts nothing: the metadata is
//! copied out (size-capped) and parsed, and every offset, length, dtype, rank, element
//! count × element size and string offset is checked with checked arithmetic before
//! any tensor bytes are read. Tensor bytes are copied out of shared memory through raw
//! pointers ([`TensorView::copy_to`]); no reference into the arena is ever handed out.
//!
//! `wire.rs` holds the postcard metadata, `encode.rs` lays frames out and writes them into
//! an arena block, `decode.rs` validates and reads them; `bytes.rs` runs the same encoder
//! and decoders on private byte slices (for the fuzz targets); this module holds the types.
#![forbid(unsafe_code)]

mod bytes;
pub mod control;
mod decode;
mod encode;
#[cfg(feature = "hostile")]
mod forge;
#[cfg(test)]
mod tests;
mod wire;

use serde::{Deserialize, Serialize};

use shm_protocol::OutOfBounds;
use tfgate_tensor::code::Code;
use tfgate_tensor::tensor::{DataType, FileBytes, Tensor, TensorData, TensorError};

pub use bytes::{
    decode_request_bytes, decode_response_bytes, encode_request_bytes, encode_response_bytes,
};
pub use decode::{
    decode_request, decode_response, decode_response_to, request_view, RequestView, TensorView,
};
pub use encode::Encoded;
#[cfg(feature = "hostile")]
pub use forge::{forged_response, ForgedTensor};
pub use shm_protocol::InPlacePayload;

/// `b"TFFR"` read as a little-endian u32.
const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"TFFR");
const KIND_REQUEST: u32 = 1;
const KIND_RESPONSE: u32 = 2;
/// Bytes of the frame header; payloads start at `PAYLOAD_START`.
const HEADER_LEN: usize = 32;
const PAYLOAD_START: u64 = 64;
/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 32;
/// Largest metadata block accepted (names, shapes, dtypes).
pub const MAX_META_BYTES: u64 = 16 << 20;

/// Which TF Serving RPC a request frame carries. Only `Predict` exists today; the tag is
/// a number on the wire so Classify/Regress/MultiInference can be added compatibly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    Predict,
}

impl RequestKind {
    fn code(self) -> u32 {
        match self {
            RequestKind::Predict => 1,
        }
    }

    fn from_code(code: u32) -> Option<RequestKind> {
        match code {
            1 => Some(RequestKind::Predict),
            _ => None,
        }
    }
}

/// A request as the gateway builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFrame {
    pub kind: RequestKind,
    pub model_name: String,
    /// `None`: the latest version.
    pub version: Option<i64>,
    pub signature_name: String,
    pub output_filter: Vec<String>,
    pub inputs: Vec<(String, Tensor)>,
    /// When the request's caller stops waiting, as [`shm_protocol::monotonic_ns`] reads the
    /// clock (CLOCK_MONOTONIC is one clock for every process on the host); 0: never. The
    /// worker skips a request whose deadline has passed and bounds the session run by
    /// what is left (TensorFlow's `RunOptions.timeout_in_ms`).
    pub deadline_ns: u64,
}

/// When the worker took a request, how long its run took and when it answered, as
/// [`shm_protocol::monotonic_ns`] reads the host's clock: the gateway splits a request's latency
/// with it. The peer writes it, so it is only ever used, clamped, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTiming {
    pub received_ns: u64,
    pub run_ns: u64,
    pub replied_ns: u64,
}

/// A response as the gateway receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFrame {
    Ok {
        model_version: i64,
        outputs: Vec<(String, Tensor)>,
        timing: WorkerTiming,
    },
    Err {
        code: Code,
        message: String,
    },
}

/// Borrowed tensor storage, for encoding without first building a [`Tensor`].
#[derive(Debug, Clone, Copy)]
pub enum TensorDataRef<'a> {
    Bytes(&'a [u8]),
    Strings(&'a [Vec<u8>]),
    /// Copied from the file straight into the arena block when the frame is written.
    File(&'a FileBytes),
}

/// A borrowed tensor (e.g. a TensorFlow output buffer) to encode.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub dtype: DataType,
    pub shape: &'a [i64],
    pub data: TensorDataRef<'a>,
}

impl<'a> From<&'a Tensor> for TensorRef<'a> {
    fn from(t: &'a Tensor) -> Self {
        TensorRef {
            dtype: t.dtype,
            shape: &t.shape,
            data: match &t.data {
                TensorData::Bytes(b) => TensorDataRef::Bytes(b),
                TensorData::Strings(s) => TensorDataRef::Strings(s),
                TensorData::File(f) => TensorDataRef::File(f),
            },
        }
    }
}

/// A response borrowed from the worker's buffers.
#[derive(Debug, Clone, Copy)]
pub enum ResponseRef<'a> {
    Ok {
        model_version: i64,
        outputs: &'a [(&'a str, TensorRef<'a>)],
        timing: WorkerTiming,
    },
    Err {
        code: Code,
        message: &'a str,
    },
}

/// A malformed frame (or an unencodable one). Never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame out of bounds: {0}")]
    OutOfBounds(#[from] OutOfBounds),
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    #[error("frame kind {found}, expected {expected}")]
    WrongKind { found: u32, expected: u32 },
    #[error("inconsistent frame header: {0}")]
    BadHeader(&'static str),
    #[error("frame metadata of {0} bytes exceeds the limit")]
    MetaTooLarge(u64),
    #[error("frame metadata: {0}")]
    Meta(String),
    #[error("unknown request kind {0}")]
    UnknownKind(u32),
    #[error("tensor {name:?}: unsupported dtype {dtype}")]
    BadDtype { name: String, dtype: i32 },
    #[error("tensor {name:?}: rank {rank} exceeds {MAX_RANK}")]
    RankTooLarge { name: String, rank: usize },
    #[error("tensor {name:?}: {source}")]
    Tensor { name: String, source: TensorError },
    #[error("tensor {name:?}: payload at {offset}+{len} is misplaced or has the wrong size")]
    BadPayload { name: String, offset: u64, len: u64 },
    #[error("tensor {name:?}: string offsets are not monotonic or out of bounds")]
    BadStrings { name: String },
    #[error("destination holds {actual} bytes, the tensor has {expected}")]
    DestinationSize { expected: usize, actual: usize },
    #[error("not a string tensor, or string index out of range")]
    NotStrings,
    #[error("frame of {0} bytes exceeds the address space")]
    TooLong(u64),
    #[error("{0:?} tensors cannot be read in place")]
    NotInPlace(DataType),
}
