//! The five ways `--shapes` sends a model its one input and gets its one output back, each
//! as the usual client of that API does it:
//!
//! - **TF REST JSON**: `POST /v1/models/M:predict` with `{"instances": ...}`, the numbers
//!   spelled as Python's `json.dumps(array.tolist())` spells them;
//! - **TF gRPC**: `Predict` with the input in `tensor_content`, as TensorFlow's
//!   `make_tensor_proto` sends a numpy array;
//! - **V2 HTTP binary**: `POST /v2/models/M/infer`, a JSON head and the raw bytes (the
//!   binary tensor data extension), the output asked for as binary;
//! - **V2 gRPC**: `ModelInfer` with `raw_input_contents`;
//! - **V2 shared memory**: V2 over HTTP naming two system shared-memory regions the client
//!   registered, one per connection; each request writes the input into the input region
//!   and copies the output out of the output region, the copies such a client pays.
//!
//! Each is one keep-alive connection per client (HTTP/1.1, or one HTTP/2 channel), driven
//! in a closed loop like `load.rs` drives the MLP's. The same clients load the canned
//! floors (`canned.rs`), so a floor holds every cost but tfgate's own.

use crate::load::Measured;
use crate::shapes::ModelShape;
use crate::shm_object::ShmObject;
use bytes::Bytes;
use hdrhistogram::Histogram;
use prost::Message;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tfgate_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tfgate_proto::inference::{model_infer_request as infer, ModelInferRequest};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tfgate_proto::tensorflow::serving::{ModelSpec, PredictRequest};
use tfgate_proto::tensorflow::TensorProto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// One of the five paths.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub enum Path {
    TfRest,
    TfGrpc,
    V2Binary,
    V2Grpc,
    V2Shm,
}

impl Path {
    pub const ALL: [Path; 5] = [
        Path::TfRest,
        Path::TfGrpc,
        Path::V2Binary,
        Path::V2Grpc,
        Path::V2Shm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Path::TfRest => "TF REST JSON",
            Path::TfGrpc => "TF gRPC",
            Path::V2Binary => "V2 HTTP binary",
            Path::V2Grpc => "V2 gRPC",
            Path::V2Shm => "V2 shared memory",
        }
    }

    /// gRPC paths' floors are a canned `Predict` service; HTTP paths' a canned hyper.
    pub fn grpc(self) -> bool {
        matches!(self, Path::TfGrpc | Path::V2Grpc)
    }
}

/// Whom a client talks to: tfgate, or a canned server answering the same sizes. Against
/// a canned server, V2 gRPC sends TF's `Predict` with the same input bytes (the canned
/// gRPC server is a `PredictionService`), and no shared-memory region is registered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Against {
    Tfgate,
    Canned,
}

/// An element type of the inputs the shapes feed (outputs are all float32).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dtype {
    Fp32,
    Int32,
}

impl Dtype {
    /// V2's datatype name.
    fn v2(self) -> &'static str {
        match self {
            Dtype::Fp32 => "FP32",
            Dtype::Int32 => "INT32",
        }
    }

    /// TensorFlow's `DataType` number.
    fn tf(self) -> i32 {
        match self {
            Dtype::Fp32 => 1,
            Dtype::Int32 => 3,
        }
    }

    /// The name `tfgate-worker --measure_input` takes.
    pub fn measure(self) -> &'static str {
        match self {
            Dtype::Fp32 => "float",
            Dtype::Int32 => "int32",
        }
    }
}

/// Python's `repr` of a float (what `json.dumps` writes): the shortest digits that read
/// back as the same value, in positional notation for decimal exponents -4 to 15 (with
/// `.0` on whole numbers), else scientific with a signed exponent of at least two digits.
/// A float32 array's `tolist()` widens each value to a float64 first; so does the caller.
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{v:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// `items` (row-major) as nested JSON lists of `dims`, with `json.dumps`' `", "`.
pub fn nested_list(dims: &[i64], items: &[String]) -> String {
    fn write(out: &mut String, dims: &[i64], items: &mut std::slice::Iter<'_, String>) {
        out.push('[');
        let n = dims.first().copied().unwrap_or(0).max(0);
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            if dims.len() > 1 {
                write(out, &dims[1..], items);
            } else if let Some(item) = items.next() {
                out.push_str(item);
            }
        }
        out.push(']');
    }
    let mut out = String::with_capacity(items.iter().map(|s| s.len() + 2).sum::<usize>() + 16);
    write(&mut out, dims, &mut items.iter());
    out
}

