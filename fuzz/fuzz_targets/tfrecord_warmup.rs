//! A warmup file (`assets.extra/tf_serving_warmup_requests`) as the worker reads it
//! before running anything: TFRecord framing (`tfgate_tensor::tfrecord`), each record a
//! `PredictionLog`, its inputs converted (`from_proto`, `serialized_examples`). No
//! panic; the records read frame again into the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tfgate_proto::tensorflow::serving::{prediction_log::LogType, PredictionLog};
use tfgate_tensor::proto::{from_proto, serialized_examples};
use tfgate_tensor::tfrecord::{frame, Records};

/// The worker replays at most this many records (`MAX_RECORDS` in worker/src/warmup.rs).
const MAX_RECORDS: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let mut records = Records::new(data);
    let mut read = Vec::new();
    while let Ok(Some(record)) = records.next_record() {
        read.push(record);
        if read.len() > MAX_RECORDS {
            break;
        }
    }
    let again: Vec<u8> = read.iter().flat_map(|r| frame(r)).collect();
    assert!(
        data.starts_with(&again),
        "records read frame into the same bytes"
    );
    for record in read {
        let Ok(log) = PredictionLog::decode(record) else {
            continue;
        };
        match log.log_type {
            Some(LogType::PredictLog(p)) => {
                for t in p.request.iter().flat_map(|r| r.inputs.values()) {
                    let _ = from_proto(t);
                }
            }
            Some(LogType::ClassifyLog(c)) => {
                let _ = serialized_examples(c.request.as_ref().and_then(|r| r.input.as_ref()));
            }
            Some(LogType::RegressLog(r)) => {
                let _ = serialized_examples(r.request.as_ref().and_then(|r| r.input.as_ref()));
            }
            Some(LogType::MultiInferenceLog(m)) => {
                let _ = serialized_examples(m.request.as_ref().and_then(|r| r.input.as_ref()));
            }
            _ => {}
        }
    }
});
