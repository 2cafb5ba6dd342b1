//! V2 over HTTP (`/v2/...` on the REST port): health, server and model metadata, model
//! configuration and `infer` with JSON tensors and the binary tensor data extension.
//! A binary input is a slice of the received body until it is copied into shared
//! memory, its one copy on the way to TensorFlow.

use crate::edge::{json_response, HttpLimits};
use crate::error::http_status;
use crate::error::ServingError;
use crate::request::Entrypoint;
use crate::servables::ServableRequest;
use crate::v2::infer::{self, element_count, Call, Input, InputData};
use crate::v2::json_head;
use crate::v2::shared_memory::{self, Held, Reference, Registry};
use crate::v2::{datatype, model, servable_request, SERVER_NAME, SIGNATURE_PARAMETER};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Map, Value};
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};
use tokio::time::Instant;

/// The binary extension's header: the length of the JSON part of a body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// What a model route asks for.
#[derive(Debug, PartialEq)]
enum ModelRoute {
    Metadata,
    Ready,
    Config,
    Infer,
}

/// A matched `/v2` route.
#[derive(Debug, PartialEq)]
enum Route {
    Live,
    Ready,
    Server,
    /// `None`: every region.
    RegionStatus(Option<String>),
    RegionRegister(String),
    RegionUnregister(Option<String>),
    /// `/v2/cudasharedmemory/...`: not supported.
    Cuda,
    Model {
        request: ServableRequest,
        what: ModelRoute,
    },
}

fn unescape(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse(method: &Method, path: &str) -> Result<Route, ServingError> {
    let not_found = || ServingError::not_found(format!("no V2 endpoint {method} {path}"));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = method == Method::GET;
    match segments.as_slice() {
        ["v2"] if get => Ok(Route::Server),
        ["v2", "health", "live"] if get => Ok(Route::Live),
        ["v2", "health", "ready"] if get => Ok(Route::Ready),
        ["v2", "systemsharedmemory", rest @ ..] => {
            let post = method == Method::POST;
            match rest {
                ["status"] if get => Ok(Route::RegionStatus(None)),
                ["region", n, "status"] if get => Ok(Route::RegionStatus(Some(unescape(n)))),
                ["region", n, "register"] if post => Ok(Route::RegionRegister(unescape(n))),
                ["unregister"] if post => Ok(Route::RegionUnregister(None)),
                ["region", n, "unregister"] if post => {
                    Ok(Route::RegionUnregister(Some(unescape(n))))
                }
                _ => Err(not_found()),
            }
        }
        ["v2", "cudasharedmemory", ..] => Ok(Route::Cuda),
        ["v2", "models", name, rest @ ..] if !name.is_empty() => {
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] if !v.is_empty() => (unescape(v), rest),
                _ => (String::new(), rest),
            };
            let what = match (rest, get) {
                ([], true) => ModelRoute::Metadata,
                (["ready"], true) => ModelRoute::Ready,
                (["config"], true) => ModelRoute::Config,
                (["infer"], false) if method == Method::POST => ModelRoute::Infer,
                _ => return Err(not_found()),
            };
            Ok(Route::Model {
                request: servable_request(&unescape(name), &version),
                what,
            })
        }
        _ => Err(not_found()),
    }
}

/// V2 over HTTP: its routes' state.
#[derive(Clone)]
pub struct V2Http {
    pub predictor: crate::predictor::Predictor,
    pub health: crate::health::Health,
    /// Registered system shared-memory regions (shared with V2's gRPC service).
    pub shared_memory: Registry,
    pub limits: HttpLimits,
}

/// V2's error answer: the status from `error::http_status`, and `{"error": ...}` as
/// Triton writes it.
fn error_response(e: &ServingError) -> Response<Full<Bytes>> {
    error_with_status(http_status(e.code), &e.message)
}

fn error_with_status(status: u16, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        serde_json::to_vec(&json!({ "error": message })).unwrap_or_default(),
    )
}

fn ok_json(value: &Value) -> Response<Full<Bytes>> {
    json_response(200, serde_json::to_vec(value).unwrap_or_default())
}

