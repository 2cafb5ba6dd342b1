//! The Manager: loads the aspired versions of each model and hands out servables.
//! (Version transitions while serving — load before unload — arrive with polling.)

use crate::loader::Servable;
use crate::source::list_versions;
use crate::version_policy::aspired_versions;
use shm_protocol::control::{ModelConfig, ServableState, SessionConfig, WorkerMessage};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Loaded servables by model name, then version.
#[derive(Default)]
pub struct Manager {
    models: BTreeMap<String, BTreeMap<i64, Arc<Servable>>>,
}

impl Manager {
    /// Loads the aspired versions of every model, reporting each state change.
    pub fn load_models(
        &mut self,
        models: &[ModelConfig],
        session: &SessionConfig,
        report: &mut dyn FnMut(WorkerMessage),
    ) {
        for model in models {
            let found = match list_versions(Path::new(&model.base_path)) {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(model = %model.name, base_path = %model.base_path, "cannot list versions: {e}");
                    Vec::new()
                }
            };
            let numbers: Vec<i64> = found.iter().map(|v| v.version).collect();
            let aspired = aspired_versions(&model.version_policy, &numbers);
            if aspired.is_empty() {
                tracing::warn!(
                    "No versions of servable {} found under base path {}. Did you forget to name your leaf directory as a number (eg. '/1/')?",
                    model.name,
                    model.base_path
                );
                report(WorkerMessage::NoVersions {
                    model_name: model.name.clone(),
                    base_path: model.base_path.clone(),
                });
                continue;
            }
            for version in aspired {
                let Some(dir) = found.iter().find(|v| v.version == version) else {
                    continue;
                };
                let state = |state, error, signature_defs| WorkerMessage::ServableState {
                    model_name: model.name.clone(),
                    version,
                    state,
                    error,
                    signature_defs,
                };
                report(state(ServableState::Loading, None, Vec::new()));
                let started = std::time::Instant::now();
                match Servable::load(version, &dir.path.to_string_lossy(), session) {
                    Ok(servable) => {
                        tracing::info!(model = %model.name, version, ms = started.elapsed().as_millis() as u64, "loaded");
                        let defs = servable.signature_defs.clone();
                        self.models
                            .entry(model.name.clone())
                            .or_default()
                            .insert(version, Arc::new(servable));
                        report(state(ServableState::Available, None, defs));
                    }
                    Err(e) => {
                        tracing::error!(model = %model.name, version, "load failed: {e}");
                        report(state(
                            ServableState::End,
                            Some((e.code, e.message)),
                            Vec::new(),
                        ));
                    }
                }
            }
        }
    }

    /// The servable for `name` at `version`, or the highest loaded version.
    pub fn servable(&self, name: &str, version: Option<i64>) -> Option<Arc<Servable>> {
        let versions = self.models.get(name)?;
        match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        }
    }
}
