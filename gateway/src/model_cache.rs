//! The model cache: `gs://` and `s3://` base paths (and config files) as the server core
//! sees them. The gateway mirrors each remote base path into `--model_cache_dir`
//! (`tfgate_model_store::Mirror`); the model list the workers get names the mirror's
//! directory instead, so they poll and load as from a local base path. What the mirror
//! could not fetch shows in the model's status (`Servables::store_error`).

use crate::config::Flags;
use crate::error::{Code, ServingError};
use crate::servables::Servables;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tfgate_model_store::{Event, Mirror, MirrorConfig, RemotePath, VersionPolicy};
use tfgate_proto::tensorflow::serving as pb;
use tfgate_proto::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
use tfgate_tensor::code::Status;

/// Shared by the server core and the config-file poller.
#[derive(Clone)]
pub struct ModelCache {
    mirror: Mirror,
    /// Attached workers (`--worker_socket`) without a `--model_cache_dir` they share
    /// cannot read the default one.
    attached_without_dir: bool,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelCache({})", self.mirror.cache_dir().display())
    }
}

impl ModelCache {
    /// The cache the flags ask for (by default `model-cache` in the runtime directory).
    pub fn new(
        flags: &Flags,
        runtime_dir: &Path,
        servables: Servables,
    ) -> Result<ModelCache, ServingError> {
        let cache_dir = match flags.model_cache_dir.as_str() {
            "" => runtime_dir.join("model-cache"),
            dir => std::path::absolute(dir).map_err(|e| {
                ServingError::invalid_argument(format!("--model_cache_dir {dir}: {e}"))
            })?,
        };
        let config = MirrorConfig {
            cache_dir,
            max_bytes: flags.model_cache_max_bytes,
            poll_wait_seconds: flags.file_system_poll_wait_seconds,
            max_retries: flags.max_num_load_retries,
            retry_interval: Duration::from_micros(flags.load_retry_interval_micros.max(0) as u64),
        };
        let listener = move |event: Event| match event {
            Event::Version {
                model,
                version,
                error,
            } => servables.store_error(
                &model,
                version,
                error.map(|e| Status {
                    code: if e.no_room {
                        Code::ResourceExhausted
                    } else {
                        Code::Unavailable
                    },
                    message: e.message,
                }),
            ),
            Event::Removed { model, version } => servables.store_error(&model, version, None),
            Event::Listing { model, error } => servables.listing_error(
                &model,
                error.map(|message| Status {
                    code: Code::Unavailable,
                    message,
                }),
            ),
        };
        let mirror = Mirror::new(
            config,
            tfgate_model_store::Env::from_process(),
            std::sync::Arc::new(listener),
        )
        .map_err(ServingError::invalid_argument)?;
        Ok(ModelCache {
            mirror,
            attached_without_dir: !flags.worker_socket.is_empty()
                && flags.model_cache_dir.is_empty(),
        })
    }

    /// The model as the workers serve it: a remote base path is mirrored and replaced
    /// by its local directory; a local one is kept.
    pub fn local_model(&self, mut m: pb::ModelConfig) -> Result<pb::ModelConfig, ServingError> {
        let Some(remote) = crate::model_config::remote_store(&m.name, &m.base_path)? else {
            return Ok(m);
        };
        if self.attached_without_dir {
            return Err(ServingError::invalid_argument(format!(
                "model {}: base_path {remote} is mirrored for the workers, and attached \
                 workers (--worker_socket) cannot read the gateway's own directory: set \
                 --model_cache_dir to a directory they see at the same path (a shared volume)",
                m.name
            )));
        }
        let local = self
            .mirror
            .track(&m.name, &remote, policy(&m))
            .map_err(|e| ServingError::invalid_argument(format!("model {}: {e}", m.name)))?;
        m.base_path = local.to_string_lossy().into_owned();
        Ok(m)
    }

    /// Stops mirroring the models not in `names`, and forgets what it said of them.
    pub fn retain(&self, names: &BTreeSet<String>, servables: &Servables) {
        self.mirror.retain(names);
        servables.retain_store_errors(names);
    }

    /// Reads a `--model_config_file` that is on a store.
    pub async fn read_config(
        &self,
        remote: &RemotePath,
    ) -> Result<pb::ModelServerConfig, ServingError> {
        let bytes = self.mirror.read(remote).await.map_err(|e| {
            ServingError::invalid_argument(format!("Failed to read config file {remote}: {e}"))
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            ServingError::invalid_argument(format!("config file {remote} is not UTF-8 text"))
        })?;
        crate::model_config::parse(&text).map_err(|e| {
            tracing::error!("Error parsing text-format tensorflow.serving.ModelServerConfig: {e}");
            ServingError::invalid_argument(format!("Invalid protobuf file: '{remote}'"))
        })
    }
}

/// `model_version_policy`, as the workers apply it (latest 1 by default).
fn policy(m: &pb::ModelConfig) -> VersionPolicy {
    match m
        .model_version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        Some(PolicyChoice::All(_)) => VersionPolicy::All,
        Some(PolicyChoice::Specific(s)) => {
            VersionPolicy::Specific(s.versions.iter().copied().collect())
        }
        Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions.max(1)),
        None => VersionPolicy::Latest(1),
    }
}