/// Deterministic pseudo-random numbers (splitmix64), the same in every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The input's bytes (little-endian) and its elements as Python spells them: float32 in
/// [0, 1) (an image's pixels scaled, say), or token ids below 1000.
fn input_values(shape: &ModelShape) -> (Bytes, Vec<String>) {
    let n = shape.input_shape.iter().product::<i64>().max(0) as usize;
    let mut rng = SplitMix(0x7f6a_7e00 + n as u64);
    let mut bytes = Vec::with_capacity(n * 4);
    let mut spelled = Vec::with_capacity(n);
    for _ in 0..n {
        match shape.dtype {
            Dtype::Fp32 => {
                let v = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
                bytes.extend_from_slice(&v.to_le_bytes());
                spelled.push(python_float(f64::from(v)));
            }
            Dtype::Int32 => {
                let v = (rng.next() % 1000) as i32;
                bytes.extend_from_slice(&v.to_le_bytes());
                spelled.push(v.to_string());
            }
        }
    }
    (Bytes::from(bytes), spelled)
}

/// A whole HTTP/1.1 request, head and body.
fn http_request(path: &str, content_type: &str, extra: &str, body: &[u8]) -> Bytes {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    Bytes::from(r)
}

/// What every path sends for one shape, built once.
pub struct Payload {
    model: String,
    output: String,
    input_shape: Vec<i64>,
    dtype: Dtype,
    input_name: String,
    /// The input tensor's bytes.
    input: Bytes,
    output_bytes: usize,
    rest: Bytes,
    v2_binary: Bytes,
    predict: PredictRequest,
    infer: ModelInferRequest,
}

impl Payload {
    pub fn new(shape: &ModelShape) -> Payload {
        let (input, spelled) = input_values(shape);
        let rest_body = format!(
            "{{\"instances\": {}}}",
            nested_list(&shape.input_shape, &spelled)
        );
        let rest = http_request(
            &format!("/v1/models/{}:predict", shape.name),
            "application/json",
            "",
            rest_body.as_bytes(),
        );
        let head = json!({
            "inputs": [{
                "name": shape.input, "datatype": shape.dtype.v2(), "shape": shape.input_shape,
                "parameters": {"binary_data_size": input.len()},
            }],
            "outputs": [{"name": shape.output, "parameters": {"binary_data": true}}],
        })
        .to_string();
        let mut body = head.clone().into_bytes();
        body.extend_from_slice(&input);
        let v2_binary = http_request(
            &format!("/v2/models/{}/infer", shape.name),
            "application/octet-stream",
            &format!("Inference-Header-Content-Length: {}\r\n", head.len()),
            &body,
        );
        let tensor = TensorProto {
            dtype: shape.dtype.tf(),
            tensor_content: input.clone(),
            ..tfgate_e2e::float_tensor(&shape.input_shape, &[])
        };
        let predict = PredictRequest {
            model_spec: Some(ModelSpec {
                name: shape.name.into(),
                ..Default::default()
            }),
            inputs: [(shape.input.to_string(), tensor)].into_iter().collect(),
            ..Default::default()
        };
        let infer = ModelInferRequest {
            model_name: shape.name.into(),
            inputs: vec![infer::InferInputTensor {
                name: shape.input.into(),
                datatype: shape.dtype.v2().into(),
                shape: shape.input_shape.clone(),
                ..Default::default()
            }],
            outputs: vec![infer::InferRequestedOutputTensor {
                name: shape.output.into(),
                ..Default::default()
            }],
            raw_input_contents: vec![input.clone()],
            ..Default::default()
        };
        Payload {
            model: shape.name.into(),
            output: shape.output.into(),
            input_shape: shape.input_shape.clone(),
            dtype: shape.dtype,
            input_name: shape.input.into(),
            input,
            output_bytes: shape.output_bytes(),
            rest,
            v2_binary,
            predict,
            infer,
        }
    }

    /// The V2 request naming the regions `regions` for its input and output.
    fn shm_request(&self, regions: &Regions) -> Bytes {
        let region = |name: &str, size: usize| json!({"shared_memory_region": name, "shared_memory_byte_size": size});
        let head = json!({
            "inputs": [{
                "name": self.input_name, "datatype": self.dtype.v2(), "shape": self.input_shape,
                "parameters": region(&regions.input_name, self.input.len()),
            }],
            "outputs": [{"name": self.output, "parameters": region(&regions.output_name, self.output_bytes)}],
        })
        .to_string();
        http_request(
            &format!("/v2/models/{}/infer", self.model),
            "application/json",
            "",
            head.as_bytes(),
        )
    }
}

