//! Metric handles cached by name and label values. The `metrics` macros build a key
//! (owned label strings) and look it up in the recorder on every call; on the request
//! path that cost several allocations per series. Here a handle is made once per label
//! set and found again by a hash of borrowed strings, with no allocation.

use metrics::{Counter, Histogram, Label};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::LazyLock;

/// Label names and values, borrowed.
pub type Labels<'a> = &'a [(&'static str, &'a str)];

struct Entry<T> {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    handle: T,
}

impl<T> Entry<T> {
    fn is(&self, name: &str, labels: Labels<'_>) -> bool {
        self.name == name
            && self.labels.len() == labels.len()
            && self
                .labels
                .iter()
                .zip(labels)
                .all(|((k, v), (k2, v2))| k == k2 && v == v2)
    }
}

/// The hash of the keys and of the table: foldhash, several times faster than the
/// standard SipHash on these short strings (a lookup per series per request).
type Hashing = foldhash::fast::FixedState;

/// Entries by the hash of their name and labels (a short list per hash).
type Table<T> = HashMap<u64, Vec<Entry<T>>, Hashing>;

/// Handles of one kind.
struct Cache<T>(LazyLock<RwLock<Table<T>>>);

impl<T: Clone> Cache<T> {
    const fn new() -> Self {
        Cache(LazyLock::new(|| {
            RwLock::new(HashMap::with_hasher(Hashing::default()))
        }))
    }

    fn get(&self, name: &'static str, labels: Labels<'_>, make: impl FnOnce(Vec<Label>) -> T) -> T {
        let mut h = Hashing::default().build_hasher();
        name.hash(&mut h);
        labels.hash(&mut h);
        let key = h.finish();
        if let Some(e) = self
            .0
            .read()
            .get(&key)
            .and_then(|v| v.iter().find(|e| e.is(name, labels)))
        {
            return e.handle.clone();
        }
        let mut map = self.0.write();
        let entries = map.entry(key).or_default();
        if let Some(e) = entries.iter().find(|e| e.is(name, labels)) {
            return e.handle.clone();
        }
        let handle = make(
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.to_string()))
                .collect(),
        );
        entries.push(Entry {
            name,
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            handle: handle.clone(),
        });
        handle
    }
}

static COUNTERS: Cache<Counter> = Cache::new();
static HISTOGRAMS: Cache<Histogram> = Cache::new();
static HISTOGRAM_SETS: Cache<HistogramSet> = Cache::new();

/// Histograms of one name and label set that differ in one more label, made and found
/// together: one lookup for a request's several phases instead of one each.
pub type HistogramSet = std::sync::Arc<[Histogram]>;

/// The histograms `name` with `labels` plus `label` set to each of `values`, in order.
pub fn histogram_set(
    name: &'static str,
    labels: Labels<'_>,
    label: &'static str,
    values: &[&'static str],
) -> HistogramSet {
    HISTOGRAM_SETS.get(name, labels, |common| {
        values
            .iter()
            .map(|v| {
                let mut l = common.clone();
                l.push(Label::new(label, *v));
                metrics::histogram!(name, l)
            })
            .collect()
    })
}

/// The counter `name` with these labels.
pub fn counter(name: &'static str, labels: Labels<'_>) -> Counter {
    COUNTERS.get(name, labels, |l| metrics::counter!(name, l))
}

/// The histogram `name` with these labels.
pub fn histogram(name: &'static str, labels: Labels<'_>) -> Histogram {
    HISTOGRAMS.get(name, labels, |l| metrics::histogram!(name, l))
}
