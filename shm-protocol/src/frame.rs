//! Request and response frames: what a descriptor points to.
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

use serde::{Deserialize, Serialize};

use crate::arena::ALIGN;
use crate::code::Code;
use crate::region::{OutOfBounds, Region};
use crate::tensor::{num_elements, DataType, Tensor, TensorData, TensorError};

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
    /// When the request's caller stops waiting, as [`crate::monotonic_ns`] reads the
    /// clock (CLOCK_MONOTONIC is one clock for every process on the host); 0: never. The
    /// worker skips a request whose deadline has passed and bounds the session run by
    /// what is left (TensorFlow's `RunOptions.timeout_in_ms`).
    pub deadline_ns: u64,
}

/// When the worker took a request, how long its run took and when it answered, as
/// [`crate::monotonic_ns`] reads the host's clock: the gateway splits a request's latency
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

// ---------------------------------------------------------------- wire metadata

#[derive(Serialize)]
struct WireTensorOut<'a> {
    name: &'a str,
    dtype: i32,
    shape: &'a [i64],
    offset: u64,
    len: u64,
}

#[derive(Deserialize)]
struct WireTensor {
    name: String,
    dtype: i32,
    shape: Vec<i64>,
    offset: u64,
    len: u64,
}

#[derive(Serialize)]
struct WireRequestOut<'a> {
    kind: u32,
    model_name: &'a str,
    version: Option<i64>,
    signature_name: &'a str,
    output_filter: &'a [String],
    inputs: Vec<WireTensorOut<'a>>,
    deadline_ns: u64,
}

#[derive(Deserialize)]
struct WireRequest {
    kind: u32,
    model_name: String,
    version: Option<i64>,
    signature_name: String,
    output_filter: Vec<String>,
    inputs: Vec<WireTensor>,
    deadline_ns: u64,
}

#[derive(Serialize)]
enum WireResponseOut<'a> {
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
enum WireResponse {
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

// ---------------------------------------------------------------- encoding

/// A frame laid out and ready to be written into an arena block of [`Encoded::len`] bytes.
pub(crate) struct Encoded<'a> {
    kind: u32,
    meta: Vec<u8>,
    meta_offset: u64,
    total: u64,
    payloads: Vec<(u64, TensorRef<'a>)>,
}

fn check_tensor(name: &str, t: &TensorRef<'_>) -> Result<u64, FrameError> {
    let terr = |source| FrameError::Tensor {
        name: name.to_owned(),
        source,
    };
    if t.shape.len() > MAX_RANK {
        return Err(FrameError::RankTooLarge {
            name: name.to_owned(),
            rank: t.shape.len(),
        });
    }
    let elements = num_elements(t.shape).map_err(terr)?;
    match (t.data, t.dtype.element_size()) {
        (TensorDataRef::Bytes(b), Some(size)) => {
            let expected = elements
                .checked_mul(size)
                .ok_or(TensorError::Overflow)
                .map_err(terr)?;
            if b.len() != expected {
                return Err(terr(TensorError::ByteLength {
                    dtype: t.dtype,
                    elements,
                    expected,
                    actual: b.len(),
                }));
            }
            Ok(b.len() as u64)
        }
        (TensorDataRef::Strings(s), None) => {
            if s.len() != elements {
                return Err(terr(TensorError::StringCount {
                    elements,
                    actual: s.len(),
                }));
            }
            let table = (s.len() as u64 + 1) * 8;
            Ok(s.iter().fold(table, |acc, v| acc + v.len() as u64))
        }
        _ => Err(terr(TensorError::Storage(t.dtype))),
    }
}

/// Places the payloads from `PAYLOAD_START`, 64-byte aligned; returns the end.
fn place<'a>(
    tensors: impl Iterator<Item = (&'a str, TensorRef<'a>)>,
    wire: &mut Vec<WireTensorOut<'a>>,
    payloads: &mut Vec<(u64, TensorRef<'a>)>,
) -> Result<u64, FrameError> {
    let mut cursor = PAYLOAD_START;
    for (name, t) in tensors {
        let len = check_tensor(name, &t)?;
        let offset = cursor;
        cursor = crate::arena::round_up(offset + len).ok_or(FrameError::TooLong(u64::MAX))?;
        wire.push(WireTensorOut {
            name,
            dtype: t.dtype as i32,
            shape: t.shape,
            offset,
            len,
        });
        payloads.push((offset, t));
    }
    Ok(cursor)
}

fn finish<'a>(
    kind: u32,
    payload_end: u64,
    meta: Vec<u8>,
    payloads: Vec<(u64, TensorRef<'a>)>,
) -> Result<Encoded<'a>, FrameError> {
    if meta.len() as u64 > MAX_META_BYTES {
        return Err(FrameError::MetaTooLarge(meta.len() as u64));
    }
    let total = payload_end + meta.len() as u64;
    Ok(Encoded {
        kind,
        meta_offset: payload_end,
        total,
        meta,
        payloads,
    })
}