/// One connection's pair of shared-memory regions: objects created and mapped here,
/// registered with tfgate under `input_name` and `output_name`.
pub struct Regions {
    input: ShmObject,
    output: ShmObject,
    input_name: String,
    output_name: String,
}

impl Regions {
    /// Creates the objects for a connection (named after this process and a counter).
    fn create(payload: &Payload) -> Result<Regions, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let object = |end: &str| format!("tfgate-bench-{}-{n}-{end}", std::process::id());
        Ok(Regions {
            input: ShmObject::create(&object("in"), payload.input.len())?,
            output: ShmObject::create(&object("out"), payload.output_bytes)?,
            input_name: format!("bench-{n}-in"),
            output_name: format!("bench-{n}-out"),
        })
    }

    /// Registers both with tfgate on `port` (blocking).
    fn register(&self, port: u16) -> Result<(), String> {
        for (name, object, size) in [
            (&self.input_name, &self.input, self.input.bytes().len()),
            (&self.output_name, &self.output, self.output.bytes().len()),
        ] {
            let body = json!({"key": object.key, "offset": 0, "byte_size": size}).to_string();
            let path = format!("/v2/systemsharedmemory/region/{name}/register");
            match tfgate_e2e::http(port, "POST", &path, &body) {
                Ok((200, _)) => {}
                Ok((status, body)) => {
                    return Err(format!("registering {name}: HTTP {status} {body}"))
                }
                Err(e) => return Err(format!("registering {name}: {e}")),
            }
        }
        Ok(())
    }
}

/// Unregisters the regions `names` from tfgate on `port` (blocking; failures ignored:
/// the server is about to be stopped anyway).
pub fn unregister(port: u16, names: &[String]) {
    for name in names {
        let path = format!("/v2/systemsharedmemory/region/{name}/unregister");
        let _ = tfgate_e2e::http(port, "POST", &path, "");
    }
}

/// One exchange's sizes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Exchange {
    /// The request on the wire: the whole HTTP/1.1 message, or the gRPC message with its
    /// 5-byte frame prefix (HTTP/2 headers not counted).
    pub request_bytes: usize,
    /// The response, counted the same way.
    pub response_bytes: usize,
    /// The HTTP response's body (a canned floor answers this many bytes); gRPC: 0.
    pub response_body_bytes: usize,
    /// The output tensor's bytes where the answer shows them (not TF REST's JSON).
    pub output_bytes: Option<usize>,
}

/// A keep-alive HTTP/1.1 connection sending one request over and over.
pub struct HttpConn {
    stream: tokio::net::TcpStream,
    request: Bytes,
    buf: Vec<u8>,
    /// Where the last answer's body starts in `buf`.
    body_at: usize,
}

impl HttpConn {
    async fn connect(port: u16, request: Bytes) -> Result<HttpConn, String> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(HttpConn {
            stream,
            request,
            buf: Vec::with_capacity(1 << 16),
            body_at: 0,
        })
    }

    async fn read_more(&mut self) -> Result<(), String> {
        if self.buf.capacity() - self.buf.len() < 1 << 14 {
            self.buf.reserve(1 << 16);
        }
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(())
    }

    /// Sends the request and reads the whole answer; returns its status and sizes.
    async fn exchange(&mut self) -> Result<(u16, Exchange), String> {
        self.stream
            .write_all(&self.request)
            .await
            .map_err(|e| e.to_string())?;
        self.buf.clear();
        let mut searched: usize = 0;
        let head_len = loop {
            self.read_more().await?;
            let from = searched.saturating_sub(3);
            if let Some(i) = self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                break from + i + 4;
            }
            searched = self.buf.len();
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<usize>().ok())
        };
        let body_len = header("content-length:").ok_or("an answer with no content-length")?;
        let json_len = header("inference-header-content-length:");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("a malformed status line")?;
        let total = head_len + body_len;
        self.buf.reserve(total.saturating_sub(self.buf.len()));
        while self.buf.len() < total {
            self.read_more().await?;
        }
        self.body_at = head_len;
        Ok((
            status,
            Exchange {
                request_bytes: self.request.len(),
                response_bytes: total,
                response_body_bytes: body_len,
                output_bytes: json_len.map(|j| body_len.saturating_sub(j)),
            },
        ))
    }

    /// The last answer's body.
    fn body(&self) -> &[u8] {
        &self.buf[self.body_at.min(self.buf.len())..]
    }
}

