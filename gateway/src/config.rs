//! Every flag, parsed once. Names and defaults follow `tensorflow_model_server`
//! (`model_servers/main.cc`); tfgate's own flags say so in their help.

use clap::Parser;
use std::path::PathBuf;

/// tfgate: a TensorFlow Serving-compatible model server with crash-isolated workers.
#[derive(Parser, Debug, Clone)]
#[command(name = "tfgate", version, about)]
pub struct Flags {
    /// Port to listen on for gRPC API (0 disables the TCP listener).
    #[arg(long = "port", default_value_t = 8500)]
    pub port: u16,

    /// Port to listen on for the HTTP/REST API; 0 disables it. (tensorflow_model_server's
    /// binary defaults to 0, its Docker image passes 8501; tfgate defaults to 8501.)
    #[arg(long = "rest_api_port", default_value_t = 8501)]
    pub rest_api_port: u16,

    /// Name of the model, used in request URLs and ModelSpec.
    #[arg(long = "model_name", default_value = "default")]
    pub model_name: String,

    /// Directory holding the model's numeric version subdirectories.
    #[arg(long = "model_base_path", default_value = "")]
    pub model_base_path: String,

    /// Comma-separated MetaGraph tags to load.
    #[arg(long = "saved_model_tags", default_value = "serve")]
    pub saved_model_tags: String,

    /// Threads for each op's internal parallelism (0 = TensorFlow's choice).
    #[arg(long = "tensorflow_intra_op_parallelism", default_value_t = 0)]
    pub tensorflow_intra_op_parallelism: i32,

    /// Threads for running independent ops (0 = TensorFlow's choice).
    #[arg(long = "tensorflow_inter_op_parallelism", default_value_t = 0)]
    pub tensorflow_inter_op_parallelism: i32,

    /// Timeout for REST inference requests, milliseconds.
    #[arg(long = "rest_api_timeout_in_ms", default_value_t = 30000)]
    pub rest_api_timeout_in_ms: u64,

    /// tfgate: path of the tfgate-worker binary (default: beside tfgate).
    #[arg(long = "worker_binary")]
    pub worker_binary: Option<PathBuf>,

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

    /// tfgate: largest accepted REST request body, MiB.
    #[arg(long = "max_request_body_mb", default_value_t = 512)]
    pub max_request_body_mb: usize,
}

impl Flags {
    /// The startup checks `tensorflow_model_server` makes before serving.
    pub fn validate(&self) -> Result<(), String> {
        if self.model_base_path.is_empty() {
            return Err("Both server_options.model_base_path and server_options.model_config_file are empty!".into());
        }
        Ok(())
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
