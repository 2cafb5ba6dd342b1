//! Writes the seed corpus of the fuzz targets (`fuzz/`, see docs/fuzzing.md): a few valid
//! encodings per target, made with the real encoders. (The REST and text-format seeds are
//! hand-copied from the gateway's tests: plain text.)
//!
//! `cargo run -p tfgate-frame --example fuzz_seeds -- fuzz/seeds`

use std::path::Path;

use prost::Message;
use tfgate_frame::{encode_request_bytes, encode_response_bytes};
use tfgate_frame::{RequestFrame, RequestKind, ResponseRef, TensorRef};
use tfgate_proto::control::{gateway_message, worker_message};
use tfgate_proto::control::{GatewayMessage, WorkerMessage};
use tfgate_proto::tensorflow::serving::ModelConfig;
use tfgate_tensor::code::Code;
use tfgate_tensor::proto::to_proto;
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};
use tfgate_tensor::tfrecord::frame;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    assert!(bytes.len() < 4096, "{target}/{name}: seeds stay small");
    std::fs::write(dir.join(name), bytes)
}

fn strings() -> Tensor {
    Tensor::new(
        DataType::String,
        vec![3],
        TensorData::Strings(vec![b"".to_vec(), vec![0xff, 0, 7], b"hello".to_vec()]),
    )
    .unwrap()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?;
    let dir = Path::new(&dir);
    let floats = Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0])?;
    let scalar = Tensor::new(
        DataType::Int64,
        vec![],
        TensorData::Bytes(vec![9; 8].into()),
    )?;
    let empty = Tensor::new(
        DataType::Int32,
        vec![0, 5],
        TensorData::Bytes(vec![].into()),
    )?;

    let full = RequestFrame {
        kind: RequestKind::Predict,
        model_name: "half_plus_two".into(),
        version: Some(123),
        signature_name: "serving_default".into(),
        output_filter: vec!["y".into()],
        inputs: vec![
            ("x".into(), floats.clone()),
            ("s".into(), strings()),
            ("scalar".into(), scalar.clone()),
            ("empty".into(), empty),
        ],
        deadline_ns: 1234,
    };
    let bare = RequestFrame {
        version: None,
        output_filter: vec![],
        inputs: vec![],
        deadline_ns: 0,
        ..full.clone()
    };
    for (name, f) in [("full", &full), ("no_inputs", &bare)] {
        write(dir, "shm_request_frame", name, &encode_request_bytes(f)??)?;
    }

    let strings = strings();
    let outputs = [
        ("y", TensorRef::from(&floats)),
        ("s", TensorRef::from(&strings)),
    ];
    let timing = Default::default();
    let ok = ResponseRef::Ok {
        model_version: 1,
        outputs: &outputs,
        timing,
    };
    let err = ResponseRef::Err {
        code: Code::NotFound,
        message: "Servable not found for request: Latest(x)",
    };
    write(
        dir,
        "shm_response_frame",
        "ok",
        &encode_response_bytes(ok)??,
    )?;
    write(
        dir,
        "shm_response_frame",
        "err",
        &encode_response_bytes(err)??,
    )?;

    let gateway = |m| GatewayMessage { message: Some(m) };
    let worker = |m| WorkerMessage { message: Some(m) };
    let serve = gateway(gateway_message::Message::ServeModels(
        gateway_message::ServeModels {
            models: vec![ModelConfig {
                name: "half_plus_two".into(),
                base_path: "/models/half_plus_two".into(),
                model_platform: "tensorflow".into(),
                ..Default::default()
            }],
            file_system_poll_wait_seconds: 1,
            ..Default::default()
        },
    ));
    let ping = gateway(gateway_message::Message::Ping(gateway_message::Ping {
        seq: 42,
    }));
    let state = worker(worker_message::Message::ServableState(
        worker_message::ServableState {
            model_name: "half_plus_two".into(),
            version: 123,
            state: 30,
            signature_defs: vec![1, 2, 3],
            batching_params: Some("max_batch_size { value: 8 }".into()),
            ..Default::default()
        },
    ));
    let hello = worker(worker_message::Message::Hello(worker_message::Hello {
        worker_id: 1,
        pid: 7,
        host: "worker-1".into(),
        refused: String::new(),
    }));
    let control = "control_message";
    write(dir, control, "serve_models", &serve.encode_to_vec())?;
    write(dir, control, "ping", &ping.encode_to_vec())?;
    write(dir, control, "servable_state", &state.encode_to_vec())?;
    write(dir, control, "hello", &hello.encode_to_vec())?;

    let tp = "tensor_proto";
    write(
        dir,
        tp,
        "float_typed",
        &to_proto(&floats, false).encode_to_vec(),
    )?;
    write(
        dir,
        tp,
        "float_content",
        &to_proto(&floats, true).encode_to_vec(),
    )?;
    write(
        dir,
        tp,
        "string",
        &to_proto(&strings, false).encode_to_vec(),
    )?;
    write(
        dir,
        tp,
        "int64_scalar",
        &to_proto(&scalar, false).encode_to_vec(),
    )?;

    // Warmup files: TFRecord framing around PredictionLogs, as the worker reads them.
    use tfgate_proto::tensorflow::serving as tfs;
    use tfs::prediction_log::LogType;
    let predict = tfs::PredictionLog {
        log_type: Some(LogType::PredictLog(tfs::PredictLog {
            request: Some(tfs::PredictRequest {
                inputs: [("x".to_string(), to_proto(&floats, false))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let examples = Some(tfs::Input {
        kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
            examples: vec![Default::default()],
        })),
    });
    let classify = tfs::PredictionLog {
        log_type: Some(LogType::ClassifyLog(tfs::ClassifyLog {
            request: Some(tfs::ClassificationRequest {
                input: examples.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let regress = tfs::PredictionLog {
        log_type: Some(LogType::RegressLog(tfs::RegressLog {
            request: Some(tfs::RegressionRequest {
                input: examples,
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let wu = "tfrecord_warmup";
    write(dir, wu, "predict", &frame(&predict.encode_to_vec()))?;
    let mut two = frame(&classify.encode_to_vec());
    two.extend(frame(&regress.encode_to_vec()));
    write(dir, wu, "classify_regress", &two)?;
    Ok(())
}
