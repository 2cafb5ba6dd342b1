//! Decoding: the header, metadata and every offset are validated on private copies before
//! any tensor byte is read; tensors stay in shared memory until copied out.

use super::wire::{parse, WireRequest, WireResponse, WireTensor};
use super::{
    FrameError, RequestFrame, RequestKind, ResponseFrame, FRAME_MAGIC, HEADER_LEN, KIND_REQUEST,
    KIND_RESPONSE, MAX_META_BYTES, MAX_RANK, PAYLOAD_START,
};
use shm_protocol::arena::ALIGN;
use shm_protocol::{InPlacePayload, IncomingRequest, OutOfBounds, Region};
use tfgate_tensor::tensor::{num_elements, DataType, FileBytes, Tensor, TensorData};

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
        Ok(self.region.in_place(self.at, self.byte_len())?)
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

    /// Writes the tensor's bytes into `target` straight from shared memory (one copy),
    /// when it holds fixed-size elements that fit; the tensor then names the bytes
    /// written. `None` when it does not fit or the write fails: copy it out instead.
    pub fn to_file(&self, target: &FileBytes) -> Option<Tensor> {
        let len = usize::try_from(self.len).ok()?;
        if self.strings.is_some() || len > target.len {
            return None;
        }
        self.region
            .copy_to_object(self.at, len, &target.file, target.offset)
            .ok()?;
        Some(Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: TensorData::File(FileBytes {
                len,
                ..target.clone()
            }),
        })
    }

    /// Copies the whole tensor into private memory.
    pub fn to_tensor(&self) -> Result<Tensor, FrameError> {
        let data = match &self.strings {
            Some(t) => {
                let all = self
                    .region
                    .read_to_vec(self.strings_at(), self.byte_len())?;
                TensorData::Strings(
                    t.windows(2)
                        .map(|w| all[w[0] as usize..w[1] as usize].to_vec())
                        .collect(),
                )
            }
            None => TensorData::Bytes(self.region.read_to_vec(self.at, self.len as usize)?.into()),
        };
        Ok(Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data,
        })
    }
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

/// Decodes a request the worker took off the ring (see [`decode_request`]).
pub fn request_view(request: &IncomingRequest) -> Result<RequestView<'_>, FrameError> {
    decode_request(request.region(), request.offset(), request.frame_len())
}

/// Decodes the request frame in `region` at `offset..offset+len` (worker side).
pub fn decode_request(
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
pub fn decode_response(
    region: &Region,
    offset: u64,
    len: u64,
) -> Result<ResponseFrame, FrameError> {
    decode_response_to(region, offset, len, &[])
}

/// As [`decode_response`], the outputs `targets` names (by name) written straight into
/// their files where they fit ([`TensorView::to_file`]) instead of copied into memory.
pub fn decode_response_to(
    region: &Region,
    offset: u64,
    len: u64,
    targets: &[(String, FileBytes)],
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
                    let written = targets
                        .iter()
                        .find(|(n, _)| *n == name)
                        .and_then(|(_, target)| v.to_file(target));
                    let tensor = match written {
                        Some(t) => t,
                        None => v.to_tensor()?,
                    };
                    Ok((name, tensor))
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
