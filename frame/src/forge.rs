//! Response frames that lie (feature `hostile`): a valid header and postcard metadata
//! claiming whatever tensors the caller says, checked against nothing.

use super::wire::{meta_err, WireResponseOut, WireTensorOut};
use super::{FrameError, WorkerTiming, FRAME_MAGIC, HEADER_LEN, KIND_RESPONSE, PAYLOAD_START};

/// An `Ok` response frame for `model_version` whose metadata lists `outputs` as given,
/// followed by `payload_bytes` zero bytes of payload: the frame a worker would write if
/// it lied about its tensors (a huge shape, a payload past the frame, an unknown dtype).
pub fn forged_response(
    model_version: i64,
    outputs: &[ForgedTensor],
    payload_bytes: u64,
) -> Result<Vec<u8>, FrameError> {
    let wire = outputs
        .iter()
        .map(|t| WireTensorOut {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            offset: t.offset,
            len: t.len,
        })
        .collect();
    let meta = postcard::to_allocvec(&WireResponseOut::Ok {
        model_version,
        outputs: wire,
        timing: WorkerTiming::default(),
    })
    .map_err(meta_err)?;
    let meta_offset = PAYLOAD_START + payload_bytes;
    let total = meta_offset + meta.len() as u64;
    let mut frame = vec![0u8; usize::try_from(total).map_err(|_| FrameError::TooLong(total))?];
    frame[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    frame[4..8].copy_from_slice(&KIND_RESPONSE.to_le_bytes());
    frame[8..16].copy_from_slice(&meta_offset.to_le_bytes());
    frame[16..24].copy_from_slice(&(meta.len() as u64).to_le_bytes());
    frame[24..HEADER_LEN].copy_from_slice(&total.to_le_bytes());
    frame[meta_offset as usize..].copy_from_slice(&meta);
    Ok(frame)
}

/// What [`forged_response`] claims about one output tensor.
#[derive(Debug, Clone)]
pub struct ForgedTensor {
    pub name: String,
    /// A `DataType` number (any value).
    pub dtype: i32,
    pub shape: Vec<i64>,
    /// Where its payload lies, from the start of the frame.
    pub offset: u64,
    /// How long the payload says it is.
    pub len: u64,
}
