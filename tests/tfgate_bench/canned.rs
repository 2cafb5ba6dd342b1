//! The HTTP ceilings: the stacks tfgate serves with, answering a canned predict response
//! with no model behind it, so that a run measures only the client, the HTTP stack and the
//! loopback. REST is hyper with tfgate's connection builder; gRPC is tonic answering a
//! canned `PredictResponse`. The bench re-executes itself as one of them
//! (`--serve-canned-rest=PORT` / `--serve-canned-grpc=PORT`).

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
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    runtime(shape.threads).block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| crate::fail(&format!("cannot bind {port}: {e}")));
        let body = rest_body(shape);
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

/// tonic, with Nagle off as tfgate's listener has it, answering the canned response.
pub fn serve_grpc(port: u16, shape: CannedShape) {
    let tensor = tfgate_e2e::float_tensor(
        &[shape.rows as i64, shape.width as i64],
        &vec![0.0123456; shape.rows * shape.width],
    );
    let response = pb::PredictResponse {
        model_spec: Some(ModelSpec {
            name: "canned".into(),
            signature_name: "serving_default".into(),
            version_choice: Some(pb::model_spec::VersionChoice::Version(1)),
        }),
        outputs: [("y".to_string(), tensor)].into_iter().collect(),
    };
    runtime(shape.threads).block_on(async move {
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