fn meta_err(e: postcard::Error) -> FrameError {
    FrameError::Meta(e.to_string())
}

impl RequestFrame {
    pub(crate) fn encode(&self) -> Result<Encoded<'_>, FrameError> {
        let mut wire = Vec::with_capacity(self.inputs.len());
        let mut payloads = Vec::with_capacity(self.inputs.len());
        let end = place(
            self.inputs
                .iter()
                .map(|(n, t)| (n.as_str(), TensorRef::from(t))),
            &mut wire,
            &mut payloads,
        )?;
        let meta = postcard::to_allocvec(&WireRequestOut {
            kind: self.kind.code(),
            model_name: &self.model_name,
            version: self.version,
            signature_name: &self.signature_name,
            output_filter: &self.output_filter,
            inputs: wire,
            deadline_ns: self.deadline_ns,
        })
        .map_err(meta_err)?;
        finish(KIND_REQUEST, end, meta, payloads)
    }
}

impl<'a> ResponseRef<'a> {
    pub(crate) fn encode(self) -> Result<Encoded<'a>, FrameError> {
        let mut wire = Vec::new();
        let mut payloads = Vec::new();
        let (end, meta) = match self {
            ResponseRef::Ok {
                model_version,
                outputs,
                timing,
            } => {
                let end = place(
                    outputs.iter().map(|(n, t)| (*n, *t)),
                    &mut wire,
                    &mut payloads,
                )?;
                let meta = postcard::to_allocvec(&WireResponseOut::Ok {
                    model_version,
                    outputs: wire,
                    timing,
                });
                (end, meta)
            }
            ResponseRef::Err { code, message } => (
                PAYLOAD_START,
                postcard::to_allocvec(&WireResponseOut::Err { code, message }),
            ),
        };
        finish(KIND_RESPONSE, end, meta.map_err(meta_err)?, payloads)
    }
}

impl Encoded<'_> {
    /// Bytes the frame needs in the arena.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// Writes the frame into `region` at `offset` (a block of at least `len()` bytes).
    pub(crate) fn write(&self, region: &Region, offset: u64) -> Result<(), OutOfBounds> {
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&self.kind.to_le_bytes());
        header[8..16].copy_from_slice(&self.meta_offset.to_le_bytes());
        header[16..24].copy_from_slice(&(self.meta.len() as u64).to_le_bytes());
        header[24..32].copy_from_slice(&self.total.to_le_bytes());
        region.write_from(offset, &header)?;
        for (off, t) in &self.payloads {
            let at = offset + off;
            match t.data {
                TensorDataRef::Bytes(b) => region.write_from(at, b)?,
                TensorDataRef::Strings(strings) => {
                    // Offsets table in chunks (no Vec of the whole table), then the bytes.
                    let mut chunk = [0u8; 4096];
                    let mut filled = 0;
                    let mut table_at = at;
                    let mut running = 0u64;
                    let ends = std::iter::once(0).chain(strings.iter().map(|s| {
                        running += s.len() as u64;
                        running
                    }));
                    for end in ends {
                        chunk[filled..filled + 8].copy_from_slice(&end.to_le_bytes());
                        filled += 8;
                        if filled == chunk.len() {
                            region.write_from(table_at, &chunk)?;
                            table_at += filled as u64;
                            filled = 0;
                        }
                    }
                    region.write_from(table_at, &chunk[..filled])?;
                    let mut data_at = at + (strings.len() as u64 + 1) * 8;
                    for s in strings {
                        region.write_from(data_at, s)?;
                        data_at += s.len() as u64;
                    }
                }
            }
        }
        region.write_from(offset + self.meta_offset, &self.meta)
    }
}

