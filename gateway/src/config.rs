//! Every flag, parsed once. Names and defaults follow `tensorflow_model_server`
//! (`model_servers/main.cc`); tfgate's own flags say so in their help.

use clap::{CommandFactory, Parser};
use std::path::PathBuf;

/// `--max_attached_workers` when not given (raised to `--num_workers` if that is more).
pub const DEFAULT_MAX_ATTACHED_WORKERS: usize = 16;

/// tfgate: a TensorFlow Serving-compatible model server with crash-isolated workers.
#[derive(Parser, Debug, Clone)]
#[command(name = "tfgate", about)]
pub struct Flags {
    /// Port to listen on for gRPC API (0 disables the TCP listener).
    #[arg(long = "port", default_value_t = 8500)]
    pub port: u16,

    /// Also serve gRPC on this Unix socket. A socket already there is replaced (as gRPC
    /// C++ does); anything else at the path (a file, a directory, a link) is left alone
    /// and the server refuses to start.
    #[arg(long = "grpc_socket_path", default_value = "")]
    pub grpc_socket_path: String,

    /// TLS for gRPC on every listener: a text-format SSLConfig (server_key, server_cert,
    /// custom_ca, client_verify; PEM text inline). A file that cannot be honoured is a
    /// startup error, never a plaintext server.
    #[arg(long = "ssl_config_file", default_value = "")]
    pub ssl_config_file: String,

    /// tfgate: serve REST over TLS too, with --ssl_config_file's certificate and client
    /// verification (TF Serving's REST is plaintext only).
    #[arg(long = "rest_api_enable_ssl", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub rest_api_enable_ssl: bool,

    /// gRPC server arguments, comma-separated key=value (e.g.
    /// grpc.max_receive_message_length=1048576); see docs for those tfgate honours.
    #[arg(long = "grpc_channel_arguments", default_value = "")]
    pub grpc_channel_arguments: String,

    /// tfgate: the address the gRPC and REST listeners bind (TF Serving always binds
    /// every interface); e.g. 127.0.0.1 keeps tfgate on loopback, :: takes IPv6 too.
    #[arg(long = "bind_address", default_value = "0.0.0.0")]
    pub bind_address: String,

    /// Google ALTS credentials for gRPC. Not supported: a startup error.
    #[arg(long = "use_alts_credentials", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub use_alts_credentials: bool,

    /// Port to listen on for the HTTP/REST API; 0 (the default, as in
    /// tensorflow_model_server) disables it. TF Serving's Docker image passes 8501.
    #[arg(long = "rest_api_port", default_value_t = 0)]
    pub rest_api_port: u16,

    /// tfgate: with --ssl_config_file, serve REST in plaintext anyway (TF Serving's
    /// behaviour). Without it, a REST port beside --ssl_config_file needs
    /// --rest_api_enable_ssl, else the server refuses to start.
    #[arg(long = "rest_api_plaintext_with_ssl_config", num_args = 0..=1,
          default_value_t = false, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub rest_api_plaintext_with_ssl_config: bool,

    /// Name of the model, used in request URLs and ModelSpec.
    #[arg(long = "model_name", default_value = "default")]
    pub model_name: String,

    /// Directory holding the model's numeric version subdirectories.
    #[arg(long = "model_base_path", default_value = "")]
    pub model_base_path: String,

    /// If non-empty, read a text-format ModelServerConfig (several models, version
    /// policies, labels) from this file instead of --model_name/--model_base_path.
    #[arg(long = "model_config_file", default_value = "")]
    pub model_config_file: String,

    /// Seconds between re-reads of --model_config_file, applying what changed; 0 reads it
    /// once.
    #[arg(
        long = "model_config_file_poll_wait_seconds",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub model_config_file_poll_wait_seconds: i32,

