//! gRPC front end: `tensorflow.serving.PredictionService` and `ModelService` over tonic.
//! Decodes protos into the shared predict path and encodes results back.

pub mod tensor_proto;

use crate::classifier;
use crate::error::ServingError;
use crate::predictor::Predictor;
use crate::servables::ServableRequest;
use crate::status::model_status;
use prost::Message;
use std::time::Duration;
use tfgate_proto::tensorflow::serving as pb;
use tfgate_proto::tensorflow::serving::model_spec::VersionChoice;
use tonic::{Request, Response, Status};

/// Requests without a gRPC deadline wait at most this long.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The gRPC services.
#[derive(Clone)]
pub struct GrpcServices {
    pub predictor: Predictor,
    /// `--enable_serialization_as_tensor_content`.
    pub tensor_content: bool,
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
fn response_spec(servable: &crate::servables::Servable, signature: &str) -> pb::ModelSpec {
    pb::ModelSpec {
        name: servable.id.name.clone(),
        signature_name: crate::validation::signature_key(signature).to_string(),
        version_choice: Some(VersionChoice::Version(servable.id.version)),
    }
}

/// The deadline a gRPC client set (`grpc-timeout`), which becomes the run timeout.
/// tonic's server also enforces the header, answering CANCELLED "Timeout expired"; ending
/// our own wait a little earlier (5 %, at most 10 ms) makes the answer TF Serving's
/// DEADLINE_EXCEEDED instead.
fn deadline_of<T>(request: &Request<T>) -> Duration {
    match request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(d) => d.saturating_sub((d / 20).min(Duration::from_millis(10))),
        None => DEFAULT_TIMEOUT,
    }
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

impl GrpcServices {
    /// What Classify and Regress share: resolve the servable, take the signature name
    /// and serialize the examples.
    fn examples_request(
        &self,
        spec: Option<&pb::ModelSpec>,
        input: Option<&pb::Input>,
        timeout: Duration,
    ) -> Result<classifier::ExamplesRequest, Status> {
        let servable = servable_request(spec)
            .and_then(|r| self.predictor.resolve(&r))
            .map_err(|e| e.to_status())?;
        Ok(classifier::ExamplesRequest {
            servable,
            signature_name: spec.map(|s| s.signature_name.clone()).unwrap_or_default(),
            examples: classifier::serialized_examples(input),
            timeout,
        })
    }
}

#[tonic::async_trait]
impl pb::prediction_service_server::PredictionService for GrpcServices {
    async fn classify(
        &self,
        request: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        let timeout = deadline_of(&request);
        let req = request.into_inner();
        let call = self.examples_request(req.model_spec.as_ref(), req.input.as_ref(), timeout)?;
        let spec = response_spec(&call.servable, &call.signature_name);
        let results = classifier::classify(&self.predictor, call)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ClassificationResponse {
            model_spec: Some(spec),
            result: Some(pb::ClassificationResult {
                classifications: results
                    .into_iter()
                    .map(|classes| pb::Classifications {
                        classes: classes
                            .into_iter()
                            .map(|(label, score)| pb::Class {
                                label: String::from_utf8_lossy(&label).into_owned(),
                                score,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
        }))
    }

    async fn regress(
        &self,
        request: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        let timeout = deadline_of(&request);
        let req = request.into_inner();
        let call = self.examples_request(req.model_spec.as_ref(), req.input.as_ref(), timeout)?;
        let spec = response_spec(&call.servable, &call.signature_name);
        let values = classifier::regress(&self.predictor, call)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::RegressionResponse {
            model_spec: Some(spec),
            result: Some(pb::RegressionResult {
                regressions: values
                    .into_iter()
                    .map(|value| pb::Regression { value })
                    .collect(),
            }),
        }))
    }

    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let timeout = deadline_of(&request);
        let req = request.into_inner();
        let servable_request =
            servable_request(req.model_spec.as_ref()).map_err(|e| e.to_status())?;
        let servable = self
            .predictor
            .resolve(&servable_request)
            .map_err(|e| e.to_status())?;
        let mut inputs = Vec::with_capacity(req.inputs.len());
        for (alias, proto) in &req.inputs {
            let tensor = tensor_proto::from_proto(proto).map_err(|_| {
                ServingError::invalid_argument(format!("tensor parsing error: {alias}")).to_status()
            })?;
            inputs.push((alias.clone(), tensor));
        }
        let signature_name = req
            .model_spec
            .as_ref()
            .map(|s| s.signature_name.as_str())
            .unwrap_or("");
        let result = self
            .predictor
            .predict(
                &servable,
                signature_name,
                inputs,
                req.output_filter.clone(),
                timeout,
            )
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::PredictResponse {
            model_spec: Some(pb::ModelSpec {
                name: result.servable.name,
                signature_name: result.signature_name,
                version_choice: Some(VersionChoice::Version(result.servable.version)),
            }),
            outputs: result
                .outputs
                .iter()
                .map(|(k, t)| (k.clone(), tensor_proto::to_proto(t, self.tensor_content)))
                .collect(),
        }))
    }

    async fn multi_inference(
        &self,
        _: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        Err(Status::unimplemented(
            "MultiInference is not implemented yet",
        ))
    }

    async fn get_model_metadata(
        &self,
        request: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        let req = request.into_inner();
        let servable = self
            .predictor
            .resolve(&servable_request(req.model_spec.as_ref()).map_err(|e| e.to_status())?)
            .map_err(|e| e.to_status())?;
        if req.metadata_field.is_empty() {
            return Err(ServingError::invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
            .to_status());
        }
        if let Some(f) = req
            .metadata_field
            .iter()
            .find(|f| f.as_str() != "signature_def")
        {
            return Err(ServingError::invalid_argument(format!(
                "Metadata field {f} is not supported"
            ))
            .to_status());
        }
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: servable.signatures.encode_to_vec(),
        };
        Ok(Response::new(pb::GetModelMetadataResponse {
            model_spec: Some(pb::ModelSpec {
                name: servable.id.name.clone(),
                signature_name: String::new(),
                version_choice: Some(VersionChoice::Version(servable.id.version)),
            }),
            metadata: [("signature_def".to_string(), any)].into_iter().collect(),
        }))
    }
}

#[tonic::async_trait]
impl pb::model_service_server::ModelService for GrpcServices {
    async fn get_model_status(
        &self,
        request: Request<pb::GetModelStatusRequest>,
    ) -> Result<Response<pb::GetModelStatusResponse>, Status> {
        let req = request.into_inner();
        let spec = req
            .model_spec
            .ok_or_else(|| ServingError::invalid_argument("Missing ModelSpec").to_status())?;
        let version = match spec.version_choice {
            Some(VersionChoice::Version(v)) => Some(v),
            Some(VersionChoice::VersionLabel(l)) => {
                return Err(ServingError::invalid_argument(format!(
                    "Unrecognized servable version label: {l}"
                ))
                .to_status())
            }
            None => None,
        };
        model_status(&self.predictor.servables, &spec.name, version)
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn handle_reload_config_request(
        &self,
        _: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        Err(Status::unimplemented(
            "HandleReloadConfigRequest is not implemented yet",
        ))
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
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
