//! Frames held in private byte slices instead of an arena: the entry points for the
//! fuzz targets (`fuzz/`) and for tools that keep frames as files.
//!
//! Decoding copies the bytes into a fresh private memfd mapping and runs exactly the
//! decoder the worker and the gateway run on the shared segment, with the descriptor
//! covering the whole slice. Encoding writes a frame into such a mapping and copies it
//! out. Each call creates and maps one memfd, so these are not for a hot path.

use shm_protocol::{Frame, Region, WriteError};

use super::{FrameError, RequestFrame, ResponseFrame, ResponseRef};

/// Decodes a request frame from `bytes` (the frame's block, header first) with the
/// worker's decoder and copies every tensor out.
///
/// The outer `Err` is only a failure to create the scratch mapping; the inner one is
/// the decoder's verdict on the bytes.
pub fn decode_request_bytes(bytes: &[u8]) -> std::io::Result<Result<RequestFrame, FrameError>> {
    let region = Region::from_bytes(bytes)?;
    Ok(super::decode_request(&region, 0, bytes.len() as u64).and_then(|v| v.to_frame()))
}

/// Decodes a response frame from `bytes` with the gateway's decoder. Errors as for
/// [`decode_request_bytes`].
pub fn decode_response_bytes(bytes: &[u8]) -> std::io::Result<Result<ResponseFrame, FrameError>> {
    let region = Region::from_bytes(bytes)?;
    Ok(super::decode_response(&region, 0, bytes.len() as u64))
}

/// Encodes a request frame into a byte vector, laid out as in the arena.
pub fn encode_request_bytes(frame: &RequestFrame) -> std::io::Result<Result<Vec<u8>, FrameError>> {
    match frame.encode() {
        Ok(e) => write_out(&e),
        Err(err) => Ok(Err(err)),
    }
}

/// Encodes a response frame into a byte vector, laid out as in the arena.
pub fn encode_response_bytes(
    response: ResponseRef<'_>,
) -> std::io::Result<Result<Vec<u8>, FrameError>> {
    match response.encode() {
        Ok(e) => write_out(&e),
        Err(err) => Ok(Err(err)),
    }
}

/// The bytes `frame` writes into a block of its own length.
fn write_out(frame: &impl Frame) -> std::io::Result<Result<Vec<u8>, FrameError>> {
    let len = usize::try_from(frame.len()).map_err(|_| std::io::Error::other("frame too long"))?;
    let region = Region::scratch(len)?;
    match frame.write(&region, 0) {
        Ok(()) => {}
        Err(WriteError::OutOfBounds(e)) => return Ok(Err(e.into())),
        Err(WriteError::File(e)) => return Err(e),
    }
    let mut out = vec![0u8; len];
    if let Err(e) = region.read_into(0, &mut out) {
        return Ok(Err(e.into()));
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample_request;
    use super::*;
    use crate::{TensorRef, WorkerTiming};
    use tfgate_tensor::code::Code;
    use tfgate_tensor::tensor::Tensor;

    #[test]
    fn request_bytes_round_trip() {
        let f = sample_request();
        let bytes = encode_request_bytes(&f).unwrap().unwrap();
        assert_eq!(&bytes[..4], b"TFFR");
        assert_eq!(decode_request_bytes(&bytes).unwrap().unwrap(), f);
        // A response decoder refuses a request frame; truncation is refused too.
        assert!(decode_response_bytes(&bytes).unwrap().is_err());
        assert!(decode_request_bytes(&bytes[..bytes.len() - 1])
            .unwrap()
            .is_err());
        assert!(decode_request_bytes(&[]).unwrap().is_err());
    }

    #[test]
    fn response_bytes_round_trip() {
        let t = Tensor::from_f32(vec![3], &[2.5, 3.0, 3.5]).unwrap();
        let timing = WorkerTiming {
            received_ns: 1,
            run_ns: 2,
            replied_ns: 3,
        };
        let outputs = [("y", TensorRef::from(&t))];
        let ok = ResponseRef::Ok {
            model_version: 7,
            outputs: &outputs,
            timing,
        };
        let bytes = encode_response_bytes(ok).unwrap().unwrap();
        assert_eq!(
            decode_response_bytes(&bytes).unwrap().unwrap(),
            ResponseFrame::Ok {
                model_version: 7,
                outputs: vec![("y".into(), t)],
                timing,
            }
        );
        let err = ResponseRef::Err {
            code: Code::NotFound,
            message: "no such model",
        };
        let bytes = encode_response_bytes(err).unwrap().unwrap();
        assert_eq!(
            decode_response_bytes(&bytes).unwrap().unwrap(),
            ResponseFrame::Err {
                code: Code::NotFound,
                message: "no such model".into(),
            }
        );
    }
}
