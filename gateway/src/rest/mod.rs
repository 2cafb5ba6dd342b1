//! REST front end (hyper): TF Serving's `/v1/models/...` routes, decoded into the shared
//! predict path and answered with TF Serving's JSON, errors as `{"error": "..."}`.

mod admin;
pub(crate) mod body;
mod cors;
pub mod json;
mod model_json;
pub(crate) mod route;
pub mod server;

use crate::error::{Code, ServingError};
use crate::monitoring::series;
use crate::predictor::Predictor;
use crate::request::{DecodeInputs, Entrypoint, ExamplesRequest, PredictRequest};
use crate::servables::ServableRequest;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use route::{Route, Verb};
use std::time::Duration;
use tfgate_proto::tensorflow::SignatureDef;
use tfgate_tensor::proto::with_context;
use tfgate_tensor::tensor::{DataType, Tensor};
use tokio::time::Instant;

/// REST settings from the flags.
#[derive(Clone)]
pub struct RestConfig {
    /// `--rest_api_timeout_in_ms`; `None`: no limit.
    pub timeout: Option<Duration>,
    pub max_body_bytes: usize,
    /// `--rest_api_header_timeout_ms`; `None`: no limit.
    pub header_timeout: Option<Duration>,
    /// `--rest_api_body_timeout_ms`; `None`: no limit.
    pub body_timeout: Option<Duration>,
    /// `--rest_api_enable_cors_support`.
    pub cors: bool,
    /// Where the Prometheus page is served, if `--monitoring_config_file` enables it.
    pub metrics_path: Option<String>,
}

impl RestConfig {
    /// The deadline of a request received now: `--rest_api_timeout_in_ms` away, or a
    /// year when there is no timeout.
    pub fn deadline(&self) -> Instant {
        const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
        Instant::now() + self.timeout.unwrap_or(NO_TIMEOUT)
    }
}

/// The REST service state.
#[derive(Clone)]
pub struct RestApi {
    pub predictor: Predictor,
    pub health: crate::health::Health,
    /// V2's registered system shared-memory regions (shared with gRPC).
    pub shared_memory: crate::v2::shared_memory::Registry,
    pub config: RestConfig,
}

pub(crate) fn json_response(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The HTTP status TF Serving's REST server answers a code with
/// (`http_server.cc::ToHTTPStatusCode`).
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// The REST edge's one conversion of an error: its HTTP status and `{"error": ...}`.
pub(crate) fn error_response(e: &ServingError) -> Response<Full<Bytes>> {
    json_response(http_status(e.code), json::error_body(&e.message))
}

/// A predict body's `instances`/`inputs`, decoded with the signature's input dtypes;
/// remembers which of the two forms it was, for the response.
struct JsonInputs<'a> {
    doc: &'a json::JsonDoc,
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
        let decoded = json::decode_predict(self.doc, &input_types)?;
        *self.format = Some(decoded.format);
        Ok(decoded.inputs)
    }
}

impl RestApi {
    /// Answers one HTTP request.
    /// An OPTIONS preflight always gets TF Serving's Origin check; the CORS headers
    /// depend on `--rest_api_enable_cors_support`.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut resp = if req.method() == hyper::Method::OPTIONS {
            match cors::preflight(req.headers()) {
                Ok(()) => json_response(200, Bytes::new()),
                Err(e) => error_response(&e),
            }
        } else {
            self.route(req).await
        };
        if self.config.cors {
            cors::add_headers(resp.headers_mut());
        }
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if self.config.metrics_path.as_deref() == Some(path.as_str()) {
            return self.metrics_page();
        }
        if path == "/v2" || path.starts_with("/v2/") {
            return crate::v2::rest::handle(self, req).await;
        }
        if let Some((status, body)) = admin::handle(&self.health, &method, &path) {
            let text = serde_json::to_string_pretty(&body).unwrap_or_default();
            return json_response(status, text);
        }
        let route = match route::parse(&method, &path) {
            Ok(r) => r,
            Err(route::NoRoute::NotFound) => {
                let mut resp = Response::new(Full::new(Bytes::from_static(b"Not Found")));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                return resp;
            }
            Err(route::NoRoute::Error(e)) => {
                series::request("", "", Entrypoint::Rest, e.code, 0);
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
            Route::Infer { request, verb } => {
                match body::read(req, self.config.max_body_bytes, self.config.body_timeout).await {
                    Ok(body) => self.infer(&request, verb, &body).await,
                    Err(e) => Err(e),
                }
            }
        };
        let code = result.as_ref().map_or_else(|e| e.code, |_| Code::Ok);
        let micros = started.elapsed().as_micros() as u64;
        series::request(&model_name, api, Entrypoint::Rest, code, micros);
        match result {
            Ok(body) => json_response(200, body),
            Err(e) => error_response(&e),
        }
    }

    /// The Prometheus page, `Content-Type: text/plain` as TF Serving sends it.
    fn metrics_page(&self) -> Response<Full<Bytes>> {
        self.health.sample_metrics();
        let mut resp = Response::new(Full::new(Bytes::from(crate::monitoring::render())));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        resp
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
        let deadline = self.config.deadline();
        let doc = json::parse(body)?;
        if verb == Verb::Predict {
            let signature_name = json::predict_signature_name(&doc)?;
            let mut format = None;
            let served = self
                .predictor
                .predict(PredictRequest {
                    servable: request.clone(),
                    signature_name: signature_name.unwrap_or_default(),
                    inputs: JsonInputs {
                        doc: &doc,
                        format: &mut format,
                    },
                    output_filter: Vec::new(),
                    deadline,
                    entrypoint: Entrypoint::Rest,
                })
                .await?;
            let format = format.unwrap_or(json::PredictFormat::Row);
            return served.encode(|s| json::encode_predict(format, &s.value));
        }
        let decoded = json::decode_examples(&doc)?;
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
