//! gRPC listeners: TCP on `--port` (0: none) and a Unix socket at `--grpc_socket_path`,
//! each serving the same services (TF Serving's and KServe V2's, side by side), over TLS
//! when `--ssl_config_file` says so, with TF Serving's message size limit (INT32_MAX)
//! unless `--grpc_channel_arguments` sets one, until the server closes. Connections live
//! on the listeners' shared accept loop (`crate::listener`), bounded by gRPC C++'s
//! channel arguments: `grpc.server_handshake_timeout_ms`, `grpc.max_connection_idle_ms`,
//! `grpc.max_connection_age_ms` and its grace, keepalive.

use crate::grpc::channel_args::ChannelArgs;
use crate::grpc::GrpcServices;
use crate::listener::{H2Settings, Limits, Listener, Port};
use crate::tls::Tls;
use crate::v2::grpc::InferenceService;
use anyhow::Context;
use hyper_util::service::TowerToHyperService;
use std::net::{IpAddr, SocketAddr};
use tfgate_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tfgate_proto::tensorflow::serving::{
    model_service_server::ModelServiceServer, prediction_service_server::PredictionServiceServer,
};
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower_layer::Layer;

/// The bound listeners.
pub struct Listeners {
    tcp: Option<tokio::net::TcpListener>,
    uds: Option<tokio::net::UnixListener>,
}

/// Binds what the flags ask for (TCP on `address`); neither is TF Serving's startup error.
pub async fn bind(address: IpAddr, port: u16, socket_path: &str) -> anyhow::Result<Listeners> {
    if port == 0 && socket_path.is_empty() {
        return Err(crate::error::ServingError::invalid_argument(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.",
        )
        .into());
    }
    let tcp = if port == 0 {
        None
    } else {
        let addr = SocketAddr::new(address, port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind gRPC port {addr}"))?;
        tracing::info!("Running gRPC ModelServer at {addr} ...");
        Some(l)
    };
    let uds = if socket_path.is_empty() {
        None
    } else {
        // A socket already there would make bind fail; nothing else is removed.
        crate::stale_socket::clear_for_bind(
            "--grpc_socket_path",
            std::path::Path::new(socket_path),
            crate::stale_socket::Live::Replace,
        )
        .map_err(crate::error::ServingError::failed_precondition)?;
        let l = tokio::net::UnixListener::bind(socket_path)
            .with_context(|| format!("cannot bind gRPC socket {socket_path}"))?;
        tracing::info!("Running gRPC ModelServer at unix:{socket_path} ...");
        Some(l)
    };
    Ok(Listeners { tcp, uds })
}

/// How the listeners serve: TLS or not, and the channel arguments.
pub struct ServeOptions<'a> {
    pub tls: Option<&'a Tls>,
    pub args: &'a ChannelArgs,
    /// `--connection_write_timeout_ms`.
    pub write_stall: Option<std::time::Duration>,
    /// Places under `--max_connections`, shared with REST.
    pub connections: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Serves every listener until the phase turns `Closed`; one task per listener, each
/// ending once its connections have closed.
pub fn serve(
    listeners: Listeners,
    services: GrpcServices,
    v2: InferenceService,
    health: Option<HealthServer<HealthService>>,
    options: ServeOptions<'_>,
    lifecycle: &crate::lifecycle::Lifecycle,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let args = options.args;
    let limits = Limits {
        handshake: args.server_handshake_timeout,
        // gRPC never speaks HTTP/1.
        header: None,
        idle: args.max_connection_idle,
        write_stall: options.write_stall,
        max_age: args.max_connection_age,
        max_age_grace: args.max_connection_age_grace,
        keepalive_time: args.keepalive_time,
        keepalive_timeout: args.keepalive_timeout,
    };
    let h2 = H2Settings {
        max_concurrent_streams: args.max_concurrent_streams,
        max_frame_size: args.max_frame_size,
    };
    let http = std::sync::Arc::new(crate::listener::connection::builder(&limits, true, &h2));
    // TF Serving's services and V2's side by side, knowing nothing of each other. The
    // send limit is `edge::within_send_limit`'s, in gRPC C++'s words.
    let mut routes = Routes::new(
        PredictionServiceServer::new(services.clone())
            .max_decoding_message_size(args.max_receive_message_length)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        ModelServiceServer::new(services.clone())
            .max_decoding_message_size(args.max_receive_message_length)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(
        GrpcInferenceServiceServer::new(v2)
            .max_decoding_message_size(args.max_receive_message_length)
            .max_encoding_message_size(usize::MAX),
    );
    if let Some(health) = health {
        routes = routes.add_service(health);
    }
    let service = crate::grpc::status_codes::TfStatusCodes.layer(routes.prepare());
    let make = move || TowerToHyperService::new(service.clone());
    let tls = options.tls.map(Tls::grpc);
    let mut tasks = Vec::new();
    let mut add = |listener: Listener, name: &'static str, shim: bool| {
        let port = Port {
            name,
            tls: tls.clone(),
            limits: limits.clone(),
            http: http.clone(),
            service: make.clone(),
            uds_authority_shim: shim,
        };
        tasks.push(tokio::spawn(port.serve(
            listener,
            lifecycle.subscribe(),
            options.connections.clone(),
        )));
    };
    if let Some(tcp) = listeners.tcp {
        add(Listener::Tcp(tcp), "gRPC", false);
    }
    if let Some(uds) = listeners.uds {
        // Plaintext: C-core clients' socket-path `:authority` made acceptable.
        add(Listener::Unix(uds), "gRPC socket", true);
    }
    Ok(tasks)
}
