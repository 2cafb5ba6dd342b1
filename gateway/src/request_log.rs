//! Request logging, as a model's `ModelConfig.logging_config { sampling_config {
//! sampling_rate } }` asks: a sampled share of its successful Predict, Classify and
//! Regress requests, each with its response, written as `PredictionLog` records to a
//! TFRecord file per model under `--request_log_dir` (`<dir>/<model>.tfrecord`). TF Serving has the hook but no
//! collector; the format is that of warmup files, so recorded traffic replays as a
//! version's `assets.extra/tf_serving_warmup_requests`.
//!
//! Records go to a writer thread through a bounded queue; when it is full a record is
//! dropped (and counted) rather than slowing requests down.

use crate::servables::ServableId;
use crate::server_core::Models;
use prost::Message;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use tfgate_proto::tensorflow::serving::{
    input, prediction_log::LogType, ClassificationRequest, ClassificationResponse,
    ClassificationResult, ClassifyLog, ExampleList, Input, LogMetadata, ModelSpec, PredictLog,
    PredictRequest, PredictResponse, PredictionLog, RegressLog, RegressionRequest,
    RegressionResponse, RegressionResult, SamplingConfig,
};
use tfgate_proto::tensorflow::Example;
use tfgate_tensor::tensor::Tensor;
use tokio::sync::watch;

/// Records waiting for the writer at most.
const QUEUE: usize = 4096;

/// The request logger; cheap to clone.
#[derive(Clone)]
pub struct RequestLog {
    models: watch::Receiver<Models>,
    records: mpsc::SyncSender<(String, Vec<u8>)>,
}

/// A sampled request, kept until its answer is known.
pub struct Sampled {
    rate: f64,
    request: SampledRequest,
}

enum SampledRequest {
    Predict {
        inputs: Vec<(String, Tensor)>,
        output_filter: Vec<String>,
    },
    /// Classify or Regress: the serialized examples (context merged in).
    Examples(Vec<Vec<u8>>),
}

