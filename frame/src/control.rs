//! The control socket's messages: protobuf messages (`proto/tfgate/control.proto`) in
//! `shm_protocol::control`'s length-prefixed frames.

use prost::Message;
use std::io::{Read, Write};

pub use shm_protocol::control::{frame_len, ControlError, MAX_CONTROL_MESSAGE};

/// Encodes one framed message.
pub fn encode(msg: &impl Message) -> Result<Vec<u8>, ControlError> {
    shm_protocol::control::encode(msg.encoded_len(), |out| msg.encode_raw(out))
}

/// Writes one framed message.
pub fn write_message(w: &mut impl Write, msg: &impl Message) -> Result<(), ControlError> {
    shm_protocol::control::write_frame(w, &encode(msg)?)
}

/// Decodes a frame body.
pub fn decode<M: Message + Default>(body: &[u8]) -> Result<M, ControlError> {
    M::decode(body).map_err(|e| ControlError::Decode(e.to_string()))
}

/// Reads one framed message (blocking).
pub fn read_message<M: Message + Default>(r: &mut impl Read) -> Result<M, ControlError> {
    decode(&shm_protocol::control::read_frame(r)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfgate_proto::control::{worker_message, WorkerMessage};

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
        assert!(matches!(
            read_message::<WorkerMessage>(&mut garbage.as_slice()),
            Err(ControlError::Decode(_))
        ));
    }
}
