//! The HTTP ceilings: the stacks tfgate serves with, answering a canned predict response
//! with no model behind it, so that a run measures only the client, the HTTP stack and the
//! loopback. REST is hyper with tfgate's connection builder; gRPC is tonic answering a
//! canned `PredictResponse`. The bench re-executes itself as one of them
//! (`--serve-canned-rest=PORT` / `--serve-canned-grpc=PORT`, [`start`]).
//!
//! `--shapes` has floors of its own, sized to tfgate's answers on each path:
//! `--serve-canned-http-bytes=PORT` answers every HTTP request with
//! `--canned_response_bytes` bytes, `--serve-canned-grpc-bytes=PORT` every `Predict`
//! with one tensor whose `tensor_content` holds that many bytes.

use tfgate_proto::tensorflow::serving::prediction_service_server::{
    PredictionService, PredictionServiceServer,
};
use tfgate_proto::tensorflow::serving::{self as pb, ModelSpec};
use tonic::{Request, Response, Status};

/// What the canned answers hold: `rows` rows of `width` floats, like the MLP's output.
#[derive(Clone, Copy)]
pub struct CannedShape {
    pub rows: usize,
    pub width: usize,
    /// `--gateway_threads` of the served runs, so that the stack runs as tfgate's does.
    pub threads: usize,
}

/// The runtime tfgate serves with: `--gateway_threads` threads, 0 meaning half the cores
/// (at least one), as in `gateway/src/config.rs`.
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let threads = if threads > 0 {
        threads
    } else {
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| crate::fail(&format!("cannot start a runtime: {e}")))
}

/// The REST answer, in TF Serving's row format and float spelling.
fn rest_body(shape: CannedShape) -> bytes::Bytes {
    let row = format!("[{}]", vec!["0.0123456"; shape.width].join(", "));
    bytes::Bytes::from(format!(
        "{{\n    \"predictions\": [{}\n    ]\n}}",
        vec![row; shape.rows].join(", ")
    ))
}

/// hyper, with the builder tfgate uses, answering every request with `rest_body`.
pub fn serve_rest(port: u16, shape: CannedShape) {
    serve_http(port, shape.threads, rest_body(shape));
}

/// hyper answering every request with `bytes` bytes of JSON-looking filler (blanks in a
/// string), status 200: `--shapes`' HTTP floor, sized to tfgate's answer on the path.
pub fn serve_http_bytes(port: u16, bytes: usize, threads: usize) {
    let mut body = vec![b' '; bytes];
    if let [first, .., last] = body.as_mut_slice() {
        (*first, *last) = (b'"', b'"');
    }
    serve_http(port, threads, bytes::Bytes::from(body));
}

/// hyper, with the builder tfgate uses, reading each request's body and answering `body`.
fn serve_http(port: u16, threads: usize, body: bytes::Bytes) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    runtime(threads).block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| crate::fail(&format!("cannot bind {port}: {e}")));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let _ = req.into_body().collect().await;
                            let mut resp = hyper::Response::new(Full::new(body));
                            resp.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// tonic's PredictionService answering every Predict with the same response, the shape
/// tfgate answers the MLP with (typed `float_val`, the version and signature named).
struct Canned {
    response: pb::PredictResponse,
}

#[tonic::async_trait]
impl PredictionService for Canned {
    async fn classify(
        &self,
        _: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn regress(
        &self,
        _: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn predict(
        &self,
        _: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }
    async fn multi_inference(
        &self,
        _: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn get_model_metadata(
        &self,
        _: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
}

/// tonic answering the MLP's canned response.
pub fn serve_grpc(port: u16, shape: CannedShape) {
    let tensor = tfgate_e2e::float_tensor(
        &[shape.rows as i64, shape.width as i64],
        &vec![0.0123456; shape.rows * shape.width],
    );
    serve_predict(port, shape.threads, answer(tensor));
}

/// A Predict answer holding `tensor` as `y`, the version and signature named.
fn answer(tensor: tfgate_proto::tensorflow::TensorProto) -> pb::PredictResponse {
    pb::PredictResponse {
        model_spec: Some(ModelSpec {
            name: "canned".into(),
            signature_name: "serving_default".into(),
            version_choice: Some(pb::model_spec::VersionChoice::Version(1)),
        }),
        outputs: [("y".to_string(), tensor)].into_iter().collect(),
    }
}

/// tonic answering every Predict with one float32 tensor of `bytes` bytes in
/// `tensor_content` (as tfgate answers large outputs): `--shapes`' gRPC floor.
pub fn serve_grpc_bytes(port: u16, bytes: usize, threads: usize) {
    let tensor = tfgate_proto::tensorflow::TensorProto {
        tensor_content: vec![0x3c; bytes].into(),
        ..tfgate_e2e::float_tensor(&[1, (bytes / 4) as i64], &[])
    };
    serve_predict(port, threads, answer(tensor));
}

/// tonic, with Nagle off as tfgate's listener has it, answering `response` to every Predict.
fn serve_predict(port: u16, threads: usize, response: pb::PredictResponse) {
    runtime(threads).block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| crate::fail(&format!("cannot bind {port}: {e}")));
        let incoming = nodelay_incoming(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(
                PredictionServiceServer::new(Canned { response })
                    .max_decoding_message_size(i32::MAX as usize)
                    .max_encoding_message_size(usize::MAX),
            )
            .serve_with_incoming(incoming)
            .await;
    });
}

/// Accepted connections with Nagle's algorithm off.
fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Starts a canned server (this binary re-executed with `flag=PORT` and `args`) on a free
/// port and waits until it accepts connections.
pub fn start(flag: &str, args: &[String]) -> (std::process::Child, u16) {
    let port = tfgate_e2e::free_port();
    let exe = std::env::current_exe().unwrap_or_else(|e| crate::fail(&format!("own path: {e}")));
    let child = std::process::Command::new(exe)
        .arg(format!("{flag}={port}"))
        .args(args)
        .spawn()
        .unwrap_or_else(|e| crate::fail(&format!("cannot start the canned server: {e}")));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, port)
}
