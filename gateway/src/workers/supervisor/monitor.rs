//! Watching one attached incarnation: relays its reports, sends heartbeats and model
//! lists, and turns what it sees — a message, a missed heartbeat, a run past its
//! deadline, the process's exit, a successor ready — into the lifecycle's events
//! (`lifecycle.rs`), then carries out the actions on this incarnation that the
//! transition returns. It ends when the transition says what comes next (reaping it, or
//! watching its successor).

use super::{stopped, Next, Parts, Supervisor, Watched, WorkerSource};
use crate::servables::{Servables, WorkerId};
use crate::server_core::Models;
use crate::workers::control::{read_message, record_load, reported, write_message};
use crate::workers::harness::{Action, Event, Harness};
use crate::workers::incarnation::{Attached, Incarnation};
use crate::workers::succession::{retire, Successor};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tfgate_proto::control::gateway_message as gm;
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How often the watchdog looks at the running request.
const WATCHDOG_TICK: Duration = Duration::from_millis(50);
/// How long a worker asked to shut down may take before it is killed.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// How long a leaving worker may take to answer what it holds.
const LEAVE_WAIT: Duration = Duration::from_secs(30);

/// A successor being started and loaded beside the watched worker.
type Preparing<'s> = Pin<Box<dyn Future<Output = anyhow::Result<Successor>> + Send + 's>>;

/// Aborts the control socket's reader when the watch ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One watched incarnation and the watch's clocks.
struct Watch<'s> {
    watched: Watched,
    /// The worker's messages, read in their own task: a read cancelled half-way would
    /// lose the stream's framing.
    reports: mpsc::Receiver<anyhow::Result<wm::Message>>,
    _read_task: AbortOnDrop,
    /// Versions the worker is unloading, once no request for them is in flight.
    unrouted_tx: mpsc::Sender<(String, i64)>,
    unrouted: mpsc::Receiver<(String, i64)>,
    heartbeat: Interval,
    watchdog: Interval,
    last_pong: Instant,
    seq: u64,
    /// The request the worker is running, and since when it has been the oldest.
    running: Option<(u64, Instant)>,
    /// Since when a leaving worker has been draining.
    leaving: Option<Instant>,
    successor: Option<Preparing<'s>>,
    /// A successor that has loaded, until it takes over.
    ready: Option<Successor>,
    /// The worker was replaced: it retires instead of being reaped.
    retired: bool,
    stop: watch::Receiver<bool>,
}

