//! ServerCore (TF Serving's name): the model configuration in force and how it changes —
//! at startup, at each `--model_config_file_poll_wait_seconds` poll, and on
//! `ModelService/HandleReloadConfigRequest` — with `server_core.cc`'s checks in its
//! order. The applied model list is published to the workers, which load and unload to
//! follow it; version labels are resolved by the servable table.

use crate::error::ServingError;
use crate::model_cache::ModelCache;
use crate::model_config::{self, model_list};
use crate::servables::{Labels, Servables};
use std::collections::BTreeSet;
use std::sync::Arc;
use tfgate_proto::tensorflow::serving as pb;
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tokio::sync::{watch, Mutex};

/// Options from the flags.
#[derive(Clone, Debug, Default)]
pub struct CoreOptions {
    /// `--allow_version_labels_for_unavailable_models`.
    pub allow_version_labels_for_unavailable_models: bool,
    /// Mirrors `gs://` and `s3://` base paths for the workers; without it (unit tests)
    /// such a base path is refused.
    pub model_cache: Option<ModelCache>,
}

/// The model list the workers serve.
pub type Models = Arc<Vec<pb::ModelConfig>>;

/// Shared by `main` (startup, config-file polling) and the gRPC ModelService.
#[derive(Clone)]
pub struct ServerCore {
    inner: Arc<Inner>,
}

struct Inner {
    options: CoreOptions,
    servables: Servables,
    /// The stored config (`config_`), held for a whole reload: reloads run one at a time.
    config: Mutex<Option<pb::ModelServerConfig>>,
    /// The applied model list; supervisors forward each change to their worker.
    models: watch::Sender<Models>,
}

/// Waits until every model in `names` has a version AVAILABLE on some worker or has
/// failed, and fails (UNKNOWN, TF Serving's wording with `noun` — "servable" at startup,
/// "model" on a reload) if any failed. With `partial` (`--allow_partial_startup`), failed
/// models and models with no version directory yet are logged and left behind instead.
pub async fn wait_until_available(
    servables: &Servables,
    names: &[String],
    noun: &str,
    partial: bool,
) -> Result<(), ServingError> {
    let mut changes = servables.subscribe();
    loop {
        changes.borrow_and_update();
        let mut pending = Vec::new();
        let mut failed = String::new();
        let mut n_failed = 0;
        for name in names {
            let versions = servables.versions(name).unwrap_or_default();
            if versions.values().any(|v| v.state == State::Available) {
                continue;
            }
            if let Some((v, s)) = versions
                .iter()
                .rev()
                .find(|(_, s)| s.state == State::End && s.error.is_some())
            {
                let why = s
                    .error
                    .as_ref()
                    .map(|e| format!(" due to error: {}: {}", e.code.name(), e.message))
                    .unwrap_or_default();
                failed.push_str(&format!("{{{{name: {name} version: {v}}}{why}}}, "));
                n_failed += 1;
            } else if let Some(e) = servables
                .listing_error_of(name)
                .filter(|_| versions.is_empty())
            {
                // A remote base path that cannot be listed fails like a load: waiting
                // would hide the store's reason.
                failed.push_str(&format!(
                    "{{{{name: {name}}} due to error: {}: {}}}, ",
                    e.code.name(),
                    e.message
                ));
                n_failed += 1;
            } else if !(partial && servables.has_no_versions(name)) {
                pending.push(name);
            }
        }
        if pending.is_empty() {
            if n_failed == 0 {
                return Ok(());
            }
            let e = ServingError::new(
                crate::error::Code::Unknown,
                format!("{n_failed} {noun}(s) did not become available: {{{failed}}}"),
            );
            if !partial {
                return Err(e);
            }
            tracing::error!("starting without them: {}", e.message);
            return Ok(());
        }
        if changes.changed().await.is_err() {
            return Err(ServingError::unavailable("the server is shutting down"));
        }
    }
}

impl ServerCore {
    pub fn new(options: CoreOptions, servables: Servables) -> ServerCore {
        ServerCore {
            inner: Arc::new(Inner {
                options,
                servables,
                config: Mutex::new(None),
                models: watch::channel(Arc::new(Vec::new())).0,
            }),
        }
    }

    /// The applied model list, and its changes.
    pub fn models(&self) -> watch::Receiver<Models> {
        self.inner.models.subscribe()
    }

