//! tfgate: flags → workers → wait for the models → serve gRPC and REST → drain.
//!
//! The gateway never links TensorFlow: each `tfgate-worker` process owns the sessions,
//! and tensors travel between them through shared memory (see docs/architecture.md).
//! The `tfgate` binary (`main.rs`) is [`main`]; the library exists so that the fuzz
//! targets (`fuzz/`) can link the gateway's parsers ([`fuzzing`]). Everything else stays
//! private to the crate.
#![forbid(unsafe_code)]

mod batching;
mod classifier;
#[doc(hidden)]
pub mod codec_bench;
mod config;
mod descriptors;
mod edge;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod health;
mod lifecycle;
mod linger;
mod listener;
mod model_cache;
mod model_config;
mod monitoring;
mod ports;
mod predictor;
mod request;
mod request_log;
mod rest;
mod servables;
mod server_core;
mod session_config;
mod stale_socket;
mod status;
mod text_format;
mod tls;
mod v2;
mod validation;
mod workers;

use anyhow::Context;
use config::Flags;
use error::ServingError;
use health::Health;
use lifecycle::{Lifecycle, Phase};
use predictor::Predictor;
use prost::Message;
use servables::Servables;
use server_core::{CoreOptions, ServerCore};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tfgate_proto::control::{LoadConfig, SessionConfig};
use tokio::sync::watch;
use workers::{SupervisorConfig, WorkerPool};

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
    // A URI (gs://, s3://) is a store, not a path under the working directory: kept as
    // it is, for the config's checks to refuse by its scheme.
    if path.contains("://") {
        return Ok(path.to_string());
    }
    let p = Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs.to_string_lossy().into_owned())
}

/// `--model_config_file`, local or on a store.
async fn read_config_file(
    cache: &model_cache::ModelCache,
    path: &str,
) -> Result<tfgate_proto::tensorflow::serving::ModelServerConfig, ServingError> {
    match tfgate_model_store::parse(path) {
        Ok(Some(remote)) => cache.read_config(&remote).await,
        Ok(None) => model_config::read_file(path),
        Err(e) => Err(ServingError::invalid_argument(format!(
            "--model_config_file {e}"
        ))),
    }
}

/// Re-reads `--model_config_file` every `every` and applies it; a file that cannot be
/// read or a config that cannot be applied is logged and the old one stays in force.
async fn poll_config_file(
    core: ServerCore,
    cache: model_cache::ModelCache,
    path: String,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let config = match read_config_file(&cache, &path).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("Failed to read ModelServerConfig file: {}", e.message);
                continue;
            }
        };
        if let Err(e) = core.reload_config(config, true).await {
            tracing::error!(
                "PollFilesystemAndReloadConfig failed to ReloadConfig: {}",
                e.message
            );
        }
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

/// Shuts down like a Kubernetes pod should (TF Serving ignores SIGTERM, its issue
/// #1853): not ready at once; after `drain_delay` the listeners close; what the open
/// connections already received is answered, and they close (`servers` resolves when
/// the last has), within `drain_timeout`; then workers stop.
async fn drain(
    lifecycle: &Lifecycle,
    pool: &WorkerPool,
    drain_delay: Duration,
    drain_timeout: Duration,
    servers: impl std::future::Future<Output = ()>,
) {
    lifecycle.set(Phase::Draining);
    tracing::info!(
        in_flight = lifecycle.in_flight(),
        "draining: not ready; closing in {} ms",
        drain_delay.as_millis()
    );
    tokio::time::sleep(drain_delay).await;
    lifecycle.set(Phase::Closed);
    let answered = async {
        servers.await;
        lifecycle.idle().await;
    };
    if tokio::time::timeout(drain_timeout, answered).await.is_err() {
        tracing::warn!(
            in_flight = lifecycle.in_flight(),
            "requests still in flight after {} ms; exiting anyway",
            drain_timeout.as_millis()
        );
    }
    pool.shutdown().await;
}

/// `--enable_batching` and its parameters, checked as TF Serving checks them at startup.
fn batching_config(flags: &Flags) -> Result<Option<batching::BatchingConfig>, ServingError> {
    if !flags.enable_batching {
        if !flags.batching_parameters_file.is_empty() {
            return Err(ServingError::invalid_argument(
                "server_options.batching_parameters_file is set without setting server_options.enable_batching to true.",
            ));
        }
        return Ok(None);
    }
    let global = if flags.batching_parameters_file.is_empty() {
        batching::Parameters::default()
    } else {
        batching::Parameters::read_file(&flags.batching_parameters_file)?
    };
    Ok(Some(batching::BatchingConfig {
        global,
        per_model: flags.enable_per_model_batching_parameters,
    }))
}

