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

#[cfg(test)]
mod tests {
    use super::*;

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