    /// Lets a new version label (or one that does not move) point at a version that is
    /// not AVAILABLE yet; needed for labels in the config a server starts with.
    #[arg(long = "allow_version_labels_for_unavailable_models", num_args = 0..=1,
          default_value_t = false, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub allow_version_labels_for_unavailable_models: bool,

    /// Seconds between polls of the base path for new versions (loaded before the old
    /// ones are unloaded). 0 or less: load once at startup. (TF Serving waits forever at
    /// startup for a negative value; tfgate loads once.)
    #[arg(
        long = "file_system_poll_wait_seconds",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub file_system_poll_wait_seconds: i32,

    /// Comma-separated MetaGraph tags to load.
    #[arg(long = "saved_model_tags", default_value = "serve")]
    pub saved_model_tags: String,

    /// Threads for both of TensorFlow's pools when the two flags below are 0 (0 = auto).
    #[arg(
        long = "tensorflow_session_parallelism",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub tensorflow_session_parallelism: i32,

    /// A text-format tensorflow.ConfigProto for every session; the parallelism and GPU
    /// memory flags are written over it.
    #[arg(long = "tensorflow_session_config_file", default_value = "")]
    pub tensorflow_session_config_file: String,

    /// Fraction of each GPU's memory a worker's TensorFlow takes (0: TensorFlow's choice).
    #[arg(long = "per_process_gpu_memory_fraction", default_value_t = 0.0)]
    pub per_process_gpu_memory_fraction: f64,

    /// Classify and Regress require a signature's method_name to be the classify or
    /// regress one (off by default, as in TF Serving: TF2 signatures say predict).
    #[arg(long = "enable_signature_method_name_check", num_args = 0..=1,
          default_value_t = false, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub enable_signature_method_name_check: bool,

    /// Gathers concurrent requests for the same model into one TensorFlow run.
    #[arg(long = "enable_batching", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_batching: bool,

    /// A text-format BatchingParameters file (needs --enable_batching); without it, TF
    /// Serving's defaults.
    #[arg(long = "batching_parameters_file", default_value = "")]
    pub batching_parameters_file: String,

    /// `MonitoringConfig` in text format: with `prometheus_config { enable: true }`,
    /// Prometheus metrics on the REST port.
    #[arg(long = "monitoring_config_file", default_value = "")]
    pub monitoring_config_file: String,

    /// tfgate: where requests sampled by a model's `logging_config` are written, as
    /// `PredictionLog` TFRecord files (`<dir>/<model>.tfrecord`); empty: no request log.
    #[arg(long = "request_log_dir", default_value = "")]
    pub request_log_dir: String,

    /// tfgate: `text` (default) or `json`, one object per line, for log pipelines; the
    /// workers log the same way.
    #[arg(long = "log_format", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// TF Serving flags on the command line that tfgate ignores (logged at startup).
    #[arg(skip)]
    pub ignored: Vec<String>,

    /// Arguments that are nobody's flag (reported at startup, as TF Serving does).
    #[arg(skip)]
    pub unknown: Vec<String>,

    /// Each version directory's batching_params.pbtxt decides how it batches; a version
    /// without one does not batch.
    #[arg(long = "enable_per_model_batching_parameters", num_args = 0..=1,
          default_value_t = false, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub enable_per_model_batching_parameters: bool,

    /// Retries after a failed load; 0 tries once.
    #[arg(long = "max_num_load_retries", default_value_t = 5)]
    pub max_num_load_retries: u32,