/// One connection's client, of one path.
pub enum Client {
    /// TF REST and V2 HTTP; with regions for V2 shared memory (and the buffer the output
    /// is copied into).
    Http(HttpConn, Option<(Regions, Vec<u8>)>, Bytes),
    TfGrpc(PredictionServiceClient<Channel>, PredictRequest),
    V2Grpc(GrpcInferenceServiceClient<Channel>, ModelInferRequest),
}

impl Client {
    async fn connect(
        path: Path,
        port: u16,
        against: Against,
        payload: &Payload,
        regions: Option<Regions>,
    ) -> Result<Client, String> {
        let url = format!("http://127.0.0.1:{port}");
        let grpc_error = |e: tonic::transport::Error| format!("connect: {e}");
        Ok(match (path, against) {
            (Path::TfGrpc, _) | (Path::V2Grpc, Against::Canned) => Client::TfGrpc(
                PredictionServiceClient::connect(url)
                    .await
                    .map_err(grpc_error)?
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
                payload.predict.clone(),
            ),
            (Path::V2Grpc, Against::Tfgate) => Client::V2Grpc(
                GrpcInferenceServiceClient::connect(url)
                    .await
                    .map_err(grpc_error)?
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
                payload.infer.clone(),
            ),
            (Path::TfRest, _) => Client::Http(
                HttpConn::connect(port, payload.rest.clone()).await?,
                None,
                payload.input.clone(),
            ),
            (Path::V2Binary, _) => Client::Http(
                HttpConn::connect(port, payload.v2_binary.clone()).await?,
                None,
                payload.input.clone(),
            ),
            (Path::V2Shm, _) => {
                let regions = regions.ok_or("the shared-memory path needs regions")?;
                let request = payload.shm_request(&regions);
                let out = Vec::with_capacity(payload.output_bytes);
                Client::Http(
                    HttpConn::connect(port, request).await?,
                    Some((regions, out)),
                    payload.input.clone(),
                )
            }
        })
    }

    /// One request, answered with status 200 (gRPC: OK).
    pub async fn call(&mut self) -> Result<Exchange, String> {
        match self {
            Client::Http(conn, regions, input) => {
                if let Some((r, _)) = regions {
                    r.input.bytes_mut().copy_from_slice(input);
                }
                let (status, exchange) = conn.exchange().await?;
                if status != 200 {
                    let body = String::from_utf8_lossy(conn.body());
                    return Err(format!("HTTP {status}: {body}"));
                }
                if let Some((r, out)) = regions {
                    out.clear();
                    out.extend_from_slice(r.output.bytes());
                }
                Ok(exchange)
            }
            Client::TfGrpc(client, request) => {
                let answer = client
                    .predict(request.clone())
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                    .into_inner();
                Ok(Exchange {
                    request_bytes: request.encoded_len() + 5,
                    response_bytes: answer.encoded_len() + 5,
                    response_body_bytes: 0,
                    output_bytes: answer
                        .outputs
                        .values()
                        .next()
                        .map(|t| t.tensor_content.len().max(t.float_val.len() * 4)),
                })
            }
            Client::V2Grpc(client, request) => {
                let answer = client
                    .model_infer(request.clone())
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                    .into_inner();
                Ok(Exchange {
                    request_bytes: request.encoded_len() + 5,
                    response_bytes: answer.encoded_len() + 5,
                    response_body_bytes: 0,
                    output_bytes: answer.raw_output_contents.first().map(Bytes::len),
                })
            }
        }
    }

    /// After a call of the shared-memory path: the output's bytes by the shape its answer
    /// names (over HTTP an output written to a region carries no `parameters`), and the
    /// output region's bytes.
    fn shm_output(&self) -> Option<(usize, &[u8])> {
        let Client::Http(conn, Some((regions, _)), _) = self else {
            return None;
        };
        let answer: Value = serde_json::from_slice(conn.body()).ok()?;
        let shape = answer["outputs"][0]["shape"].as_array()?;
        let elements = shape.iter().map(Value::as_u64).product::<Option<u64>>()?;
        Some((elements as usize * 4, regions.output.bytes()))
    }
}

