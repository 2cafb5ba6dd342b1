//! gRPC front end: `tensorflow.serving.PredictionService` and `ModelService` over tonic.
//! Decodes protos into the predictor's requests and encodes results back; a
//! [`ServingError`] becomes a `tonic::Status` in one place, the `From` below.

pub mod channel_args;
pub mod server;
mod status_codes;
pub mod tensor_proto;
pub(crate) mod uds_authority;

use crate::classifier::{classification_result, regression_result, Class};
use crate::error::{Code, ServingError};
use crate::predictor::{InferenceResult, Predictor, Served};
use crate::request::{
    Entrypoint, ExamplesRequest, InferenceTask, MultiInferenceRequest, PredictRequest,
};
use crate::servables::{ServableId, ServableRequest};
use prost::Message;
use std::time::Duration;
use tfgate_proto::tensorflow::serving as pb;
use tfgate_proto::tensorflow::serving::model_spec::VersionChoice;
use tfgate_tensor::proto::serialized_examples;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Requests without a gRPC deadline wait at most this long.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// TF Serving cuts gRPC error messages at this many bytes.
const MAX_MESSAGE: usize = 1024;

/// The gRPC edge's one conversion: the code, and the message cut as TF Serving cuts it.
impl From<ServingError> for Status {
    fn from(e: ServingError) -> Status {
        let code = tonic::Code::from_i32(e.code.canonical());
        if e.message.len() <= MAX_MESSAGE {
            return Status::new(code, e.message);
        }
        let mut cut = MAX_MESSAGE;
        while !e.message.is_char_boundary(cut) {
            cut -= 1;
        }
        Status::new(code, format!("{}...TRUNCATED", &e.message[..cut]))
    }
}

/// The gRPC services.
#[derive(Clone)]
pub struct GrpcServices {
    pub predictor: Predictor,
    /// For `HandleReloadConfigRequest`.
    pub core: crate::server_core::ServerCore,
    /// `--enable_serialization_as_tensor_content`.
    pub tensor_content: bool,
    /// `grpc.max_send_message_length` (`--grpc_channel_arguments`).
    pub max_send_message_length: usize,
    /// KServe V2's service, served beside TF Serving's.
    pub v2: crate::v2::grpc::InferenceService,
}

impl GrpcServices {
    /// The response, unless it is larger than `grpc.max_send_message_length`.
    fn respond<T: Message>(&self, message: T) -> Result<Response<T>, Status> {
        within_send_limit(message, self.max_send_message_length)
            .map(Response::new)
            .map_err(Status::from)
    }
}

/// `message`, unless it is larger than `grpc.max_send_message_length` (`limit`): then
/// gRPC C++'s RESOURCE_EXHAUSTED (tonic would answer OUT_OF_RANGE in its own words).
/// Every gRPC service's responses pass here.
pub(crate) fn within_send_limit<T: Message>(message: T, limit: usize) -> Result<T, ServingError> {
    let len = message.encoded_len();
    if len > limit {
        return Err(ServingError::resource_exhausted(format!(
            "Sent message larger than max ({len} vs. {limit})"
        )));
    }
    Ok(message)
}

/// `ModelSpec` → what to resolve.
pub fn servable_request(spec: Option<&pb::ModelSpec>) -> Result<ServableRequest, ServingError> {
    let spec = spec.ok_or_else(|| ServingError::invalid_argument("Missing ModelSpec"))?;
    if spec.name.is_empty() {
        return Err(ServingError::invalid_argument(
            "ModelSpec has no name specified.",
        ));
    }
    Ok(match &spec.version_choice {
        None => ServableRequest::Latest(spec.name.clone()),
        Some(VersionChoice::Version(v)) => ServableRequest::Specific(spec.name.clone(), *v),
        Some(VersionChoice::VersionLabel(l)) => {
            ServableRequest::Label(spec.name.clone(), l.clone())
        }
    })
}

/// The `model_spec` of a response: name, version and the signature that ran.
fn response_spec(servable: &ServableId, signature_name: &str) -> pb::ModelSpec {
    servable.model_spec(signature_name)
}

/// The deadline a gRPC client set (`grpc-timeout`), which becomes the run timeout.
/// tonic's server also enforces the header, answering CANCELLED "Timeout expired"; ending
/// our own wait a little earlier (5 %, at most 10 ms) makes the answer TF Serving's
/// DEADLINE_EXCEEDED instead.
pub(crate) fn deadline_of<T>(request: &Request<T>) -> Instant {
    let timeout = match request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(d) => d.saturating_sub((d / 20).min(Duration::from_millis(10))),
        None => DEFAULT_TIMEOUT,
    };
    Instant::now() + timeout
}

fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What Classify and Regress share: the servable, signature and serialized examples.
fn examples_request(
    spec: Option<&pb::ModelSpec>,
    input: Option<&pb::Input>,
    deadline: Instant,
) -> Result<ExamplesRequest, ServingError> {
    Ok(ExamplesRequest {
        servable: servable_request(spec)?,
        signature_name: spec.map(|s| s.signature_name.clone()).unwrap_or_default(),
        examples: serialized_examples(input),
        deadline,
    })
}

fn classification_response(served: Served<Vec<Vec<Class>>>) -> pb::ClassificationResponse {
    pb::ClassificationResponse {
        model_spec: Some(response_spec(&served.servable, &served.signature_name)),
        result: Some(classification_result(served.value)),
    }
}

fn regression_response(served: Served<Vec<f32>>) -> pb::RegressionResponse {
    pb::RegressionResponse {
        model_spec: Some(response_spec(&served.servable, &served.signature_name)),
        result: Some(regression_result(served.value)),
    }
}

/// One MultiInference task's answer: its spec (name, signature, version) and result.
fn inference_result(served: Served<InferenceResult>) -> pb::InferenceResult {
    use pb::inference_result::Result as Kind;
    pb::InferenceResult {
        model_spec: Some(response_spec(&served.servable, &served.signature_name)),
        result: Some(match served.value {
            InferenceResult::Classification(c) => {
                Kind::ClassificationResult(classification_result(c))
            }
            InferenceResult::Regression(r) => Kind::RegressionResult(regression_result(r)),
        }),
    }
}

impl GrpcServices {
    async fn predict(
        &self,
        req: pb::PredictRequest,
        deadline: Instant,
    ) -> Result<pb::PredictResponse, ServingError> {
        let servable = servable_request(req.model_spec.as_ref())?;
        let served = self
            .predictor
            .predict(PredictRequest {
                servable,
                signature_name: req.model_spec.map(|s| s.signature_name).unwrap_or_default(),
                inputs: tensor_proto::ProtoInputs(req.inputs),
                output_filter: req.output_filter,
                deadline,
                entrypoint: Entrypoint::Grpc,
            })
            .await?;
        Ok(served.encode(|served| pb::PredictResponse {
            model_spec: Some(response_spec(&served.servable, &served.signature_name)),
            outputs: served
                .value
                .iter()
                .map(|(k, t)| {
                    (
                        k.clone(),
                        tfgate_tensor::proto::to_proto(t, self.tensor_content),
                    )
                })
                .collect(),
        }))
    }

    fn metadata(
        &self,
        req: pb::GetModelMetadataRequest,
    ) -> Result<pb::GetModelMetadataResponse, ServingError> {
        // TF Serving's order: the spec is there, the fields are valid, then the lookup.
        let spec = req
            .model_spec
            .as_ref()
            .ok_or_else(|| ServingError::invalid_argument("Missing ModelSpec"))?;
        if req.metadata_field.is_empty() {
            return Err(ServingError::invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field",
            ));
        }
        if let Some(f) = req
            .metadata_field
            .iter()
            .find(|f| f.as_str() != "signature_def")
        {
            return Err(ServingError::invalid_argument(format!(
                "Metadata field {f} is not supported"
            )));
        }
        let servable = self.predictor.metadata(&servable_request(Some(spec))?)?;
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: servable.signatures.encode_to_vec(),
        };
        Ok(pb::GetModelMetadataResponse {
            model_spec: Some(pb::ModelSpec {
                name: servable.id.name.clone(),
                signature_name: String::new(),
                version_choice: Some(VersionChoice::Version(servable.id.version)),
            }),
            metadata: [("signature_def".to_string(), any)].into_iter().collect(),
        })
    }

    fn status(
        &self,
        req: pb::GetModelStatusRequest,
    ) -> Result<pb::GetModelStatusResponse, ServingError> {
        let spec = req
            .model_spec
            .ok_or_else(|| ServingError::invalid_argument("Missing ModelSpec"))?;
        let version = match spec.version_choice {
            Some(VersionChoice::Version(v)) => Some(v),
            // TF Serving ignores a label here and lists every version.
            Some(VersionChoice::VersionLabel(_)) | None => None,
        };
        self.predictor.status(&spec.name, version)
    }
}

/// The model a request names (empty without a spec), for its metrics.
fn model_name(spec: Option<&pb::ModelSpec>) -> String {
    spec.map(|s| s.name.clone()).unwrap_or_default()
}

/// Records a Predict, Classify or Regress answer as TF Serving's prediction service
/// does: counted by status, its latency when it succeeded.
fn observe<T>(
    model_name: &str,
    api: &str,
    started: Instant,
    result: Result<T, ServingError>,
) -> Result<T, ServingError> {
    let code = result.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
    let micros = started.elapsed().as_micros() as u64;
    crate::monitoring::series::request(model_name, api, Entrypoint::Grpc, code, micros);
    result
}