    /// Microseconds between load retries; negative: no wait.
    #[arg(
        long = "load_retry_interval_micros",
        default_value_t = 60_000_000,
        allow_negative_numbers = true
    )]
    pub load_retry_interval_micros: i64,

    /// Replays <version>/assets.extra/tf_serving_warmup_requests before a version serves.
    #[arg(long = "enable_model_warmup", num_args = 0..=1, default_value_t = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_model_warmup: bool,

    /// Times each warmup record is run (0: once).
    #[arg(long = "num_request_iterations_for_warmup", default_value_t = 0)]
    pub num_request_iterations_for_warmup: u32,

    /// tfgate: load a new version directory only once it has stopped changing (file
    /// sizes and times equal across two looks), so a half-copied version is never
    /// loaded. TF Serving loads what it sees (its issues #572, #1086).
    #[arg(long = "wait_for_stable_version_dirs", num_args = 0..=1, default_value_t = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub wait_for_stable_version_dirs: bool,

    /// Threads for each op's internal parallelism (0 = TensorFlow's choice).
    #[arg(
        long = "tensorflow_intra_op_parallelism",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub tensorflow_intra_op_parallelism: i32,

    /// Threads for running independent ops (0 = TensorFlow's choice).
    #[arg(
        long = "tensorflow_inter_op_parallelism",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub tensorflow_inter_op_parallelism: i32,

    /// Timeout for REST inference requests, milliseconds; 0 or less: none.
    #[arg(
        long = "rest_api_timeout_in_ms",
        default_value_t = 30000,
        allow_negative_numbers = true
    )]
    pub rest_api_timeout_in_ms: i64,

    /// Adds CORS headers to REST answers and accepts OPTIONS preflights.
    #[arg(long = "rest_api_enable_cors_support", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub rest_api_enable_cors_support: bool,

    /// gRPC Predict outputs in `tensor_content` bytes instead of the typed `*_val` fields.
    #[arg(long = "enable_serialization_as_tensor_content", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_serialization_as_tensor_content: bool,

    /// tfgate: path of the tfgate-worker binary (default: beside tfgate).
    #[arg(long = "worker_binary")]
    pub worker_binary: Option<PathBuf>,

    /// tfgate: shared libraries of TensorFlow ops and kernels (comma-separated) that
    /// every worker loads before any model, after TensorFlow Text's: custom ops without
    /// a rebuild. One missing, failing to load, or registering kernels already
    /// registered stops startup. With `--worker_socket`, each worker takes its own.
    #[arg(long = "op_libraries", value_delimiter = ',')]
    pub op_libraries: Vec<PathBuf>,

    /// tfgate: where the gateway mirrors `gs://` and `s3://` base paths, for the workers
    /// to load from (one fetcher per gateway). Default: inside the gateway's runtime
    /// directory, removed at exit. With `--worker_socket`, a directory the attached
    /// workers see at the same path (a shared volume) must be named.
    #[arg(long = "model_cache_dir", default_value = "")]
    pub model_cache_dir: String,

    /// tfgate: the most bytes of model versions the cache holds; a version that does not
    /// fit is not loaded, and its status says why. 0: the free space of the cache's file
    /// system.
    #[arg(long = "model_cache_max_bytes", default_value_t = 0)]
    pub model_cache_max_bytes: u64,

    /// tfgate: shared memory for request tensors per worker, MiB.
    #[arg(long = "shm_request_arena_mb", default_value_t = 256)]
    pub shm_request_arena_mb: usize,

    /// tfgate: shared memory for response tensors per worker, MiB.
    #[arg(long = "shm_response_arena_mb", default_value_t = 256)]
    pub shm_response_arena_mb: usize,

    /// tfgate: how long a ring consumer spins before parking on a futex, microseconds.
    /// Spinning answers in well under a microsecond but burns a core while idle.
    #[arg(long = "shm_spin_us", default_value_t = 50)]
    pub shm_spin_us: u64,

    /// tfgate: threads of the gateway's event loop (REST, gRPC, batching, completions).
    /// 0: half the cores this process may use, at least one. On a machine whose cores the
    /// workers share, fewer threads mean fewer hand-offs between them: on 2 cores one
    /// thread cut the gateway's CPU per request by a quarter (docs/benchmarks.md).
    #[arg(long = "gateway_threads", default_value_t = 0)]
    pub gateway_threads: usize,

    /// tfgate: largest accepted REST request body, MiB.
    #[arg(long = "max_request_body_mb", default_value_t = 512)]
    pub max_request_body_mb: usize,

    /// tfgate: a REST client must send a request's whole header within this many ms
    /// (counted from the connection or the previous answer, so an idle keep-alive
    /// connection closes after it too), else its connection is closed: a client trickling
    /// headers holds nothing for long. 0: no limit.
    #[arg(long = "rest_api_header_timeout_ms", default_value_t = 60_000)]
    pub rest_api_header_timeout_ms: u64,

    /// tfgate: a REST request's body must arrive within this many ms of its header, else
    /// DEADLINE_EXCEEDED (504) naming this flag. 0: no limit.
    #[arg(long = "rest_api_body_timeout_ms", default_value_t = 60_000)]
    pub rest_api_body_timeout_ms: u64,

    /// tfgate: KServe V2's system shared-memory extension (clients on this host pass
    /// tensors through POSIX shared-memory objects they register by key). Off by default:
    /// a client names the object, so turn it on only where the clients are trusted users
    /// of this host. Objects must belong to the server's user or to
    /// --v2_shared_memory_owners.
    #[arg(long = "enable_v2_system_shared_memory", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_v2_system_shared_memory: bool,

    /// tfgate: comma-separated users (names or uids) whose shared-memory objects V2
    /// clients may register, beside the server's own user.
    #[arg(long = "v2_shared_memory_owners", default_value = "")]
    pub v2_shared_memory_owners: String,

    /// tfgate: V2 shared-memory keys must start with this (e.g. /tfgate-); empty: any key
    /// of an allowed owner.
    #[arg(long = "v2_shared_memory_key_prefix", default_value = "")]
    pub v2_shared_memory_key_prefix: String,

    /// tfgate: a response the client leaves unread (its socket full) for this many ms
    /// closes the connection, on every listener, so a client that stops reading holds
    /// no place under --max_connections. 0: no limit.
    #[arg(long = "connection_write_timeout_ms", default_value_t = 60_000)]
    pub connection_write_timeout_ms: u64,

    /// tfgate: open connections, REST and gRPC (TCP and Unix socket) together, at most;
    /// more wait in the listen backlog until one closes. Default 10,000, lowered (with a
    /// warning) to what the descriptor limit leaves; a value that cannot fit is refused.
    #[arg(long = "max_connections")]
    pub max_connections: Option<usize>,

    /// Registers grpc.health.v1.Health: "", "ModelService" and "PredictionService" are
    /// SERVING while every model has an AVAILABLE worker, NOT_SERVING otherwise and
    /// while draining.
    #[arg(long = "enable_grpc_healthcheck_service", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_grpc_healthcheck_service: bool,

    /// tfgate: number of CPU worker processes; the cores are split evenly between them
    /// and each is pinned to its share. Ignored with --worker_gpus. With --worker_socket:
    /// the slots shown waiting for workers at start.
    #[arg(long = "num_workers", default_value_t = 1)]
    pub num_workers: usize,

    /// tfgate: attach mode. Spawn no workers; listen on this Unix socket for workers
    /// started on their own (`tfgate-worker --gateway_socket=PATH`, e.g. one container
    /// each) and give each a slot as it connects; --num_workers slots are shown waiting
    /// at start, and more open as more workers connect. Only the gateway's own user may
    /// connect. Empty: the gateway spawns and supervises its workers.
    #[arg(long = "worker_socket", default_value = "")]
    pub worker_socket: String,

    /// tfgate: with --worker_socket, the most slots open at once (each holds a worker's
    /// shared-memory segment); a worker that connects when all are taken is turned away,
    /// and at most this many connections may wait to say Hello. At least --num_workers.
    /// Default 16; refused without --worker_socket.
    #[arg(long = "max_attached_workers")]
    pub max_attached_workers: Option<usize>,

    /// tfgate: comma-separated GPU ids; one worker per GPU, each seeing only its own
    /// (CUDA_VISIBLE_DEVICES). Empty: --num_workers CPU workers.
    #[arg(long = "worker_gpus", default_value = "")]
    pub worker_gpus: String,

    /// tfgate: a worker that answers no heartbeat for this long (stopped, wedged) is
    /// killed and restarted, and its requests go to another worker, milliseconds.
    #[arg(long = "worker_heartbeat_timeout_ms", default_value_t = 3000)]
    pub worker_heartbeat_timeout_ms: u64,

    /// tfgate: a worker still running a request this long after the request's deadline
    /// is killed and restarted (a kernel that ignores cancellation), milliseconds.
    #[arg(long = "worker_run_grace_ms", default_value_t = 2000)]
    pub worker_run_grace_ms: u64,

    /// tfgate: start serving even if some models cannot load at startup (a failed load,
    /// no version directory yet): the others serve, /readyz names the missing ones, and
    /// they load when they can (a failed version is tried again once its directory
    /// changes). TF Serving, and tfgate without this flag, exit instead.
    #[arg(long = "allow_partial_startup", num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_partial_startup: bool,

    /// tfgate: after an unload, a worker holding this many MiB more than a fresh worker
    /// with the same servables would (TensorFlow keeps freed memory) is replaced by one
    /// that loads them anew, without a failed request; 0 never replaces.
    #[arg(long = "replace_worker_after_unload_excess_mb", default_value_t = 512)]
    pub replace_worker_after_unload_excess_mb: u64,

    /// tfgate: on SIGTERM/SIGINT, how long to keep accepting connections after turning
    /// not-ready (so load balancers notice first), milliseconds; then the listeners
    /// close, and requests already received are still answered.
    #[arg(long = "drain_delay_ms", default_value_t = 0)]
    pub drain_delay_ms: u64,

    /// tfgate: on SIGTERM/SIGINT, how long requests in flight may take to finish before
    /// the server exits anyway, milliseconds.
    #[arg(long = "drain_timeout_ms", default_value_t = 30000)]
    pub drain_timeout_ms: u64,
}