/// Answers a request under `/v2`.
pub async fn handle(api: &V2Http, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let route = match parse(req.method(), req.uri().path()) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let predictor = &api.predictor;
    let regions = &api.shared_memory;
    match route {
        Route::RegionStatus(name) => match regions.status(name.as_deref()) {
            Ok(list) => ok_json(&Value::Array(
                list.iter()
                    .map(|r| {
                        json!({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size})
                    })
                    .collect(),
            )),
            Err(e) => error_response(&e),
        },
        Route::RegionRegister(name) => {
            let result = match api.limits.body(req).await {
                Ok(body) => register(regions, &name, &body),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => json_response(200, Bytes::new()),
                Err(e) => error_response(&e),
            }
        }
        Route::RegionUnregister(name) => match regions.unregister(name.as_deref()) {
            Ok(()) => json_response(200, Bytes::new()),
            Err(e) => error_response(&e),
        },
        Route::Cuda => error_response(&ServingError::unimplemented(
            crate::v2::grpc::CUDA_NOT_SUPPORTED,
        )),
        Route::Live => json_response(200, Bytes::new()),
        Route::Ready => {
            let readiness = api.health.readiness();
            if readiness.is_ready() {
                json_response(200, Bytes::new())
            } else {
                let why = readiness.waiting_for.join("; ");
                error_with_status(400, &why)
            }
        }
        Route::Server => ok_json(&json!({
            "name": SERVER_NAME,
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": crate::v2::extensions(api.shared_memory.enabled()),
        })),
        Route::Model { request, what } => match what {
            ModelRoute::Metadata => match predictor.metadata(&request) {
                Ok(servable) => {
                    let m = model::metadata(
                        &servable,
                        &predictor.available_versions(&servable.id.name),
                    );
                    let tensors = |ts: &[model::TensorMeta]| -> Vec<Value> {
                        ts.iter()
                            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
                            .collect()
                    };
                    ok_json(&json!({
                        "name": m.name,
                        "versions": m.versions,
                        "platform": m.platform,
                        "inputs": tensors(&m.inputs),
                        "outputs": tensors(&m.outputs),
                    }))
                }
                Err(e) => error_response(&e),
            },
            ModelRoute::Ready => {
                if predictor.is_ready(&request) {
                    json_response(200, Bytes::new())
                } else {
                    let e = predictor.metadata(&request).err().unwrap_or_else(|| {
                        ServingError::unavailable(format!(
                            "model '{}' is not ready",
                            request.name()
                        ))
                    });
                    error_with_status(400, &e.message)
                }
            }
            ModelRoute::Config => match predictor.metadata(&request) {
                Ok(servable) => {
                    let batching = predictor.batching(&servable.id);
                    ok_json(&model::config_json(&model::config(
                        &servable,
                        batching.as_ref(),
                    )))
                }
                Err(e) => error_response(&e),
            },
            ModelRoute::Infer => {
                let name = request.name().to_string();
                let result = infer(api, request, req).await;
                crate::edge::observe::call(&name, "infer", Entrypoint::Rest, started, result)
                    .unwrap_or_else(|e| error_response(&e))
            }
        },
    }
}

/// `POST .../region/{name}/register` with `{"key", "offset", "byte_size"}`.
fn register(regions: &Registry, name: &str, body: &[u8]) -> Result<(), ServingError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        ServingError::invalid_argument(format!("failed to parse the request JSON: {e}"))
    })?;
    let key = doc.get("key").and_then(Value::as_str).ok_or_else(|| {
        ServingError::invalid_argument("a shared memory registration needs a string 'key'")
    })?;
    let number = |field: &str| {
        non_negative(&doc, field, || {
            format!("a shared memory registration needs '{field}' as a non-negative integer")
        })
    };
    let byte_size = number("byte_size")?.ok_or_else(|| {
        ServingError::invalid_argument(
            "a shared memory registration needs 'byte_size' as a non-negative integer",
        )
    })?;
    regions.register(name, key, number("offset")?.unwrap_or(0), byte_size)
}

/// `object[field]` as a non-negative integer: `None` when absent, `error()`'s message
/// when it is something else.
fn non_negative(
    object: &Value,
    field: &str,
    error: impl FnOnce() -> String,
) -> Result<Option<u64>, ServingError> {
    match object.get(field) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ServingError::invalid_argument(error())),
    }
}

/// The region a tensor's `parameters` name, if any.
fn region_reference(
    what: &str,
    parameters: Option<&Value>,
    regions: &Registry,
) -> Result<Option<Held>, ServingError> {
    let Some(region) = parameters.and_then(|p| p.get(shared_memory::REGION)) else {
        return Ok(None);
    };
    let region = region.as_str().ok_or_else(|| {
        ServingError::invalid_argument(format!("{what}: shared_memory_region must be a string"))
    })?;
    let parameters = parameters.unwrap_or(&Value::Null);
    let number = |field: &str| {
        non_negative(parameters, field, || {
            format!("{what}: {field} must be a non-negative integer")
        })
    };
    let byte_size = number(shared_memory::BYTE_SIZE)?.ok_or_else(|| {
        ServingError::invalid_argument(format!(
            "{what} names shared memory region '{region}' without shared_memory_byte_size"
        ))
    })?;
    let at = Reference {
        region: region.to_string(),
        offset: number(shared_memory::OFFSET)?.unwrap_or(0),
        byte_size,
    };
    Held::resolve(regions, at).map(Some)
}

