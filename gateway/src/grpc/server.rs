//! gRPC listeners: TCP on `--port` (0: none) and a Unix socket at `--grpc_socket_path`,
//! each serving the same services, with TF Serving's message size limit (INT32_MAX),
//! until the server closes.

use super::GrpcServices;
use anyhow::Context;
use std::net::SocketAddr;
use tfgate_proto::tensorflow::serving::{
    model_service_server::ModelServiceServer, prediction_service_server::PredictionServiceServer,
};
use tokio::task::JoinHandle;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

/// The bound listeners.
pub struct Listeners {
    tcp: Option<tokio::net::TcpListener>,
    uds: Option<tokio::net::UnixListener>,
}

/// Binds what the flags ask for; neither is TF Serving's startup error.
pub async fn bind(port: u16, socket_path: &str) -> anyhow::Result<Listeners> {
    if port == 0 && socket_path.is_empty() {
        return Err(crate::error::ServingError::invalid_argument(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.",
        )
        .into());
    }
    let tcp = if port == 0 {
        None
    } else {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind gRPC port {addr}"))?;
        tracing::info!("Running gRPC ModelServer at 0.0.0.0:{port} ...");
        Some(l)
    };
    let uds = if socket_path.is_empty() {
        None
    } else {
        // A socket file left by an earlier server would make bind fail.
        let _ = std::fs::remove_file(socket_path);
        let l = tokio::net::UnixListener::bind(socket_path)
            .with_context(|| format!("cannot bind gRPC socket {socket_path}"))?;
        tracing::info!("Running gRPC ModelServer at unix:{socket_path} ...");
        Some(l)
    };
    Ok(Listeners { tcp, uds })
}

/// Serves every listener until `closed` resolves; one task per listener.
pub fn serve(
    listeners: Listeners,
    services: GrpcServices,
    health: Option<HealthServer<HealthService>>,
    closed: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> Vec<JoinHandle<Result<(), tonic::transport::Error>>> {
    let router = || {
        tonic::transport::Server::builder()
            .add_optional_service(health.clone())
            .add_service(
                PredictionServiceServer::new(services.clone())
                    .max_decoding_message_size(i32::MAX as usize)
                    .max_encoding_message_size(i32::MAX as usize),
            )
            .add_service(
                ModelServiceServer::new(services.clone())
                    .max_decoding_message_size(i32::MAX as usize)
                    .max_encoding_message_size(i32::MAX as usize),
            )
    };
    let mut tasks = Vec::new();
    if let Some(tcp) = listeners.tcp {
        tasks.push(tokio::spawn(
            router().serve_with_incoming_shutdown(tcp_incoming(tcp), closed()),
        ));
    }
    if let Some(uds) = listeners.uds {
        tasks.push(tokio::spawn(router().serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(uds),
            closed(),
        )));
    }
    tasks
}

/// Accepted gRPC connections, with Nagle's algorithm off (else a response waits for the
/// client's delayed ACK: ~40 ms per request with payloads over one segment).
fn tcp_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
