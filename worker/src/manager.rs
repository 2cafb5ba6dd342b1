//! The Manager: makes the loaded versions of each model follow its aspired versions, and
//! hands out servables to the serving thread.
//!
//! Each poll, per model: versions the policy aspires to are reported START as soon as
//! they are seen; then TF Serving's AvailabilityPreservingPolicy (`version_policy`)
//! picks one action at a time — load the highest new aspired version, or unload the
//! lowest version no longer aspired once that cannot leave the model without a serving
//! version. A load is tried `1 + --max_num_load_retries` times, `--load_retry_interval_micros`
//! apart, warmup included; while it waits the version shows LOADING with the last error
//! (TF Serving shows no error until it gives up), then END with it. A version whose load
//! failed is not tried again until it leaves the base path.
//!
//! An unload first reports UNLOADING, which takes the version out of the gateway's
//! routing, and closes the session only when the gateway answers that no request for it
//! is in flight (`Unrouted`): in-flight requests are never cut off, as TF Serving's
//! servable handles guarantee. In-flight runs also hold their own `Arc<Servable>`.

use crate::loader::Servable;
use crate::source::{fingerprint, list_versions, Fingerprint, VersionDir};
use crate::tf::TfError;
use crate::version_policy::{aspired_versions, next_action, specific, Action, Managed, Snapshot};
use crate::warmup::warm_up;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tfgate_proto::control::worker_message::{self as wm, ServableState as StateReport};
use tfgate_proto::control::{LoadConfig, SessionConfig};
use tfgate_proto::tensorflow::serving::model_version_status::State as ServableState;
use tfgate_proto::tensorflow::serving::{ModelConfig, StatusProto};
use tfgate_tensor::code::Status;

/// Where state changes are reported (the gateway's control socket).
pub type Report<'a> = dyn FnMut(wm::Message) + 'a;

/// How long an unload waits for the gateway's `Unrouted` before closing anyway.
const UNROUTE_TIMEOUT: Duration = Duration::from_secs(65);
/// Between the two looks at a version directory at startup.
const SETTLE: Duration = Duration::from_millis(200);

/// How versions are loaded.
pub struct ManagerConfig {
    pub session: SessionConfig,
    pub load: LoadConfig,
}

/// This process's resident set size, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages.saturating_mul(rustix::param::page_size() as u64)
}

#[derive(Default)]
struct State {
    /// Every managed version by model: new (START reported), ready, or failed.
    managed: BTreeMap<String, BTreeMap<i64, Managed>>,
    /// Version directories not managed yet, by their fingerprint at the last look.
    unsettled: BTreeMap<(String, i64), Fingerprint>,
    /// How much the resident set grew while each loaded version loaded.
    footprint: BTreeMap<(String, i64), u64>,
    /// Versions whose load failed, with their directory's fingerprint then: a change
    /// means someone fixed it, and it is tried again.
    failed_at: BTreeMap<(String, i64), Fingerprint>,
}

/// Loaded servables by model name, then version, and the state behind them.
pub struct Manager {
    config: ManagerConfig,
    /// Resident set before any version loaded.
    startup_rss: u64,
    ready: RwLock<BTreeMap<String, BTreeMap<i64, Arc<Servable>>>>,
    state: Mutex<State>,
    /// The gateway's `Unrouted` answers, forwarded by the control thread.
    unrouted: Mutex<Receiver<(String, i64)>>,
}

fn state(
    model: &str,
    version: i64,
    state: ServableState,
    error: Option<Status>,
    defs: Vec<u8>,
) -> wm::Message {
    wm::Message::ServableState(state_report(model, version, state, error, defs))
}

fn state_report(
    model: &str,
    version: i64,
    state: ServableState,
    error: Option<Status>,
    defs: Vec<u8>,
) -> StateReport {
    StateReport {
        model_name: model.to_string(),
        version,
        state: state as i32,
        error: error.map(|e| StatusProto {
            error_code: e.code.canonical(),
            error_message: e.message,
        }),
        signature_defs: defs,
        batching_params: None,
    }
}

/// Per-model batching parameters a version directory may carry.
const BATCHING_PARAMS_FILE: &str = "batching_params.pbtxt";

fn status(e: &TfError) -> Option<Status> {
    Some(Status::new(e.code, e.message.clone()))
}