/// The JSON part of a body and the binary part after it.
fn split_body(req_header: Option<&str>, body: Bytes) -> Result<(Bytes, Bytes), ServingError> {
    let Some(text) = req_header else {
        return Ok((body, Bytes::new()));
    };
    let n: usize = text.trim().parse().map_err(|_| {
        ServingError::invalid_argument(format!(
            "Inference-Header-Content-Length is not a number: '{text}'"
        ))
    })?;
    if n > body.len() {
        return Err(ServingError::invalid_argument(format!(
            "Inference-Header-Content-Length is {n}, the body has only {} bytes",
            body.len()
        )));
    }
    Ok((body.slice(..n), body.slice(n..)))
}

/// A `parameters` object's boolean, `false` when absent.
fn flag(parameters: Option<&Value>, name: &str) -> Result<bool, ServingError> {
    given_flag(parameters, name).map(|b| b.unwrap_or(false))
}

/// A `parameters` object's boolean, if given.
fn given_flag(parameters: Option<&Value>, name: &str) -> Result<Option<bool>, ServingError> {
    match parameters.and_then(|p| p.get(name)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ServingError::invalid_argument(format!(
            "parameter '{name}' must be a boolean, got {other}"
        ))),
    }
}

/// One output asked for: as binary data, or written into a shared-memory region.
pub struct Wanted {
    pub name: String,
    pub binary: bool,
    pub region: Option<Held>,
}

/// A V2 REST infer request, decoded: what runs and how each output is answered.
pub struct InferRequest {
    pub id: Option<String>,
    pub signature_name: String,
    pub inputs: infer::Given,
    /// Outputs asked for by name, in order.
    pub wanted: Vec<Wanted>,
    /// `binary_data_output`: outputs not asked for by name answer as binary.
    pub all_binary: bool,
}

/// Decodes an infer body and its `Inference-Header-Content-Length` (`header`): the JSON
/// header, the binary data after it claimed by inputs in order, regions resolved in
/// `regions`; `0` makes it a raw binary request. `limit` bounds a region's input as a body
/// would be bounded. No I/O but a region's read.
pub fn decode_request(
    header: Option<&str>,
    body: Bytes,
    regions: &Registry,
    limit: usize,
) -> Result<InferRequest, ServingError> {
    decode(header, body, regions, limit, true)
}

/// [`decode_request`] with the head read all as one `Value`, never by `json_head`: the
/// oracle `json_head` is held to (the `v2_infer` fuzz target, the tests).
pub fn decode_request_as_values(
    header: Option<&str>,
    body: Bytes,
    regions: &Registry,
    limit: usize,
) -> Result<InferRequest, ServingError> {
    decode(header, body, regions, limit, false)
}

