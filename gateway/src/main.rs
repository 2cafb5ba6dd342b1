//! tfgate: flags → workers → wait for the models → serve gRPC and REST → drain.
//!
//! The gateway never links TensorFlow: each `tfgate-worker` process owns the sessions,
//! and tensors travel between them through shared memory (see docs/architecture.md).
#![forbid(unsafe_code)]

mod classifier;
mod config;
mod error;
mod grpc;
mod predictor;
mod rest;
mod servables;
mod status;
mod validation;
mod workers;

use anyhow::Context;
use config::Flags;
use hyper_util::rt::{TokioExecutor, TokioIo};
use predictor::Predictor;
use servables::Servables;
use shm_protocol::control::{ModelConfig, ServableState, SessionConfig, VersionPolicy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tfgate_proto::tensorflow::serving::{
    model_service_server::ModelServiceServer, prediction_service_server::PredictionServiceServer,
};
use workers::{SupervisorConfig, WorkerPool};

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A private directory for the worker sockets, removed on exit.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn create() -> anyhow::Result<RuntimeDir> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("tfgate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(RuntimeDir(dir))
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The worker binary (`--worker_binary`, else beside `tfgate`), checked up front: without
/// it the supervisor could only retry forever.
fn worker_binary(flags: &Flags) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = match &flags.worker_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("cannot locate tfgate")?
            .with_file_name("tfgate-worker"),
    };
    let meta = std::fs::metadata(&path).with_context(|| {
        format!(
            "worker binary {} not found (set --worker_binary)",
            path.display()
        )
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        anyhow::bail!(
            "worker binary {} is not an executable file (set --worker_binary)",
            path.display()
        );
    }
    Ok(path)
}

fn absolute(path: &str) -> anyhow::Result<String> {
    let p = Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs.to_string_lossy().into_owned())
}

/// Waits until every model has an AVAILABLE version, or fails like TF Serving when a load
/// fails.
async fn wait_until_available(servables: &Servables, models: &[ModelConfig]) -> anyhow::Result<()> {
    let mut changes = servables.subscribe();
    loop {
        let mut pending = 0;
        let mut failed = Vec::new();
        for m in models {
            let versions = servables.versions(&m.name).unwrap_or_default();
            if versions
                .values()
                .any(|v| v.state == ServableState::Available)
            {
                continue;
            }
            pending += 1;
            for (v, s) in &versions {
                if let (ServableState::End, Some((_, msg))) = (s.state, &s.error) {
                    failed.push(format!(
                        "{{name: {} version: {v}}} due to error: {msg}",
                        m.name
                    ));
                }
            }
        }
        if !failed.is_empty() {
            anyhow::bail!(
                "UNKNOWN: {} servable(s) did not become available: {{{}}}",
                failed.len(),
                failed.join(", ")
            );
        }
        if pending == 0 {
            return Ok(());
        }
        changes.changed().await.context("workers stopped")?;
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

async fn serve_rest(addr: SocketAddr, api: rest::RestApi) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind REST port {addr}"))?;
    tracing::info!("Exporting HTTP/REST API at:localhost:{} ...", addr.port());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    flags.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime_dir = RuntimeDir::create()?;
    let models = vec![ModelConfig {
        name: flags.model_name.clone(),
        base_path: absolute(&flags.model_base_path)?,
        version_policy: VersionPolicy::Latest { num_versions: 1 },
    }];
    let servables = Servables::default();
    let segment = shm_protocol::SegmentConfig {
        request_arena_bytes: (flags.shm_request_arena_mb as u64) << 20,
        response_arena_bytes: (flags.shm_response_arena_mb as u64) << 20,
        spin: shm_protocol::SpinConfig {
            spin: Duration::from_micros(flags.shm_spin_us),
        },
        ..Default::default()
    };
    let (pool, mut startup_failed) = WorkerPool::start(vec![SupervisorConfig {
        slot: 0,
        worker_binary: worker_binary(&flags)?,
        socket_path: runtime_dir.0.join("worker-0.sock"),
        segment,
        models: models.clone(),
        session: SessionConfig {
            tags: flags.tags(),
            intra_op_parallelism: flags.tensorflow_intra_op_parallelism,
            inter_op_parallelism: flags.tensorflow_inter_op_parallelism,
        },
        file_system_poll_wait_seconds: flags.file_system_poll_wait_seconds,
        servables: servables.clone(),
    }]);

    tokio::select! {
        r = wait_until_available(&servables, &models) => r?,
        r = startup_failed.wait_for(Option::is_some) => {
            let why = r.ok().and_then(|w| w.clone()).unwrap_or_default();
            anyhow::bail!("{why}");
        }
        _ = shutdown_signal() => return Ok(()),
    }
    let predictor = Predictor {
        servables,
        workers: pool,
    };

    let grpc = grpc::GrpcServices {
        predictor: predictor.clone(),
        tensor_content: flags.enable_serialization_as_tensor_content,
    };
    let grpc_addr = SocketAddr::from(([0, 0, 0, 0], flags.port));
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("cannot bind gRPC port {grpc_addr}"))?;
    tracing::info!("Running gRPC ModelServer at 0.0.0.0:{} ...", flags.port);
    // One stop signal for every listener; in-flight requests get a grace period, then the
    // process exits even if clients keep idle connections open.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc_server = tonic::transport::Server::builder()
        .add_service(
            PredictionServiceServer::new(grpc.clone())
                .max_decoding_message_size(i32::MAX as usize)
                .max_encoding_message_size(i32::MAX as usize),
        )
        .add_service(ModelServiceServer::new(grpc))
        .serve_with_incoming_shutdown(
            tokio_stream_incoming(grpc_listener),
            stopped(stop_rx.clone()),
        );

    if flags.rest_api_port != 0 && flags.rest_api_port != flags.port {
        let api = rest::RestApi {
            predictor,
            config: rest::RestConfig {
                timeout: Duration::from_millis(flags.rest_api_timeout_in_ms),
                max_body_bytes: flags.max_request_body_mb << 20,
                cors: flags.rest_api_enable_cors_support,
            },
        };
        tokio::spawn(serve_rest(
            SocketAddr::from(([0, 0, 0, 0], flags.rest_api_port)),
            api,
        ));
    } else if flags.rest_api_port == flags.port {
        tracing::error!("--rest_api_port cannot be the same as --port; not starting REST");
    }
    tokio::select! {
        r = grpc_server => r.context("gRPC server failed")?,
        _ = async {
            stopped(stop_rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
    drop(runtime_dir);
    Ok(())
}

/// Accepted gRPC connections, with Nagle's algorithm off (else a response waits for the
/// client's delayed ACK: ~40 ms per request with payloads over one segment).
fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let flags = config::parse_command_line(std::env::args().collect());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Failed to start server. Error: {e}");
            std::process::exit(255);
        }
    };
    if let Err(e) = runtime.block_on(run(flags)) {
        eprintln!("Failed to start server. Error: {e:#}");
        std::process::exit(255);
    }
}
