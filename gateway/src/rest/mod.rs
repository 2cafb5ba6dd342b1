//! REST front end (hyper): TF Serving's `/v1/models/...` routes, decoded into the shared
//! predict path and answered with TF Serving's JSON, errors as `{"error": "..."}`.

mod body;
mod cors;
pub mod json;
mod model_json;
mod route;

use crate::classifier;
use crate::error::ServingError;
use crate::predictor::Predictor;
use crate::servables::ServableRequest;
use crate::status::model_status;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use route::{Route, Verb};
use std::time::Duration;

/// REST settings from the flags.
#[derive(Clone)]
pub struct RestConfig {
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// `--rest_api_enable_cors_support`.
    pub cors: bool,
}

/// The REST service state.
#[derive(Clone)]
pub struct RestApi {
    pub predictor: Predictor,
    pub config: RestConfig,
}

fn json_response(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ServingError) -> Response<Full<Bytes>> {
    json_response(e.http_status(), json::error_body(&e.message))
}

impl RestApi {
    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.config.cors {
            return self.route(req).await;
        }
        let mut resp = if req.method() == hyper::Method::OPTIONS {
            match cors::preflight(req.headers()) {
                Ok(()) => json_response(200, Bytes::new()),
                Err(e) => error_response(&e),
            }
        } else {
            self.route(req).await
        };
        cors::add_headers(resp.headers_mut());
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let route = match route::parse(&method, &path) {
            Ok(r) => r,
            Err(route::NoRoute::NotFound) => {
                let mut resp = Response::new(Full::new(Bytes::from_static(b"Not Found")));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                return resp;
            }
            Err(route::NoRoute::Error(e)) => return error_response(&e),
        };
        let result = match route {
            Route::Status { request } => self.status(&request).map(String::into_bytes),
            Route::Metadata { request } => self.metadata(&request).map(String::into_bytes),
            Route::Infer { request, verb } => {
                match body::read(req, self.config.max_body_bytes).await {
                    Ok(body) => self.infer(&request, verb, &body).await,
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(body) => json_response(200, body),
            Err(e) => error_response(&e),
        }
    }

    fn status(&self, request: &ServableRequest) -> Result<String, ServingError> {
        let version = match request {
            ServableRequest::Specific(_, v) => Some(*v),
            _ => None, // TF Serving ignores a label here and lists every version
        };
        let status = model_status(&self.predictor.servables, request.name(), version)?;
        Ok(model_json::status_json(&status))
    }

    fn metadata(&self, request: &ServableRequest) -> Result<String, ServingError> {
        let servable = self.predictor.resolve(request)?;
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
        match verb {
            Verb::Predict => self.predict(request, body).await,
            Verb::Classify | Verb::Regress => {
                let doc = json::parse(body)?;
                let decoded = json::decode_examples(&doc)?;
                let servable = self.predictor.resolve(request)?;
                let req = classifier::ExamplesRequest {
                    servable,
                    signature_name: decoded.signature_name.unwrap_or_default(),
                    examples: classifier::with_context(
                        decoded.context.as_deref(),
                        decoded.examples,
                    ),
                    timeout: self.config.timeout,
                };
                if verb == Verb::Classify {
                    json::encode_classify(&classifier::classify(&self.predictor, req).await?)
                } else {
                    json::encode_regress(&classifier::regress(&self.predictor, req).await?)
                        .map(String::into_bytes)
                }
            }
        }
    }

    async fn predict(
        &self,
        request: &ServableRequest,
        body: &[u8],
    ) -> Result<Vec<u8>, ServingError> {
        let doc = json::parse(body)?;
        let signature_name = json::predict_signature_name(&doc)?;
        let servable = self.predictor.resolve(request)?;
        let key =
            crate::validation::signature_key(signature_name.as_deref().unwrap_or("")).to_string();
        let signature = servable.signature(&key).ok_or_else(|| {
            ServingError::invalid_argument(format!(
                "Serving signature name: \"{key}\" not found in signature def"
            ))
        })?;
        let input_types: Vec<(String, shm_protocol::tensor::DataType)> = signature
            .inputs
            .iter()
            .map(|(alias, info)| {
                shm_protocol::tensor::DataType::from_i32(info.dtype)
                    .map(|d| (alias.clone(), d))
                    .ok_or_else(|| {
                        ServingError::unimplemented(format!(
                            "Conversion of JSON Value to type: {} is not supported",
                            info.dtype
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let decoded = json::decode_predict(&doc, &input_types)?;
        let result = self
            .predictor
            .predict(
                &servable,
                &key,
                decoded.inputs,
                Vec::new(),
                self.config.timeout,
            )
            .await?;
        json::encode_predict(decoded.format, &result.outputs)
    }
}
