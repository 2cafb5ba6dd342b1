//! Framing on the gateway↔worker control socket. The socket carries the handshake (with
//! the segment's memfd riding along as SCM_RIGHTS), model lifecycle commands and servable
//! state reports; tensors never travel here. What the messages say is
//! `tfgate_proto::tfgate::control` (`proto/tfgate/control.proto`); this module only
//! frames them.
//!
//! Framing: a little-endian `u32` length, then the protobuf-encoded message. Lengths
//! above [`MAX_CONTROL_MESSAGE`] are refused before anything is allocated.

use prost::Message;
use std::io::{self, Read, Write};

/// Largest control message accepted (signature maps of big models fit comfortably).
pub const MAX_CONTROL_MESSAGE: usize = 64 << 20;

/// Why a control message could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("control message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed control message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Encodes one framed message.
pub fn encode(msg: &impl Message) -> Result<Vec<u8>, ControlError> {
    let len = msg.encoded_len();
    if len > MAX_CONTROL_MESSAGE {
        return Err(ControlError::TooLarge(len));
    }
    let prefix = u32::try_from(len).map_err(|_| ControlError::TooLarge(len))?;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&prefix.to_le_bytes());
    msg.encode_raw(&mut out);
    Ok(out)
}

/// Writes one framed message.
pub fn write_message(w: &mut impl Write, msg: &impl Message) -> Result<(), ControlError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Checks a frame's length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, ControlError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_CONTROL_MESSAGE {
        return Err(ControlError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode<M: Message + Default>(body: &[u8]) -> Result<M, ControlError> {
    Ok(M::decode(body)?)
}

/// Reads one framed message (blocking).
pub fn read_message<M: Message + Default>(r: &mut impl Read) -> Result<M, ControlError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let mut body = vec![0u8; frame_len(prefix)?];
    r.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfgate_proto::tfgate::control::{worker_message, WorkerMessage};

    #[test]
    fn round_trips_and_refuses_oversized_frames() {
        let msg = WorkerMessage {
            message: Some(worker_message::Message::NoVersions(
                worker_message::NoVersions {
                    model_name: "half_plus_two".into(),
                    base_path: "/models/half_plus_two".into(),
                },
            )),
        };
        let bytes = encode(&msg).unwrap();
        let back: WorkerMessage = read_message(&mut bytes.as_slice()).unwrap();
        assert_eq!(back, msg);

        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        let err = read_message::<WorkerMessage>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, ControlError::TooLarge(_)));

        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(read_message::<WorkerMessage>(&mut garbage.as_slice()).is_err());
    }
}
