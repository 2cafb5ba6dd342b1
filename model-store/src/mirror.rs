//! One fetcher per gateway: each remote base path is mirrored into a local directory,
//! which the workers poll and load from as from any local base path (N workers do not
//! each list the bucket and download every version).
//!
//! Per model, every `--file_system_poll_wait_seconds`: list the version numbers, pick
//! the ones the model's version policy wants, copy each missing one into a temporary
//! directory and rename it into place once whole (the workers never see a part), then
//! remove the versions no longer wanted, but only once a wanted one is in place, so a
//! model never drops to zero versions while its successor downloads. A listing failure
//! changes nothing. A failed fetch is retried under `--max_num_load_retries` and
//! `--load_retry_interval_micros`, then reported with the store's message (the model's
//! status shows it). The cache is bounded (`--model_cache_max_bytes`, or the free space
//! of its file system): a version that does not fit is not fetched, and says so.

use crate::fetch::{self, Listing};
use crate::remote_path::RemotePath;
use crate::store::{self, Env};
use object_store::ObjectStore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Which versions a model serves (`ServableVersionPolicy`), so that only those are
/// fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionPolicy {
    Latest(u32),
    All,
    Specific(BTreeSet<i64>),
}

impl VersionPolicy {
    fn wanted(&self, versions: &BTreeSet<i64>) -> BTreeSet<i64> {
        match self {
            VersionPolicy::Latest(n) => versions.iter().rev().take(*n as usize).copied().collect(),
            VersionPolicy::All => versions.clone(),
            VersionPolicy::Specific(s) => versions.intersection(s).copied().collect(),
        }
    }
}

/// What the mirror tells the server about a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A version could not be put into the cache (the reason: the store's message, or
    /// the cache bound), or it now is (`None`).
    Version {
        model: String,
        version: i64,
        error: Option<NotFetched>,
    },
    /// A version left the cache (it left the bucket, or the policy).
    Removed { model: String, version: i64 },
    /// The base path cannot be listed (the store's message), or can again (`None`).
    Listing {
        model: String,
        error: Option<String>,
    },
}

/// Why a version is not in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFetched {
    /// The cache bound, not the store: it may fit once other versions leave.
    pub no_room: bool,
    pub message: String,
}

/// Settings from the flags.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// `--model_cache_dir`.
    pub cache_dir: PathBuf,
    /// `--model_cache_max_bytes`; 0: the free space of the cache's file system.
    pub max_bytes: u64,
    /// `--file_system_poll_wait_seconds`: 0 or less lists once, as the workers poll.
    pub poll_wait_seconds: i32,
    /// `--max_num_load_retries`.
    pub max_retries: u32,
    /// `--load_retry_interval_micros`.
    pub retry_interval: Duration,
}

type Listener = Arc<dyn Fn(Event) + Send + Sync>;

/// The mirror: shared by the server core (which tracks models as configs change) and
/// the config-file poller (which reads a config file on a store).
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    config: MirrorConfig,
    env: Env,
    listener: Listener,
    /// One client per bucket.
    stores: Mutex<HashMap<(crate::Scheme, String), Arc<dyn ObjectStore>>>,
    tracked: Mutex<BTreeMap<String, Tracked>>,
    /// Bytes of the versions in the cache or being fetched, per model.
    in_use: Mutex<BTreeMap<String, u64>>,
    /// Held while the mirror lives: one gateway per cache directory.
    _lock: std::fs::File,
}

struct Tracked {
    remote: RemotePath,
    policy: VersionPolicy,
    local: PathBuf,
    task: JoinHandle<()>,
}

const PARTIAL: &str = ".partial";