// ---------------------------------------------------------------- decoding

/// A tensor inside a received frame: validated metadata plus the location of its bytes.
///
/// The bytes stay in shared memory until copied out with [`TensorView::copy_to`] /
/// [`TensorView::copy_string_to`] / [`TensorView::to_tensor`]. The peer may still write
/// them (a misbehaving peer only); then the copy holds garbage but is never out of bounds,
/// because every bound comes from validated private copies.
pub struct TensorView<'a> {
    region: &'a Region,
    dtype: DataType,
    shape: Vec<i64>,
    /// Absolute offset of the payload within the arena.
    at: u64,
    len: u64,
    /// DT_STRING: the validated offsets table (n+1 entries, relative to the string bytes).
    strings: Option<Vec<u64>>,
}

/// A numeric tensor payload read in place in shared memory. It keeps the mapping alive,
/// so the pointer stays valid for as long as this value lives. The bytes are the
/// in-flight request's: the gateway frees the block once the response arrives, so read
/// nothing through it (or through anything aliasing it) after answering. The peer can
/// still write them at any time, so they must only ever be read as plain numbers (every
/// bit pattern valid) — never as a `&[T]`.
pub struct InPlacePayload {
    _region: Region,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the payload is an address range inside a mapping kept alive by the `Arc` in
// `_region`; it has no thread affinity, and this type never dereferences it.
unsafe impl Send for InPlacePayload {}

impl InPlacePayload {
    /// Start of the payload (64-byte aligned); valid for `len()` bytes of reads.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for InPlacePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlacePayload")
            .field("len", &self.len)
            .finish()
    }
}

impl std::fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorView")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("byte_len", &self.byte_len())
            .finish()
    }
}

impl<'a> TensorView<'a> {
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    /// Element count (string count for DT_STRING).
    pub fn num_elements(&self) -> usize {
        match &self.strings {
            Some(t) => t.len() - 1,
            None => (self.len as usize) / self.dtype.element_size().unwrap_or(1).max(1),
        }
    }

    /// Bytes `copy_to` writes: the packed elements, or for DT_STRING all string bytes
    /// concatenated.
    pub fn byte_len(&self) -> usize {
        match &self.strings {
            Some(t) => t[t.len() - 1] as usize,
            None => self.len as usize,
        }
    }

    fn strings_at(&self) -> u64 {
        self.at + self.strings.as_ref().map_or(0, |t| t.len() as u64 * 8)
    }

    /// Copies the tensor's bytes (see [`TensorView::byte_len`]) into `dst`, which must be
    /// exactly `byte_len()` long — e.g. a freshly allocated TensorFlow tensor buffer.
    pub fn copy_to(&self, dst: &mut [u8]) -> Result<(), FrameError> {
        if dst.len() != self.byte_len() {
            return Err(FrameError::DestinationSize {
                expected: self.byte_len(),
                actual: dst.len(),
            });
        }
        Ok(self.region.read_into(self.strings_at(), dst)?)
    }