#[tonic::async_trait]
impl pb::prediction_service_server::PredictionService for GrpcServices {
    async fn classify(
        &self,
        request: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let model_name = model_name(req.model_spec.as_ref());
        let served = async {
            let call = examples_request(req.model_spec.as_ref(), req.input.as_ref(), deadline)?;
            self.predictor.classify(call).await
        }
        .await;
        let served = observe(&model_name, "Classify", started, served)?;
        self.respond(served.encode(classification_response))
    }

    async fn regress(
        &self,
        request: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let model_name = model_name(req.model_spec.as_ref());
        let served = async {
            let call = examples_request(req.model_spec.as_ref(), req.input.as_ref(), deadline)?;
            self.predictor.regress(call).await
        }
        .await;
        let served = observe(&model_name, "Regress", started, served)?;
        self.respond(served.encode(regression_response))
    }

    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let model_name = model_name(req.model_spec.as_ref());
        let served = GrpcServices::predict(self, req, deadline).await;
        self.respond(observe(&model_name, "Predict", started, served)?)
    }

    async fn multi_inference(
        &self,
        request: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        // TF Serving looks the model up by the first task's spec (an empty one if none).
        let first = req
            .tasks
            .first()
            .and_then(|t| t.model_spec.clone())
            .unwrap_or_default();
        let call = MultiInferenceRequest {
            servable: servable_request(Some(&first))?,
            tasks: req
                .tasks
                .into_iter()
                .map(|task| {
                    let spec = task.model_spec.unwrap_or_default();
                    InferenceTask {
                        model_name: spec.name,
                        signature_name: spec.signature_name,
                        method_name: task.method_name,
                    }
                })
                .collect(),
            examples: serialized_examples(req.input.as_ref()),
            deadline,
        };
        let results = self.predictor.multi_inference(call).await?;
        self.respond(pb::MultiInferenceResponse {
            results: results.into_iter().map(inference_result).collect(),
        })
    }

    async fn get_model_metadata(
        &self,
        request: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        self.respond(self.metadata(request.into_inner())?)
    }
}

#[tonic::async_trait]
impl pb::model_service_server::ModelService for GrpcServices {
    async fn get_model_status(
        &self,
        request: Request<pb::GetModelStatusRequest>,
    ) -> Result<Response<pb::GetModelStatusResponse>, Status> {
        self.respond(self.status(request.into_inner())?)
    }

    async fn handle_reload_config_request(
        &self,
        request: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        use tfgate_proto::tensorflow::serving::model_server_config::Config;
        let request = request.into_inner();
        let before = crate::monitoring::int64_values(&request.metric_names);
        let config = request.config.unwrap_or_default();
        let result = match &config.config {
            Some(Config::ModelConfigList(list)) => {
                for (i, m) in list.config.iter().enumerate() {
                    tracing::info!(index = i, path = %m.base_path, name = %m.name, platform = %m.model_platform, "Config entry");
                }
                self.core.reload_config(config, true).await
            }
            _ => Err(ServingError::invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported",
            )),
        };
        match result {
            Ok(()) => self.respond(pb::ReloadConfigResponse {
                status: Some(pb::StatusProto::default()),
                metric: crate::monitoring::int64_values(&request.metric_names)
                    .into_iter()
                    .zip(before)
                    .map(|((name, after), (_, before))| pb::Metric {
                        name,
                        value_increase: Some(pb::metric::ValueIncrease::Int64ValueIncrease(
                            after - before,
                        )),
                    })
                    .collect(),
            }),
            Err(e) => {
                tracing::error!("ReloadConfig failed: {}", e.message);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_spec_to_request() {
        assert_eq!(
            servable_request(None).unwrap_err().message,
            "Missing ModelSpec"
        );
        let spec = pb::ModelSpec::default();
        assert_eq!(
            servable_request(Some(&spec)).unwrap_err().message,
            "ModelSpec has no name specified."
        );
        let spec = pb::ModelSpec {
            name: "m".into(),
            version_choice: Some(VersionChoice::Version(2)),
            ..Default::default()
        };
        assert_eq!(
            servable_request(Some(&spec)).unwrap(),
            ServableRequest::Specific("m".into(), 2)
        );
    }

    #[test]
    fn errors_keep_their_code_and_long_messages_are_cut() {
        let s = Status::from(ServingError::not_found("gone"));
        assert_eq!((s.code(), s.message()), (tonic::Code::NotFound, "gone"));
        let s = Status::from(ServingError::internal("a".repeat(2000)));
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(s.message().len(), 1024 + "...TRUNCATED".len());
        assert!(s.message().ends_with("...TRUNCATED"));
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
