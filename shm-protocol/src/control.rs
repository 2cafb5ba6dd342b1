//! Framing on the gateway↔worker control socket. The socket carries the handshake (with
//! the segment's memfd riding along as SCM_RIGHTS), model lifecycle commands and servable
//! state reports; tensors never travel here. What the messages say belongs to the layer
//! above (`tfgate-frame`'s `control`); this module only frames their bytes.
//!
//! Framing: a little-endian `u32` length, then the message's bytes. Lengths above
//! [`MAX_CONTROL_MESSAGE`] are refused before anything is allocated.

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
    Decode(String),
    /// The encoder wrote another length than it announced (a bug): sending it would
    /// desynchronise the socket's framing.
    #[error("control message wrote {wrote} bytes, announced {announced}")]
    LengthMismatch { announced: usize, wrote: usize },
}

/// Frames a message of `len` bytes written by `body` into a fresh buffer.
pub fn encode(len: usize, body: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<u8>, ControlError> {
    if len > MAX_CONTROL_MESSAGE {
        return Err(ControlError::TooLarge(len));
    }
    let prefix = u32::try_from(len).map_err(|_| ControlError::TooLarge(len))?;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&prefix.to_le_bytes());
    body(&mut out);
    if out.len() != 4 + len {
        return Err(ControlError::LengthMismatch {
            announced: len,
            wrote: out.len() - 4,
        });
    }
    Ok(out)
}

/// Checks a frame's length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, ControlError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_CONTROL_MESSAGE {
        return Err(ControlError::TooLarge(len));
    }
    Ok(len)
}

/// Writes one framed message (`framed`: from [`encode`]).
pub fn write_frame(w: &mut impl Write, framed: &[u8]) -> Result<(), ControlError> {
    w.write_all(framed)?;
    w.flush()?;
    Ok(())
}

/// Reads one framed message's body (blocking).
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, ControlError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let mut body = vec![0u8; frame_len(prefix)?];
    r.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_oversized_frames() {
        let framed = encode(5, |out| out.extend_from_slice(b"hello")).unwrap();
        assert_eq!(read_frame(&mut framed.as_slice()).unwrap(), b"hello");

        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        let err = read_frame(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, ControlError::TooLarge(_)));

        let short = [3u8, 0, 0, 0, 0xff];
        assert!(matches!(
            read_frame(&mut short.as_slice()),
            Err(ControlError::Io(_))
        ));
        assert!(matches!(
            encode(4, |out| out.push(1)),
            Err(ControlError::LengthMismatch {
                announced: 4,
                wrote: 1
            })
        ));
    }
}