impl Mirror {
    /// Creates the cache directory and clears what an earlier run left half-fetched.
    /// Versions an earlier run fetched whole are kept and counted.
    pub fn new(config: MirrorConfig, env: Env, listener: Listener) -> Result<Mirror, String> {
        std::fs::create_dir_all(&config.cache_dir)
            .map_err(|e| format!("--model_cache_dir {}: {e}", config.cache_dir.display()))?;
        let lock = lock_dir(&config.cache_dir)?;
        let partial = config.cache_dir.join(PARTIAL);
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .map_err(|e| format!("--model_cache_dir {}: {e}", config.cache_dir.display()))?;
        Ok(Mirror {
            inner: Arc::new(Inner {
                config,
                env,
                listener,
                stores: Mutex::default(),
                tracked: Mutex::default(),
                in_use: Mutex::default(),
                _lock: lock,
            }),
        })
    }

    pub fn cache_dir(&self) -> &FsPath {
        &self.inner.config.cache_dir
    }

    /// The client for `remote`'s bucket, opened once.
    fn store(&self, remote: &RemotePath) -> Result<Arc<dyn ObjectStore>, String> {
        let key = (remote.scheme, remote.bucket.clone());
        let mut stores = lock(&self.inner.stores);
        if let Some(s) = stores.get(&key) {
            return Ok(s.clone());
        }
        let (s, opened) = store::open(remote, &self.inner.env)?;
        tracing::info!(
            "{}://{}: endpoint {}, credentials from {}",
            remote.scheme.name(),
            remote.bucket,
            opened.endpoint,
            opened.credentials
        );
        stores.insert(key, s.clone());
        Ok(s)
    }

    /// Reads a whole object (a `--model_config_file` on a store).
    pub async fn read(&self, remote: &RemotePath) -> Result<Vec<u8>, String> {
        use object_store::ObjectStoreExt;
        let store = self.store(remote)?;
        let got = store
            .get(&remote.key)
            .await
            .map_err(|e| format!("{remote}: {e}"))?;
        let bytes = got.bytes().await.map_err(|e| format!("{remote}: {e}"))?;
        Ok(bytes.to_vec())
    }

    /// Starts mirroring `model`'s `remote` base path (or keeps doing so, if nothing
    /// changed) and returns the local directory that stands for it.
    pub fn track(
        &self,
        model: &str,
        remote: &RemotePath,
        policy: VersionPolicy,
    ) -> Result<PathBuf, String> {
        let store = self.store(remote)?;
        let mut tracked = lock(&self.inner.tracked);
        if let Some(t) = tracked.get(model) {
            if &t.remote == remote && t.policy == policy {
                return Ok(t.local.clone());
            }
        }
        let local = self.local_dir(model, remote);
        std::fs::create_dir_all(&local).map_err(|e| format!("{}: {e}", local.display()))?;
        let old = tracked.remove(model);
        if let Some(old) = &old {
            old.task.abort();
        }
        let task = tokio::spawn(
            ModelMirror {
                mirror: self.clone(),
                model: model.to_string(),
                remote: remote.clone(),
                policy: policy.clone(),
                local: local.clone(),
                store,
                failed: BTreeMap::new(),
                reported: BTreeMap::new(),
                listing_error: None,
                listing_logged: None,
                waiting: BTreeSet::new(),
            }
            .run(),
        );
        tracked.insert(
            model.to_string(),
            Tracked {
                remote: remote.clone(),
                policy,
                local: local.clone(),
                task,
            },
        );
        drop(tracked);
        // A new base path for the model: the old one's files go.
        if let Some(old) = old.filter(|o| o.local != local) {
            self.forget_dir(model, &old.local);
        }
        Ok(local)
    }