    /// Leaves a fixed-size numeric payload where it is, for a consumer that reads it in
    /// place instead of copying it out (the worker hands it to TensorFlow as the input
    /// tensor's buffer). DT_STRING and DT_BOOL are refused: their bytes carry invariants
    /// (offsets, 0/1) that a peer writing concurrently could break after validation.
    pub fn in_place(&self) -> Result<InPlacePayload, FrameError> {
        if matches!(self.dtype, DataType::String | DataType::Bool) {
            return Err(FrameError::NotInPlace(self.dtype));
        }
        let len = self.byte_len();
        let ptr = self.region.checked_ptr(self.at, len)?;
        Ok(InPlacePayload {
            _region: self.region.clone(),
            ptr,
            len,
        })
    }

    /// DT_STRING: number of strings; `None` for other dtypes.
    pub fn string_count(&self) -> Option<usize> {
        self.strings.as_ref().map(|t| t.len() - 1)
    }

    /// DT_STRING: length of string `i`.
    pub fn string_len(&self, i: usize) -> Option<usize> {
        let t = self.strings.as_ref()?;
        Some((t.get(i + 1)? - t[i]) as usize)
    }

    /// DT_STRING: copies string `i` into `dst` (exactly `string_len(i)` bytes).
    pub fn copy_string_to(&self, i: usize, dst: &mut [u8]) -> Result<(), FrameError> {
        let t = self.strings.as_ref().ok_or(FrameError::NotStrings)?;
        let (start, end) = match (t.get(i), t.get(i + 1)) {
            (Some(&s), Some(&e)) => (s, e),
            _ => return Err(FrameError::NotStrings),
        };
        if dst.len() as u64 != end - start {
            return Err(FrameError::DestinationSize {
                expected: (end - start) as usize,
                actual: dst.len(),
            });
        }
        Ok(self.region.read_into(self.strings_at() + start, dst)?)
    }

    /// DT_STRING: string `i` as an owned byte vector.
    pub fn string(&self, i: usize) -> Result<Vec<u8>, FrameError> {
        let mut v = vec![0u8; self.string_len(i).ok_or(FrameError::NotStrings)?];
        self.copy_string_to(i, &mut v)?;
        Ok(v)
    }

    /// Copies the whole tensor into private memory.
    pub fn to_tensor(&self) -> Result<Tensor, FrameError> {
        let data = match &self.strings {
            Some(t) => {
                let all = copy_out(self.region, self.strings_at(), self.byte_len())?;
                TensorData::Strings(
                    t.windows(2)
                        .map(|w| all[w[0] as usize..w[1] as usize].to_vec())
                        .collect(),
                )
            }
            None => TensorData::Bytes(copy_out(self.region, self.at, self.len as usize)?),
        };
        Ok(Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data,
        })
    }
}

/// Copies `len` bytes at `at` into a new Vec without zero-filling it first.
fn copy_out(region: &Region, at: u64, len: usize) -> Result<Vec<u8>, FrameError> {
    // Bounds first, so a bad length cannot cause a huge allocation.
    if at
        .checked_add(len as u64)
        .is_none_or(|end| end > region.len() as u64)
    {
        return Err(OutOfBounds {
            offset: at,
            len: len as u64,
            region_len: region.len() as u64,
        }
        .into());
    }
    let mut v = Vec::<u8>::with_capacity(len);
    // SAFETY: the spare capacity is valid for `len` bytes of writes and is private memory,
    // not part of the mapping.
    unsafe { region.read_raw(at, v.as_mut_ptr(), len)? };
    // SAFETY: `read_raw` succeeded, so all `len` bytes were initialized.
    unsafe { v.set_len(len) };
    Ok(v)
}

/// A received request, decoded and validated; tensors are still in shared memory.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub kind: RequestKind,
    pub model_name: String,
    pub version: Option<i64>,
    pub signature_name: String,
    pub output_filter: Vec<String>,
    pub inputs: Vec<(String, TensorView<'a>)>,
    /// See [`RequestFrame::deadline_ns`]; 0: none.
    pub deadline_ns: u64,
}

