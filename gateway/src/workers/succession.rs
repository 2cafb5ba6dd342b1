//! Replacing a worker without a failed request. TensorFlow keeps the memory of unloaded
//! versions inside the process (TF Serving's RSS never falls after an unload: its issues
//! #1215, #1572, #1664), so when a worker reports that it holds much more than a fresh
//! worker with the same servables would, its supervisor starts a *successor* beside it.
//! The successor loads the same models (warmup included) while the old worker serves;
//! once it holds everything the old one served AVAILABLE, it takes the slot's traffic,
//! and the old worker finishes the requests it holds and exits.

use super::incarnation::Incarnation;
use super::supervisor::{read_message, record_load, reported, Attached, Supervisor};
use crate::servables::{Reported, ServableId};
use crate::server_core::Models;
use anyhow::bail;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tfgate_proto::tfgate::control::worker_message as wm;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixListener;
use tokio::process::Child;
use tokio::sync::watch;

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

impl Supervisor {
    /// Starts a successor and waits for its initial load. Fails (and the successor is
    /// killed) if it does not end up holding AVAILABLE every version the slot serves now.
    pub(super) async fn prepare_successor(
        &self,
        listener: &UnixListener,
        socket_path: &std::path::Path,
        generation: u64,
        mut models: watch::Receiver<Models>,
        why: String,
    ) -> anyhow::Result<Successor> {
        let mut attached = self
            .launch(listener, socket_path, generation, &mut models)
            .await?;
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
            status = attached.child.wait() => bail!("the successor exited: {}", status?),
        }
        let serving: BTreeSet<ServableId> = self
            .servables
            .on_worker(self.slot.id())
            .into_iter()
            .filter(|(_, state)| *state == State::Available)
            .map(|(id, _)| id)
            .collect();
        let mut loaded = BTreeSet::new();
        for r in &reports {
            if r.state == State::Available {
                loaded.insert(r.id.clone());
            } else {
                loaded.remove(&r.id);
            }
        }
        if let Some(missing) = serving.difference(&loaded).next() {
            let _ = attached.child.start_kill();
            bail!(
                "the successor did not load {} version {}",
                missing.name,
                missing.version
            );
        }
        Ok(Successor {
            attached,
            reports,
            why,
        })
    }
}

/// Lets a replaced worker finish the requests it holds, then closes its control socket
/// (which makes it exit) and reaps it.
pub async fn retire(mut child: Child, writer: OwnedWriteHalf, incarnation: Arc<Incarnation>) {
    let started = tokio::time::Instant::now();
    while incarnation.outstanding() > 0 && started.elapsed() < RETIRE_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Anything still waiting on it goes to the successor.
    incarnation.mark_dead();
    drop(writer);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    tracing::info!(
        pid = incarnation.pid,
        generation = incarnation.generation,
        "replaced worker retired"
    );
}