    /// Stops mirroring every model not in `models` and removes its files.
    pub fn retain(&self, models: &BTreeSet<String>) {
        let gone: Vec<(String, Tracked)> = {
            let mut tracked = lock(&self.inner.tracked);
            let names: Vec<String> = tracked
                .keys()
                .filter(|m| !models.contains(*m))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|m| tracked.remove(&m).map(|t| (m, t)))
                .collect()
        };
        for (model, t) in gone {
            t.task.abort();
            tracing::info!("no longer mirroring {} for model {model}", t.remote);
            self.forget_dir(&model, &t.local);
        }
    }

    fn forget_dir(&self, model: &str, local: &FsPath) {
        lock(&self.inner.in_use).remove(model);
        if let Err(e) = std::fs::remove_dir_all(local) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", local.display());
            }
        }
    }

    /// `<cache>/<model>-<hash of the base path>`: one directory per model and base path,
    /// so a changed base path never mixes versions of two.
    fn local_dir(&self, model: &str, remote: &RemotePath) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        remote.to_string().hash(&mut h);
        let safe: String = model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.inner
            .config
            .cache_dir
            .join(format!("{safe}-{:016x}", h.finish()))
    }

    /// Reserves `bytes` for `model` if the cache has room; the reason if not.
    fn reserve(&self, model: &str, version: i64, bytes: u64) -> Result<(), String> {
        let mut in_use = lock(&self.inner.in_use);
        let used: u64 = in_use.values().sum();
        let max = self.inner.config.max_bytes;
        if max > 0 {
            if used.saturating_add(bytes) > max {
                return Err(format!(
                    "version {version} of model {model} needs {bytes} bytes, more than the \
                     model cache has room for (--model_cache_max_bytes={max}, {used} in use)"
                ));
            }
        } else {
            let free = free_bytes(&self.inner.config.cache_dir)?;
            if bytes > free {
                return Err(format!(
                    "version {version} of model {model} needs {bytes} bytes, more than the \
                     {free} free in --model_cache_dir {} (set --model_cache_max_bytes to \
                     bound the cache below that)",
                    self.inner.config.cache_dir.display()
                ));
            }
        }
        *in_use.entry(model.to_string()).or_default() += bytes;
        Ok(())
    }

    fn release(&self, model: &str, bytes: u64) {
        if let Some(b) = lock(&self.inner.in_use).get_mut(model) {
            *b = b.saturating_sub(bytes);
        }
    }

    fn emit(&self, event: Event) {
        (self.inner.listener)(event);
    }
}

/// Takes `<cache>/.lock` (`flock`, released when the process exits): two gateways
/// writing one cache would delete each other's half-fetched versions.
fn lock_dir(dir: &FsPath) -> Result<std::fs::File, String> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("--model_cache_dir {}: {e}", dir.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| {
            format!(
                "--model_cache_dir {} is in use by another tfgate ({}: {e}); give each \
                 gateway its own",
                dir.display(),
                path.display()
            )
        },
    )?;
    Ok(file)
}