/// A decoded request, or its error, as text: what two decodings of one body are
/// compared by (the `v2_infer` fuzz target and the tests).
pub fn summary(r: Result<InferRequest, ServingError>) -> String {
    match r {
        Err(e) => format!("error {:?}: {}", e.code, e.message),
        Ok(r) => {
            let inputs = match r.inputs {
                infer::Given::Listed(inputs) => inputs
                    .iter()
                    .map(|i| {
                        let data = match &i.data {
                            InputData::Raw(b) => format!("raw {b:?}"),
                            InputData::Packed(TensorData::Bytes(b)) => format!("{b:?}"),
                            InputData::Packed(TensorData::Strings(s)) => format!("{s:?}"),
                            InputData::Packed(TensorData::File(f)) => format!("{f:?}"),
                            InputData::Region(held, _) => format!("region {:?}", held.at),
                        };
                        format!("{} {} {:?} {data}", i.name, i.datatype, i.shape)
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                infer::Given::Raw(b) => format!("raw {b:?}"),
            };
            let wanted: Vec<(&str, bool)> = r
                .wanted
                .iter()
                .map(|w| (w.name.as_str(), w.binary))
                .collect();
            format!(
                "{:?} {} [{inputs}] {wanted:?} {}",
                r.id, r.signature_name, r.all_binary
            )
        }
    }
}

/// [`decode_request`], its head read by `json_head` where it can (`typed`) or all as one
/// `Value`.
fn decode(
    header: Option<&str>,
    body: Bytes,
    regions: &Registry,
    limit: usize,
    typed: bool,
) -> Result<InferRequest, ServingError> {
    if header.map(str::trim) == Some("0") {
        return Ok(InferRequest {
            id: None,
            signature_name: String::new(),
            inputs: infer::Given::Raw(body),
            wanted: Vec::new(),
            all_binary: false,
        });
    }
    let (head, mut binary) = split_body(header, body)?;
    let json_head::Head { doc, mut numbers } = read_head(&head, typed)?;
    let doc = doc
        .as_object()
        .ok_or_else(|| ServingError::invalid_argument("the request JSON must be an object"))?;
    let id = match doc.get("id") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ServingError::invalid_argument(format!(
                "'id' must be a string, got {other}"
            )))
        }
    };
    let parameters = doc.get("parameters");
    let signature_name = match parameters.and_then(|p| p.get(SIGNATURE_PARAMETER)) {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ServingError::invalid_argument(format!(
                "parameter '{SIGNATURE_PARAMETER}' must be a string, got {other}"
            )))
        }
    };
    let all_binary = flag(parameters, "binary_data_output")?;
    let inputs = match doc.get("inputs") {
        Some(Value::Array(a)) => a,
        _ => {
            return Err(ServingError::invalid_argument(
                "the request has no 'inputs' array",
            ))
        }
    };
    numbers.resize_with(inputs.len(), || None);
    let inputs = inputs
        .iter()
        .zip(numbers)
        .map(|(i, numbers)| input(i, numbers, &mut binary, regions, limit))
        .collect::<Result<Vec<_>, _>>()?;
    if !binary.is_empty() {
        return Err(ServingError::invalid_argument(format!(
            "{} bytes of binary data follow the JSON that no input claims",
            binary.len()
        )));
    }
    let wanted = match doc.get("outputs") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|o| {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ServingError::invalid_argument("an output has no 'name'"))?;
                let what = format!("output '{name}'");
                Ok(Wanted {
                    name: name.to_string(),
                    // An output's own `binary_data` overrides `binary_data_output`.
                    binary: given_flag(o.get("parameters"), "binary_data")?.unwrap_or(all_binary),
                    region: region_reference(&what, o.get("parameters"), regions)?,
                })
            })
            .collect::<Result<Vec<_>, ServingError>>()?,
        Some(_) => return Err(ServingError::invalid_argument("'outputs' must be an array")),
    };
    Ok(InferRequest {
        id,
        signature_name,
        inputs: infer::Given::Listed(inputs),
        wanted,
        all_binary,
    })
}

/// The head as a document, and each input's `data` where `json_head` read it as
/// numbers (then absent from the document); `typed: false` reads it all as one `Value`
/// (what `json_head` is held to in the tests).
fn read_head(head: &[u8], typed: bool) -> Result<json_head::Head, ServingError> {
    if let Some(read) = typed.then(|| json_head::read(head)).flatten() {
        return Ok(read);
    }
    let doc = serde_json::from_slice(head).map_err(|e| {
        ServingError::invalid_argument(format!("failed to parse the request JSON: {e}"))
    })?;
    Ok(json_head::Head {
        doc,
        numbers: Vec::new(),
    })
}