impl RequestLog {
    /// Starts the writer thread for `dir` (created if missing).
    pub fn start(dir: PathBuf, models: watch::Receiver<Models>) -> anyhow::Result<RequestLog> {
        std::fs::create_dir_all(&dir)?;
        let (records, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("request-log".into())
            .spawn(move || write_records(&dir, &rx))?;
        Ok(RequestLog { models, records })
    }

    /// The sampling rate of `model` if this request is to be logged: its model's rate is
    /// the probability.
    fn sampled(&self, model: &str) -> Option<f64> {
        let rate = self
            .models
            .borrow()
            .iter()
            .find(|m| m.name == model)?
            .logging_config
            .as_ref()?
            .sampling_config
            .as_ref()?
            .sampling_rate;
        (rate > 0.0 && fastrand::f64() < rate).then_some(rate)
    }

    /// Whether this Predict of `model` is logged; takes what the log needs if so.
    pub fn sample_predict(
        &self,
        model: &str,
        inputs: &[(String, Tensor)],
        output_filter: &[String],
    ) -> Option<Sampled> {
        Some(Sampled {
            rate: self.sampled(model)?,
            request: SampledRequest::Predict {
                inputs: inputs.to_vec(),
                output_filter: output_filter.to_vec(),
            },
        })
    }

    /// Whether this Classify or Regress of `model` is logged; keeps its examples if so.
    pub fn sample_examples(&self, model: &str, examples: &[Vec<u8>]) -> Option<Sampled> {
        Some(Sampled {
            rate: self.sampled(model)?,
            request: SampledRequest::Examples(examples.to_vec()),
        })
    }

    /// Logs a sampled Predict and the answer it got.
    pub fn predict(
        &self,
        sampled: Sampled,
        servable: &ServableId,
        signature_name: &str,
        outputs: &[(String, Tensor)],
    ) {
        let SampledRequest::Predict {
            inputs,
            output_filter,
        } = sampled.request
        else {
            return;
        };
        let spec = servable.model_spec(signature_name);
        let tensors = |ts: &[(String, Tensor)]| {
            ts.iter()
                .map(|(k, t)| (k.clone(), tfgate_tensor::proto::to_proto(t, false)))
                .collect()
        };
        let log = LogType::PredictLog(PredictLog {
            request: Some(PredictRequest {
                model_spec: Some(spec.clone()),
                inputs: tensors(&inputs),
                output_filter,
                ..Default::default()
            }),
            response: Some(PredictResponse {
                model_spec: Some(spec.clone()),
                outputs: tensors(outputs),
            }),
        });
        self.write(sampled.rate, spec, log);
    }

    /// Logs a sampled Classify and its result.
    pub fn classify(
        &self,
        sampled: Sampled,
        servable: &ServableId,
        signature_name: &str,
        result: ClassificationResult,
    ) {
        self.examples(sampled, servable, signature_name, |spec, input| {
            LogType::ClassifyLog(ClassifyLog {
                request: Some(ClassificationRequest {
                    model_spec: Some(spec.clone()),
                    input: Some(input),
                }),
                response: Some(ClassificationResponse {
                    model_spec: Some(spec),
                    result: Some(result),
                }),
            })
        });
    }

    /// Logs a sampled Regress and its result.
    pub fn regress(
        &self,
        sampled: Sampled,
        servable: &ServableId,
        signature_name: &str,
        result: RegressionResult,
    ) {
        self.examples(sampled, servable, signature_name, |spec, input| {
            LogType::RegressLog(RegressLog {
                request: Some(RegressionRequest {
                    model_spec: Some(spec.clone()),
                    input: Some(input),
                }),
                response: Some(RegressionResponse {
                    model_spec: Some(spec),
                    result: Some(result),
                }),
            })
        });
    }

    /// Logs a sampled Classify or Regress: `log` forms its record from the version's
    /// spec and the request's examples.
    fn examples(
        &self,
        sampled: Sampled,
        servable: &ServableId,
        signature_name: &str,
        log: impl FnOnce(ModelSpec, Input) -> LogType,
    ) {
        let spec = servable.model_spec(signature_name);
        if let Some(input) = examples_input(sampled.request) {
            self.write(sampled.rate, spec.clone(), log(spec, input));
        }
    }

    /// Queues one `PredictionLog` for the writer; drops it (counted) when the queue is full.
    fn write(&self, rate: f64, spec: ModelSpec, log: LogType) {
        let model = spec.name.clone();
        let record = PredictionLog {
            log_metadata: Some(LogMetadata {
                model_spec: Some(spec),
                sampling_config: Some(SamplingConfig {
                    sampling_rate: rate,
                    ..Default::default()
                }),
                timestamp_secs: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
                ..Default::default()
            }),
            log_type: Some(log),
        };
        if self
            .records
            .try_send((model.clone(), record.encode_to_vec()))
            .is_err()
        {
            crate::monitoring::own_series::request_log_dropped(&model);
        }
    }
}

/// A Classify or Regress request's `Input`: its examples as an `ExampleList` (a context
/// was merged into each when the request was read).
fn examples_input(request: SampledRequest) -> Option<Input> {
    let SampledRequest::Examples(examples) = request else {
        return None;
    };
    let examples = examples
        .iter()
        .map(|e| Example::decode(e.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(Input {
        kind: Some(input::Kind::ExampleList(ExampleList { examples })),
    })
}

/// The writer thread: appends each record to its model's file, flushing whenever the
/// queue runs dry.
fn write_records(dir: &std::path::Path, rx: &mpsc::Receiver<(String, Vec<u8>)>) {
    let mut files: HashMap<String, std::io::BufWriter<std::fs::File>> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some((model, record)) = next {
            if !files.contains_key(&model) {
                // A model name is a path component here: refuse one that would leave `dir`.
                if model.is_empty() || model.contains(['/', '\\']) || model.starts_with('.') {
                    tracing::warn!(model, "not logging requests of a model with this name");
                    next = rx.try_recv().ok();
                    continue;
                }
                let path = dir.join(format!("{model}.tfrecord"));
                match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                {
                    Ok(f) => {
                        files.insert(model.clone(), std::io::BufWriter::new(f));
                    }
                    Err(e) => tracing::error!("cannot open request log {}: {e}", path.display()),
                }
            }
            if let Some(f) = files.get_mut(&model) {
                if let Err(e) = f.write_all(&tfgate_tensor::tfrecord::frame(&record)) {
                    tracing::error!(model, "cannot write the request log: {e}");
                }
            }
            next = rx.try_recv().ok();
        }
        for f in files.values_mut() {
            let _ = f.flush();
        }
    }
}
