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
use tfgate_tensor::tfrecord::Records;

/// Where the warmup records live, under a version directory.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";
/// At most this many records are replayed.
pub const MAX_RECORDS: usize = 1000;

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
