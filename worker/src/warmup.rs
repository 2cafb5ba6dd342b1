//! Warmup (TF Serving's `saved_model_warmup_util.cc`): before a version is reported
//! AVAILABLE, the requests recorded in `<version>/assets.extra/tf_serving_warmup_requests`
//! — a TFRecord file of `PredictionLog`s — are run against it, so the first real request
//! does not pay for TensorFlow's lazy initialisation. A bad file fails the load, with TF
//! Serving's messages.

use crate::loader::Servable;
use crate::signature::run_signature;
use crate::tf::{Feed, TfError};
use prost::Message;
use std::path::Path;
use tfgate_proto::tensorflow::serving::{prediction_log::LogType, Input, PredictionLog};
use tfgate_tensor::code::Code;
use tfgate_tensor::proto::{from_proto, serialized_examples};
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

/// Where the warmup records live, under a version directory.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";
/// At most this many records are replayed.
pub const MAX_RECORDS: usize = 1000;

/// The masked CRC-32C TFRecord files carry.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Reads TFRecord framing: `u64 length, u32 masked crc(length), data, u32 masked
/// crc(data)`, little-endian. Errors are DATA_LOSS, worded as TensorFlow's reader words
/// them.
pub struct Records<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Records<'a> {
    pub fn new(bytes: &'a [u8]) -> Records<'a> {
        Records { bytes, offset: 0 }
    }

    fn data_loss(&self, what: &str) -> TfError {
        let hint = if self.offset == 0 {
            " (Is this even a TFRecord file?)"
        } else {
            ""
        };
        TfError::new(
            Code::DataLoss,
            format!("{what} record at {}{hint}", self.offset),
        )
    }

    /// The next record, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<&'a [u8]>, TfError> {
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

/// Runs the warmup records of the version in `dir` against `servable`, each
/// `iterations` times (0 counts as 1). Returns how many records were read; `None` when
/// the version has no warmup file.
pub fn warm_up(servable: &Servable, dir: &Path, iterations: u32) -> Result<Option<usize>, TfError> {
    let path = dir.join(WARMUP_FILE);
    let shown = path.display().to_string();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("No warmup data file found at {shown}");
            return Ok(None);
        }
        Err(e) => return Err(TfError::new(Code::Unknown, format!("{shown}: {e}"))),
    };
    let started = std::time::Instant::now();
    let mut records = Records::new(&bytes);
    let mut n = 0;
    loop {
        let record = match records.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                return Err(TfError::new(
                    e.code,
                    format!(
                        "{}. Please verify your warmup data is in TFRecord format.",
                        e.message
                    ),
                ))
            }
        };
        let log = PredictionLog::decode(record).map_err(|_| {
            TfError::invalid_argument(format!(
                "Failed to parse warmup record: {} from {shown}",
                String::from_utf8_lossy(record)
            ))
        })?;
        for _ in 0..iterations.max(1) {
            run_log(servable, &log)?;
        }
        n += 1;
        if n > MAX_RECORDS {
            return Err(TfError::invalid_argument(format!(
                "Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {shown}"
            )));
        }
    }
    tracing::info!(
        "Finished reading warmup data for model at {shown}. Number of warmup records read: {n}. Elapsed time (microseconds): {}.",
        started.elapsed().as_micros()
    );
    Ok(Some(n))
}

/// The examples of a Classify/Regress request as the one DT_STRING input it feeds.
fn examples_feed(input: Option<&Input>) -> Result<Vec<(String, Feed)>, TfError> {
    let examples = serialized_examples(input);
    let n = examples.len() as i64;
    let t = Tensor::new(DataType::String, vec![n], TensorData::Strings(examples))
        .map_err(|e| TfError::internal(e.to_string()))?;
    Ok(vec![("inputs".to_string(), Feed::Copy(t))])
}

/// Runs one recorded request on the servable (its model and version are ignored, as
/// TF Serving ignores them).
fn run_log(servable: &Servable, log: &PredictionLog) -> Result<(), TfError> {
    let signature = |spec: &Option<tfgate_proto::tensorflow::serving::ModelSpec>| {
        spec.as_ref()
            .map(|s| s.signature_name.clone())
            .unwrap_or_default()
    };
    match &log.log_type {
        Some(LogType::PredictLog(p)) => {
            let req = p.request.clone().unwrap_or_default();
            let inputs = req
                .inputs
                .iter()
                .map(|(alias, proto)| {
                    from_proto(proto)
                        .map(|t| (alias.clone(), Feed::Copy(t)))
                        .map_err(|_| {
                            TfError::invalid_argument(format!("tensor parsing error: {alias}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            run_signature(
                servable,
                &signature(&req.model_spec),
                inputs,
                &req.output_filter,
                0,
            )?;
        }
        Some(LogType::ClassifyLog(c)) => {
            let req = c.request.clone().unwrap_or_default();
            let feed = examples_feed(req.input.as_ref())?;
            run_signature(servable, &signature(&req.model_spec), feed, &[], 0)?;
        }
        Some(LogType::RegressLog(r)) => {
            let req = r.request.clone().unwrap_or_default();
            let feed = examples_feed(req.input.as_ref())?;
            run_signature(servable, &signature(&req.model_spec), feed, &[], 0)?;
        }
        Some(LogType::MultiInferenceLog(m)) => {
            let req = m.request.clone().unwrap_or_default();
            for task in &req.tasks {
                let feed = examples_feed(req.input.as_ref())?;
                run_signature(servable, &signature(&task.model_spec), feed, &[], 0)?;
            }
        }
        Some(LogType::SessionRunLog(_)) => {
            return Err(TfError::new(
                Code::Unimplemented,
                "Unsupported log_type for warmup: 5",
            ))
        }
        Some(LogType::PredictStreamedLog(_)) => {
            return Err(TfError::new(
                Code::Unimplemented,
                "Unsupported log_type for warmup: 7",
            ))
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One TFRecord frame around `data`.
    fn frame(data: &[u8]) -> Vec<u8> {
        let len = (data.len() as u64).to_le_bytes();
        let mut out = len.to_vec();
        out.extend_from_slice(&masked_crc(&len).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&masked_crc(data).to_le_bytes());
        out
    }

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
        // tf.io.TFRecordWriter writes these bytes for a 1-byte record b"a".
        let file = frame(b"a");
        assert_eq!(
            file,
            [1, 0, 0, 0, 0, 0, 0, 0, 1, 117, 222, 65, 97, 120, 110, 228, 40]
        );
    }
}