async fn infer(
    api: &V2Http,
    servable: ServableRequest,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ServingError> {
    let deadline = api.limits.deadline();
    let header = req
        .headers()
        .get(HEADER_LENGTH)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = api.limits.body(req).await?;
    let InferRequest {
        id,
        signature_name,
        inputs,
        wanted,
        all_binary,
    } = decode_request(
        header.as_deref(),
        body,
        &api.shared_memory,
        api.limits.max_body_bytes,
    )?;
    let served = infer::run(
        &api.predictor,
        Call {
            servable,
            signature_name,
            inputs,
            outputs: wanted.iter().map(|w| w.name.clone()).collect(),
            output_targets: wanted
                .iter()
                .filter_map(|w| Some((w.name.clone(), w.region.as_ref()?.output_target()?)))
                .collect(),
            deadline,
            entrypoint: Entrypoint::Rest,
        },
    )
    .await?;
    // A raw binary request answers every output as JSON (it has no header to ask with).
    served.encode(|s| {
        let how = |name: &str| match wanted.iter().find(|w| w.name == name) {
            Some(Wanted {
                region: Some(held), ..
            }) => Answer::Region(held),
            Some(w) if w.binary => Answer::Binary,
            None if all_binary => Answer::Binary,
            _ => Answer::Json,
        };
        encode(
            &s.servable.name,
            s.servable.version,
            id.as_deref(),
            &s.value,
            how,
        )
    })
}

/// An input's inline `data`.
enum Data<'a> {
    Json(&'a Value),
    /// Read as numbers by `json_head`.
    Numbers(Vec<json_head::Number>),
}

/// One input of the JSON: its data inline (in `v`, or read as `numbers`), or the next
/// `binary_data_size` bytes of `binary`.
fn input(
    v: &Value,
    numbers: Option<Vec<json_head::Number>>,
    binary: &mut Bytes,
    regions: &Registry,
    limit: usize,
) -> Result<Input, ServingError> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ServingError::invalid_argument("an input has no 'name'"))?
        .to_string();
    let datatype = v
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| ServingError::invalid_argument(format!("input '{name}' has no 'datatype'")))?
        .to_string();
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| {
            ServingError::invalid_argument(format!(
                "input '{name}' has no 'shape' array of integers"
            ))
        })?;
    let what = format!("input '{name}'");
    let size = v.get("parameters").and_then(|p| p.get("binary_data_size"));
    let given = match numbers {
        Some(n) => Some(Data::Numbers(n)),
        None => v.get("data").map(Data::Json),
    };
    if let Some(held) = region_reference(&what, v.get("parameters"), regions)? {
        if given.is_some() || size.is_some() {
            return Err(ServingError::invalid_argument(format!(
                "input '{name}' names a shared memory region and carries data as well"
            )));
        }
        return Ok(Input {
            name,
            datatype,
            shape,
            data: InputData::Region(held, limit),
        });
    }
    let data = match (given, size) {
        (Some(_), Some(_)) => {
            return Err(ServingError::invalid_argument(format!(
                "input '{name}' has both 'data' and binary_data_size"
            )))
        }
        (None, None) => {
            return Err(ServingError::invalid_argument(format!(
                "input '{name}' has no 'data' and no binary_data_size"
            )))
        }
        (None, Some(size)) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| {
                    ServingError::invalid_argument(format!(
                        "input '{name}': binary_data_size must be a non-negative integer"
                    ))
                })?;
            if size > binary.len() {
                return Err(ServingError::invalid_argument(format!(
                    "input '{name}' claims {size} bytes of binary data, only {} remain",
                    binary.len()
                )));
            }
            InputData::Raw(binary.split_to(size))
        }
        (Some(data), None) => {
            let dtype = datatype::parse(&datatype).ok_or_else(|| {
                ServingError::invalid_argument(format!(
                    "input '{name}' has unknown datatype '{datatype}'"
                ))
            })?;
            InputData::Packed(json_data(&name, dtype, &shape, data)?)
        }
    };
    Ok(Input {
        name,
        datatype,
        shape,
        data,
    })
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// JSON `data` (flat or nested, row-major) packed for `dtype`.
fn json_data(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    data: Data,
) -> Result<TensorData, ServingError> {
    let mut values = Vec::new();
    let count = match &data {
        Data::Json(v) => {
            flatten(v, &mut values);
            values.len()
        }
        Data::Numbers(n) => n.len(),
    };
    let elements = element_count(name, shape)?;
    if count != elements {
        return Err(ServingError::invalid_argument(format!(
            "input '{name}' has {count} values, its shape needs {elements}",
        )));
    }
    let wrong = |v: &Value, what: &str| {
        ServingError::invalid_argument(format!("input '{name}': expected {what}, got {v}"))
    };
    let Data::Numbers(numbers) = data else {
        return values_data(name, dtype, &values, wrong);
    };
    // The same checks on numbers read without a `Value` each.
    match dtype {
        DataType::String | DataType::Bool => {
            // No number is a string or a boolean: the `Value` path's answer for the
            // first one (its error), or for none (an empty tensor).
            let first: Vec<Value> = numbers.first().map(|n| n.to_value()).into_iter().collect();
            values_data(name, dtype, &first.iter().collect::<Vec<_>>(), wrong)
        }
        DataType::Float | DataType::Double | DataType::Half | DataType::Bfloat16 => {
            infer::pack_floats(name, dtype, numbers.iter().map(|n| n.as_f64()))
        }
        _ => {
            if let Some(n) = numbers.iter().find(|n| n.as_int().is_none()) {
                return Err(wrong(&n.to_value(), "an integer"));
            }
            // Every one is an integer (checked just above).
            let ints = numbers.iter().map(|n| n.as_int().unwrap_or_default());
            infer::pack_ints(name, dtype, ints)
        }
    }
}

