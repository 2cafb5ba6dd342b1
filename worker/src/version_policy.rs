//! The version policy: a pure function from the versions a Source found to the versions
//! the manager should aim to serve (TF Serving's `ServableVersionPolicy`).

use shm_protocol::control::VersionPolicy;

/// The aspired versions among `found` (any order), highest first.
pub fn aspired_versions(policy: &VersionPolicy, found: &[i64]) -> Vec<i64> {
    let mut sorted: Vec<i64> = found.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    match policy {
        VersionPolicy::Latest { num_versions } => {
            sorted.truncate((*num_versions).max(1) as usize);
            sorted
        }
        VersionPolicy::All => sorted,
        VersionPolicy::Specific { versions } => {
            sorted.retain(|v| versions.contains(v));
            sorted
        }
    }
}

/// Versions to load next (TF Serving's AvailabilityPreservingPolicy loads before it
/// unloads): aspired, not loaded, and not known to fail; highest first.
pub fn versions_to_load(aspired: &[i64], loaded: &[i64], failed: &[i64]) -> Vec<i64> {
    aspired
        .iter()
        .copied()
        .filter(|v| !loaded.contains(v) && !failed.contains(v))
        .collect()
}

/// Versions to unload once loading is done: those no longer aspired — but only if an
/// aspired version is loaded, or nothing is aspired any more (the base path emptied), so
/// a model never drops to zero versions while a replacement exists.
pub fn versions_to_unload(aspired: &[i64], loaded: &[i64]) -> Vec<i64> {
    let aspired_ready = loaded.iter().any(|v| aspired.contains(v));
    if !aspired_ready && !aspired.is_empty() {
        return Vec::new();
    }
    loaded
        .iter()
        .copied()
        .filter(|v| !aspired.contains(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_preserving_transitions() {
        // v2 appears while v1 serves: load v2, and only then unload v1.
        assert_eq!(versions_to_load(&[2], &[1], &[]), vec![2]);
        assert_eq!(
            versions_to_unload(&[2], &[1]),
            Vec::<i64>::new(),
            "v2 not loaded yet"
        );
        assert_eq!(versions_to_unload(&[2], &[1, 2]), vec![1]);
        // v2 fails to load: v1 keeps serving, v2 is not retried.
        assert!(versions_to_load(&[2], &[1], &[2]).is_empty());
        assert!(versions_to_unload(&[2], &[1]).is_empty());
        // Base path emptied: everything goes.
        assert_eq!(versions_to_unload(&[], &[1, 2]), vec![1, 2]);
        // Nothing to do.
        assert!(versions_to_load(&[3], &[3], &[]).is_empty());
        assert!(versions_to_unload(&[3], &[3]).is_empty());
    }

    #[test]
    fn latest_all_specific() {
        let found = [3, 1, 2];
        let latest = |n| VersionPolicy::Latest { num_versions: n };
        assert_eq!(aspired_versions(&latest(1), &found), vec![3]);
        assert_eq!(
            aspired_versions(&latest(0), &found),
            vec![3],
            "forced to at least 1"
        );
        assert_eq!(aspired_versions(&latest(2), &found), vec![3, 2]);
        assert_eq!(aspired_versions(&VersionPolicy::All, &found), vec![3, 2, 1]);
        let specific = VersionPolicy::Specific {
            versions: vec![1, 9],
        };
        assert_eq!(aspired_versions(&specific, &found), vec![1]);
        assert!(aspired_versions(&latest(1), &[]).is_empty());
    }
}