impl Supervisor {
    /// Watches `parts.attached` until the lifecycle says what follows it; a replaced
    /// worker is then left to retire, any other is left in `parts.watched` to reap.
    pub(super) async fn watch<'s>(
        &'s self,
        source: &'s WorkerSource,
        lc: &mut Harness,
        parts: &mut Parts,
    ) {
        let Some(attached) = parts.attached.take() else {
            tracing::error!(worker = %self.slot.id(), "no incarnation to watch");
            parts.next = Some(Next::Exit);
            return;
        };
        let mut w = self.watching(attached);
        while parts.next.is_none() {
            let event = self.observe(&mut w, &mut parts.models).await;
            for action in self.transit(lc, event) {
                self.act(action, &mut w, source, parts).await;
            }
        }
        let Watch {
            watched, retired, ..
        } = w;
        if retired {
            tokio::spawn(retire(watched.process, watched.writer, watched.incarnation));
        } else {
            parts.watched = Some(watched);
        }
    }

    fn watching<'s>(&self, attached: Attached) -> Watch<'s> {
        let Attached {
            process,
            stream,
            incarnation,
        } = attached;
        let (mut reader, writer) = stream.into_split();
        let (reports_tx, reports) = mpsc::channel(64);
        let read_task = tokio::spawn(async move {
            loop {
                let msg = read_message(&mut reader).await;
                let failed = msg.is_err();
                if reports_tx.send(msg).await.is_err() || failed {
                    return;
                }
            }
        });
        let (unrouted_tx, unrouted) = mpsc::channel(16);
        let heartbeat_every = (self.config.heartbeat_timeout / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Watch {
            watched: Watched {
                process,
                writer,
                incarnation,
            },
            reports,
            _read_task: AbortOnDrop(read_task),
            unrouted_tx,
            unrouted,
            heartbeat,
            watchdog,
            last_pong: Instant::now(),
            seq: 0,
            running: None,
            leaving: None,
            successor: None,
            ready: None,
            retired: false,
            stop: self.stop.clone(),
        }
    }

    /// Waits for the next thing that matters to the lifecycle; heartbeats, model lists,
    /// unroutes and servable reports are handled on the way.
    async fn observe(&self, w: &mut Watch<'_>, models: &mut watch::Receiver<Models>) -> Event {
        loop {
            let successor = &mut w.successor;
            tokio::select! {
                msg = w.reports.recv() => match msg {
                    Some(Ok(msg)) => {
                        if let Some(event) = self.on_message(w, msg) {
                            return event;
                        }
                    }
                    Some(Err(e)) => return Event::Died(format!("its control socket closed ({e})")),
                    None => return Event::Died("its control socket closed".into()),
                },
                next = async {
                    match successor.as_mut() {
                        Some(preparing) => preparing.await,
                        None => std::future::pending().await,
                    }
                }, if successor.is_some() => {
                    w.successor = None;
                    return match next {
                        Ok(next) => {
                            w.ready = Some(next);
                            Event::SuccessorReady
                        }
                        Err(e) => Event::SuccessorFailed(format!("{e:#}")),
                    };
                }
                status = w.watched.process.exited() => {
                    return Event::Died(format!("the process ended ({status})"));
                }
                _ = w.watched.incarnation.dead() => {
                    // A worker that broke the protocol is closed like a hung one: an
                    // attached one exits when its socket closes.
                    let incarnation = &w.watched.incarnation;
                    return Event::Hung(
                        incarnation.violation().unwrap_or_else(|| "its response ring failed".into()),
                    );
                }
                Some((model_name, version)) = w.unrouted.recv() => {
                    let msg = gm::Message::Unrouted(gm::Unrouted { model_name, version });
                    if let Err(e) = write_message(&mut w.watched.writer, msg).await {
                        return Event::Hung(format!("cannot send to the worker: {e:#}"));
                    }
                }
                Ok(()) = models.changed() => {
                    let list = self.serve_models(models);
                    if let Err(e) = write_message(&mut w.watched.writer, list).await {
                        return Event::Hung(format!("cannot send the model list: {e:#}"));
                    }
                }
                _ = w.heartbeat.tick() => {
                    w.seq += 1;
                    let ping = gm::Message::Ping(gm::Ping { seq: w.seq });
                    if let Err(e) = write_message(&mut w.watched.writer, ping).await {
                        return Event::Hung(format!("cannot send a heartbeat: {e:#}"));
                    }
                }
                _ = w.watchdog.tick() => {
                    if let Some(event) = self.inspect(w) {
                        return event;
                    }
                }
                _ = stopped(&mut w.stop) => return Event::Stop,
            }
        }
    }

    /// A worker's message: the lifecycle's event, if it is one.
    fn on_message(&self, w: &mut Watch<'_>, msg: wm::Message) -> Option<Event> {
        let pid = w.watched.incarnation.pid;
        match msg {
            wm::Message::Pong(wm::Pong { rss_bytes, .. }) => {
                w.last_pong = Instant::now();
                w.watched.incarnation.set_resident_bytes(rss_bytes);
                None
            }
            wm::Message::InitialLoadDone(_) => Some(Event::InitialLoadDone),
            wm::Message::Memory(wm::Memory {
                rss_bytes,
                expected_bytes,
            }) => {
                tracing::info!(
                    worker = %self.slot.id(),
                    rss_mib = rss_bytes >> 20,
                    expected_mib = expected_bytes >> 20,
                    "resident set after an unload"
                );
                let stopping = *w.stop.borrow();
                Some(Event::Memory {
                    rss_bytes,
                    expected_bytes,
                    stopping,
                })
            }
            wm::Message::Leaving(_) => {
                tracing::info!(worker = %self.slot.id(), pid, "worker asked to stop; draining it");
                Some(Event::Leaving)
            }
            other => {
                if let Some((model, version)) = unloading(&other) {
                    let incarnation = w.watched.incarnation.clone();
                    let done = w.unrouted_tx.clone();
                    tokio::spawn(when_unrouted(incarnation, model, version, done));
                }
                apply_report(&self.servables, self.slot.id(), other)
                    .then_some(Event::VersionAvailable)
            }
        }
    }

    /// The watchdog's look: a leaving worker that has answered everything (or ran out of
    /// time), a silent one, or a run past its deadline.
    fn inspect(&self, w: &mut Watch<'_>) -> Option<Event> {
        let now = Instant::now();
        let incarnation = &w.watched.incarnation;
        if let Some(since) = w.leaving {
            if incarnation.outstanding() == 0 || now - since > LEAVE_WAIT {
                return Some(Event::Drained);
            }
        }
        // Checked at every tick, not only at pings: a request sent to a stopped worker
        // waits at most the heartbeat timeout.
        let silent = now - w.last_pong;
        if silent > self.config.heartbeat_timeout {
            return Some(Event::Hung(format!(
                "no heartbeat for {} ms",
                silent.as_millis()
            )));
        }
        w.running = match (incarnation.oldest(), w.running) {
            (None, _) => None,
            (Some(o), Some((id, since))) if o.id == id => Some((id, since)),
            (Some(o), _) => Some((o.id, now)),
        };
        if let (Some(oldest), Some((_, since))) = (incarnation.oldest(), w.running) {
            // A request that waited behind a slow one is skipped by the worker, so its
            // time starts when it becomes the oldest.
            let due = oldest.deadline.max(since) + self.config.run_grace;
            if now > due {
                return Some(Event::Hung(format!(
                    "a request ran {} ms past its deadline",
                    (now - oldest.deadline.max(since)).as_millis()
                )));
            }
        }
        None
    }

    /// Carries out an action on the watched incarnation (the rest are the slot's).
    async fn act<'s>(
        &'s self,
        action: Action,
        w: &mut Watch<'s>,
        source: &'s WorkerSource,
        parts: &mut Parts,
    ) {
        let pid = w.watched.incarnation.pid;
        match action {
            Action::InitialLoadDone => self.servables.initial_load_done(self.slot.id()),
            Action::RecordRecovery => self.slot.recovered(),
            Action::StartDrain => {
                w.leaving.get_or_insert_with(Instant::now);
            }
            Action::SendShutdown => {
                let shutdown = gm::Message::Shutdown(gm::Shutdown {});
                let _ = write_message(&mut w.watched.writer, shutdown).await;
            }
            Action::AwaitExit => w.watched.process.reap_within(SHUTDOWN_WAIT).await,
            Action::Kill(why) => {
                tracing::error!(worker = %self.slot.id(), pid, "{why}; killing it");
                w.watched.process.start_kill();
            }
            Action::PrepareSuccessor { generation, why } => {
                tracing::info!(worker = %self.slot.id(), pid, "{why}; starting a successor");
                let models = parts.models.clone();
                w.successor = Some(Box::pin(
                    self.prepare_successor(source, generation, models, why),
                ));
            }
            Action::DropSuccessor(e) => {
                tracing::warn!(worker = %self.slot.id(), "no successor: {e}; keeping this worker");
            }
            Action::Retire => w.retired = true,
            Action::TakeOver => match w.ready.take() {
                Some(next) => self.take_over(next, parts),
                None => tracing::error!(worker = %self.slot.id(), "no successor to take over"),
            },
            Action::Reap => parts.next = Some(Next::Reap),
            other => self.apply(other, parts),
        }
    }
}