impl RequestView<'_> {
    /// Copies everything out into an owned [`RequestFrame`].
    pub fn to_frame(&self) -> Result<RequestFrame, FrameError> {
        Ok(RequestFrame {
            kind: self.kind,
            model_name: self.model_name.clone(),
            version: self.version,
            signature_name: self.signature_name.clone(),
            output_filter: self.output_filter.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|(n, t)| Ok((n.clone(), t.to_tensor()?)))
                .collect::<Result<_, FrameError>>()?,
            deadline_ns: self.deadline_ns,
        })
    }
}

/// Reads and checks the frame header of the block `offset..offset+len`; returns the
/// frame's total length and its metadata (copied out).
fn read_block(
    region: &Region,
    offset: u64,
    len: u64,
    kind: u32,
) -> Result<(u64, Vec<u8>), FrameError> {
    let end = offset
        .checked_add(len)
        .ok_or(FrameError::BadHeader("block overflows"))?;
    if end > region.len() as u64 {
        return Err(OutOfBounds {
            offset,
            len,
            region_len: region.len() as u64,
        }
        .into());
    }
    if len < PAYLOAD_START {
        return Err(FrameError::BadHeader("block shorter than a frame header"));
    }
    let mut h = [0u8; HEADER_LEN];
    region.read_into(offset, &mut h)?;
    let word = |r: std::ops::Range<usize>| -> u64 {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&h[r]);
        u64::from_le_bytes(b)
    };
    let magic = word(0..4) as u32;
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let found = word(4..8) as u32;
    if found != kind {
        return Err(FrameError::WrongKind {
            found,
            expected: kind,
        });
    }
    let (meta_offset, meta_len, total) = (word(8..16), word(16..24), word(24..32));
    if total > len {
        return Err(FrameError::BadHeader("frame longer than its block"));
    }
    if meta_len > MAX_META_BYTES {
        return Err(FrameError::MetaTooLarge(meta_len));
    }
    if meta_offset < PAYLOAD_START || meta_offset.checked_add(meta_len).is_none_or(|e| e > total) {
        return Err(FrameError::BadHeader("metadata outside the frame"));
    }
    let mut meta = vec![0u8; meta_len as usize];
    region.read_into(offset + meta_offset, &mut meta)?;
    Ok((total, meta))
}

fn parse<T: serde::de::DeserializeOwned>(meta: &[u8]) -> Result<T, FrameError> {
    let (v, rest) = postcard::take_from_bytes(meta).map_err(meta_err)?;
    if !rest.is_empty() {
        return Err(FrameError::Meta("trailing bytes".into()));
    }
    Ok(v)
}