    /// `ServerCore::ReloadConfig`. With `wait`, returns once every model that the new
    /// config adds has a version AVAILABLE (or failed to load); models kept or removed
    /// are not waited for.
    pub async fn reload_config(
        &self,
        new: pb::ModelServerConfig,
        wait: bool,
    ) -> Result<(), ServingError> {
        let added = self.apply(new).await?;
        if wait && !added.is_empty() {
            wait_until_available(&self.inner.servables, &added, "model", false).await?;
        }
        Ok(())
    }

    /// The checks and the switch; returns the names of the models added. The config is
    /// stored before the label check, as TF Serving stores it: a config whose labels
    /// fail leaves the models and labels as they were, but is what the next reload is
    /// compared with.
    async fn apply(&self, new: pb::ModelServerConfig) -> Result<Vec<String>, ServingError> {
        let mut stored = self.inner.config.lock().await;
        let old_list = stored.as_ref().and_then(model_list).map(<[_]>::to_vec);
        let is_first = stored.as_ref().is_none_or(|c| c.config.is_none());
        let is_same = stored.as_ref() == Some(&new);
        if !(is_first || is_same || (old_list.is_some() && model_list(&new).is_some())) {
            tracing::error!(
                "Cannot transition from {:?} to {:?}",
                stored.as_ref().map(kind),
                kind(&new)
            );
            return Err(ServingError::failed_precondition(
                "Cannot transition to requested config. It is only legal to transition from one ModelConfigList to another.",
            ));
        }
        let Some(new_list) = model_list(&new).map(<[_]>::to_vec) else {
            if new.config.is_none() {
                tracing::info!("Taking no action for empty config.");
                return Ok(Vec::new());
            }
            return Err(ServingError::invalid_argument(
                "ModelServer does not yet support custom model config.",
            ));
        };
        model_config::validate_list(&new_list)?;
        if let Some(old) = &old_list {
            model_config::check_platforms_unchanged(old, &new_list)?;
        }
        *stored = Some(new);
        let labels = self.updated_labels(&new_list)?;
        self.inner.servables.set_labels(labels);
        let models = new_list
            .iter()
            .map(|m| {
                tracing::info!(" (Re-)adding model: {}", m.name);
                let served = model_config::served_model(m)?;
                match &self.inner.options.model_cache {
                    Some(cache) => cache.local_model(served),
                    None => match model_config::remote_store(&served.name, &served.base_path)? {
                        None => Ok(served),
                        Some(_) => Err(ServingError::invalid_argument(format!(
                            "model {}: no model cache for base_path {}",
                            served.name, served.base_path
                        ))),
                    },
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(cache) = &self.inner.options.model_cache {
            let names = models.iter().map(|m| m.name.clone()).collect();
            cache.retain(&names, &self.inner.servables);
        }
        let before: BTreeSet<String> = self
            .inner
            .models
            .borrow()
            .iter()
            .map(|m| m.name.clone())
            .collect();
        let added = models
            .iter()
            .filter(|m| !before.contains(&m.name))
            .map(|m| m.name.clone())
            .collect();
        self.inner.models.send_replace(Arc::new(models));
        tracing::info!("Finished adding/updating models");
        Ok(added)
    }

    /// `UpdateModelVersionLabelMap`: every label must name a version AVAILABLE now,
    /// except, with `--allow_version_labels_for_unavailable_models`, a new label or one
    /// that stays where it is.
    fn updated_labels(&self, models: &[pb::ModelConfig]) -> Result<Labels, ServingError> {
        let current = self.inner.servables.labels();
        let mut labels = Labels::new();
        for m in models {
            for (label, version) in &m.version_labels {
                let allow = self
                    .inner
                    .options
                    .allow_version_labels_for_unavailable_models
                    && {
                        let existing = current
                            .as_ref()
                            .and_then(|l| l.get(&m.name))
                            .and_then(|l| l.get(label));
                        existing.is_none_or(|v| v == version)
                    };
                let available = || {
                    self.inner
                        .servables
                        .versions(&m.name)
                        .and_then(|vs| vs.get(version).map(|s| s.state))
                        == Some(State::Available)
                };
                if !allow && !available() {
                    return Err(ServingError::failed_precondition(format!(
                        "Request to assign label to version {version} of model {}, which is not currently available for inference",
                        m.name
                    )));
                }
                labels
                    .entry(m.name.clone())
                    .or_default()
                    .insert(label.clone(), *version);
            }
        }
        Ok(labels)
    }
}

fn kind(c: &pb::ModelServerConfig) -> &'static str {
    use tfgate_proto::tensorflow::serving::model_server_config::Config;
    match c.config {
        None => "an empty config",
        Some(Config::ModelConfigList(_)) => "a model config list",
        Some(Config::CustomModelConfig(_)) => "a custom model config",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servables::{ServableId, WorkerId};
    use tfgate_proto::tensorflow::serving::SignatureDefMap;

    fn config(text: &str) -> pb::ModelServerConfig {
        model_config::parse(text).unwrap()
    }

    fn available(s: &Servables, name: &str, version: i64) {
        s.update(
            WorkerId(0),
            ServableId {
                name: name.into(),
                version,
            },
            State::Available,
            None,
            SignatureDefMap::default(),
        );
    }

    fn names(core: &ServerCore) -> Vec<String> {
        core.models()
            .borrow()
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    #[tokio::test]
    async fn reloads_follow_server_core_rules() {
        let s = Servables::default();
        let core = ServerCore::new(CoreOptions::default(), s.clone());
        core.reload_config(
            config(r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } }"#),
            false,
        )
        .await
        .unwrap();
        assert_eq!(names(&core), ["a"]);

        // Labels must point at AVAILABLE versions; the config is stored anyway.
        let labelled = config(
            r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow"
               version_labels { key: "stable" value: 1 } } }"#,
        );
        let e = core
            .reload_config(labelled.clone(), false)
            .await
            .unwrap_err();
        assert_eq!(e.code, crate::error::Code::FailedPrecondition);
        assert_eq!(
            e.message,
            "Request to assign label to version 1 of model a, which is not currently available for inference"
        );
        available(&s, "a", 1);
        core.reload_config(labelled, false).await.unwrap();
        assert_eq!(s.labels().unwrap()["a"]["stable"], 1);

        // Not a list after a list; a bad list keeps what is in force.
        let e = core
            .reload_config(pb::ModelServerConfig::default(), false)
            .await
            .unwrap_err();
        assert_eq!(
            e.message,
            "Cannot transition to requested config. It is only legal to transition from one ModelConfigList to another."
        );
        let e = core
            .reload_config(
                config(r#"model_config_list { config { name: "b" base_path: "b" } }"#),
                false,
            )
            .await
            .unwrap_err();
        assert!(
            e.message
                .starts_with("Expected model b to have an absolute path"),
            "{e:?}"
        );
        assert_eq!(names(&core), ["a"]);

        // Removing a model and adding another.
        core.reload_config(
            config(r#"model_config_list { config { name: "b" base_path: "/b" model_platform: "tensorflow" } }"#),
            false,
        )
        .await
        .unwrap();
        assert_eq!(names(&core), ["b"]);
        assert!(s.labels().unwrap().is_empty(), "a's labels went with it");
    }

    #[tokio::test]
    async fn unavailable_labels_with_the_flag() {
        let s = Servables::default();
        let core = ServerCore::new(
            CoreOptions {
                allow_version_labels_for_unavailable_models: true,
                ..Default::default()
            },
            s.clone(),
        );
        let with = |v: i64| {
            config(&format!(
                r#"model_config_list {{ config {{ name: "a" base_path: "/a" model_platform: "tensorflow"
                   version_labels {{ key: "stable" value: {v} }} }} }}"#
            ))
        };
        // A new label may point at a version not loaded yet (also at startup).
        core.reload_config(with(2), false).await.unwrap();
        core.reload_config(with(2), false).await.unwrap();
        // Moving it needs the target AVAILABLE.
        let e = core.reload_config(with(3), false).await.unwrap_err();
        assert_eq!(e.code, crate::error::Code::FailedPrecondition);
        available(&s, "a", 3);
        core.reload_config(with(3), false).await.unwrap();
        assert_eq!(s.labels().unwrap()["a"]["stable"], 3);
    }

    #[tokio::test]
    async fn waits_report_failures_in_tf_servings_words() {
        let s = Servables::default();
        s.update(
            WorkerId(0),
            ServableId {
                name: "m".into(),
                version: 1,
            },
            State::End,
            Some(tfgate_tensor::code::Status::new(
                crate::error::Code::NotFound,
                "gone",
            )),
            SignatureDefMap::default(),
        );
        let e = wait_until_available(&s, &["m".to_string()], "servable", false)
            .await
            .unwrap_err();
        assert_eq!(
            e.message,
            "1 servable(s) did not become available: {{{name: m version: 1} due to error: NOT_FOUND: gone}, }"
        );
    }
}
