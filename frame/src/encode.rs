//! Encoding: checks each tensor against its shape, places the payloads 64-byte aligned
//! after the header, and writes header, payloads and metadata straight into an arena block.

use super::wire::{meta_err, WireRequestOut, WireResponseOut, WireTensorOut};
use super::{
    FrameError, RequestFrame, ResponseFrame, ResponseRef, TensorDataRef, TensorRef, WorkerTiming,
    FRAME_MAGIC, HEADER_LEN, KIND_REQUEST, KIND_RESPONSE, MAX_META_BYTES, MAX_RANK, PAYLOAD_START,
};
use shm_protocol::{Frame, Region, WriteError};
use tfgate_tensor::code::Code;
use tfgate_tensor::tensor::{num_elements, TensorError};

/// A frame laid out and ready to be written into an arena block of `len()` bytes (it is
/// the transport's [`Frame`]).
pub struct Encoded<'a> {
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
    let fixed = match t.data {
        TensorDataRef::Bytes(b) => Some(b.len()),
        TensorDataRef::File(f) => Some(f.len),
        TensorDataRef::Strings(_) => None,
    };
    match (t.data, fixed, t.dtype.element_size()) {
        (_, Some(actual), Some(size)) => {
            let expected = elements
                .checked_mul(size)
                .ok_or(TensorError::Overflow)
                .map_err(terr)?;
            if actual != expected {
                return Err(terr(TensorError::ByteLength {
                    dtype: t.dtype,
                    elements,
                    expected,
                    actual,
                }));
            }
            Ok(actual as u64)
        }
        (TensorDataRef::Strings(s), None, None) => {
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
        cursor =
            shm_protocol::arena::round_up(offset + len).ok_or(FrameError::TooLong(u64::MAX))?;
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

impl RequestFrame {
    /// Lays the frame out, checking every tensor against its shape.
    pub fn encode(&self) -> Result<Encoded<'_>, FrameError> {
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
    /// Lays the frame out, checking every tensor against its shape.
    pub fn encode(self) -> Result<Encoded<'a>, FrameError> {
        match self {
            ResponseRef::Ok {
                model_version,
                outputs,
                timing,
            } => encode_ok(model_version, outputs.iter().map(|(n, t)| (*n, *t)), timing),
            ResponseRef::Err { code, message } => encode_err(code, message),
        }
    }
}

impl ResponseFrame {
    /// Lays the frame out, checking every tensor against its shape.
    pub fn encode(&self) -> Result<Encoded<'_>, FrameError> {
        match self {
            ResponseFrame::Ok {
                model_version,
                outputs,
                timing,
            } => encode_ok(
                *model_version,
                outputs
                    .iter()
                    .map(|(n, t)| (n.as_str(), TensorRef::from(t))),
                *timing,
            ),
            ResponseFrame::Err { code, message } => encode_err(*code, message),
        }
    }
}

fn encode_ok<'a>(
    model_version: i64,
    outputs: impl Iterator<Item = (&'a str, TensorRef<'a>)>,
    timing: WorkerTiming,
) -> Result<Encoded<'a>, FrameError> {
    let mut wire = Vec::new();
    let mut payloads = Vec::new();
    let end = place(outputs, &mut wire, &mut payloads)?;
    let meta = postcard::to_allocvec(&WireResponseOut::Ok {
        model_version,
        outputs: wire,
        timing,
    })
    .map_err(meta_err)?;
    finish(KIND_RESPONSE, end, meta, payloads)
}

fn encode_err<'a>(code: Code, message: &str) -> Result<Encoded<'a>, FrameError> {
    let meta = postcard::to_allocvec(&WireResponseOut::Err { code, message }).map_err(meta_err)?;
    finish(KIND_RESPONSE, PAYLOAD_START, meta, Vec::new())
}

impl Frame for Encoded<'_> {
    fn len(&self) -> u64 {
        self.total
    }

    fn write(&self, region: &Region, offset: u64) -> Result<(), WriteError> {
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
                // The tensor's one copy, from the client's pages into the block.
                TensorDataRef::File(f) => region
                    .fill_from_object(at, f.len, &f.file, f.offset)
                    .map_err(|e| match e {
                        WriteError::File(e) => {
                            WriteError::File(std::io::Error::new(e.kind(), f.error(e)))
                        }
                        other => other,
                    })?,
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
        Ok(region.write_from(offset + self.meta_offset, &self.meta)?)
    }
}
