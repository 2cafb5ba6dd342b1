//! gRPC front end: `tensorflow.serving.PredictionService` and `ModelService` over tonic.
//! Decodes protos into the predictor's requests and encodes results back; a
//! [`ServingError`] becomes a `tonic::Status` in one place, the `From` beside it
//! (`error.rs`). Mounted beside V2's service by `ports::grpc`.

pub mod channel_args;
pub(crate) mod status_codes;
pub mod tensor_proto;
pub(crate) mod uds_authority;

use crate::classifier::{classification_result, regression_result, Class};
use crate::edge::observe;
use crate::error::ServingError;
use crate::predictor::{InferenceResult, Predictor, Served};
use crate::request::{
    Entrypoint, ExamplesRequest, InferenceTask, MultiInferenceRequest, PredictRequest,
};
use crate::servables::{ServableId, ServableRequest};
use prost::Message;
use tfgate_proto::tensorflow::serving as pb;
use tfgate_proto::tensorflow::serving::model_spec::VersionChoice;
use tfgate_tensor::proto::serialized_examples;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

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
}

impl GrpcServices {
    /// The response, unless it is larger than `grpc.max_send_message_length`.
    fn respond<T: Message>(&self, message: T) -> Result<Response<T>, Status> {
        crate::edge::within_send_limit(message, self.max_send_message_length)
            .map(Response::new)
            .map_err(Status::from)
    }
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
                output_targets: Vec::new(),
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

#[tonic::async_trait]
impl pb::prediction_service_server::PredictionService for GrpcServices {
    async fn classify(
        &self,
        request: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        let started = Instant::now();
        let deadline = crate::edge::deadline::grpc(&request);
        let req = request.into_inner();
        let model_name = model_name(req.model_spec.as_ref());
        let served = async {
            let call = examples_request(req.model_spec.as_ref(), req.input.as_ref(), deadline)?;
            self.predictor.classify(call).await
        }
        .await;
        let served = observe::call(&model_name, "Classify", Entrypoint::Grpc, started, served)?;
        self.respond(served.encode(classification_response))
    }

    async fn regress(
        &self,
        request: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        let started = Instant::now();
        let deadline = crate::edge::deadline::grpc(&request);
        let req = request.into_inner();
        let model_name = model_name(req.model_spec.as_ref());
        let served = async {
            let call = examples_request(req.model_spec.as_ref(), req.input.as_ref(), deadline)?;
            self.predictor.regress(call).await
        }
        .await;
        let served = observe::call(&model_name, "Regress", Entrypoint::Grpc, started, served)?;
        self.respond(served.encode(regression_response))
    }

    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let started = Instant::now();
        let deadline = crate::edge::deadline::grpc(&request);
        let req = request.into_inner();
        let model_name = model_name(req.model_spec.as_ref());
        let served = GrpcServices::predict(self, req, deadline).await;
        self.respond(observe::call(
            &model_name,
            "Predict",
            Entrypoint::Grpc,
            started,
            served,
        )?)
    }

    async fn multi_inference(
        &self,
        request: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        let deadline = crate::edge::deadline::grpc(&request);
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
}