/// `--max_connections` fitted into the descriptor limit (raised first; see `descriptors`).
fn descriptor_budget(flags: &Flags) -> Result<usize, ServingError> {
    let (before, now) = descriptors::raise_limit();
    let workers = if flags.worker_socket.is_empty() {
        flags.gpus().map_or(flags.num_workers, |g| match g.len() {
            0 => flags.num_workers,
            n => n,
        })
    } else {
        flags.max_attached_workers().unwrap_or(flags.num_workers)
    };
    let regions = if flags.enable_v2_system_shared_memory {
        v2::shared_memory::MAX_REGIONS
    } else {
        0
    };
    let budget = descriptors::fit(now, workers.max(1), regions, flags.max_connections)
        .map_err(ServingError::invalid_argument)?;
    tracing::info!(
        "descriptor limit {now} (was {before}): up to {} connections",
        budget.max_connections
    );
    Ok(budget.max_connections)
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    flags.validate().map_err(ServingError::invalid_argument)?;
    let runtime_dir = RuntimeDir::create()?;
    let servables = Servables::default();
    let model_cache = model_cache::ModelCache::new(&flags, &runtime_dir.0, servables.clone())?;
    let core = ServerCore::new(
        CoreOptions {
            allow_version_labels_for_unavailable_models: flags
                .allow_version_labels_for_unavailable_models,
            model_cache: Some(model_cache.clone()),
        },
        servables.clone(),
    );
    let initial = if flags.model_config_file.is_empty() {
        model_config::single_model(&flags.model_name, &absolute(&flags.model_base_path)?)
    } else {
        read_config_file(&model_cache, &flags.model_config_file).await?
    };
    let batching = batching_config(&flags)?;
    let metrics_path = monitoring::config::prometheus_path(&flags.monitoring_config_file)?;
    monitoring::install()?;
    let tls = match flags.ssl_config_file.as_str() {
        "" => None,
        path => Some(tls::Tls::read_file(path)?),
    };
    // TF Serving's words for the choice.
    if tls.is_some() {
        tracing::info!("Using SSL credentials");
    } else {
        tracing::info!("Using InsecureServerCredentials");
    }
    let channel_args = grpc::channel_args::ChannelArgs::parse(&flags.grpc_channel_arguments)
        .map_err(ServingError::invalid_argument)?;
    let max_connections = descriptor_budget(&flags)?;
    let session = session_config::session_config(&flags)?;
    core.reload_config(initial, false).await?;
    let models = core.models();
    let lifecycle = Lifecycle::default();
    let segment = shm_protocol::SegmentConfig {
        request_arena_bytes: (flags.shm_request_arena_mb as u64) << 20,
        response_arena_bytes: (flags.shm_response_arena_mb as u64) << 20,
        spin: shm_protocol::SpinConfig {
            spin: Duration::from_micros(flags.shm_spin_us),
        },
        ..Default::default()
    };
    let gpus = flags.gpus().map_err(|e| anyhow::anyhow!("{e}"))?;
    let worker_socket =
        (!flags.worker_socket.is_empty()).then(|| PathBuf::from(&flags.worker_socket));
    let plans = match worker_socket {
        // Workers bring their own placement (their container's cores and GPU).
        Some(_) => (0..flags.num_workers.max(1))
            .map(|i| workers::WorkerPlan {
                id: servables::WorkerId(i as u32),
                device: workers::Device::Attached,
                cpus: Vec::new(),
            })
            .collect(),
        None => workers::plan(flags.num_workers, &gpus, &workers::allowed_cpus()),
    };
    for p in &plans {
        tracing::info!(worker = %p.id, device = %p.device, cpus = %p.cpu_list(), "worker slot");
    }
    let (pool, mut startup_failed) = WorkerPool::start(
        SupervisorConfig {
            worker_binary: match worker_socket {
                Some(_) => PathBuf::new(),
                None => worker_binary(&flags)?,
            },
            worker_socket: worker_socket.clone(),
            max_attached_workers: flags
                .max_attached_workers()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            min_attached_slots: flags.num_workers.max(1),
            runtime_dir: runtime_dir.0.clone(),
            segment,
            session: SessionConfig {
                tags: flags.tags(),
                config_proto: session.encode_to_vec(),
            },
            load: LoadConfig {
                max_num_load_retries: flags.max_num_load_retries,
                load_retry_interval_micros: flags.load_retry_interval_micros,
                enable_model_warmup: flags.enable_model_warmup,
                num_request_iterations_for_warmup: flags.num_request_iterations_for_warmup,
                wait_for_stable_version_dirs: flags.wait_for_stable_version_dirs,
            },
            file_system_poll_wait_seconds: flags.file_system_poll_wait_seconds,
            heartbeat_timeout: Duration::from_millis(flags.worker_heartbeat_timeout_ms),
            run_grace: Duration::from_millis(flags.worker_run_grace_ms),
            // A successor is a worker the gateway starts beside the old one; attached
            // workers are started by someone else.
            replace_after_unload_excess: match worker_socket {
                Some(_) => 0,
                None => flags.replace_worker_after_unload_excess_mb << 20,
            },
            log_format: flags.log_format.clone(),
            op_libraries: flags.op_libraries.clone(),
        },
        plans,
        servables.clone(),
        models.clone(),
    );

    // One signal watch for the whole life of the server.
    let (signalled_tx, mut signalled) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signalled_tx.send(true);
    });

    let names: Vec<String> = models.borrow().iter().map(|m| m.name.clone()).collect();
    tokio::select! {
        r = server_core::wait_until_available(&servables, &names, "servable", flags.allow_partial_startup) => r?,
        r = startup_failed.wait_for(Option::is_some) => {
            let why = r.ok().and_then(|w| w.clone()).unwrap_or_default();
            anyhow::bail!("{why}");
        }
        _ = signalled.wait_for(|s| *s) => {
            pool.shutdown().await;
            return Ok(());
        }
    }
    let batcher = batching
        .map(|config| batching::Batcher::new(config, pool.clone(), servables.clone()))
        .transpose()?;
    let request_log = match flags.request_log_dir.as_str() {
        "" => None,
        dir => Some(request_log::RequestLog::start(dir.into(), models.clone())?),
    };
    let predictor = Predictor::new(
        servables.clone(),
        pool.clone(),
        lifecycle.clone(),
        batcher.clone(),
        validation::examples::MethodNameCheck(flags.enable_signature_method_name_check),
        request_log,
    );
    let health = Health {
        servables,
        lifecycle: lifecycle.clone(),
        pool: pool.clone(),
        models,
        batching: batcher.map(|b| b.stats),
    };
    if !flags.model_config_file.is_empty() && flags.model_config_file_poll_wait_seconds > 0 {
        tokio::spawn(poll_config_file(
            core.clone(),
            model_cache,
            flags.model_config_file.clone(),
            Duration::from_secs(flags.model_config_file_poll_wait_seconds as u64),
        ));
    }

    let shared_memory = v2::shared_memory::Registry::new(
        v2::shared_memory::Policy::new(
            flags.enable_v2_system_shared_memory,
            &flags.v2_shared_memory_owners,
            &flags.v2_shared_memory_key_prefix,
        )
        .map_err(ServingError::invalid_argument)?,
    );
    let grpc = grpc::GrpcServices {
        predictor: predictor.clone(),
        core,
        tensor_content: flags.enable_serialization_as_tensor_content,
        max_send_message_length: channel_args.max_send_message_length,
    };
    let v2_grpc = v2::grpc::InferenceService {
        predictor: predictor.clone(),
        shared_memory: shared_memory.clone(),
        max_receive_message_length: channel_args.max_receive_message_length,
        health: health.clone(),
        max_send_message_length: channel_args.max_send_message_length,
    };
    let address = flags
        .bind_address()
        .map_err(ServingError::invalid_argument)?;
    let listeners = ports::grpc::bind(address, flags.port, &flags.grpc_socket_path).await?;
    let health_service = if flags.enable_grpc_healthcheck_service {
        let reporter = tonic_health::server::HealthReporter::new();
        let service = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        tokio::spawn(health.clone().drive_grpc_health(reporter));
        Some(tonic_health::pb::health_server::HealthServer::new(service))
    } else {
        None
    };
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    let write_stall = (flags.connection_write_timeout_ms > 0)
        .then(|| Duration::from_millis(flags.connection_write_timeout_ms));
    let options = ports::grpc::ServeOptions {
        tls: tls.as_ref(),
        args: &channel_args,
        write_stall,
        connections: places.clone(),
    };
    let grpc_tasks = ports::grpc::serve(
        listeners,
        grpc,
        v2_grpc,
        health_service,
        options,
        &lifecycle,
    )?;

    let mut rest_task = None;
    if flags.rest_api_port != 0 && flags.rest_api_port != flags.port {
        let addr = SocketAddr::new(address, flags.rest_api_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind REST port {addr}"))?;
        tracing::info!("Exporting HTTP/REST API at:localhost:{} ...", addr.port());
        let limits = edge::HttpLimits {
            // TF Serving sets no run timeout for a value of 0 or less.
            timeout: u64::try_from(flags.rest_api_timeout_in_ms)
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            max_body_bytes: flags.max_request_body_mb << 20,
            body_timeout: (flags.rest_api_body_timeout_ms > 0)
                .then(|| Duration::from_millis(flags.rest_api_body_timeout_ms)),
        };
        let api = ports::rest::HttpRoutes {
            v1: rest::RestApi {
                predictor: predictor.clone(),
                limits: limits.clone(),
            },
            v2: v2::rest::V2Http {
                predictor,
                health: health.clone(),
                shared_memory,
                limits,
            },
            health,
            metrics_path,
            cors: flags.rest_api_enable_cors_support,
        };
        let rest_tls = tls
            .as_ref()
            .filter(|_| flags.rest_api_enable_ssl)
            .map(tls::Tls::rest);
        let header = (flags.rest_api_header_timeout_ms > 0)
            .then(|| Duration::from_millis(flags.rest_api_header_timeout_ms));
        let limits = listener::Limits {
            // The REST port's one bound on a client that has not shown its request yet.
            handshake: header,
            header,
            idle: header,
            write_stall,
            max_age: None,
            max_age_grace: None,
            keepalive_time: Some(grpc::channel_args::GRPC_KEEPALIVE_TIME),
            keepalive_timeout: grpc::channel_args::GRPC_KEEPALIVE_TIMEOUT,
        };
        rest_task = Some(tokio::spawn(ports::rest::serve(
            listener,
            api,
            rest_tls,
            limits,
            lifecycle.subscribe(),
            places,
        )));
    } else if flags.rest_api_port == flags.port {
        tracing::error!("--rest_api_port cannot be the same as --port; not starting REST");
    }
    lifecycle.set(Phase::Serving);

    // The gRPC servers end only once the server has closed and their connections have.
    let grpc_ended = async {
        for task in grpc_tasks {
            task.await.context("gRPC server panicked")?;
        }
        anyhow::Ok(())
    };
    tokio::pin!(grpc_ended);
    tokio::select! {
        r = &mut grpc_ended => {
            r?;
            anyhow::bail!("gRPC server stopped");
        }
        _ = signalled.wait_for(|s| *s) => {}
    }
    let servers = async {
        if let Err(e) = grpc_ended.await {
            tracing::warn!("gRPC server while draining: {e:#}");
        }
        if let Some(rest) = rest_task {
            let _ = rest.await;
        }
        // Connections the server closed first read their client's last bytes.
        linger::idle().await;
    };
    drain(
        &lifecycle,
        &pool,
        Duration::from_millis(flags.drain_delay_ms),
        Duration::from_millis(flags.drain_timeout_ms),
        servers,
    )
    .await;
    drop(runtime_dir);
    if let Some(socket) = worker_socket {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

/// Logs to stderr, as text or (`--log_format=json`) one JSON object per line; `RUST_LOG`
/// filters (default `info`).
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // object_store logs each of its own retries at INFO: every poll of a store that
        // is down. The model cache logs the failure itself, once a minute.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,object_store=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// The `tfgate` process: parses the command line, serves until SIGTERM/SIGINT, and
/// exits (255 with TF Serving's `Failed to start server.` line when startup fails).
pub fn main() {
    let flags = config::parse_command_line(std::env::args().collect());
    init_logging(&flags.log_format);
    for arg in &flags.unknown {
        // TF Serving's line; in a JSON log, a JSON line.
        if flags.log_format == "json" {
            tracing::warn!("unknown argument: {arg}");
        } else {
            eprintln!("unknown argument: {arg}");
        }
    }
    for why in &flags.ignored {
        tracing::warn!("{why}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config::gateway_threads(flags.gateway_threads))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Failed to start server. Error: {e}");
            std::process::exit(255);
        }
    };
    match runtime.block_on(run(flags)) {
        // Exit without waiting for idle client connections to close.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            // TF Serving's form: `CODE: message` when the failure has a status code.
            let why = match e.downcast_ref::<ServingError>() {
                Some(s) => format!("{}: {}", s.code.name(), s.message),
                None => format!("{e:#}"),
            };
            eprintln!("Failed to start server. Error: {why}");
            std::process::exit(255);
        }
    }
}