/// [`json_data`] for values as a `Value` holds them.
fn values_data(
    name: &str,
    dtype: DataType,
    values: &[&Value],
    wrong: impl Fn(&Value, &str) -> ServingError,
) -> Result<TensorData, ServingError> {
    match dtype {
        DataType::String => values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| s.as_bytes().to_vec())
                    .ok_or_else(|| wrong(v, "a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TensorData::Strings),
        DataType::Bool => {
            let bits = values
                .iter()
                .map(|v| {
                    v.as_bool()
                        .map(i128::from)
                        .ok_or_else(|| wrong(v, "true or false"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            infer::pack_ints(name, dtype, bits.into_iter())
        }
        DataType::Float | DataType::Double | DataType::Half | DataType::Bfloat16 => {
            let floats = values
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| wrong(v, "a number")))
                .collect::<Result<Vec<_>, _>>()?;
            infer::pack_floats(name, dtype, floats.into_iter())
        }
        _ => {
            let ints = values
                .iter()
                .map(|v| {
                    v.as_i64()
                        .map(i128::from)
                        .or_else(|| v.as_u64().map(i128::from))
                        .ok_or_else(|| wrong(v, "an integer"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            infer::pack_ints(name, dtype, ints.into_iter())
        }
    }
}

/// How one output is answered.
enum Answer<'a> {
    Json,
    Binary,
    Region(&'a Held),
}

/// The response: JSON alone, or JSON then each binary output's bytes in order, with
/// `Inference-Header-Content-Length` set. Outputs for a shared-memory region are written
/// there and carry no data.
fn encode<'a>(
    model_name: &str,
    version: i64,
    id: Option<&str>,
    outputs: &[(String, Tensor)],
    how: impl Fn(&str) -> Answer<'a>,
) -> Result<Response<Full<Bytes>>, ServingError> {
    let mut blobs = Vec::new();
    let mut json_outputs = Vec::with_capacity(outputs.len());
    for (name, tensor) in outputs {
        let datatype = datatype::name(tensor.dtype).ok_or_else(|| {
            ServingError::unimplemented(format!(
                "output '{name}' is {}, which V2 cannot carry",
                tensor.dtype.name()
            ))
        })?;
        let mut out = Map::new();
        out.insert("name".into(), json!(name));
        out.insert("datatype".into(), json!(datatype));
        out.insert("shape".into(), json!(tensor.shape));
        match how(name) {
            Answer::Region(held) => {
                // No `parameters`: Triton's HTTP clients read `binary_data_size` from any
                // output that has them. The client knows where it asked for the output.
                infer::write_output(held, name, tensor)?;
            }
            Answer::Binary => {
                let raw = infer::raw(tensor)?;
                out.insert("parameters".into(), json!({"binary_data_size": raw.len()}));
                blobs.push(raw);
            }
            Answer::Json => {
                out.insert("data".into(), json_values(tensor));
            }
        }
        json_outputs.push(Value::Object(out));
    }
    let mut doc = Map::new();
    doc.insert("model_name".into(), json!(model_name));
    doc.insert("model_version".into(), json!(version.to_string()));
    if let Some(id) = id {
        doc.insert("id".into(), json!(id));
    }
    doc.insert("outputs".into(), Value::Array(json_outputs));
    let head = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
    if blobs.is_empty() {
        return Ok(json_response(200, head));
    }
    let head_len = head.len();
    let mut body = head;
    for b in &blobs {
        body.extend_from_slice(b);
    }
    let mut resp = json_response(200, body);
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, hyper::header::HeaderValue::from(head_len));
    Ok(resp)
}

/// A tensor's elements as a flat JSON array (FP16/BF16 as their float values; BYTES as
/// strings, invalid UTF-8 replaced; non-finite floats as null, which JSON lacks).
fn json_values(t: &Tensor) -> Value {
    let bytes = match &t.data {
        TensorData::Strings(items) => {
            return Value::Array(
                items
                    .iter()
                    .map(|s| Value::String(String::from_utf8_lossy(s).into_owned()))
                    .collect(),
            )
        }
        TensorData::Bytes(b) => b,
        // Only an output answered in a shared-memory region is in a file, never in JSON.
        TensorData::File(_) => return Value::Null,
    };
    fn each<const N: usize, T: Into<Value>>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Value {
        Value::Array(
            b.chunks_exact(N)
                .map(|c| f(c.try_into().unwrap_or([0; N])).into())
                .collect(),
        )
    }
    let float = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
    match t.dtype {
        DataType::Bool => each::<1, _>(bytes, |b| b[0] != 0),
        DataType::Uint8 => each::<1, _>(bytes, u8::from_le_bytes),
        DataType::Int8 => each::<1, _>(bytes, i8::from_le_bytes),
        DataType::Uint16 => each::<2, _>(bytes, u16::from_le_bytes),
        DataType::Int16 => each::<2, _>(bytes, i16::from_le_bytes),
        DataType::Uint32 => each::<4, _>(bytes, u32::from_le_bytes),
        DataType::Int32 => each::<4, _>(bytes, i32::from_le_bytes),
        DataType::Uint64 => each::<8, _>(bytes, u64::from_le_bytes),
        DataType::Int64 => each::<8, _>(bytes, i64::from_le_bytes),
        DataType::Float => each::<4, _>(bytes, |b| float(f64::from(f32::from_le_bytes(b)))),
        DataType::Double => each::<8, _>(bytes, |b| float(f64::from_le_bytes(b))),
        DataType::Half => each::<2, _>(bytes, |b| {
            float(f64::from(infer::f16_to_f32(u16::from_le_bytes(b))))
        }),
        DataType::Bfloat16 => each::<2, _>(bytes, |b| {
            float(f64::from(f32::from_bits(
                u32::from(u16::from_le_bytes(b)) << 16,
            )))
        }),
        DataType::String | DataType::Complex64 | DataType::Complex128 => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = |p: &str| parse(&Method::GET, p);
        assert_eq!(get("/v2").unwrap(), Route::Server);
        assert_eq!(get("/v2/health/live").unwrap(), Route::Live);
        assert_eq!(get("/v2/health/ready").unwrap(), Route::Ready);
        assert_eq!(
            get("/v2/models/m").unwrap(),
            Route::Model {
                request: ServableRequest::Latest("m".into()),
                what: ModelRoute::Metadata
            }
        );
        assert_eq!(
            get("/v2/models/m%20x/versions/3/config").unwrap(),
            Route::Model {
                request: ServableRequest::Specific("m x".into(), 3),
                what: ModelRoute::Config
            }
        );
        assert_eq!(
            get("/v2/models/m/versions/stable/ready").unwrap(),
            Route::Model {
                request: ServableRequest::Label("m".into(), "stable".into()),
                what: ModelRoute::Ready
            }
        );
        assert_eq!(
            parse(&Method::POST, "/v2/models/m/infer").unwrap(),
            Route::Model {
                request: ServableRequest::Latest("m".into()),
                what: ModelRoute::Infer
            }
        );
        let e = get("/v2/models/m/infer").unwrap_err();
        assert_eq!(e.code, crate::error::Code::NotFound);
        assert_eq!(e.message, "no V2 endpoint GET /v2/models/m/infer");
        assert!(get("/v2/models//ready").is_err());
        assert!(get("/v2/nothing").is_err());
    }

    #[test]
    fn the_binary_part_follows_the_json() {
        let body = Bytes::from_static(b"{\"a\":1}\x01\x02");
        let (head, rest) = split_body(Some("7"), body.clone()).unwrap();
        assert_eq!(&head[..], b"{\"a\":1}");
        assert_eq!(&rest[..], b"\x01\x02");
        assert_eq!(rest.as_ptr(), body[7..].as_ptr(), "a slice, not a copy");
        assert!(split_body(Some("10"), body.clone()).is_err());
        assert!(split_body(Some("x"), body).is_err());
    }

    #[test]
    fn a_binary_input_is_a_slice_of_the_body() {
        use crate::request::DecodeInputs;
        // 1 MiB of FP32 after the JSON, as tritonclient sends it.
        let head = br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,262144],"parameters":{"binary_data_size":1048576}}]}"#;
        let mut body = head.to_vec();
        body.extend((0..262_144u32).flat_map(|i| (i as f32).to_le_bytes()));
        let body = Bytes::from(body);
        let (json_part, mut binary) =
            split_body(Some(&head.len().to_string()), body.clone()).unwrap();
        let doc: Value = serde_json::from_slice(&json_part).unwrap();
        let input = input(
            &doc["inputs"][0],
            None,
            &mut binary,
            &Registry::default(),
            1 << 21,
        )
        .unwrap();
        let mut signature = tfgate_proto::tensorflow::SignatureDef::default();
        signature.inputs.insert(
            "x".into(),
            tfgate_proto::tensorflow::TensorInfo {
                dtype: DataType::Float as i32,
                ..Default::default()
            },
        );
        let tensors = infer::Inputs(vec![input]).decode(&signature).unwrap();
        match &tensors[0].1.data {
            TensorData::Bytes(b) => {
                assert_eq!(b.len(), 1 << 20);
                assert_eq!(
                    b.as_ptr(),
                    body[head.len()..].as_ptr(),
                    "no copy before the arena"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_data_is_flattened_and_checked() {
        let v: Value = serde_json::from_str("[[1, 2], [3, 4]]").unwrap();
        let d = json_data("x", DataType::Int32, &[2, 2], Data::Json(&v)).unwrap();
        let t = Tensor::new(DataType::Int32, vec![2, 2], d).unwrap();
        assert_eq!(json_values(&t), json!([1, 2, 3, 4]));
        let e = json_data("x", DataType::Int32, &[3], Data::Json(&v)).unwrap_err();
        assert_eq!(e.message, "input 'x' has 4 values, its shape needs 3");
        let e = json_data(
            "x",
            DataType::Int32,
            &[4],
            Data::Json(&json!([1, 2.5, 3, 4])),
        )
        .unwrap_err();
        assert_eq!(e.message, "input 'x': expected an integer, got 2.5");
        let d = json_data("s", DataType::String, &[1], Data::Json(&json!(["hé"]))).unwrap();
        assert_eq!(d, TensorData::Strings(vec!["hé".as_bytes().to_vec()]));
        let d = json_data("b", DataType::Bool, &[2], Data::Json(&json!([true, false]))).unwrap();
        let t = Tensor::new(DataType::Bool, vec![2], d).unwrap();
        assert_eq!(json_values(&t), json!([true, false]));
    }

    /// Heads read with each input's numbers straight into a list decode as heads read
    /// all as one `Value`: the same inputs, or the same error. Random heads around V2's
    /// JSON: numbers of each kind, nested or flat, a wrong count, strings and booleans
    /// in `data`, `data` twice, a missing or repeated key, an input not an object.
    #[test]
    fn numbers_read_without_a_value_decode_as_a_value() {
        const DATA: &[&str] = &[
            "[1, 2, 3, 4]",
            "[[1.5, -2], [3e2, 4]]",
            "[[[0.25]], [[-0.0]], [[7]], [[1e-7]]]",
            "[18446744073709551615, -9223372036854775808, 0, 1]",
            "[1, 2, 3]",
            "[1, 2, \"a\", 4]",
            "[true, false, true, false]",
            "[\"a\", \"b\", \"c\", \"d\"]",
            "[1, 2, null, 4]",
            "5",
            "[]",
            "[[1, 2], [3, {\"x\": 1}]]",
            "[1.5, 2.5, 3.5, 4.5]",
            "[1, 2, 3, 4",
        ];
        const DATATYPES: &[&str] = &[
            "FP32", "FP64", "INT32", "INT8", "UINT64", "INT64", "BOOL", "BYTES", "FP16", "NOPE",
        ];
        let mut rng = fastrand::Rng::with_seed(2);
        let (mut typed, mut packed) = (0, 0);
        for _ in 0..5_000 {
            let mut inputs = Vec::new();
            for i in 0..rng.usize(1..3) {
                let mut fields = vec![
                    format!("\"name\": \"x{i}\""),
                    format!(
                        "\"datatype\": \"{}\"",
                        DATATYPES[if rng.bool() {
                            rng.usize(..3)
                        } else {
                            rng.usize(..DATATYPES.len())
                        }]
                    ),
                    [
                        "\"shape\": [4]",
                        "\"shape\": [2, 2]",
                        "\"shape\": [4, 1, 1]",
                        "\"shape\": [3]",
                    ][rng.usize(..4)]
                    .to_string(),
                    format!(
                        "\"data\": {}",
                        DATA[if rng.bool() {
                            rng.usize(..3)
                        } else {
                            rng.usize(..DATA.len())
                        }]
                    ),
                ];
                match rng.usize(..12) {
                    0 => fields.push(format!("\"data\": {}", DATA[0])),
                    1 => {
                        fields.remove(rng.usize(..fields.len()));
                    }
                    2 => fields.push("\"parameters\": {\"binary_data_size\": 4}".into()),
                    3 => fields.push("\"name\": \"again\"".into()),
                    _ => {}
                }
                rng.shuffle(&mut fields);
                inputs.push(if rng.usize(..40) == 0 {
                    "[1]".to_string()
                } else {
                    format!("{{{}}}", fields.join(", "))
                });
            }
            let mut top = vec![format!("\"inputs\": [{}]", inputs.join(", "))];
            match rng.usize(..10) {
                0 => top.push("\"id\": \"r\"".into()),
                1 => top.push("\"id\": null".into()),
                2 => top.push("\"inputs\": []".into()),
                3 => top.push("\"outputs\": [{\"name\": \"y\"}]".into()),
                4 => top.push("\"parameters\": {\"binary_data_output\": true}".into()),
                _ => {}
            }
            rng.shuffle(&mut top);
            let mut head = format!("{{{}}}", top.join(", "));
            if rng.usize(..30) == 0 {
                head.push_str(" x");
            }
            if rng.usize(..30) == 0 {
                head = format!("[{head}]");
            }
            typed += usize::from(json_head::read(head.as_bytes()).is_some());
            let registry = Registry::default();
            let decode_with = |typed| {
                summary(decode(
                    None,
                    Bytes::from(head.clone()),
                    &registry,
                    1 << 20,
                    typed,
                ))
            };
            let want = decode_with(false);
            packed += usize::from(!want.starts_with("error"));
            assert_eq!(decode_with(true), want, "{head}");
        }
        assert!(
            typed > 2_000 && packed > 500,
            "read typed {typed}, decoded {packed}"
        );
    }
}