/// `tensorflow_model_server` flags tfgate accepts but does not implement yet: they are
/// logged and ignored, so existing command lines keep working.
const NOT_YET_SUPPORTED: &[&str] = &[
    "rest_api_num_threads",
    "grpc_max_threads",
    "enable_profiler",
    "platform_config_file",
    "num_load_threads",
    "num_unload_threads",
    "flush_filesystem_caches",
    "remove_unused_fields_from_bundle_metagraph",
    "xla_cpu_compilation_enabled",
    "xla_gpu_compilation_enabled",
    "mixed_precision",
    "thread_pool_factory_config_file",
    "prefer_tflite_model",
    "num_tflite_pools",
    "num_tflite_interpreters_per_pool",
    "skip_initialize_tpu",
];

/// What to do with one command-line argument.
#[derive(Debug, PartialEq, Eq)]
enum ArgUse {
    Keep,
    /// A TF Serving flag tfgate does not implement yet.
    NotYetSupported(String),
    /// Neither ours nor TF Serving's: TF Serving prints `unknown argument` and carries on.
    Unknown,
}

fn classify_arg(arg: &str, ours: &[String]) -> ArgUse {
    let Some(body) = arg.strip_prefix("--") else {
        return ArgUse::Unknown;
    };
    let name = body.split('=').next().unwrap_or(body);
    if ours.iter().any(|o| o == name) || name == "help" || name == "version" {
        ArgUse::Keep
    } else if NOT_YET_SUPPORTED.contains(&name) {
        ArgUse::NotYetSupported(name.to_string())
    } else {
        ArgUse::Unknown
    }
}

