//! Replacing a worker without a failed request. TensorFlow keeps the memory of unloaded
//! versions inside the process (TF Serving's RSS never falls after an unload: its issues
//! #1215, #1572, #1664), so when a worker reports that it holds much more than a fresh
//! worker with the same servables would, its supervisor starts a *successor* beside it.
//! The successor loads the same models (warmup included) while the old worker serves;
//! once it holds everything the old one served AVAILABLE, it takes the slot's traffic,
//! and the old worker finishes the requests it holds and exits.

use super::control::{read_message, record_load, reported};
use super::incarnation::{Attached, Incarnation};
use super::process::WorkerProcess;
use crate::servables::{Reported, ServableId};
use anyhow::bail;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tokio::net::unix::OwnedWriteHalf;

/// How long a successor may take to load everything.
const LOAD_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a retiring worker may take to finish what it holds.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// A worker ready to take a slot over: attached, initial load done.
pub struct Successor {
    pub attached: Attached,
    /// Its servable reports, to become the slot's states at the switch.
    pub reports: Vec<Reported>,
    /// Why the old worker is being replaced.
    pub why: String,
}

/// Waits for a launched successor's initial load; its servable reports, if it ends up
/// holding AVAILABLE every version in `serving` (what the slot serves now). Fails (and
/// the successor is killed) otherwise.
pub async fn initial_load(
    attached: &mut Attached,
    serving: &BTreeSet<ServableId>,
) -> anyhow::Result<Vec<Reported>> {
    let mut reports = Vec::new();
    let load = async {
        loop {
            match read_message(&mut attached.stream).await? {
                wm::Message::InitialLoadDone(_) => return anyhow::Ok(()),
                wm::Message::ServableState(report) => reports.extend(reported(report)),
                other => record_load(&other),
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout(LOAD_TIMEOUT, load) => match r {
            Ok(r) => r?,
            Err(_) => bail!("the successor did not finish loading in {LOAD_TIMEOUT:?}"),
        },
        status = attached.process.exited() => bail!("the successor exited: {status}"),
    }
    let mut loaded = BTreeSet::new();
    for r in &reports {
        if r.state == State::Available {
            loaded.insert(r.id.clone());
        } else {
            loaded.remove(&r.id);
        }
    }
    if let Some(missing) = serving.difference(&loaded).next() {
        attached.process.start_kill();
        bail!(
            "the successor did not load {} version {}",
            missing.name,
            missing.version
        );
    }
    Ok(reports)
}

/// Lets a replaced worker finish the requests it holds, then closes its control socket
/// (which makes it exit) and reaps it.
pub async fn retire(
    mut process: WorkerProcess,
    writer: OwnedWriteHalf,
    incarnation: Arc<Incarnation>,
) {
    let started = tokio::time::Instant::now();
    while incarnation.outstanding() > 0 && started.elapsed() < RETIRE_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Anything still waiting on it goes to the successor.
    incarnation.mark_dead();
    drop(writer);
    process.reap_within(Duration::from_secs(5)).await;
    tracing::info!(
        pid = incarnation.pid,
        generation = incarnation.generation,
        "replaced worker retired"
    );
}
