//! The Manager: makes the loaded versions of each model follow its aspired versions, and
//! hands out servables to the serving thread.
//!
//! Transitions follow TF Serving's AvailabilityPreservingPolicy: new aspired versions are
//! loaded first, and versions that are no longer aspired are unloaded only once an aspired
//! version is available (or when nothing is aspired any more, e.g. the base path was
//! emptied). A version whose load failed is not retried until it leaves the base path.
//! In-flight requests hold their own `Arc<Servable>`, so an unload never pulls a session
//! from under a running request: it is freed when the last holder lets go.

use crate::loader::Servable;
use crate::source::{list_versions, VersionDir};
use crate::version_policy::{aspired_versions, versions_to_load, versions_to_unload};
use shm_protocol::code::Status;
use shm_protocol::control::{ModelConfig, ServableState, SessionConfig, WorkerMessage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Where state changes are reported (the gateway's control socket).
pub type Report<'a> = dyn FnMut(WorkerMessage) + 'a;

/// Loaded servables by model name, then version.
#[derive(Default)]
pub struct Manager {
    models: RwLock<BTreeMap<String, BTreeMap<i64, Arc<Servable>>>>,
    /// Versions whose load failed, skipped until they disappear from the base path.
    failed: RwLock<BTreeSet<(String, i64)>>,
}

fn state(
    model: &str,
    version: i64,
    state: ServableState,
    error: Option<Status>,
    defs: Vec<u8>,
) -> WorkerMessage {
    WorkerMessage::ServableState {
        model_name: model.to_string(),
        version,
        state,
        error,
        signature_defs: defs,
    }
}

impl Manager {
    /// The servable for `name` at `version`, or the highest loaded version.
    pub fn servable(&self, name: &str, version: Option<i64>) -> Option<Arc<Servable>> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let versions = models.get(name)?;
        match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        }
    }

    fn loaded(&self, name: &str) -> Vec<i64> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models
            .get(name)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Polls every model's base path once and moves toward its aspired versions.
    pub fn poll(&self, models: &[ModelConfig], session: &SessionConfig, report: &mut Report<'_>) {
        for model in models {
            let found = match list_versions(Path::new(&model.base_path)) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(model = %model.name, base_path = %model.base_path, "cannot list versions: {e}");
                    Vec::new()
                }
            };
            self.reconcile(model, &found, session, report);
        }
        // Models no longer configured: every version goes (a config reload removed them).
        let gone: Vec<String> = {
            let loaded = self.models.read().unwrap_or_else(|e| e.into_inner());
            loaded
                .keys()
                .filter(|name| !models.iter().any(|m| &m.name == *name))
                .cloned()
                .collect()
        };
        for name in gone {
            let removed = ModelConfig {
                name: name.clone(),
                base_path: String::new(),
                version_policy: shm_protocol::control::VersionPolicy::Specific {
                    versions: Vec::new(),
                },
            };
            self.reconcile(&removed, &[], session, report);
            let mut loaded = self.models.write().unwrap_or_else(|e| e.into_inner());
            if loaded.get(&name).is_some_and(|v| v.is_empty()) {
                loaded.remove(&name);
            }
        }
    }

    fn reconcile(
        &self,
        model: &ModelConfig,
        found: &[VersionDir],
        session: &SessionConfig,
        report: &mut Report<'_>,
    ) {
        let numbers: Vec<i64> = found.iter().map(|v| v.version).collect();
        {
            let mut failed = self.failed.write().unwrap_or_else(|e| e.into_inner());
            failed.retain(|(name, v)| name != &model.name || numbers.contains(v));
        }
        let aspired = aspired_versions(&model.version_policy, &numbers);
        if aspired.is_empty() && self.loaded(&model.name).is_empty() {
            tracing::warn!(
                "No versions of servable {} found under base path {}. Did you forget to name your leaf directory as a number (eg. '/1/')?",
                model.name,
                model.base_path
            );
            report(WorkerMessage::NoVersions {
                model_name: model.name.clone(),
                base_path: model.base_path.clone(),
            });
        }

        // Load first: highest new aspired version first.
        let failed: Vec<i64> = self
            .failed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(name, _)| name == &model.name)
            .map(|(_, v)| *v)
            .collect();
        for version in &versions_to_load(&aspired, &self.loaded(&model.name), &failed) {
            let Some(dir) = found.iter().find(|d| d.version == *version) else {
                continue;
            };
            report(state(
                &model.name,
                *version,
                ServableState::Loading,
                None,
                Vec::new(),
            ));
            let started = std::time::Instant::now();
            match Servable::load(*version, &dir.path.to_string_lossy(), session) {
                Ok(servable) => {
                    tracing::info!(model = %model.name, version, ms = started.elapsed().as_millis() as u64, "loaded");
                    let defs = servable.signature_defs.clone();
                    self.models
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(model.name.clone())
                        .or_default()
                        .insert(*version, Arc::new(servable));
                    report(state(
                        &model.name,
                        *version,
                        ServableState::Available,
                        None,
                        defs,
                    ));
                }
                Err(e) => {
                    tracing::error!(model = %model.name, version, "load failed: {e}");
                    self.failed
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((model.name.clone(), *version));
                    report(state(
                        &model.name,
                        *version,
                        ServableState::End,
                        Some(Status::new(e.code, e.message)),
                        Vec::new(),
                    ));
                }
            }
        }

        // Then unload what is no longer aspired.
        for version in versions_to_unload(&aspired, &self.loaded(&model.name)) {
            report(state(
                &model.name,
                version,
                ServableState::Unloading,
                None,
                Vec::new(),
            ));
            let removed = {
                let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
                models
                    .get_mut(&model.name)
                    .and_then(|vs| vs.remove(&version))
            };
            drop(removed); // the session closes when the last in-flight request lets go
            tracing::info!(model = %model.name, version, "unloaded");
            report(state(
                &model.name,
                version,
                ServableState::End,
                None,
                Vec::new(),
            ));
        }
    }
}
