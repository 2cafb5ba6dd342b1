//! REST front end: TF Serving's `/v1/models/...` routes, decoded into the shared predict
//! path and answered with TF Serving's JSON, errors as `{"error": "..."}`. Mounted at
//! `/v1` by `ports::rest`, beside V2's `/v2` and tfgate's own endpoints.

pub mod json;
mod model_json;
pub(crate) mod route;

use crate::edge::{json_response, observe, HttpLimits};
use crate::error::{http_status, ServingError};
use crate::predictor::Predictor;
use crate::request::{DecodeInputs, Entrypoint, ExamplesRequest, PredictRequest};
use crate::servables::ServableRequest;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use route::{Route, Verb};
use tfgate_proto::tensorflow::SignatureDef;
use tfgate_tensor::proto::with_context;
use tfgate_tensor::tensor::{DataType, Tensor};
use tokio::time::Instant;

/// TF Serving's REST API (`/v1/models/...`).
#[derive(Clone)]
pub struct RestApi {
    pub predictor: Predictor,
    pub limits: HttpLimits,
}

/// The REST edge's one conversion of an error: its HTTP status (`error::http_status`)
/// and TF Serving's `{"error": ...}`.
pub(crate) fn error_response(e: &ServingError) -> Response<Full<Bytes>> {
    json_response(http_status(e.code), json::error_body(&e.message))
}

/// A predict body's `instances`/`inputs`, decoded with the signature's input dtypes;
/// remembers which of the two forms it was, for the response.
struct JsonInputs<'a> {
    body: &'a json::PredictBody<'a>,
    format: &'a mut Option<json::PredictFormat>,
}

impl DecodeInputs for JsonInputs<'_> {
    fn decode(self, signature: &SignatureDef) -> Result<Vec<(String, Tensor)>, ServingError> {
        let input_types: Vec<(String, DataType)> = signature
            .inputs
            .iter()
            .map(|(alias, info)| {
                DataType::from_i32(info.dtype)
                    .map(|d| (alias.clone(), d))
                    .ok_or_else(|| {
                        ServingError::unimplemented(format!(
                            "Conversion of JSON Value to type: {} is not supported",
                            info.dtype
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let decoded = self.body.decode(&input_types)?;
        *self.format = Some(decoded.format);
        Ok(decoded.inputs)
    }
}

impl RestApi {
    /// Answers one request under `/v1`.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let route = match route::parse(&method, &path) {
            Ok(r) => r,
            Err(route::NoRoute::NotFound) => {
                let mut resp = Response::new(Full::new(Bytes::from_static(b"Not Found")));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                return resp;
            }
            Err(route::NoRoute::Error(e)) => {
                let _ = observe::call::<()>("", "", Entrypoint::Rest, started, Err(e.clone()));
                return error_response(&e);
            }
        };
        let (model_name, api) = match &route {
            Route::Status { request } | Route::Metadata { request } => {
                (request.name().to_string(), "")
            }
            Route::Infer { request, verb } => (request.name().to_string(), verb.api()),
        };
        let result = match route {
            Route::Status { request } => self.status(&request).map(String::into_bytes),
            Route::Metadata { request } => self.metadata(&request).map(String::into_bytes),
            Route::Infer { request, verb } => match self.limits.body(req).await {
                Ok(body) => self.infer(&request, verb, &body).await,
                Err(e) => Err(e),
            },
        };
        match observe::call(&model_name, api, Entrypoint::Rest, started, result) {
            Ok(body) => json_response(200, body),
            Err(e) => error_response(&e),
        }
    }

    fn status(&self, request: &ServableRequest) -> Result<String, ServingError> {
        let version = match request {
            ServableRequest::Specific(_, v) => Some(*v),
            _ => None, // TF Serving ignores a label here and lists every version
        };
        let status = self.predictor.status(request.name(), version)?;
        Ok(model_json::status_json(&status))
    }

    fn metadata(&self, request: &ServableRequest) -> Result<String, ServingError> {
        let servable = self.predictor.metadata(request)?;
        Ok(model_json::metadata_json(
            &servable.id.name,
            servable.id.version,
            &servable.signatures,
        ))
    }

    async fn infer(
        &self,
        request: &ServableRequest,
        verb: Verb,
        body: &[u8],
    ) -> Result<Vec<u8>, ServingError> {
        let deadline = self.limits.deadline();
        if verb == Verb::Predict {
            let body = json::PredictBody::read(body, |signature_name| {
                self.predictor.single_input_dtype(request, signature_name)
            })?;
            let signature_name = body.signature_name()?;
            let mut format = None;
            let served = self
                .predictor
                .predict(PredictRequest {
                    servable: request.clone(),
                    signature_name: signature_name.unwrap_or_default(),
                    inputs: JsonInputs {
                        body: &body,
                        format: &mut format,
                    },
                    output_filter: Vec::new(),
                    deadline,
                    entrypoint: Entrypoint::Rest,
                    output_targets: Vec::new(),
                })
                .await?;
            let format = format.unwrap_or(json::PredictFormat::Row);
            return served.encode(|s| json::encode_predict(format, &s.value));
        }
        let decoded = json::decode_examples(&json::parse(body)?)?;
        let call = ExamplesRequest {
            servable: request.clone(),
            signature_name: decoded.signature_name.unwrap_or_default(),
            examples: with_context(decoded.context.as_deref(), decoded.examples),
            deadline,
        };
        if verb == Verb::Classify {
            let served = self.predictor.classify(call).await?;
            served.encode(|s| json::encode_classify(&s.value))
        } else {
            let served = self.predictor.regress(call).await?;
            served.encode(|s| json::encode_regress(&s.value).map(String::into_bytes))
        }
    }
}