/// Validates one tensor's metadata against the frame; reads and checks a string table.
fn view<'a>(
    region: &'a Region,
    block: u64,
    total: u64,
    w: WireTensor,
) -> Result<(String, TensorView<'a>), FrameError> {
    let WireTensor {
        name,
        dtype,
        shape,
        offset,
        len,
    } = w;
    let Some(dt) = DataType::from_i32(dtype) else {
        return Err(FrameError::BadDtype { name, dtype });
    };
    if shape.len() > MAX_RANK {
        let rank = shape.len();
        return Err(FrameError::RankTooLarge { name, rank });
    }
    let elements = match num_elements(&shape) {
        Ok(n) => n,
        Err(source) => return Err(FrameError::Tensor { name, source }),
    };
    let bad = |name: String| FrameError::BadPayload { name, offset, len };
    if offset < PAYLOAD_START
        || offset % ALIGN != 0
        || offset.checked_add(len).is_none_or(|e| e > total)
    {
        return Err(bad(name));
    }
    let at = block + offset; // ≤ block + total ≤ region length: no overflow.
    let strings = match dt.element_size() {
        Some(size) => {
            if elements.checked_mul(size) != Some(len as usize) {
                return Err(bad(name));
            }
            None
        }
        None => {
            let entries = elements.checked_add(1).ok_or_else(|| bad(name.clone()))?;
            let table_bytes = entries.checked_mul(8).filter(|&b| b as u64 <= len);
            let Some(table_bytes) = table_bytes else {
                return Err(bad(name));
            };
            // Bounded by `len`, which is bounded by the arena: no huge allocation.
            let mut table = Vec::with_capacity(entries);
            let mut chunk = [0u8; 4096];
            let mut read = 0usize;
            while read < table_bytes {
                let n = (table_bytes - read).min(chunk.len());
                region.read_into(at + read as u64, &mut chunk[..n])?;
                table.extend(chunk[..n].chunks_exact(8).map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_le_bytes(b)
                }));
                read += n;
            }
            let data_len = len - table_bytes as u64;
            let monotonic = table.windows(2).all(|w| w[0] <= w[1]);
            if table.first() != Some(&0) || !monotonic || table.last().is_none_or(|&e| e > data_len)
            {
                return Err(FrameError::BadStrings { name });
            }
            Some(table)
        }
    };
    Ok((
        name,
        TensorView {
            region,
            dtype: dt,
            shape,
            at,
            len,
            strings,
        },
    ))
}

/// Decodes the request frame in `region` at `offset..offset+len` (worker side).
pub(crate) fn decode_request(
    region: &Region,
    offset: u64,
    len: u64,
) -> Result<RequestView<'_>, FrameError> {
    let (total, meta) = read_block(region, offset, len, KIND_REQUEST)?;
    let w: WireRequest = parse(&meta)?;
    let kind = RequestKind::from_code(w.kind).ok_or(FrameError::UnknownKind(w.kind))?;
    let inputs = w
        .inputs
        .into_iter()
        .map(|t| view(region, offset, total, t))
        .collect::<Result<_, _>>()?;
    Ok(RequestView {
        kind,
        model_name: w.model_name,
        version: w.version,
        signature_name: w.signature_name,
        output_filter: w.output_filter,
        inputs,
        deadline_ns: w.deadline_ns,
    })
}

