//! What is servable right now, as the workers report it: model name → version → state
//! and signatures. Requests resolve `Latest` / `Specific` / label to a [`ServableId`] here.

use crate::error::ServingError;
use parking_lot::RwLock;
use shm_protocol::control::ServableState;
use std::collections::BTreeMap;
use std::sync::Arc;
use tfgate_proto::tensorflow::serving::SignatureDefMap;
use tfgate_proto::tensorflow::SignatureDef;
use tokio::sync::watch;

/// A model version, as TF Serving names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServableId {
    pub name: String,
    pub version: i64,
}

/// What a request asks for (TF Serving's `ServableRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServableRequest {
    Latest(String),
    Specific(String, i64),
    Label(String, String),
}

impl ServableRequest {
    pub fn name(&self) -> &str {
        match self {
            ServableRequest::Latest(n)
            | ServableRequest::Specific(n, _)
            | ServableRequest::Label(n, _) => n,
        }
    }
}

/// A version's state and, once AVAILABLE, its signatures.
#[derive(Clone, Debug)]
pub struct VersionState {
    pub state: ServableState,
    pub error: Option<(i32, String)>,
    pub signatures: Arc<SignatureDefMap>,
}

/// A resolved servable: its id and signatures.
#[derive(Clone, Debug)]
pub struct Servable {
    pub id: ServableId,
    pub signatures: Arc<SignatureDefMap>,
}

impl Servable {
    pub fn signature(&self, name: &str) -> Option<&SignatureDef> {
        self.signatures.signature_def.get(name)
    }
}

/// The table, shared by the front ends and the worker supervisors.
#[derive(Clone)]
pub struct Servables {
    inner: Arc<RwLock<BTreeMap<String, BTreeMap<i64, VersionState>>>>,
    changed: watch::Sender<u64>,
}

impl Default for Servables {
    fn default() -> Self {
        Servables {
            inner: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Servables {
    /// Records a state change reported by a worker.
    pub fn update(
        &self,
        id: ServableId,
        state: ServableState,
        error: Option<(i32, String)>,
        signatures: SignatureDefMap,
    ) {
        {
            let mut table = self.inner.write();
            let versions = table.entry(id.name).or_default();
            let signatures = match versions.get(&id.version) {
                Some(old) if signatures.signature_def.is_empty() => old.signatures.clone(),
                _ => Arc::new(signatures),
            };
            versions.insert(
                id.version,
                VersionState {
                    state,
                    error,
                    signatures,
                },
            );
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever the table does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Every version of `name` with its state (for status and readiness).
    pub fn versions(&self, name: &str) -> Option<BTreeMap<i64, VersionState>> {
        self.inner.read().get(name).cloned()
    }

    /// Resolves a request to an AVAILABLE servable, with TF Serving's errors.
    pub fn resolve(&self, request: &ServableRequest) -> Result<Servable, ServingError> {
        let table = self.inner.read();
        let available = |name: &str, version: i64| {
            table
                .get(name)
                .and_then(|vs| vs.get(&version))
                .filter(|v| v.state == ServableState::Available)
                .map(|v| Servable {
                    id: ServableId {
                        name: name.to_string(),
                        version,
                    },
                    signatures: v.signatures.clone(),
                })
        };
        match request {
            ServableRequest::Latest(name) => table
                .get(name)
                .and_then(|vs| {
                    vs.iter()
                        .rev()
                        .find(|(_, v)| v.state == ServableState::Available)
                        .map(|(version, _)| *version)
                })
                .and_then(|version| available(name, version))
                .ok_or_else(|| {
                    ServingError::not_found(format!(
                        "Servable not found for request: Latest({name})"
                    ))
                }),
            ServableRequest::Specific(name, version) => {
                available(name, *version).ok_or_else(|| {
                    ServingError::not_found(format!(
                        "Servable not found for request: Specific({name}, {version})"
                    ))
                })
            }
            ServableRequest::Label(_, label) => Err(ServingError::invalid_argument(format!(
                "Unrecognized servable version label: {label}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: i64) -> ServableId {
        ServableId {
            name: "m".into(),
            version: v,
        }
    }

    #[test]
    fn resolves_latest_available_and_specific() {
        let s = Servables::default();
        s.update(
            id(1),
            ServableState::Available,
            None,
            SignatureDefMap::default(),
        );
        s.update(
            id(2),
            ServableState::Available,
            None,
            SignatureDefMap::default(),
        );
        s.update(
            id(3),
            ServableState::Loading,
            None,
            SignatureDefMap::default(),
        );
        assert_eq!(
            s.resolve(&ServableRequest::Latest("m".into())).unwrap().id,
            id(2)
        );
        assert_eq!(
            s.resolve(&ServableRequest::Specific("m".into(), 1))
                .unwrap()
                .id,
            id(1)
        );
        let e = s
            .resolve(&ServableRequest::Specific("m".into(), 3))
            .unwrap_err();
        assert_eq!(e.message, "Servable not found for request: Specific(m, 3)");
        let e = s
            .resolve(&ServableRequest::Latest("half".into()))
            .unwrap_err();
        assert_eq!(e.message, "Servable not found for request: Latest(half)");
        assert_eq!(e.http_status(), 404);
    }
}
