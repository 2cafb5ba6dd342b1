//! TFRecord framing, as TensorFlow's `RecordReader`/`RecordWriter` lay it out: per record
//! `u64 length, u32 masked crc(length), data, u32 masked crc(data)`, little-endian, with
//! CRC-32C masked as TensorFlow masks it. The worker reads warmup files with it
//! (`assets.extra/tf_serving_warmup_requests`); the gateway writes its request log.
//! Reading trusts nothing: every length is checked against what is left of the bytes.

use crate::code::{Code, Status};

/// The masked CRC-32C TFRecord files carry.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record framed around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Reads records out of a whole file's bytes. Errors are DATA_LOSS, worded as
/// TensorFlow's reader words them.
pub struct Records<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Records<'a> {
    pub fn new(bytes: &'a [u8]) -> Records<'a> {
        Records { bytes, offset: 0 }
    }

    fn data_loss(&self, what: &str) -> Status {
        let hint = if self.offset == 0 {
            " (Is this even a TFRecord file?)"
        } else {
            ""
        };
        Status::new(
            Code::DataLoss,
            format!("{what} record at {}{hint}", self.offset),
        )
    }

    /// The next record, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<&'a [u8]>, Status> {
        let rest = &self.bytes[self.offset..];
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(header) = rest.get(..12) else {
            return Err(self.data_loss("truncated"));
        };
        let len_bytes = &header[..8];
        let len_crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if masked_crc(len_bytes) != len_crc {
            return Err(self.data_loss("corrupted"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let len =
            usize::try_from(u64::from_le_bytes(len)).map_err(|_| self.data_loss("corrupted"))?;
        let Some(body) = len.checked_add(16).and_then(|end| rest.get(12..end)) else {
            return Err(self.data_loss("truncated"));
        };
        let (data, crc) = body.split_at(len);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if masked_crc(data) != crc {
            return Err(self.data_loss("corrupted"));
        }
        self.offset += len + 16;
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tfrecord_framing_and_rejects_damage() {
        let mut file = frame(b"first");
        file.extend(frame(b""));
        file.extend(frame(b"third"));
        let mut r = Records::new(&file);
        assert_eq!(r.next_record().unwrap(), Some(&b"first"[..]));
        assert_eq!(r.next_record().unwrap(), Some(&b""[..]));
        assert_eq!(r.next_record().unwrap(), Some(&b"third"[..]));
        assert_eq!(r.next_record().unwrap(), None);

        let e = Records::new(b"improperly formatted file")
            .next_record()
            .unwrap_err();
        assert_eq!(e.code, Code::DataLoss);
        assert_eq!(
            e.message,
            "corrupted record at 0 (Is this even a TFRecord file?)"
        );
        let mut cut = frame(b"first");
        cut.extend(&frame(b"second")[..14]);
        let mut r = Records::new(&cut);
        r.next_record().unwrap();
        assert_eq!(
            r.next_record().unwrap_err().message,
            "truncated record at 21"
        );
        let mut flipped = frame(b"data");
        flipped[13] ^= 1;
        assert_eq!(
            Records::new(&flipped).next_record().unwrap_err().message,
            "corrupted record at 0 (Is this even a TFRecord file?)"
        );
        // A length that runs past the end (or overflows) is truncation, never a panic.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&masked_crc(&u64::MAX.to_le_bytes()).to_le_bytes());
        assert_eq!(
            Records::new(&huge).next_record().unwrap_err().code,
            Code::DataLoss
        );
    }

    #[test]
    fn matches_tensorflows_masked_crc() {
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        // tf.io.TFRecordWriter writes these bytes for a 1-byte record b"a".
        assert_eq!(
            frame(b"a"),
            [1, 0, 0, 0, 0, 0, 0, 0, 1, 117, 222, 65, 97, 120, 110, 228, 40]
        );
    }
}