/// Decodes and copies out the response frame at `offset..offset+len` (gateway side).
pub(crate) fn decode_response(
    region: &Region,
    offset: u64,
    len: u64,
) -> Result<ResponseFrame, FrameError> {
    let (total, meta) = read_block(region, offset, len, KIND_RESPONSE)?;
    match parse::<WireResponse>(&meta)? {
        WireResponse::Err { code, message } => Ok(ResponseFrame::Err { code, message }),
        WireResponse::Ok {
            model_version,
            outputs,
            timing,
        } => {
            let outputs = outputs
                .into_iter()
                .map(|t| {
                    let (name, v) = view(region, offset, total, t)?;
                    Ok((name, v.to_tensor()?))
                })
                .collect::<Result<_, FrameError>>()?;
            Ok(ResponseFrame::Ok {
                model_version,
                outputs,
                timing,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::test_mapping;

    fn region(len: usize) -> Region {
        Region::new(test_mapping(len), 0, len)
    }

    pub(crate) fn sample_request() -> RequestFrame {
        RequestFrame {
            deadline_ns: 1234,
            kind: RequestKind::Predict,
            model_name: "half_plus_two".into(),
            version: Some(123),
            signature_name: "serving_default".into(),
            output_filter: vec!["y".into()],
            inputs: vec![
                (
                    "x".into(),
                    Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
                ),
                (
                    "s".into(),
                    Tensor::new(
                        DataType::String,
                        vec![3],
                        TensorData::Strings(vec![
                            b"".to_vec(),
                            vec![0xff, 0, 7],
                            b"hello".to_vec(),
                        ]),
                    )
                    .unwrap(),
                ),
                (
                    "scalar".into(),
                    Tensor::new(DataType::Int64, vec![], TensorData::Bytes(vec![9; 8])).unwrap(),
                ),
                (
                    "empty".into(),
                    Tensor::new(DataType::Int32, vec![0, 5], TensorData::Bytes(vec![])).unwrap(),
                ),
            ],
        }
    }

    #[test]
    fn request_round_trip() {
        let r = region(1 << 16);
        let f = sample_request();
        let e = f.encode().unwrap();
        e.write(&r, 128).unwrap();
        let v = decode_request(&r, 128, e.len()).unwrap();
        assert_eq!(v.to_frame().unwrap(), f);
        let s = &v.inputs[1].1;
        assert_eq!(s.string_count(), Some(3));
        assert_eq!(s.string(1).unwrap(), vec![0xff, 0, 7]);
        assert_eq!(s.byte_len(), 8);
        let x = &v.inputs[0].1;
        let mut dst = vec![0u8; x.byte_len()];
        x.copy_to(&mut dst).unwrap();
        assert_eq!(&dst[..4], &1.0f32.to_le_bytes());
        assert!(x.copy_to(&mut [0u8; 3]).is_err());
        assert!(x.string(0).is_err());
    }

    #[test]
    fn response_round_trip() {
        let r = region(1 << 16);
        let t = Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]).unwrap();
        let outs = [("y", TensorRef::from(&t))];
        let timing = WorkerTiming {
            received_ns: 1,
            run_ns: 2,
            replied_ns: 3,
        };
        let e = ResponseRef::Ok {
            model_version: 5,
            outputs: &outs,
            timing,
        }
        .encode()
        .unwrap();
        e.write(&r, 0).unwrap();
        let got = decode_response(&r, 0, e.len()).unwrap();
        assert_eq!(
            got,
            ResponseFrame::Ok {
                model_version: 5,
                outputs: vec![("y".into(), t)],
                timing,
            }
        );
        let e = ResponseRef::Err {
            code: Code::InvalidArgument,
            message: "bad",
        }
        .encode()
        .unwrap();
        e.write(&r, 4096).unwrap();
        assert_eq!(
            decode_response(&r, 4096, e.len()).unwrap(),
            ResponseFrame::Err {
                code: Code::InvalidArgument,
                message: "bad".into()
            }
        );
        // A request is not a response.
        let e = sample_request();
        let e = e.encode().unwrap();
        e.write(&r, 0).unwrap();
        assert!(matches!(
            decode_response(&r, 0, e.len()),
            Err(FrameError::WrongKind { .. })
        ));
    }

    #[test]
    fn encode_rejects_inconsistent_tensors() {
        let mut f = sample_request();
        f.inputs[0].1.shape = vec![5];
        assert!(matches!(f.encode(), Err(FrameError::Tensor { .. })));
        let mut f = sample_request();
        f.inputs[0].1.shape = vec![1; 33];
        assert!(matches!(f.encode(), Err(FrameError::RankTooLarge { .. })));
    }

    /// Mutates encoded frames byte by byte (and with random garbage) and decodes them:
    /// every outcome must be Ok or a FrameError, never a panic or an out-of-bounds read.
    #[test]
    fn fuzz_decoder_never_panics() {
        let len = 1 << 14;
        let r = region(len);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let f = sample_request();
        let e = f.encode().unwrap();
        let t = Tensor::new(
            DataType::String,
            vec![2],
            TensorData::Strings(vec![b"ab".to_vec(), b"c".to_vec()]),
        )
        .unwrap();
        let outs = [("o", TensorRef::from(&t))];
        let re = ResponseRef::Ok {
            model_version: 1,
            outputs: &outs,
            timing: WorkerTiming::default(),
        }
        .encode()
        .unwrap();
        let mut clean_req = vec![0u8; e.len() as usize];
        e.write(&r, 0).unwrap();
        r.read_into(0, &mut clean_req).unwrap();
        let mut clean_resp = vec![0u8; re.len() as usize];
        re.write(&r, 0).unwrap();
        r.read_into(0, &mut clean_resp).unwrap();

        let mut ok = 0;
        let cases = 120_000u32;
        for case in 0..cases {
            let (clean, is_req) = if case % 3 == 0 {
                (&clean_resp, false)
            } else {
                (&clean_req, true)
            };
            let mut buf = clean.clone();
            match case % 4 {
                0 => {
                    // Flip a few random bytes.
                    for _ in 0..1 + rnd() % 4 {
                        let i = (rnd() as usize) % buf.len();
                        buf[i] = rnd() as u8;
                    }
                }
                1 => {
                    // Overwrite an aligned u64 with an interesting value.
                    let i = ((rnd() as usize) % (buf.len() / 8)) * 8;
                    let vals = [
                        0u64,
                        1,
                        63,
                        64,
                        u64::MAX,
                        u64::MAX - 63,
                        1 << 40,
                        len as u64,
                        rnd(),
                    ];
                    let v = vals[(rnd() as usize) % vals.len()];
                    buf[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
                2 => {
                    // Fuzz the metadata region only (postcard varints, names, shapes).
                    let meta_off = u64::from_le_bytes(buf[8..16].try_into().unwrap()) as usize;
                    if meta_off < buf.len() {
                        let i = meta_off + (rnd() as usize) % (buf.len() - meta_off);
                        buf[i] = rnd() as u8;
                    }
                }
                _ => {
                    // Random garbage with a valid magic/kind.
                    for b in buf.iter_mut().skip(8) {
                        *b = rnd() as u8;
                    }
                }
            }
            r.write_from(0, &buf).unwrap();
            // Random descriptor length, sometimes past the arena end.
            let dlen = match rnd() % 4 {
                0 => rnd() % (2 * len as u64),
                1 => u64::MAX - rnd() % 128,
                _ => buf.len() as u64,
            };
            let doff = if rnd() % 8 == 0 { rnd() } else { 0 };
            if is_req {
                if let Ok(v) = decode_request(&r, doff, dlen) {
                    ok += 1;
                    for (_, t) in &v.inputs {
                        let _ = t.to_tensor();
                        for i in 0..t.string_count().unwrap_or(0).min(4) {
                            let _ = t.string(i);
                        }
                    }
                }
            } else if decode_response(&r, doff, dlen).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 0 && ok < cases as usize, "{ok}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 100_000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Arbitrary bytes behind an arbitrary descriptor: decoding returns a value or a
        /// FrameError, never panics, and never reads outside the arena. Half the cases keep
        /// a valid frame header so the fuzzing reaches the metadata and payload checks.
        #[test]
        fn proptest_arbitrary_frames_never_panic(
            keep_header in proptest::bool::ANY,
            request in proptest::bool::ANY,
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1024),
            doff in proptest::prop_oneof![proptest::strategy::Just(0u64), 0u64..4096, proptest::num::u64::ANY],
            dlen in proptest::prop_oneof![0u64..2048, proptest::num::u64::ANY],
        ) {
            let r = region(4096);
            let mut buf = bytes;
            if keep_header {
                let frame = sample_request();
                if request {
                    frame.encode().unwrap().write(&r, 0).unwrap();
                } else {
                    ResponseRef::Err { code: Code::Cancelled, message: "x" }.encode().unwrap().write(&r, 0).unwrap();
                }
                let mut head = [0u8; 16];
                r.read_into(0, &mut head).unwrap();
                let n = buf.len().min(16);
                buf[..n].copy_from_slice(&head[..n]);
            }
            r.write_from(0, &buf).unwrap();
            if request {
                if let Ok(v) = decode_request(&r, doff, dlen) {
                    for (_, t) in &v.inputs {
                        let _ = t.to_tensor();
                    }
                }
            } else {
                let _ = decode_response(&r, doff, dlen);
            }
        }
    }
}
