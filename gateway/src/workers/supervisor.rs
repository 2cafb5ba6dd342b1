//! Supervises one worker slot: spawns `tfgate-worker` (pinned to the slot's cores, with
//! the slot's GPU), hands it a fresh shared-memory segment over the Unix socket, relays
//! its servable reports, and watches it. An incarnation ends when the process dies, its
//! control socket closes, its response ring breaks, it misses heartbeats
//! (`--worker_heartbeat_timeout_ms`: a stopped or wedged process), or the request it is
//! running outlives that request's deadline by `--worker_run_grace_ms` (a kernel stuck in
//! a loop). Whatever the cause, its requests fail over (the pool re-dispatches them), its
//! versions leave routing, and the next incarnation starts at once (with a short backoff
//! if crashes repeat). In attach mode (`--worker_socket`) the slot spawns nothing: it
//! takes the next worker that connects on its own, and a worker that ends is replaced by
//! whichever connects next (its container restarted, or a new one); a slot whose worker
//! left for good (it asked to stop: a scale-down) is closed, down to `--num_workers`.

use super::attach::{self, Lobby};
use super::control::{encode, read_message, record_load, reported, write_message};
use super::incarnation::Attached;
use super::incarnation::Incarnation;
use super::process::WorkerProcess;
use super::slot::{Slot, SlotState};
use super::succession::{initial_load, retire, Successor};
use crate::servables::{ServableId, Servables, WorkerId};
use crate::server_core::Models;
use anyhow::{anyhow, bail, Context};
use shm_protocol::{Segment, SegmentConfig};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tfgate_proto::control::gateway_message::{self as gm, ServeModels};
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::control::{LoadConfig, SessionConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A worker that said in its Hello why it cannot serve (an op library that did not load).
#[derive(Debug, thiserror::Error)]
#[error("worker refused to start: {0}")]
struct WorkerRefused(String);

/// What every slot's supervisor needs (from the flags).
pub struct SupervisorConfig {
    pub worker_binary: PathBuf,
    /// Attach mode (`--worker_socket`): spawn nothing; take workers that connect here.
    pub worker_socket: Option<PathBuf>,
    /// Attach mode: slots open at most (`--max_attached_workers`); a worker beyond them
    /// is turned away.
    pub max_attached_workers: usize,
    /// Attach mode: slots kept open with no worker (`--num_workers`); above them, a
    /// slot whose worker left for good is closed.
    pub min_attached_slots: usize,
    /// The private directory holding the workers' sockets.
    pub runtime_dir: PathBuf,
    pub segment: SegmentConfig,
    pub session: SessionConfig,
    pub load: LoadConfig,
    /// `--file_system_poll_wait_seconds`, handed to the worker's Source.
    pub file_system_poll_wait_seconds: i32,
    /// A worker silent for this long is killed (`--worker_heartbeat_timeout_ms`).
    pub heartbeat_timeout: Duration,
    /// A run this far past its request's deadline gets its worker killed
    /// (`--worker_run_grace_ms`).
    pub run_grace: Duration,
    /// A worker holding this many bytes more than a fresh one would after an unload is
    /// replaced (`--replace_worker_after_unload_excess_mb`); 0: never.
    pub replace_after_unload_excess: u64,
    /// `--log_format`, passed on to the workers.
    pub log_format: String,
    /// `--op_libraries`, passed on to the workers this gateway starts.
    pub op_libraries: Vec<PathBuf>,
}

/// A slot's supervisor task and what it shares with the rest of the gateway.
pub struct Supervisor {
    pub config: Arc<SupervisorConfig>,
    pub slot: Arc<Slot>,
    pub(super) servables: Servables,
    /// Set to why, if the slot's workers keep dying before they ever serve.
    pub startup_failed: Arc<watch::Sender<Option<String>>>,
    /// Turns true when the server shuts down.
    pub stop: watch::Receiver<bool>,
    /// The model list to serve; a change (a config reload) is passed on to the worker.
    pub models: watch::Receiver<Models>,
    /// Attach mode: where workers that connect on their own wait for a slot.
    pub lobby: Option<Arc<Lobby>>,
    /// The pool's slots, from which an attach-mode slot removes itself.
    pub(super) slots: super::Slots,
}

/// Where a slot's next worker comes from.
pub(super) enum WorkerSource {
    /// Spawned by the supervisor; it connects to the slot's own socket.
    Spawn {
        listener: UnixListener,
        socket_path: PathBuf,
    },
    /// Started on its own; it connects to the pool's socket and waits in the lobby.
    Attach(Arc<Lobby>),
}

/// How long a new worker may take to connect and attach.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Incarnations in a row that may die before the first one ever serves; then startup
/// fails (TF Serving exits when its initial load fails) instead of looping forever.
const MAX_STARTUP_FAILURES: u32 = 5;
/// How often the watchdog looks at the running request.
const WATCHDOG_TICK: Duration = Duration::from_millis(50);
/// How long a worker asked to shut down may take before it is killed.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// How long a leaving worker may take to answer what it holds.
const LEAVE_WAIT: Duration = Duration::from_secs(30);

/// Resolves once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How an incarnation ended.
pub(super) enum End {
    /// It died or was killed; start another.
    Restart(String),
    /// The server is shutting down.
    Stopped,
    /// The worker asked to stop (SIGTERM) and was let go once it had answered everything.
    Left,
    /// A successor has loaded everything and takes over; the old worker retires.
    Replaced(Box<Successor>),
}

impl Supervisor {
    /// Runs the slot until the server stops.
    pub async fn run(self) {
        let source = match &self.lobby {
            Some(lobby) => WorkerSource::Attach(lobby.clone()),
            None => {
                let socket_path = self
                    .config
                    .runtime_dir
                    .join(format!("worker-{}.sock", self.slot.id()));
                let _ = std::fs::remove_file(&socket_path);
                match UnixListener::bind(&socket_path) {
                    Ok(listener) => WorkerSource::Spawn {
                        listener,
                        socket_path,
                    },
                    Err(e) => {
                        let why =
                            format!("cannot bind worker socket {}: {e}", socket_path.display());
                        self.startup_failed.send_replace(Some(why));
                        return;
                    }
                }
            }
        };
        let attached_mode = matches!(source, WorkerSource::Attach(_));
        let mut generation = 0u64;
        let mut backoff = Duration::from_millis(100);
        let mut ever_served = false;
        let mut failures_in_a_row = 0;
        // A successor that took over from the last incarnation, if that is how it ended.
        let mut successor: Option<Box<Successor>> = None;
        loop {
            let started = Instant::now();
            let mut served = false;
            // One receiver from the handshake on: a change after the list was sent is seen.
            let mut models = self.models.clone();
            let attached = match successor.take() {
                Some(next) => {
                    served = true;
                    Ok(self.take_over(*next, &mut models, &mut generation))
                }
                None => {
                    generation += 1;
                    self.start(&source, generation, &mut models).await
                }
            };
            let end = match attached {
                Ok(a) => {
                    self.serve(a, &source, generation, &mut models, &mut served)
                        .await
                }
                Err(end) => end,
            };
            let why = match end {
                End::Replaced(next) => {
                    successor = Some(next);
                    continue;
                }
                End::Stopped => {
                    self.servables.worker_lost(self.slot.id());
                    self.slot.ended("shut down".into(), false);
                    return;
                }
                End::Left => {
                    self.servables.worker_lost(self.slot.id());
                    tracing::info!(worker = %self.slot.id(), generation, "worker left");
                    self.slot.ended("left when asked to stop".into(), false);
                    if !attached_mode {
                        // A spawned worker someone else stopped is started again.
                        self.slot.set_state(SlotState::Restarting);
                    } else if self.close_if_spare() {
                        return;
                    }
                    continue;
                }
                End::Restart(why) => why,
            };
            // Out of routing first, so that re-dispatched requests look elsewhere.
            self.servables.worker_lost(self.slot.id());
            let next = if attached_mode {
                "waiting for a worker to attach"
            } else {
                "restarting"
            };
            tracing::warn!(worker = %self.slot.id(), generation, "worker exited ({why}); {next}");
            self.slot.ended(why.clone(), true);
            ever_served |= served;
            failures_in_a_row = if served { 0 } else { failures_in_a_row + 1 };
            if !ever_served && failures_in_a_row >= MAX_STARTUP_FAILURES {
                self.startup_failed.send_replace(Some(format!(
                    "the worker died {failures_in_a_row} times before serving; last: {why}"
                )));
            }
            if attached_mode {
                // Whoever restarts attached workers backs off; the slot just waits.
                continue;
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stop) => {
                    self.slot.ended("shut down".into(), false);
                    return;
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Closes this attach-mode slot, whose worker left for good, if the pool holds more
    /// than `--num_workers` slots; true when it was closed. Its versions leave the
    /// servable table (nothing will bring them back) and its gauges read "stopped".
    fn close_if_spare(&self) -> bool {
        {
            let mut slots = self.slots.write();
            if slots.len() <= self.config.min_attached_slots {
                return false;
            }
            slots.remove(&self.slot.id());
        }
        self.servables.worker_removed(self.slot.id());
        let last = self.slot.report();
        crate::monitoring::own_series::worker(&crate::monitoring::own_series::WorkerSample {
            worker: last.id.to_string(),
            state: SlotState::Stopped.name(),
            restarts: last.restarts,
            replacements: last.replacements,
            in_flight: 0,
            answered: last.answered,
            resident_bytes: 0,
            arena_in_use: 0,
            arena_capacity: 0,
        });
        tracing::info!(worker = %self.slot.id(), "slot closed: its worker left for good");
        true
    }

    /// Starts a successor and waits for its initial load; it must hold AVAILABLE every
    /// version the slot serves now.
    async fn prepare_successor(
        &self,
        source: &WorkerSource,
        generation: u64,
        mut models: watch::Receiver<Models>,
        why: String,
    ) -> anyhow::Result<Successor> {
        if let WorkerSource::Attach(_) = source {
            bail!("an attached worker has no successor: the gateway starts no workers");
        }
        let mut attached = self.launch(source, generation, &mut models).await?;
        let serving: BTreeSet<ServableId> = self
            .servables
            .on_worker(self.slot.id())
            .into_iter()
            .filter(|(_, state)| *state == State::Available)
            .map(|(id, _)| id)
            .collect();
        let reports = initial_load(&mut attached, &serving).await?;
        Ok(Successor {
            attached,
            reports,
            why,
        })
    }

    /// A successor's reports become the slot's states, and it becomes the slot's worker.
    fn take_over(
        &self,
        next: Successor,
        models: &mut watch::Receiver<Models>,
        generation: &mut u64,
    ) -> Attached {
        *generation = next.attached.incarnation.generation;
        // Each version's last state in the successor's reports, in one switch.
        let mut last = std::collections::BTreeMap::new();
        for r in next.reports {
            last.insert(r.id.clone(), r);
        }
        self.servables
            .replace_worker(self.slot.id(), last.into_values().collect());
        self.slot
            .replaced(next.attached.incarnation.clone(), next.why);
        // The list may have changed while the successor loaded: send it again (a worker
        // given the list it serves does nothing).
        models.mark_changed();
        next.attached
    }

    fn spawn_worker(&self, socket_path: &std::path::Path) -> anyhow::Result<tokio::process::Child> {
        let plan = &self.slot.plan;
        let mut cmd = Command::new(&self.config.worker_binary);
        cmd.arg(format!("--gateway_socket={}", socket_path.display()))
            .arg(format!("--worker_id={}", plan.id))
            .arg(format!("--log_format={}", self.config.log_format))
            .envs(plan.env())
            .kill_on_drop(true);
        if !plan.cpus.is_empty() {
            cmd.arg(format!("--cpus={}", plan.cpu_list()));
        }
        if !self.config.op_libraries.is_empty() {
            let paths: Vec<String> = self
                .config
                .op_libraries
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            cmd.arg(format!("--op_libraries={}", paths.join(",")));
        }
        let json_logs = self.config.log_format == "json";
        if json_logs {
            cmd.stderr(std::process::Stdio::piped());
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot start worker {}",
                self.config.worker_binary.display()
            )
        })?;
        if let Some(stderr) = child.stderr.take() {
            super::worker_logs::forward(stderr, plan.id.to_string(), child.id());
        }
        Ok(child)
    }

    /// The models to serve, as the worker is told them.
    fn serve_models(&self, models: &mut watch::Receiver<Models>) -> gm::Message {
        gm::Message::ServeModels(ServeModels {
            models: models.borrow_and_update().as_ref().clone(),
            session: Some(self.config.session.clone()),
            load: Some(self.config.load),
            file_system_poll_wait_seconds: self.config.file_system_poll_wait_seconds,
        })
    }

    /// Hands a worker that said Hello a fresh segment and its models.
    async fn handshake(
        &self,
        arrival: attach::Arrival,
        generation: u64,
        models: &mut watch::Receiver<Models>,
    ) -> anyhow::Result<(UnixStream, Arc<Incarnation>)> {
        let attach::Arrival { stream, hello } = arrival;
        if !hello.refused.is_empty() {
            return Err(WorkerRefused(hello.refused).into());
        }
        let pid = hello.pid;
        tracing::info!(worker = %self.slot.id(), worker_id = hello.worker_id, pid, host = %hello.host, generation, "worker connected");
        // Responses ring a doorbell in the event loop rather than wake a thread.
        let (ringer, chime) = shm_protocol::doorbell()?;
        let segment = Segment::create(&self.config.segment, generation)?.with_chime(chime);
        let mut stream = attach(stream, &segment, &ringer, generation)?;
        drop(ringer);
        match read_message(&mut stream).await? {
            wm::Message::Attached(wm::Attached { generation: g }) if g == generation => {}
            other => bail!("expected Attached({generation}), got {other:?}"),
        }
        let (sender, receiver) = segment.into_gateway();
        let incarnation = Incarnation::start(generation, (pid, hello.host), sender, receiver)?;
        let serve = encode(self.serve_models(models))?;
        stream.write_all(&serve).await?;
        Ok((stream, incarnation))
    }

    /// Starts a worker process (or takes the next one to attach) and hands it a fresh
    /// segment.
    pub(super) async fn launch(
        &self,
        source: &WorkerSource,
        generation: u64,
        models: &mut watch::Receiver<Models>,
    ) -> anyhow::Result<Attached> {
        let (listener, socket_path) = match source {
            WorkerSource::Spawn {
                listener,
                socket_path,
            } => (listener, socket_path),
            WorkerSource::Attach(lobby) => {
                let arrival = lobby.next().await;
                self.slot.set_state(SlotState::Starting);
                let (stream, incarnation) = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    self.handshake(arrival, generation, models),
                )
                .await
                .map_err(|_| anyhow!("worker handshake timed out"))??;
                return Ok(Attached {
                    process: WorkerProcess::Attached,
                    stream,
                    incarnation,
                });
            }
        };
        let mut child = self.spawn_worker(socket_path)?;
        let connect = async {
            let (stream, _) = listener.accept().await?;
            let arrival = attach::hello(stream).await?;
            self.handshake(arrival, generation, models).await
        };
        let handshake = tokio::select! {
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect) => {
                r.map_err(|_| anyhow!("worker handshake timed out")).and_then(|r| r)
            }
            status = child.wait() => Err(anyhow!(
                "worker exited during handshake: {}",
                status.map(|s| s.to_string()).unwrap_or_default()
            )),
        };
        match handshake {
            Ok((stream, incarnation)) => Ok(Attached {
                process: WorkerProcess::Spawned(child),
                stream,
                incarnation,
            }),
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(e)
            }
        }
    }

    /// Starts the slot's next worker (unless the server stops first).
    async fn start(
        &self,
        source: &WorkerSource,
        generation: u64,
        models: &mut watch::Receiver<Models>,
    ) -> Result<Attached, End> {
        self.slot.set_state(match source {
            WorkerSource::Spawn { .. } => SlotState::Starting,
            WorkerSource::Attach(_) => SlotState::Waiting,
        });
        let mut stop = self.stop.clone();
        tokio::select! {
            r = self.launch(source, generation, models) => match r {
                Ok(attached) => {
                    self.slot.attached(attached.incarnation.clone());
                    Ok(attached)
                }
                Err(e) => {
                    if let Some(WorkerRefused(why)) = e.downcast_ref() {
                        tracing::error!(worker = %self.slot.id(), "worker refused to start: {why}");
                        // A spawned worker would refuse again: startup fails at once.
                        if matches!(source, WorkerSource::Spawn { .. }) {
                            self.startup_failed.send_replace(Some(why.clone()));
                        }
                    }
                    Err(End::Restart(format!("worker failed: {e:#}")))
                }
            },
            _ = stopped(&mut stop) => Err(End::Stopped),
        }
    }

    /// Serves an attached incarnation until it ends; then it is killed, or — replaced
    /// by a successor — left to finish its requests and exit.
    async fn serve(
        &self,
        attached: Attached,
        source: &WorkerSource,
        generation: u64,
        models: &mut watch::Receiver<Models>,
        served: &mut bool,
    ) -> End {
        let Attached {
            mut process,
            stream,
            incarnation,
        } = attached;
        let (end, writer) = self
            .watch(
                &mut process,
                stream,
                &incarnation,
                models,
                served,
                (source, generation),
            )
            .await;
        if let End::Replaced(_) = end {
            tokio::spawn(retire(process, writer, incarnation));
            return end;
        }
        incarnation.mark_dead();
        // Closing the control socket is what makes an attached worker go.
        drop(writer);
        let status = process.reap().await;
        match end {
            End::Restart(why) if !status.is_empty() => End::Restart(format!("{why}: {status}")),
            other => other,
        }
    }

    /// Watches one attached incarnation: relays its reports, sends heartbeats and model
    /// lists, kills it when it hangs, and — when it has drifted too far from the memory a
    /// fresh worker would hold — prepares a successor. Returns how it ended and the
    /// control socket's write half (kept open while a replaced worker retires).
    async fn watch(
        &self,
        child: &mut WorkerProcess,
        stream: UnixStream,
        incarnation: &Arc<Incarnation>,
        models: &mut watch::Receiver<Models>,
        served: &mut bool,
        (source, generation): (&WorkerSource, u64),
    ) -> (End, OwnedWriteHalf) {
        let (mut reader, mut writer) = stream.into_split();
        // Reads run in their own task: a read cancelled half-way would lose the stream's
        // framing.
        let (reports_tx, mut reports) = mpsc::channel(64);
        let read_task = tokio::spawn(async move {
            loop {
                let msg = read_message(&mut reader).await;
                let failed = msg.is_err();
                if reports_tx.send(msg).await.is_err() || failed {
                    return;
                }
            }
        });
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _read_task = AbortOnDrop(read_task);

        // Versions the worker is unloading, once no request for them is in flight.
        let (unrouted_tx, mut unrouted) = mpsc::channel::<(String, i64)>(16);
        let heartbeat_every = (self.config.heartbeat_timeout / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pong = Instant::now();
        let mut seq = 0u64;
        // The request the worker is running, and since when it has been the oldest.
        let mut running: Option<(u64, Instant)> = None;
        let mut stop = self.stop.clone();
        // A replacement being started and loaded beside this worker.
        let mut successor: Option<
            std::pin::Pin<
                Box<dyn std::future::Future<Output = anyhow::Result<Successor>> + Send + '_>,
            >,
        > = None;
        let kill = |child: &mut WorkerProcess, why: String| {
            tracing::error!(worker = %self.slot.id(), pid = incarnation.pid, "{why}; killing it");
            child.start_kill();
            why
        };
        // Set once the worker has said it is leaving: it gets no new requests, and is
        // let go when it has answered the ones it holds.
        let mut leaving: Option<Instant> = None;
        macro_rules! end {
            ($end:expr) => {
                return ($end, writer)
            };
        }
        loop {
            tokio::select! {
                msg = reports.recv() => match msg {
                    Some(Ok(msg)) => match msg {
                        wm::Message::Pong(wm::Pong { rss_bytes, .. }) => {
                            last_pong = Instant::now();
                            incarnation.set_resident_bytes(rss_bytes);
                        }
                        wm::Message::InitialLoadDone(_) => {
                            self.servables.initial_load_done(self.slot.id());
                            self.slot.set_state(SlotState::Serving);
                        }
                        wm::Message::Memory(wm::Memory { rss_bytes, expected_bytes }) => {
                            let excess = rss_bytes.saturating_sub(expected_bytes);
                            tracing::info!(
                                worker = %self.slot.id(),
                                rss_mib = rss_bytes >> 20,
                                expected_mib = expected_bytes >> 20,
                                "resident set after an unload"
                            );
                            let limit = self.config.replace_after_unload_excess;
                            if limit > 0 && excess > limit && successor.is_none() && !*stop.borrow() {
                                let why = format!(
                                    "replaced: {} MiB resident after unloading, {} MiB expected",
                                    rss_bytes >> 20,
                                    expected_bytes >> 20
                                );
                                tracing::info!(worker = %self.slot.id(), pid = incarnation.pid, "{why}; starting a successor");
                                successor = Some(Box::pin(self.prepare_successor(
                                    source, generation + 1, models.clone(), why,
                                )));
                            }
                        }
                        wm::Message::Leaving(_) => {
                            tracing::info!(worker = %self.slot.id(), pid = incarnation.pid, "worker asked to stop; draining it");
                            self.servables.worker_lost(self.slot.id());
                            leaving.get_or_insert_with(Instant::now);
                        }
                        other => {
                            if let Some((model, version)) = unloading(&other) {
                                tokio::spawn(when_unrouted(incarnation.clone(), model, version, unrouted_tx.clone()));
                            }
                            *served |= apply_report(&self.servables, self.slot.id(), other)
                        }
                    },
                    Some(Err(e)) => end!(End::Restart(format!("its control socket closed ({e})"))),
                    None => end!(End::Restart("its control socket closed".into())),
                },
                next = async { successor.as_mut().expect("guarded").await }, if successor.is_some() => {
                    match next {
                        Ok(next) => end!(End::Replaced(Box::new(next))),
                        Err(e) => {
                            tracing::warn!(worker = %self.slot.id(), "no successor: {e:#}; keeping this worker");
                            successor = None;
                        }
                    }
                }
                status = child.exited() => end!(End::Restart(format!("the process ended ({status})"))),
                _ = incarnation.dead() => {
                    // A worker that broke the protocol is closed like a hung one: an
                    // attached one exits when its socket closes.
                    let why = incarnation.violation().unwrap_or_else(|| "its response ring failed".into());
                    end!(End::Restart(kill(child, why)))
                }
                Some((model_name, version)) = unrouted.recv() => {
                    let msg = gm::Message::Unrouted(gm::Unrouted { model_name, version });
                    if let Err(e) = write_message(&mut writer, msg).await {
                        end!(End::Restart(kill(child, format!("cannot send to the worker: {e:#}"))));
                    }
                }
                Ok(()) = models.changed() => {
                    let list = self.serve_models(models);
                    if let Err(e) = write_message(&mut writer, list).await {
                        end!(End::Restart(kill(child, format!("cannot send the model list: {e:#}"))));
                    }
                }
                _ = heartbeat.tick() => {
                    seq += 1;
                    if let Err(e) = write_message(&mut writer, gm::Message::Ping(gm::Ping { seq })).await {
                        end!(End::Restart(kill(child, format!("cannot send a heartbeat: {e:#}"))));
                    }
                }
                _ = watchdog.tick() => {
                    let now = Instant::now();
                    if let Some(since) = leaving {
                        if incarnation.outstanding() == 0 || now - since > LEAVE_WAIT {
                            let _ = write_message(&mut writer, gm::Message::Shutdown(gm::Shutdown {})).await;
                            end!(End::Left);
                        }
                    }
                    // Checked at every tick, not only at pings: a request sent to a
                    // stopped worker waits at most the heartbeat timeout.
                    let silent = now - last_pong;
                    if silent > self.config.heartbeat_timeout {
                        end!(End::Restart(kill(child, format!(
                            "no heartbeat for {} ms", silent.as_millis()
                        ))));
                    }
                    running = match (incarnation.oldest(), running) {
                        (None, _) => None,
                        (Some(o), Some((id, since))) if o.id == id => Some((id, since)),
                        (Some(o), _) => Some((o.id, now)),
                    };
                    if let (Some(oldest), Some((_, since))) = (incarnation.oldest(), running) {
                        // A request that waited behind a slow one is skipped by the
                        // worker, so its time starts when it becomes the oldest.
                        let due = oldest.deadline.max(since) + self.config.run_grace;
                        if now > due {
                            end!(End::Restart(kill(child, format!(
                                "a request ran {} ms past its deadline",
                                (now - oldest.deadline.max(since)).as_millis()
                            ))));
                        }
                    }
                }
                _ = stopped(&mut stop) => {
                    let _ = write_message(&mut writer, gm::Message::Shutdown(gm::Shutdown {})).await;
                    child.reap_within(SHUTDOWN_WAIT).await;
                    end!(End::Stopped);
                }
            }
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

/// Hands the segment's memfd and its doorbell to the worker; blocking, on the std socket.
fn attach(
    stream: UnixStream,
    segment: &Segment,
    ringer: &shm_protocol::Ringer,
    generation: u64,
) -> anyhow::Result<UnixStream> {
    let std_stream = stream.into_std()?;
    std_stream.set_nonblocking(false)?;
    let payload = encode(gm::Message::Attach(gm::Attach { generation }))?;
    use std::os::fd::AsFd;
    shm_protocol::fd_passing::send_fds(&std_stream, &[segment.fd(), ringer.as_fd()], &payload)?;
    std_stream.set_nonblocking(true)?;
    Ok(UnixStream::from_std(std_stream)?)
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