/// Connects `conns` clients of `path` to `port`. The shared-memory path's regions (one
/// pair per connection) are created here, and registered when `against` is tfgate;
/// call [`unregister`] with `regions` afterwards, also when this fails.
pub fn connect(
    rt: &tokio::runtime::Runtime,
    path: Path,
    port: u16,
    against: Against,
    payload: &Payload,
    conns: usize,
) -> (Result<Vec<Client>, String>, Vec<String>) {
    let mut names = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..conns {
        let regions = if path == Path::V2Shm {
            let regions = match Regions::create(payload) {
                Ok(r) => r,
                Err(e) => return (Err(e), names),
            };
            if against == Against::Tfgate {
                names.push(regions.input_name.clone());
                names.push(regions.output_name.clone());
                if let Err(e) = regions.register(port) {
                    return (Err(e), names);
                }
            }
            Some(regions)
        } else {
            None
        };
        match rt.block_on(Client::connect(path, port, against, payload, regions)) {
            Ok(c) => clients.push(c),
            Err(e) => return (Err(e), names),
        }
    }
    (Ok(clients), names)
}

/// One checked exchange of `path` with tfgate: its sizes, with the output's byte size
/// checked against the model's (where the answer shows it) and, for the shared-memory
/// path, the shape the answer names and an output region that was written.
pub fn probe(
    rt: &tokio::runtime::Runtime,
    path: Path,
    port: u16,
    payload: &Payload,
) -> Result<Exchange, String> {
    let (clients, names) = connect(rt, path, port, Against::Tfgate, payload, 1);
    let result = clients.and_then(|mut clients| {
        let client = clients.first_mut().ok_or("no client")?;
        let exchange = rt.block_on(client.call())?;
        if let Some(n) = exchange.output_bytes {
            if n != payload.output_bytes {
                return Err(format!(
                    "the answer's output has {n} bytes, the model's has {}",
                    payload.output_bytes
                ));
            }
        }
        if path == Path::V2Shm {
            let (n, bytes) = client
                .shm_output()
                .ok_or("the answer names no output shape")?;
            if n != payload.output_bytes {
                return Err(format!(
                    "the answer's output has {n} bytes, the model's has {}",
                    payload.output_bytes
                ));
            }
            if bytes.iter().all(|&b| b == 0) {
                return Err("the output region was left all zero".into());
            }
        }
        Ok(exchange)
    });
    unregister(port, &names);
    result
}

/// Runs the connected `clients` in closed loops for `warmup`, then `seconds` measured.
pub async fn drive(clients: Vec<Client>, warmup: Duration, seconds: Duration) -> Measured {
    let warm_until = Instant::now() + warmup;
    let stop_at = warm_until + seconds;
    let mut tasks = Vec::new();
    for mut client in clients {
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("a 3-digit histogram is valid");
            let (mut total, mut failed) = (0u64, 0u64);
            let mut first_error = None;
            while Instant::now() < stop_at {
                let t = Instant::now();
                let result = client.call().await;
                total += 1;
                match result {
                    Ok(_) if t >= warm_until => {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                        // A broken HTTP connection stays broken; stop rather than spin.
                        if matches!(client, Client::Http(..)) {
                            break;
                        }
                    }
                }
            }
            (hist, total, failed, first_error)
        }));
    }
    crate::load::gather(tasks, seconds).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_python_spells_them() {
        // Each expected string is Python's repr(float(np.float32(x))) or repr(x).
        assert_eq!(python_float(f64::from(0.1f32)), "0.10000000149011612");
        assert_eq!(python_float(f64::from(0.5f32)), "0.5");
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(-0.0), "-0.0");
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(1.5e-5), "1.5e-05");
        assert_eq!(
            python_float(f64::from(5.9604645e-8f32)),
            "5.960464477539063e-08"
        );
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(123456789012345.0), "123456789012345.0");
        assert_eq!(python_float(-2.5e-300), "-2.5e-300");
    }

    #[test]
    fn nested_lists_follow_the_shape() {
        let items: Vec<String> = (0..6).map(|i| i.to_string()).collect();
        assert_eq!(nested_list(&[1, 2, 3], &items), "[[[0, 1, 2], [3, 4, 5]]]");
        assert_eq!(nested_list(&[6], &items), "[0, 1, 2, 3, 4, 5]");
    }

    #[test]
    fn an_image_body_is_python_sized() {
        // 150528 values in [0, 1): each some 19 characters as Python writes them.
        let image = crate::shapes::catalog("image").expect("image is a shape");
        let (bytes, spelled) = input_values(&image);
        assert_eq!(bytes.len(), 224 * 224 * 3 * 4);
        let body = nested_list(&image.input_shape, &spelled);
        assert!(
            (3_000_000..3_400_000).contains(&body.len()),
            "{}",
            body.len()
        );
        let tokens = crate::shapes::catalog("sequence").expect("sequence is a shape");
        let (_, ids) = input_values(&tokens);
        assert!(ids.iter().all(|i| i.parse::<u32>().is_ok_and(|i| i < 1000)));
    }
}
