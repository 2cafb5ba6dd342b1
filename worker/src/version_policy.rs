//! The version policy: a pure function from the versions a Source found to the versions
//! the manager should aim to serve (TF Serving's `ServableVersionPolicy`).

use tfgate_proto::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
use tfgate_proto::tensorflow::serving::file_system_storage_path_source_config::ServableVersionPolicy;

/// The aspired versions among `found` (any order), highest first. No policy (or none
/// chosen) is TF Serving's default, the latest version; `latest` serves at least one.
pub fn aspired_versions(policy: Option<&ServableVersionPolicy>, found: &[i64]) -> Vec<i64> {
    let mut sorted: Vec<i64> = found.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    match policy.and_then(|p| p.policy_choice.as_ref()) {
        None => {
            sorted.truncate(1);
            sorted
        }
        Some(PolicyChoice::Latest(latest)) => {
            sorted.truncate(latest.num_versions.max(1) as usize);
            sorted
        }
        Some(PolicyChoice::All(_)) => sorted,
        Some(PolicyChoice::Specific(specific)) => {
            sorted.retain(|v| specific.versions.contains(v));
            sorted
        }
    }
}

/// TF Serving's `specific` policy with these versions.
pub fn specific(versions: Vec<i64>) -> ServableVersionPolicy {
    use tfgate_proto::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::Specific;
    ServableVersionPolicy {
        policy_choice: Some(PolicyChoice::Specific(Specific { versions })),
    }
}

/// Where one managed version of a model stands, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub version: i64,
    pub aspired: bool,
    pub state: Managed,
}

/// A managed version's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Managed {
    /// Aspired, but its directory is still changing: not loadable yet.
    Settling,
    /// Aspired, not loaded yet (START was reported).
    New,
    /// Loaded and serving.
    Ready,
    /// Its load failed for good; not retried while it stays aspired.
    Failed,
}

/// What to do next for one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Load(i64),
    Unload(i64),
}

/// TF Serving's AvailabilityPreservingPolicy (`GetNextAction`): unload a version no
/// longer aspired — the lowest first — once an aspired version serves, or when nothing
/// is aspired, or when more than one unaspired version is loaded; otherwise load the
/// highest new aspired version. A model never drops to zero loaded versions while one of
/// its aspired versions is still on its way.
pub fn next_action(versions: &[Snapshot]) -> Option<Action> {
    let has_aspired = versions.iter().any(|v| v.aspired);
    let has_aspired_serving = versions
        .iter()
        .any(|v| v.aspired && v.state == Managed::Ready);
    let unaspired_serving: Vec<i64> = versions
        .iter()
        .filter(|v| !v.aspired && v.state == Managed::Ready)
        .map(|v| v.version)
        .collect();
    if !has_aspired || has_aspired_serving || unaspired_serving.len() > 1 {
        if let Some(lowest) = unaspired_serving.iter().min() {
            return Some(Action::Unload(*lowest));
        }
    }
    versions
        .iter()
        .filter(|v| v.aspired && v.state == Managed::New)
        .map(|v| v.version)
        .max()
        .map(Action::Load)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut versions: Vec<Snapshot>) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(a) = next_action(&versions) {
            actions.push(a);
            match a {
                Action::Load(v) => {
                    if let Some(s) = versions.iter_mut().find(|s| s.version == v) {
                        s.state = Managed::Ready;
                    }
                }
                Action::Unload(v) => versions.retain(|s| s.version != v),
            }
        }
        actions
    }

    fn snap(version: i64, aspired: bool, state: Managed) -> Snapshot {
        Snapshot {
            version,
            aspired,
            state,
        }
    }

    #[test]
    fn availability_preserving_transitions() {
        use Action::*;
        use Managed::*;
        // v2 appears while v1 serves: load v2 first, then unload v1.
        assert_eq!(
            run(vec![snap(1, false, Ready), snap(2, true, New)]),
            [Load(2), Unload(1)]
        );
        // Several unaspired versions loaded: the lowest goes first, down to one, then the
        // new one loads, then the last old one goes.
        assert_eq!(
            run(vec![
                snap(1, false, Ready),
                snap(2, false, Ready),
                snap(3, false, Ready),
                snap(5, true, New)
            ]),
            [Unload(1), Unload(2), Load(5), Unload(3)]
        );
        // latest 2 of {3, 4} over v1: the higher new version loads first.
        assert_eq!(
            run(vec![
                snap(1, false, Ready),
                snap(3, true, New),
                snap(4, true, New)
            ]),
            [Load(4), Unload(1), Load(3)]
        );
        // The aspired version's directory is still being copied in: v1 keeps serving.
        assert_eq!(
            run(vec![snap(1, false, Ready), snap(2, true, Settling)]),
            []
        );
        // The aspired version failed: v1 keeps serving.
        assert_eq!(run(vec![snap(1, false, Ready), snap(2, true, Failed)]), []);
        // Nothing aspired (base path emptied, model removed): everything goes, lowest first.
        assert_eq!(
            run(vec![snap(2, false, Ready), snap(1, false, Ready)]),
            [Unload(1), Unload(2)]
        );
        assert_eq!(run(vec![snap(3, true, Ready)]), []);
    }

    #[test]
    fn latest_all_specific() {
        use tfgate_proto::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::{All, Latest};
        let found = [3, 1, 2];
        let policy = |choice| ServableVersionPolicy {
            policy_choice: Some(choice),
        };
        let latest = |n| policy(PolicyChoice::Latest(Latest { num_versions: n }));
        assert_eq!(aspired_versions(Some(&latest(1)), &found), vec![3]);
        assert_eq!(aspired_versions(None, &found), vec![3], "the default");
        assert_eq!(
            aspired_versions(Some(&latest(0)), &found),
            vec![3],
            "forced to at least 1"
        );
        assert_eq!(aspired_versions(Some(&latest(2)), &found), vec![3, 2]);
        assert_eq!(
            aspired_versions(Some(&policy(PolicyChoice::All(All {}))), &found),
            vec![3, 2, 1]
        );
        assert_eq!(
            aspired_versions(Some(&specific(vec![1, 9])), &found),
            vec![1]
        );
        assert!(aspired_versions(Some(&latest(1)), &[]).is_empty());
    }
}