/// A store's message on one line (S3 puts its XML error body after a line break).
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn free_bytes(dir: &FsPath) -> Result<u64, String> {
    let s = rustix::fs::statvfs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Bytes of the files under `dir`.
fn size_on_disk(dir: &FsPath) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The versions in a model's local directory (fetched whole: only renames put them
/// there).
fn cached_versions(local: &FsPath) -> BTreeSet<i64> {
    std::fs::read_dir(local)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One model's mirroring loop.
struct ModelMirror {
    mirror: Mirror,
    model: String,
    remote: RemotePath,
    policy: VersionPolicy,
    local: PathBuf,
    store: Arc<dyn ObjectStore>,
    /// Versions whose fetch failed after every retry: not tried again while they stay
    /// in the bucket (as TF Serving does not retry a version that failed to load).
    failed: BTreeMap<i64, String>,
    /// What was last reported of each version, so each change is reported once.
    reported: BTreeMap<i64, Option<NotFetched>>,
    listing_error: Option<String>,
    /// When the listing error was last logged (a failing store is logged once a minute,
    /// its messages differing in timings and request ids).
    listing_logged: Option<std::time::Instant>,
    /// Versions seen incomplete, with why (each logged once).
    waiting: BTreeSet<(i64, String)>,
}

impl ModelMirror {
    async fn run(mut self) {
        // Versions already whole in the cache (an earlier run's) count as in use.
        let on_disk: u64 = cached_versions(&self.local)
            .iter()
            .map(|v| size_on_disk(&self.local.join(v.to_string())))
            .sum();
        lock(&self.mirror.inner.in_use).insert(self.model.clone(), on_disk);
        let poll = self.mirror.inner.config.poll_wait_seconds;
        loop {
            self.sync().await;
            if poll <= 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(poll as u64)).await;
        }
    }

    async fn sync(&mut self) {
        let versions = match fetch::list_versions(self.store.as_ref(), &self.remote.key).await {
            Ok(v) => {
                if self.listing_error.take().is_some() {
                    tracing::info!("{} lists again", self.remote);
                    self.mirror.emit(Event::Listing {
                        model: self.model.clone(),
                        error: None,
                    });
                }
                v
            }
            Err(e) => {
                let message = format!("cannot list {}: {}", self.remote, one_line(&e));
                let due = self
                    .listing_logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
                // Logged, and told to the servable table, when listing starts failing
                // and once a minute after (with the newest message), not at every poll.
                if self.listing_error.is_none() || due {
                    tracing::error!("model {}: {message}", self.model);
                    self.listing_logged = Some(std::time::Instant::now());
                    self.mirror.emit(Event::Listing {
                        model: self.model.clone(),
                        error: Some(message),
                    });
                }
                self.listing_error = Some(e);
                return;
            }
        };
        if versions.is_empty() {
            tracing::debug!("no versions of model {} in {}", self.model, self.remote);
        }
        self.failed.retain(|v, _| versions.contains(v));
        self.waiting.retain(|(v, _)| versions.contains(v));
        // A version that left the bucket takes its error with it.
        let left: Vec<i64> = self
            .reported
            .iter()
            .filter(|(v, e)| e.is_some() && !versions.contains(v))
            .map(|(v, _)| *v)
            .collect();
        for v in left {
            self.report(v, None);
        }
        self.reported.retain(|v, _| versions.contains(v));
        let wanted = self.policy.wanted(&versions);
        let mut cached = cached_versions(&self.local);
        // Highest first: the version a `latest` policy serves arrives first.
        for &v in wanted.iter().rev() {
            if cached.contains(&v) || self.failed.contains_key(&v) {
                continue;
            }
            match self.fetch(v).await {
                Ok(()) => {
                    cached.insert(v);
                    self.report(v, None);
                }
                Err(Failure::Fetch(message)) => {
                    self.failed.insert(v, message.clone());
                    self.report(
                        v,
                        Some(NotFetched {
                            no_room: false,
                            message,
                        }),
                    );
                }
                Err(Failure::NoRoom(message)) => self.report(
                    v,
                    Some(NotFetched {
                        no_room: true,
                        message,
                    }),
                ),
                Err(Failure::Incomplete(why)) => {
                    if self.waiting.insert((v, why.clone())) {
                        tracing::info!(
                            "version {v} of model {} is not whole in {} yet ({why}); waiting for the rest",
                            self.model,
                            self.remote
                        );
                    }
                }
            }
        }
        if wanted.is_empty() || wanted.iter().any(|v| cached.contains(v)) {
            for v in cached.difference(&wanted) {
                self.remove(*v);
            }
        }
    }

    fn report(&mut self, version: i64, error: Option<NotFetched>) {
        let error = error.map(|e| NotFetched {
            message: one_line(&e.message),
            ..e
        });
        if self.reported.get(&version) == Some(&error) {
            return;
        }
        if let Some(e) = &error {
            tracing::error!(
                "version {version} of model {} not served: {}",
                self.model,
                e.message
            );
        }
        self.reported.insert(version, error.clone());
        self.mirror.emit(Event::Version {
            model: self.model.clone(),
            version,
            error,
        });
    }

    fn remove(&self, version: i64) {
        let dir = self.local.join(version.to_string());
        let bytes = size_on_disk(&dir);
        // Out of the workers' sight first (a rename), then deleted.
        let gone = self.mirror.cache_dir().join(PARTIAL).join(format!(
            "{}-{version}-removed-{}",
            self.local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let result = std::fs::rename(&dir, &gone).and_then(|()| std::fs::remove_dir_all(&gone));
        match result {
            Ok(()) => {
                self.mirror.release(&self.model, bytes);
                tracing::info!(
                    "version {version} of model {} left the cache ({} no longer holds it for the version policy)",
                    self.model,
                    self.remote
                );
                self.mirror.emit(Event::Removed {
                    model: self.model.clone(),
                    version,
                });
            }
            Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
        }
    }

    /// Fetches `version` with retries; the cache bound is checked before each try.
    async fn fetch(&self, version: i64) -> Result<(), Failure> {
        let config = &self.mirror.inner.config;
        let mut tries = 0;
        loop {
            match self.fetch_once(version).await {
                Ok(()) => return Ok(()),
                Err(Failure::Fetch(e)) if tries < config.max_retries => {
                    tries += 1;
                    tracing::warn!(
                        "fetching version {version} of model {} from {} failed: {e}; retry {tries} of {} in {:?}",
                        self.model,
                        self.remote,
                        config.max_retries,
                        config.retry_interval
                    );
                    tokio::time::sleep(config.retry_interval).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn fetch_once(&self, version: i64) -> Result<(), Failure> {
        let prefix = self.remote.key.clone().join(version.to_string().as_str());
        let listing: Listing = fetch::list_version(self.store.as_ref(), &prefix)
            .await
            .map_err(Failure::Fetch)?;
        if let Some(why) = fetch::incomplete(&listing) {
            return Err(Failure::Incomplete(why));
        }
        let bytes = listing.bytes();
        self.mirror
            .reserve(&self.model, version, bytes)
            .map_err(Failure::NoRoom)?;
        let name = self
            .local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = self
            .mirror
            .cache_dir()
            .join(PARTIAL)
            .join(format!("{name}-{version}-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&partial).await;
        let started = std::time::Instant::now();
        let result = match fetch::download(self.store.as_ref(), &listing, &partial).await {
            Ok(()) => match checkpoint_missing(&listing, &partial).await {
                Some(why) => Err(Failure::Incomplete(why)),
                None => tokio::fs::rename(&partial, self.local.join(version.to_string()))
                    .await
                    .map_err(|e| Failure::Fetch(format!("{}: {e}", self.local.display()))),
            },
            Err(e) => Err(Failure::Fetch(e)),
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    "version {version} of model {} fetched from {} ({bytes} bytes, {} files, {:.1} s)",
                    self.model,
                    self.remote,
                    listing.files.len(),
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&partial).await;
                self.mirror.release(&self.model, bytes);
                Err(e)
            }
        }
    }
}

/// For a version with no checkpoint listed: whether its fetched `saved_model.pb` names
/// one (its variables are still on their way).
async fn checkpoint_missing(listing: &Listing, fetched: &FsPath) -> Option<String> {
    let has_checkpoint = listing
        .files
        .iter()
        .any(|f| f.relative.starts_with("variables"));
    if has_checkpoint {
        return None;
    }
    let pb = tokio::fs::read(fetched.join("saved_model.pb")).await.ok()?;
    match fetch::expects_variables(&pb) {
        Ok(true) => {
            Some("saved_model.pb restores variables, and no variables/ is there yet".into())
        }
        // A graph that does not parse is for the loader to refuse, with its own error.
        Ok(false) | Err(_) => None,
    }
}

enum Failure {
    /// The store refused or the transfer failed: retried, then reported.
    Fetch(String),
    /// The cache has no room: reported, and checked again at the next poll.
    NoRoom(String),
    /// Not a whole SavedModel in the store yet (still being uploaded): looked at again
    /// at the next poll, not an error.
    Incomplete(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gateway_per_cache_directory() {
        let dir = std::env::temp_dir().join(format!("tfgate-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock_dir(&dir).unwrap();
        let e = lock_dir(&dir).unwrap_err();
        assert!(e.contains("is in use by another tfgate"), "{e}");
        drop(held);
        lock_dir(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn policies_pick_versions() {
        let v: BTreeSet<i64> = [1, 2, 5, 9].into();
        assert_eq!(VersionPolicy::Latest(1).wanted(&v), [9].into());
        assert_eq!(VersionPolicy::Latest(2).wanted(&v), [5, 9].into());
        assert_eq!(VersionPolicy::All.wanted(&v), v);
        assert_eq!(
            VersionPolicy::Specific([2, 3].into()).wanted(&v),
            [2].into()
        );
    }
}
