//! gRPC listeners: TCP on `--port` (0: none) and a Unix socket at `--grpc_socket_path`,
//! each serving the same services, over TLS when `--ssl_config_file` says so, with TF
//! Serving's message size limit (INT32_MAX) unless `--grpc_channel_arguments` sets one,
//! until the server closes.

use super::channel_args::ChannelArgs;
use super::GrpcServices;
use crate::tls::Tls;
use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use tfgate_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
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
    /// Places under `--max_connections`, shared with REST.
    pub connections: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Serves every listener until `closed` resolves; one task per listener.
pub fn serve(
    listeners: Listeners,
    services: GrpcServices,
    health: Option<HealthServer<HealthService>>,
    options: ServeOptions<'_>,
    closed: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<Vec<JoinHandle<Result<(), tonic::transport::Error>>>> {
    let args = options.args;
    let router = || -> anyhow::Result<_> {
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(args.max_concurrent_streams)
            .http2_keepalive_interval(args.keepalive_time)
            .http2_keepalive_timeout(args.keepalive_timeout)
            .max_frame_size(args.max_frame_size);
        if let Some(age) = args.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        if let Some(grace) = args.max_connection_age_grace {
            builder = builder.max_connection_age_grace(grace);
        }
        if let Some(tls) = options.tls {
            builder = builder
                .tls_config(tls.grpc())
                .context("cannot use --ssl_config_file for gRPC")?;
        }
        Ok(builder
            .layer(super::status_codes::TfStatusCodes)
            .add_optional_service(health.clone())
            .add_service(
                // The send limit is `GrpcServices::respond`'s, in gRPC C++'s words.
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
                GrpcInferenceServiceServer::new(services.v2.clone())
                    .max_decoding_message_size(args.max_receive_message_length)
                    .max_encoding_message_size(usize::MAX),
            ))
    };
    let mut tasks = Vec::new();
    if let Some(tcp) = listeners.tcp {
        tasks.push(tokio::spawn(router()?.serve_with_incoming_shutdown(
            tcp_incoming(tcp, options.connections.clone()),
            closed(),
        )));
    }
    if let Some(uds) = listeners.uds {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(uds);
        if options.tls.is_some() {
            tasks.push(tokio::spawn(
                router()?.serve_with_incoming_shutdown(incoming, closed()),
            ));
        } else {
            // Plaintext: C-core clients' socket-path `:authority` made acceptable.
            use tokio_stream::StreamExt;
            let shimmed = incoming.map(|conn| conn.map(super::uds_authority::shim));
            tasks.push(tokio::spawn(
                router()?.serve_with_incoming_shutdown(shimmed, closed()),
            ));
        }
    }
    Ok(tasks)
}

/// Accepted gRPC connections, with Nagle's algorithm off (else a response waits for the
/// client's delayed ACK: ~40 ms per request with payloads over one segment).
fn tcp_incoming(
    listener: tokio::net::TcpListener,
    places: std::sync::Arc<tokio::sync::Semaphore>,
) -> impl tokio_stream::Stream<Item = std::io::Result<crate::linger::LingerStream>> {
    futures_util::stream::unfold((listener, places), |(listener, places)| async move {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => return Some((Err(e), (listener, places))),
        };
        // At `--max_connections` this one waits for a place, and the next ones wait in the
        // backlog. (Taken after the accept: one held in advance would be a place no
        // connection uses.)
        let place = places.clone().acquire_owned().await.ok()?;
        let conn = conn.set_nodelay(true).map(|()| {
            // Closed first by the server (a drain's GOAWAY), it lingers: see `linger`.
            crate::linger::LingerStream::new(conn, Some(place))
        });
        Some((conn, (listener, places)))
    })
}