/// The event loop's threads for `--gateway_threads` (0: half the cores, at least one).
pub fn gateway_threads(flag: usize) -> usize {
    if flag > 0 {
        return flag;
    }
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

/// The TensorFlow release the workers link (the wheel `scripts/setup.sh` installs).
pub const TENSORFLOW_VERSION: &str = "2.21.0";

/// `--version`, in `tensorflow_model_server`'s two lines.
pub fn version_text() -> String {
    format!(
        "TensorFlow ModelServer: {}-tfgate\nTensorFlow Library: {TENSORFLOW_VERSION}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses the command line like `tensorflow_model_server`: unknown arguments are reported
/// and skipped, TF Serving flags tfgate lacks are logged and ignored.
pub fn parse_command_line(args: Vec<String>) -> Flags {
    if args.iter().skip(1).any(|a| a == "--version") {
        println!("{}", version_text());
        std::process::exit(0);
    }
    let ours: Vec<String> = Flags::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect();
    let mut kept = Vec::with_capacity(args.len());
    let mut ignored = Vec::new();
    let mut unknown = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 {
            kept.push(arg);
            continue;
        }
        match classify_arg(&arg, &ours) {
            ArgUse::Keep => kept.push(arg),
            ArgUse::NotYetSupported(name) => ignored.push(format!(
                "--{name} is not supported by tfgate yet; ignoring {arg}"
            )),
            ArgUse::Unknown => unknown.push(arg),
        }
    }
    let mut flags = Flags::parse_from(kept);
    flags.ignored = ignored;
    flags.unknown = unknown;
    flags
}

impl Flags {
    /// The startup checks `tensorflow_model_server` makes before serving.
    pub fn validate(&self) -> Result<(), String> {
        if self.use_alts_credentials && !self.ssl_config_file.is_empty() {
            return Err(
                "Either use_alts_credentials must be false or ssl_config_file must be empty."
                    .into(),
            );
        }
        if self.rest_api_enable_ssl && self.ssl_config_file.is_empty() {
            return Err("--rest_api_enable_ssl needs --ssl_config_file".into());
        }
        self.rest_tls_choice()?;
        self.bind_address()?;
        if self.max_connections == Some(0) {
            return Err("--max_connections must be at least 1".into());
        }
        if self.use_alts_credentials {
            return Err("--use_alts_credentials: ALTS is not supported by tfgate".into());
        }
        if self.model_base_path.is_empty() && self.model_config_file.is_empty() {
            return Err("Both server_options.model_base_path and server_options.model_config_file are empty!".into());
        }
        if self.num_workers == 0 {
            return Err("--num_workers must be at least 1".into());
        }
        self.max_attached_workers()?;
        // The transport refuses arenas of 0 bytes or over 1 TiB.
        for (flag, mb) in [
            ("--shm_request_arena_mb", self.shm_request_arena_mb),
            ("--shm_response_arena_mb", self.shm_response_arena_mb),
        ] {
            if !(1..=1 << 20).contains(&mb) {
                return Err(format!("{flag}={mb} must be between 1 and 1048576"));
            }
        }
        self.gpus()?;
        Ok(())
    }

    /// Attach mode's cap on slots (`--max_attached_workers`, default 16): only with
    /// `--worker_socket`, and never below `--num_workers`, whose slots open at start.
    pub fn max_attached_workers(&self) -> Result<usize, String> {
        match self.max_attached_workers {
            Some(_) if self.worker_socket.is_empty() => {
                Err("--max_attached_workers needs --worker_socket".into())
            }
            Some(n) if n < self.num_workers.max(1) => Err(format!(
                "--max_attached_workers={n} is below --num_workers={}",
                self.num_workers
            )),
            Some(n) => Ok(n),
            None => Ok(DEFAULT_MAX_ATTACHED_WORKERS.max(self.num_workers)),
        }
    }

    /// Whether REST is served over TLS. Beside `--ssl_config_file`, a plaintext REST
    /// listener is only started when `--rest_api_plaintext_with_ssl_config` says so: a
    /// TLS config must not leave a plaintext port open by accident.
    pub fn rest_tls_choice(&self) -> Result<bool, String> {
        if self.rest_api_enable_ssl && self.rest_api_plaintext_with_ssl_config {
            return Err(
                "--rest_api_enable_ssl and --rest_api_plaintext_with_ssl_config contradict each other"
                    .into(),
            );
        }
        if self.rest_api_plaintext_with_ssl_config && self.ssl_config_file.is_empty() {
            return Err("--rest_api_plaintext_with_ssl_config needs --ssl_config_file".into());
        }
        if self.rest_api_port != 0
            && !self.ssl_config_file.is_empty()
            && !self.rest_api_enable_ssl
            && !self.rest_api_plaintext_with_ssl_config
        {
            return Err(format!(
                "--ssl_config_file is set but REST on --rest_api_port={} would be plaintext; \
                 pass --rest_api_enable_ssl to serve REST over TLS, \
                 --rest_api_plaintext_with_ssl_config to serve it in plaintext on purpose, \
                 or --rest_api_port=0 for no REST",
                self.rest_api_port
            ));
        }
        Ok(self.rest_api_enable_ssl)
    }

    /// `--bind_address` as an IP address.
    pub fn bind_address(&self) -> Result<std::net::IpAddr, String> {
        self.bind_address
            .parse()
            .map_err(|_| format!("--bind_address={} is not an IP address", self.bind_address))
    }

    /// `--worker_gpus` as ids.
    pub fn gpus(&self) -> Result<Vec<u32>, String> {
        self.worker_gpus
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| {
                g.parse::<u32>()
                    .map_err(|_| format!("--worker_gpus: {g:?} is not a GPU id"))
            })
            .collect()
    }

    /// MetaGraph tags as a list.
    pub fn tags(&self) -> Vec<String> {
        self.saved_model_tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        parse_command_line(
            std::iter::once("tfgate")
                .chain(args.iter().copied())
                .map(String::from)
                .collect(),
        )
    }

    #[test]
    fn tf_serving_command_lines_parse() {
        let f = parse(&[
            "--port=9000",
            "--rest_api_port=0",
            "--model_name=m",
            "--model_base_path=/models/m",
            "--enable_batching",
            "--file_system_poll_wait_seconds=5",
            "--num_load_threads=2",
            "stray",
            "--no_such_flag=1",
        ]);
        assert_eq!((f.port, f.rest_api_port), (9000, 0));
        assert_eq!(
            (f.model_name.as_str(), f.model_base_path.as_str()),
            ("m", "/models/m")
        );
        assert!(!f.enable_serialization_as_tensor_content);
        assert_eq!(f.file_system_poll_wait_seconds, 5);
        assert_eq!(parse(&[]).port, 8500);
        assert_eq!(
            parse(&[]).rest_api_port,
            0,
            "no REST unless asked, as in TF Serving"
        );
    }

    #[test]
    fn plaintext_rest_beside_tls_only_on_purpose() {
        let base = ["--model_base_path=/m", "--ssl_config_file=ssl.config"];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            parse(&args).validate()
        };
        assert_eq!(
            with(&["--rest_api_port=8501"]).unwrap_err(),
            "--ssl_config_file is set but REST on --rest_api_port=8501 would be plaintext; \
             pass --rest_api_enable_ssl to serve REST over TLS, \
             --rest_api_plaintext_with_ssl_config to serve it in plaintext on purpose, \
             or --rest_api_port=0 for no REST"
        );
        assert_eq!(with(&[]), Ok(()), "no REST port, nothing plaintext");
        assert_eq!(
            with(&["--rest_api_port=8501", "--rest_api_enable_ssl"]),
            Ok(())
        );
        assert_eq!(
            with(&[
                "--rest_api_port=8501",
                "--rest_api_plaintext_with_ssl_config"
            ]),
            Ok(())
        );
        assert!(with(&[
            "--rest_api_port=8501",
            "--rest_api_enable_ssl",
            "--rest_api_plaintext_with_ssl_config"
        ])
        .unwrap_err()
        .contains("contradict"));
        let plain = parse(&[
            "--model_base_path=/m",
            "--rest_api_plaintext_with_ssl_config",
        ]);
        assert_eq!(
            plain.validate().unwrap_err(),
            "--rest_api_plaintext_with_ssl_config needs --ssl_config_file"
        );
        assert_eq!(
            parse(&["--model_base_path=/m", "--rest_api_port=8501"]).validate(),
            Ok(()),
            "plaintext REST without TLS config is TF Serving's normal case"
        );
    }

    #[test]
    fn bool_flags_take_tf_forms() {
        assert!(
            parse(&["--enable_serialization_as_tensor_content"])
                .enable_serialization_as_tensor_content
        );
        assert!(
            parse(&["--enable_serialization_as_tensor_content=true"])
                .enable_serialization_as_tensor_content
        );
        assert!(
            !parse(&["--enable_serialization_as_tensor_content=false"])
                .enable_serialization_as_tensor_content
        );
    }

    #[test]
    fn version_names_the_tensorflow_that_setup_installs() {
        let setup = include_str!("../../scripts/setup.sh");
        assert!(setup.contains(&format!("TF_VERSION={TENSORFLOW_VERSION}")));
        assert!(version_text().starts_with("TensorFlow ModelServer: "));
        assert!(version_text().ends_with(&format!("\nTensorFlow Library: {TENSORFLOW_VERSION}")));
    }

    #[test]
    fn pool_flags() {
        let f = parse(&["--num_workers=2", "--worker_gpus=0, 3"]);
        assert_eq!(f.num_workers, 2);
        assert_eq!(f.gpus().unwrap(), vec![0, 3]);
        assert_eq!(parse(&[]).gpus().unwrap(), Vec::<u32>::new());
        let bad = parse(&["--model_base_path=/m", "--worker_gpus=a"]);
        assert_eq!(
            bad.validate().unwrap_err(),
            "--worker_gpus: \"a\" is not a GPU id"
        );
        let none = parse(&["--model_base_path=/m", "--num_workers=0"]);
        assert!(none.validate().is_err());
        let attach = ["--model_base_path=/m", "--worker_socket=/run/t/w.sock"];
        assert_eq!(parse(&attach).max_attached_workers(), Ok(16));
        let many = parse(&[attach[0], attach[1], "--num_workers=20"]);
        assert_eq!(many.max_attached_workers(), Ok(20));
        let capped = parse(&[attach[0], attach[1], "--max_attached_workers=3"]);
        assert_eq!(capped.validate(), Ok(()));
        assert_eq!(capped.max_attached_workers(), Ok(3));
        let below = parse(&[
            attach[0],
            attach[1],
            "--num_workers=4",
            "--max_attached_workers=3",
        ]);
        assert_eq!(
            below.validate().unwrap_err(),
            "--max_attached_workers=3 is below --num_workers=4"
        );
        let spawned = parse(&["--model_base_path=/m", "--max_attached_workers=3"]);
        assert_eq!(
            spawned.validate().unwrap_err(),
            "--max_attached_workers needs --worker_socket"
        );
        assert!(parse(&["--enable_grpc_healthcheck_service"]).enable_grpc_healthcheck_service);
    }

    #[test]
    fn classifies_arguments() {
        let ours = vec!["port".to_string()];
        assert_eq!(classify_arg("--port=1", &ours), ArgUse::Keep);
        assert_eq!(
            classify_arg("--enable_profiler=true", &ours),
            ArgUse::NotYetSupported("enable_profiler".into())
        );
        assert_eq!(classify_arg("--what", &ours), ArgUse::Unknown);
        assert_eq!(classify_arg("positional", &ours), ArgUse::Unknown);
    }
}