/// The version an UNLOADING report names.
fn unloading(msg: &wm::Message) -> Option<(String, i64)> {
    match msg {
        wm::Message::ServableState(s) if s.state() == State::Unloading => {
            Some((s.model_name.clone(), s.version))
        }
        _ => None,
    }
}

/// How long a worker's unload may wait for requests in flight to that version.
const UNROUTE_WAIT: Duration = Duration::from_secs(60);

/// Tells the worker (through `done`) that a version it is unloading has no request in
/// flight any more. The report has already taken the version out of routing; a request
/// resolved a moment before may still be on its way into the ring, hence the short
/// settling wait. Until then the worker keeps the session, like TF Serving's handles.
async fn when_unrouted(
    incarnation: Arc<Incarnation>,
    model: String,
    version: i64,
    done: mpsc::Sender<(String, i64)>,
) {
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    while incarnation.outstanding_for(&model, version) > 0 && started.elapsed() < UNROUTE_WAIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = done.send((model, version)).await;
}

/// Applies a worker's servable report; true when a version became AVAILABLE.
fn apply_report(servables: &Servables, worker: WorkerId, msg: wm::Message) -> bool {
    match msg {
        wm::Message::NoVersions(wm::NoVersions {
            model_name,
            base_path,
        }) => {
            tracing::warn!(
                "No versions of servable {model_name} found under base path {base_path}. Did you forget to name your leaf directory as a number (eg. '/1/')?"
            );
            servables.no_versions(&model_name);
            false
        }
        msg @ (wm::Message::LoadAttempt(_) | wm::Message::Warmup(_)) => {
            record_load(&msg);
            false
        }
        wm::Message::ServableState(report) => match reported(report) {
            Some(r) => {
                tracing::info!(%worker, model = %r.id.name, version = r.id.version, state = ?r.state, "servable state");
                let available = r.state == State::Available;
                servables.apply(worker, r);
                available
            }
            None => {
                tracing::warn!(%worker, "servable report with an unknown state");
                false
            }
        },
        _ => {
            tracing::warn!(%worker, "unexpected worker message");
            false
        }
    }
}