impl Manager {
    pub fn new(config: ManagerConfig, unrouted: Receiver<(String, i64)>) -> Manager {
        Manager {
            config,
            startup_rss: rss_bytes(),
            ready: RwLock::default(),
            state: Mutex::default(),
            unrouted: Mutex::new(unrouted),
        }
    }

    /// The servable for `name` at `version`, or the highest loaded version.
    pub fn servable(&self, name: &str, version: Option<i64>) -> Option<Arc<Servable>> {
        let ready = self.ready.read().unwrap_or_else(|e| e.into_inner());
        let versions = ready.get(name)?;
        match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        }
    }

    /// The first poll: with `wait_for_stable_version_dirs`, every directory is looked at
    /// twice, `SETTLE` apart, so a version still being copied in at startup is skipped.
    pub fn initial_poll(&self, models: &[ModelConfig], report: &mut Report<'_>) {
        if self.config.load.wait_for_stable_version_dirs {
            for model in models {
                let found = self.found(model);
                let _ = self.settled(model, &found);
            }
            std::thread::sleep(SETTLE);
        }
        self.poll(models, report);
    }

    /// Polls every model's base path once and moves toward its aspired versions; models
    /// no longer listed lose every version.
    pub fn poll(&self, models: &[ModelConfig], report: &mut Report<'_>) {
        for model in models {
            let found = self.found(model);
            self.forget_fixed_failures(model, &found);
            let settled = self.settled(model, &found);
            self.reconcile(model, &found, &settled, report);
        }
        let gone: Vec<String> = {
            let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.managed
                .keys()
                .filter(|name| !models.iter().any(|m| &m.name == *name))
                .cloned()
                .collect()
        };
        for name in gone {
            let removed = ModelConfig {
                name: name.clone(),
                model_version_policy: Some(specific(Vec::new())),
                ..Default::default()
            };
            self.reconcile(&removed, &[], &BTreeSet::new(), report);
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.managed.get(&name).is_some_and(|v| v.is_empty()) {
                st.managed.remove(&name);
            }
        }
    }

    fn found(&self, model: &ModelConfig) -> Vec<VersionDir> {
        match list_versions(Path::new(&model.base_path)) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(model = %model.name, base_path = %model.base_path, "cannot list versions: {e}");
                Vec::new()
            }
        }
    }

    /// A failed version whose directory changed since it failed is forgotten, so that it
    /// is picked up again (once settled) like a new one. TF Serving retries it only after
    /// it has left the base path.
    fn forget_fixed_failures(&self, model: &ModelConfig, found: &[VersionDir]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for dir in found {
            let key = (model.name.clone(), dir.version);
            let Some(then) = st.failed_at.get(&key) else {
                continue;
            };
            if fingerprint(&dir.path).is_ok_and(|now| &now != then) {
                tracing::info!(model = %model.name, version = dir.version, "a version that failed to load changed; trying it again");
                st.failed_at.remove(&key);
                if let Some(m) = st.managed.get_mut(&model.name) {
                    m.remove(&dir.version);
                }
            }
        }
        st.failed_at
            .retain(|(name, v), _| name != &model.name || found.iter().any(|d| d.version == *v));
    }

    /// The found versions that may load: managed already, or their directory has not
    /// changed since the last look. The others are still being copied in.
    fn settled(&self, model: &ModelConfig, found: &[VersionDir]) -> BTreeSet<i64> {
        if !self.config.load.wait_for_stable_version_dirs {
            return found.iter().map(|d| d.version).collect();
        }
        // Only versions the policy wants are looked at closely.
        let numbers: Vec<i64> = found.iter().map(|d| d.version).collect();
        let aspired = aspired_versions(model.model_version_policy.as_ref(), &numbers);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let managed: BTreeSet<i64> = st
            .managed
            .get(&model.name)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        st.unsettled
            .retain(|(name, v), _| name != &model.name || found.iter().any(|d| d.version == *v));
        let mut settled = BTreeSet::new();
        for dir in found {
            if managed.contains(&dir.version) {
                settled.insert(dir.version);
                continue;
            }
            if !aspired.contains(&dir.version) {
                continue;
            }
            let key = (model.name.clone(), dir.version);
            let Ok(now) = fingerprint(&dir.path) else {
                continue;
            };
            match st.unsettled.insert(key.clone(), now.clone()) {
                Some(before) if before == now => {
                    st.unsettled.remove(&key);
                    settled.insert(dir.version);
                }
                Some(_) => {
                    tracing::info!(model = %model.name, version = dir.version, "version directory still changing; waiting for it to settle");
                }
                None => {}
            }
        }
        settled
    }

    /// The policy's view: every managed version, and aspired versions still settling.
    fn snapshots(&self, model: &str, aspired: &[i64]) -> Vec<Snapshot> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let managed = st.managed.get(model);
        let mut out: Vec<Snapshot> = managed
            .map(|m| {
                m.iter()
                    .map(|(v, s)| Snapshot {
                        version: *v,
                        aspired: aspired.contains(v),
                        state: *s,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for v in aspired {
            if !managed.is_some_and(|m| m.contains_key(v)) {
                out.push(Snapshot {
                    version: *v,
                    aspired: true,
                    state: Managed::Settling,
                });
            }
        }
        out
    }

    fn set(&self, model: &str, version: i64, managed: Option<Managed>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let versions = st.managed.entry(model.to_string()).or_default();
        match managed {
            Some(m) => {
                versions.insert(version, m);
            }
            None => {
                versions.remove(&version);
            }
        }
    }

    fn reconcile(
        &self,
        model: &ModelConfig,
        found: &[VersionDir],
        settled: &BTreeSet<i64>,
        report: &mut Report<'_>,
    ) {
        let numbers: Vec<i64> = found.iter().map(|v| v.version).collect();
        let aspired = aspired_versions(model.model_version_policy.as_ref(), &numbers);
        // START for newly aspired versions that may load; forget unaspired ones that
        // never loaded.
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let managed = st.managed.entry(model.name.clone()).or_default();
            for v in &aspired {
                if !managed.contains_key(v) && settled.contains(v) {
                    managed.insert(*v, Managed::New);
                    report(state(
                        &model.name,
                        *v,
                        ServableState::Start,
                        None,
                        Vec::new(),
                    ));
                }
            }
            let dropped: Vec<(i64, Managed)> = managed
                .iter()
                .filter(|(v, m)| !aspired.contains(v) && **m != Managed::Ready)
                .map(|(v, m)| (*v, *m))
                .collect();
            for (v, m) in dropped {
                managed.remove(&v);
                if m == Managed::New {
                    report(state(&model.name, v, ServableState::End, None, Vec::new()));
                }
            }
            if numbers.is_empty() && managed.is_empty() && !model.base_path.is_empty() {
                tracing::warn!(
                    "No versions of servable {} found under base path {}. Did you forget to name your leaf directory as a number (eg. '/1/')?",
                    model.name,
                    model.base_path
                );
                report(wm::Message::NoVersions(wm::NoVersions {
                    model_name: model.name.clone(),
                    base_path: model.base_path.clone(),
                }));
            }
        }
        while let Some(action) = next_action(&self.snapshots(&model.name, &aspired)) {
            match action {
                Action::Load(v) => match found.iter().find(|d| d.version == v) {
                    Some(dir) => self.load(&model.name, dir, report),
                    None => self.set(&model.name, v, Some(Managed::Failed)),
                },
                Action::Unload(v) => self.unload(&model.name, v, report),
            }
        }
    }

    /// Replays a version's warmup records, reporting TF Serving's warmup series when it
    /// has a warmup file.
    fn warm_up(
        &self,
        servable: &Servable,
        dir: &VersionDir,
        model_path: String,
        report: &mut Report<'_>,
    ) -> Result<(), TfError> {
        let started = Instant::now();
        let result = warm_up(
            servable,
            &dir.path,
            self.config.load.num_request_iterations_for_warmup,
        );
        let (status, records) = match &result {
            Ok(None) => return Ok(()),
            Ok(Some(n)) => ("OK".to_string(), *n as u64),
            Err(e) => (format!("{}: {}", e.code.name(), e.message), 0),
        };
        report(wm::Message::Warmup(wm::Warmup {
            model_path,
            status,
            latency_us: started.elapsed().as_micros() as u64,
            records,
        }));
        result.map(|_| ())
    }

    /// Loads and warms up one version, with retries.
    fn load(&self, model: &str, dir: &VersionDir, report: &mut Report<'_>) {
        let v = dir.version;
        let load = &self.config.load;
        report(state(model, v, ServableState::Loading, None, Vec::new()));
        let started = Instant::now();
        let rss_before = rss_bytes();
        let mut last = None;
        for attempt in 0..=load.max_num_load_retries {
            if attempt > 0 {
                if load.load_retry_interval_micros > 0 {
                    std::thread::sleep(Duration::from_micros(
                        load.load_retry_interval_micros as u64,
                    ));
                }
                tracing::info!(
                    "Retrying of Loading servable: {{name: {model} version: {v}}} retry: {attempt}"
                );
            }
            let model_path = dir.path.to_string_lossy().to_string();
            let attempt_started = Instant::now();
            let loaded = Servable::load(v, &model_path, &self.config.session);
            report(wm::Message::LoadAttempt(wm::LoadAttempt {
                model_path: model_path.clone(),
                success: loaded.is_ok(),
                latency_us: attempt_started.elapsed().as_micros() as u64,
            }));
            let loaded = loaded.and_then(|s| {
                if load.enable_model_warmup {
                    self.warm_up(&s, dir, model_path, report)?;
                }
                Ok(s)
            });
            match loaded {
                Ok(servable) => {
                    tracing::info!(
                        model,
                        version = v,
                        ms = started.elapsed().as_millis() as u64,
                        "loaded"
                    );
                    let defs = servable.signature_defs.clone();
                    self.ready
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(model.to_string())
                        .or_default()
                        .insert(v, Arc::new(servable));
                    self.set(model, v, Some(Managed::Ready));
                    let grew = rss_bytes().saturating_sub(rss_before);
                    self.state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .footprint
                        .insert((model.to_string(), v), grew);
                    let mut available =
                        state_report(model, v, ServableState::Available, None, defs);
                    available.batching_params =
                        std::fs::read_to_string(dir.path.join(BATCHING_PARAMS_FILE)).ok();
                    report(wm::Message::ServableState(available));
                    return;
                }
                Err(e) => {
                    tracing::error!(
                        "Loading servable: {{name: {model} version: {v}}} failed: {}: {}",
                        e.code.name(),
                        e.message
                    );
                    if attempt < load.max_num_load_retries {
                        report(state(
                            model,
                            v,
                            ServableState::Loading,
                            status(&e),
                            Vec::new(),
                        ));
                    }
                    last = Some(e);
                }
            }
        }
        self.set(model, v, Some(Managed::Failed));
        if let Ok(fp) = fingerprint(&dir.path) {
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failed_at
                .insert((model.to_string(), v), fp);
        }
        report(state(
            model,
            v,
            ServableState::End,
            last.as_ref().and_then(status),
            Vec::new(),
        ));
    }

    /// Unloads one version once the gateway has no request for it in flight.
    fn unload(&self, model: &str, v: i64, report: &mut Report<'_>) {
        report(state(model, v, ServableState::Unloading, None, Vec::new()));
        let deadline = Instant::now() + UNROUTE_TIMEOUT;
        let unrouted = self.unrouted.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match unrouted.recv_timeout(left) {
                Ok((m, version)) if m == model && version == v => break,
                Ok(_) => continue, // an answer to an unload that gave up waiting
                Err(_) => {
                    tracing::warn!(
                        model,
                        version = v,
                        "no word from the gateway on requests in flight; unloading anyway"
                    );
                    break;
                }
            }
        }
        drop(unrouted);
        let removed = {
            let mut ready = self.ready.write().unwrap_or_else(|e| e.into_inner());
            ready.get_mut(model).and_then(|vs| vs.remove(&v))
        };
        drop(removed); // the session closes when the last in-flight run lets go
        self.set(model, v, None);
        tracing::info!(model, version = v, "unloaded");
        report(state(model, v, ServableState::End, None, Vec::new()));
        let expected = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.footprint.remove(&(model.to_string(), v));
            self.startup_rss + st.footprint.values().sum::<u64>()
        };
        report(wm::Message::Memory(wm::Memory {
            rss_bytes: rss_bytes(),
            expected_bytes: expected,
        }));
    }
}
