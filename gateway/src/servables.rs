//! What is servable right now and where: model → version → the state of that version on
//! each worker, as the workers report it (TF Serving's `ServableStateMonitor`, kept per
//! worker). Requests resolve `Latest` / `Specific` here to a [`ServableId`]; the pool
//! asks which workers hold it AVAILABLE; status reports the best state across workers,
//! as a client of one TF Serving would see it.
//!
//! A worker's death takes its versions out of routing at once: what it had AVAILABLE
//! becomes START and *awaited* — its replacement will load the same versions, so
//! requests for them wait (within their deadline) instead of failing with NOT_FOUND.
//! When the replacement has done its initial load, whatever it did not bring back is
//! forgotten.

use crate::error::ServingError;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tfgate_proto::tensorflow::serving::SignatureDefMap;
use tfgate_proto::tensorflow::SignatureDef;
use tfgate_tensor::code::Status;
use tokio::sync::watch;

/// A worker slot (stable across the worker's restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

impl ServableId {
    /// The `ModelSpec` a response names: this version and the signature that ran.
    pub fn model_spec(&self, signature_name: &str) -> tfgate_proto::tensorflow::serving::ModelSpec {
        use tfgate_proto::tensorflow::serving::{model_spec::VersionChoice, ModelSpec};
        ModelSpec {
            name: self.name.clone(),
            signature_name: signature_name.to_string(),
            version_choice: Some(VersionChoice::Version(self.version)),
        }
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

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

/// A version's state as status reports it (the best across workers).
#[derive(Clone, Debug, PartialEq)]
pub struct VersionStatus {
    pub state: State,
    pub error: Option<Status>,
}

/// A version's state as a worker reported it.
pub struct Reported {
    pub id: ServableId,
    pub state: State,
    pub error: Option<Status>,
    pub signatures: SignatureDefMap,
    pub batching_params: Option<String>,
}

/// Where a request for a servable can go right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routes {
    /// These workers hold it AVAILABLE.
    To(Vec<WorkerId>),
    /// No worker holds it now, but a restarting worker is expected to bring it back.
    Awaited,
    /// Nobody serves it any more.
    Gone,
}

/// One version on one worker.
#[derive(Clone, Debug)]
struct OnWorker {
    state: State,
    error: Option<Status>,
    /// Was AVAILABLE on a worker that died; its replacement should load it again.
    awaited: bool,
}

#[derive(Default)]
struct VersionEntry {
    signatures: Arc<SignatureDefMap>,
    /// The version's `batching_params.pbtxt`, as its workers read it.
    batching_params: Option<Arc<str>>,
    on: BTreeMap<WorkerId, OnWorker>,
}

impl VersionEntry {
    fn on_workers_in(&self, state: State) -> Vec<WorkerId> {
        self.on
            .iter()
            .filter(|(_, w)| w.state == state)
            .map(|(id, _)| *id)
            .collect()
    }
    fn is_available(&self) -> bool {
        self.on.values().any(|w| w.state == State::Available)
    }
    fn is_awaited(&self) -> bool {
        self.on.values().any(|w| w.awaited)
    }
    /// The state a client of one TF Serving would see: the most useful across workers.
    fn best(&self) -> Option<VersionStatus> {
        fn rank(s: State) -> u8 {
            match s {
                State::Available => 4,
                State::Loading => 3,
                State::Unloading => 2,
                State::Start => 1,
                State::End | State::Unknown => 0,
            }
        }
        let best = self.on.values().max_by_key(|w| rank(w.state))?;
        let error = best.error.clone().or_else(|| match best.state {
            State::End => self.on.values().find_map(|w| w.error.clone()),
            _ => None,
        });
        Some(VersionStatus {
            state: best.state,
            error,
        })
    }
}

type Table = BTreeMap<String, BTreeMap<i64, VersionEntry>>;

/// Records one report of `worker`'s.
fn record(table: &mut Table, worker: WorkerId, r: Reported) {
    let entry = table
        .entry(r.id.name)
        .or_default()
        .entry(r.id.version)
        .or_default();
    if !r.signatures.signature_def.is_empty() {
        entry.signatures = Arc::new(r.signatures);
    }
    if let Some(p) = r.batching_params {
        entry.batching_params = Some(p.into());
    }
    // Still on its way back while the replacement loads it.
    let awaited = matches!(r.state, State::Start | State::Loading)
        && entry.on.get(&worker).is_some_and(|w| w.awaited);
    entry.on.insert(
        worker,
        OnWorker {
            state: r.state,
            error: r.error,
            awaited,
        },
    );
}

/// Drops what `worker` reported of each version where `which` holds, and versions and
/// models nobody reports any more.
fn forget(table: &mut Table, worker: WorkerId, which: impl Fn(&OnWorker) -> bool) {
    for versions in table.values_mut() {
        for entry in versions.values_mut() {
            if entry.on.get(&worker).is_some_and(&which) {
                entry.on.remove(&worker);
            }
        }
        versions.retain(|_, e| !e.on.is_empty());
    }
    table.retain(|_, vs| !vs.is_empty());
}

/// Version labels by model, then label (`version_labels` of the model config).
pub type Labels = BTreeMap<String, BTreeMap<String, i64>>;

/// The table, shared by the front ends, the pool and the worker supervisors.
#[derive(Clone)]
pub struct Servables {
    inner: Arc<RwLock<Table>>,
    /// `None` until a model list has been applied (TF Serving's null label map).
    labels: Arc<RwLock<Option<Labels>>>,
    /// Models a worker found no version directory for (and nothing since).
    no_versions: Arc<RwLock<std::collections::BTreeSet<String>>>,
    /// Versions of remote base paths the model cache could not fetch (`model_cache`),
    /// by model: END with the reason in status, until fetched or gone from the store.
    store_errors: Arc<RwLock<BTreeMap<String, BTreeMap<i64, Status>>>>,
    /// Remote base paths the model cache cannot list, by model.
    listing_errors: Arc<RwLock<BTreeMap<String, Status>>>,
    changed: watch::Sender<u64>,
}

impl Default for Servables {
    fn default() -> Self {
        Servables {
            inner: Arc::default(),
            labels: Arc::default(),
            no_versions: Arc::default(),
            store_errors: Arc::default(),
            listing_errors: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

fn not_found(request: &str) -> ServingError {
    ServingError::not_found(format!("Servable not found for request: {request}"))
}

impl Servables {
    fn modify(&self, f: impl FnOnce(&mut Table)) {
        f(&mut self.inner.write());
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records a state change a worker reported. Signatures arrive with AVAILABLE; the
    /// same version directory gives every worker the same ones.
    #[cfg(test)]
    pub fn update(
        &self,
        worker: WorkerId,
        id: ServableId,
        state: State,
        error: Option<Status>,
        signatures: SignatureDefMap,
    ) {
        self.apply(
            worker,
            Reported {
                id,
                state,
                error,
                signatures,
                batching_params: None,
            },
        );
    }

    /// The `batching_params.pbtxt` of a version, if it has one.
    pub fn batching_params(&self, id: &ServableId) -> Option<Arc<str>> {
        self.inner
            .read()
            .get(&id.name)
            .and_then(|vs| vs.get(&id.version))
            .and_then(|e| e.batching_params.clone())
    }

    /// A worker found no version directory for `model`.
    pub fn no_versions(&self, model: &str) {
        if self.no_versions.write().insert(model.to_string()) {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Whether a worker found no version of `model`, and has reported nothing of it since.
    pub fn has_no_versions(&self, model: &str) -> bool {
        self.no_versions.read().contains(model)
    }

    /// Records one report.
    pub fn apply(&self, worker: WorkerId, reported: Reported) {
        self.no_versions.write().remove(&reported.id.name);
        self.modify(|table| record(table, worker, reported));
    }

    /// A worker died: nothing of it is routable any more; what it served is awaited from
    /// its replacement.
    pub fn worker_lost(&self, worker: WorkerId) {
        self.modify(|table| {
            for entry in table.values_mut().flat_map(|vs| vs.values_mut()) {
                if let Some(w) = entry.on.get_mut(&worker) {
                    let was_available = w.state == State::Available;
                    w.state = match w.state {
                        State::End | State::Unloading => State::End,
                        _ => State::Start,
                    };
                    w.awaited = was_available;
                }
            }
        });
    }

    /// A worker's slot closed: every trace of it leaves the table (no replacement will
    /// bring back what it held).
    pub fn worker_removed(&self, worker: WorkerId) {
        self.modify(|table| forget(table, worker, |_| true));
    }

    /// A successor takes a worker's place: what the worker reported is replaced, in one
    /// step, by the successor's final state of each version (ENDed versions stay, as the
    /// history status shows).
    pub fn replace_worker(&self, worker: WorkerId, states: Vec<Reported>) {
        self.modify(|table| {
            forget(table, worker, |w| w.state != State::End);
            for r in states {
                record(table, worker, r);
            }
        });
    }

    /// A (replacement) worker finished its initial load: versions a predecessor left
    /// awaited that it did not bring back are no longer expected from it.
    pub fn initial_load_done(&self, worker: WorkerId) {
        self.modify(|table| forget(table, worker, |w| w.state == State::Start));
    }

    /// Replaces every model's labels at once (`UpdateModelVersionLabelMap`).
    pub fn set_labels(&self, labels: Labels) {
        *self.labels.write() = Some(labels);
    }

    /// The labels in force, if any model list has been applied.
    pub fn labels(&self) -> Option<Labels> {
        self.labels.read().clone()
    }

    /// `GetModelVersionForLabel`.
    fn label_version(&self, name: &str, label: &str) -> Result<i64, ServingError> {
        match &*self.labels.read() {
            None => Err(ServingError::unavailable(format!(
                "Model labels does not init yet.{label}"
            ))),
            Some(labels) => labels
                .get(name)
                .and_then(|l| l.get(label))
                .copied()
                .ok_or_else(|| {
                    ServingError::invalid_argument(format!(
                        "Unrecognized servable version label: {label}"
                    ))
                }),
        }
    }

    /// A receiver that changes whenever the table does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Every version of `name` with its best state across workers, highest first
    /// (for status and startup), and the versions the model cache could not fetch, as
    /// END with the reason; `None` if neither a worker nor the cache reported the model.
    pub fn versions(&self, name: &str) -> Option<BTreeMap<i64, VersionStatus>> {
        let table = self.inner.read();
        let store_errors = self.store_errors.read();
        let from_workers = table.get(name);
        let from_store = store_errors.get(name);
        if from_workers.is_none() && from_store.is_none() {
            return None;
        }
        let mut out: BTreeMap<i64, VersionStatus> = from_workers
            .into_iter()
            .flatten()
            .filter_map(|(v, e)| Some((*v, e.best()?)))
            .collect();
        for (v, error) in from_store.into_iter().flatten() {
            out.entry(*v).or_insert_with(|| VersionStatus {
                state: State::End,
                error: Some(error.clone()),
            });
        }
        Some(out)
    }

    /// The model cache could not fetch `version` of `model` (`Some`), or now has it.
    pub fn store_error(&self, model: &str, version: i64, error: Option<Status>) {
        {
            let mut errors = self.store_errors.write();
            match error {
                Some(e) => {
                    errors
                        .entry(model.to_string())
                        .or_default()
                        .insert(version, e);
                }
                None => {
                    if let Some(vs) = errors.get_mut(model) {
                        vs.remove(&version);
                        if vs.is_empty() {
                            errors.remove(model);
                        }
                    }
                }
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The model cache cannot list `model`'s base path (`Some`), or can again.
    pub fn listing_error(&self, model: &str, error: Option<Status>) {
        match error {
            Some(e) => self.listing_errors.write().insert(model.to_string(), e),
            None => self.listing_errors.write().remove(model),
        };
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Why `model`'s base path cannot be listed, if it cannot.
    pub fn listing_error_of(&self, model: &str) -> Option<Status> {
        self.listing_errors.read().get(model).cloned()
    }

    /// Forgets the model cache's reports of models not in `models`.
    pub fn retain_store_errors(&self, models: &std::collections::BTreeSet<String>) {
        self.store_errors.write().retain(|m, _| models.contains(m));
        self.listing_errors
            .write()
            .retain(|m, _| models.contains(m));
    }

    /// Whether some version of `name` is AVAILABLE on a live worker (readiness).
    pub fn is_routable(&self, name: &str) -> bool {
        self.inner
            .read()
            .get(name)
            .is_some_and(|vs| vs.values().any(VersionEntry::is_available))
    }

    /// The versions `worker` holds and their states (for `/tfgate/workers`).
    pub fn on_worker(&self, worker: WorkerId) -> Vec<(ServableId, State)> {
        let table = self.inner.read();
        let mut out = Vec::new();
        for (name, versions) in table.iter() {
            for (version, entry) in versions {
                if let Some(w) = entry.on.get(&worker) {
                    out.push((
                        ServableId {
                            name: name.clone(),
                            version: *version,
                        },
                        w.state,
                    ));
                }
            }
        }
        out
    }

    /// Where a request for `id` (resolved a moment ago) can go right now: workers holding
    /// it AVAILABLE; else workers unloading it, which keep the session until no request
    /// for it is in flight (a request resolved just before the unload began).
    pub fn routes(&self, id: &ServableId) -> Routes {
        let table = self.inner.read();
        let Some(e) = table.get(&id.name).and_then(|vs| vs.get(&id.version)) else {
            return Routes::Gone;
        };
        let available = e.on_workers_in(State::Available);
        if !available.is_empty() {
            return Routes::To(available);
        }
        if e.is_awaited() {
            return Routes::Awaited;
        }
        let unloading = e.on_workers_in(State::Unloading);
        if unloading.is_empty() {
            Routes::Gone
        } else {
            Routes::To(unloading)
        }
    }

    /// Resolves a request to a servable with TF Serving's errors. `Latest` is the highest
    /// version AVAILABLE on some worker; while none is (every worker holding one is
    /// restarting) it is the highest awaited version, and the request waits for it.
    pub fn resolve(&self, request: &ServableRequest) -> Result<Servable, ServingError> {
        let (name, version) = match request {
            ServableRequest::Latest(name) => return self.resolve_latest(name),
            ServableRequest::Specific(name, version) => (name, *version),
            ServableRequest::Label(name, label) => (name, self.label_version(name, label)?),
        };
        let table = self.inner.read();
        table
            .get(name)
            .and_then(|vs| vs.get(&version))
            .filter(|e| e.is_available() || e.is_awaited())
            .map(|e| servable(name, version, e))
            .ok_or_else(|| not_found(&format!("Specific({name}, {version})")))
    }

    fn resolve_latest(&self, name: &str) -> Result<Servable, ServingError> {
        let table = self.inner.read();
        let versions = table
            .get(name)
            .ok_or_else(|| not_found(&format!("Latest({name})")))?;
        versions
            .iter()
            .rev()
            .find(|(_, e)| e.is_available())
            .or_else(|| versions.iter().rev().find(|(_, e)| e.is_awaited()))
            .map(|(v, e)| servable(name, *v, e))
            .ok_or_else(|| not_found(&format!("Latest({name})")))
    }
}

fn servable(name: &str, version: i64, e: &VersionEntry) -> Servable {
    Servable {
        id: ServableId {
            name: name.to_string(),
            version,
        },
        signatures: e.signatures.clone(),
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

    const W0: WorkerId = WorkerId(0);
    const W1: WorkerId = WorkerId(1);

    fn report(s: &Servables, w: WorkerId, v: i64, state: State) {
        s.update(w, id(v), state, None, SignatureDefMap::default());
    }

    fn latest(s: &Servables) -> Result<i64, ServingError> {
        s.resolve(&ServableRequest::Latest("m".into()))
            .map(|x| x.id.version)
    }

    #[test]
    fn resolves_latest_available_and_specific() {
        let s = Servables::default();
        report(&s, W0, 1, State::Available);
        report(&s, W0, 2, State::Available);
        report(&s, W0, 3, State::Loading);
        assert_eq!(latest(&s).unwrap(), 2);
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
        assert_eq!(e.code, crate::error::Code::NotFound);
    }

    #[test]
    fn routes_only_to_workers_holding_the_version() {
        let s = Servables::default();
        report(&s, W0, 1, State::Available);
        report(&s, W1, 1, State::Available);
        report(&s, W1, 2, State::Available);
        report(&s, W0, 2, State::Loading);
        assert_eq!(s.routes(&id(1)), Routes::To(vec![W0, W1]));
        assert_eq!(s.routes(&id(2)), Routes::To(vec![W1]));
        assert_eq!(s.routes(&id(3)), Routes::Gone);
        // Status shows the best state across workers.
        let v = s.versions("m").unwrap();
        assert_eq!(v[&2].state, State::Available);
        assert_eq!(latest(&s).unwrap(), 2);
    }

    #[test]
    fn a_dead_workers_versions_leave_routing_and_are_awaited() {
        let s = Servables::default();
        report(&s, W0, 1, State::Available);
        report(&s, W1, 1, State::Available);
        report(&s, W1, 2, State::Available);
        s.worker_lost(W1);
        assert_eq!(s.routes(&id(1)), Routes::To(vec![W0]));
        assert_eq!(s.routes(&id(2)), Routes::Awaited);
        // Latest prefers what a live worker serves.
        assert_eq!(latest(&s).unwrap(), 1);
        assert_eq!(s.versions("m").unwrap()[&2].state, State::Start);
        assert!(s.is_routable("m"));

        s.worker_lost(W0);
        assert!(!s.is_routable("m"));
        // Nothing live: the newest awaited version, which the caller waits for.
        assert_eq!(latest(&s).unwrap(), 2);

        // The replacement of W1 brings version 2 back, not version 1.
        report(&s, W1, 2, State::Loading);
        assert_eq!(s.routes(&id(2)), Routes::Awaited, "still coming back");
        assert_eq!(latest(&s).unwrap(), 2);
        report(&s, W1, 2, State::Available);
        s.initial_load_done(W1);
        assert_eq!(s.routes(&id(2)), Routes::To(vec![W1]));
        assert_eq!(s.routes(&id(1)), Routes::Awaited, "W0 may still bring it");
        s.initial_load_done(W0);
        assert_eq!(s.routes(&id(1)), Routes::Gone);
        assert!(!s.versions("m").unwrap().contains_key(&1));
    }

    #[test]
    fn a_successor_replaces_a_workers_states_in_one_step() {
        let s = Servables::default();
        report(&s, W0, 1, State::End);
        report(&s, W0, 2, State::Available);
        report(&s, W1, 2, State::Available);
        s.replace_worker(
            W0,
            vec![Reported {
                id: id(2),
                state: State::Available,
                error: None,
                signatures: SignatureDefMap::default(),
                batching_params: None,
            }],
        );
        assert_eq!(s.routes(&id(2)), Routes::To(vec![W0, W1]));
        assert_eq!(
            s.versions("m").unwrap()[&1].state,
            State::End,
            "history stays"
        );
    }

    #[test]
    fn labels_resolve_to_versions() {
        let s = Servables::default();
        report(&s, W0, 1, State::Available);
        report(&s, W0, 2, State::Loading);
        let label = |l: &str| s.resolve(&ServableRequest::Label("m".into(), l.into()));
        let e = label("stable").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                crate::error::Code::Unavailable,
                "Model labels does not init yet.stable"
            )
        );
        s.set_labels(
            [(
                "m".to_string(),
                [("stable".to_string(), 1), ("canary".to_string(), 2)].into(),
            )]
            .into(),
        );
        assert_eq!(label("stable").unwrap().id, id(1));
        let e = label("canary").unwrap_err();
        assert_eq!(e.message, "Servable not found for request: Specific(m, 2)");
        let e = label("nope").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                crate::error::Code::InvalidArgument,
                "Unrecognized servable version label: nope"
            )
        );
    }

    #[test]
    fn status_of_a_failed_version_carries_its_error() {
        let s = Servables::default();
        s.update(
            W0,
            id(3),
            State::End,
            Some(Status::new(crate::error::Code::NotFound, "bad")),
            SignatureDefMap::default(),
        );
        report(&s, W1, 3, State::End);
        let v = s.versions("m").unwrap();
        assert_eq!(v[&3].state, State::End);
        assert_eq!(v[&3].error.as_ref().unwrap().message, "bad");
    }
}
