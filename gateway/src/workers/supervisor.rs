//! Supervises one worker slot: spawns `tfgate-worker`, hands it a fresh shared-memory
//! segment over the Unix socket, relays its servable reports, and when the process dies
//! — for any reason — fails its in-flight requests over to the next incarnation, which
//! it starts at once (with a short backoff if crashes repeat).

use super::incarnation::Incarnation;
use crate::servables::{ServableId, Servables};
use anyhow::{anyhow, bail, Context};
use prost::Message;
use shm_protocol::control::{self, GatewayMessage, ModelConfig, SessionConfig, WorkerMessage};
use shm_protocol::{Segment, SegmentConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tfgate_proto::tensorflow::serving::SignatureDefMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// What a supervisor needs to run its slot.
#[derive(Clone)]
pub struct SupervisorConfig {
    pub slot: u32,
    pub worker_binary: PathBuf,
    pub socket_path: PathBuf,
    pub segment: SegmentConfig,
    pub models: Vec<ModelConfig>,
    pub session: SessionConfig,
    /// `--file_system_poll_wait_seconds`, handed to the worker's Source.
    pub file_system_poll_wait_seconds: i32,
    pub servables: Servables,
}

/// How long a new worker may take to connect and attach.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

async fn read_message(stream: &mut UnixStream) -> anyhow::Result<WorkerMessage> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let mut body = vec![0u8; control::frame_len(prefix)?];
    stream.read_exact(&mut body).await?;
    Ok(control::decode(&body)?)
}

async fn write_message(stream: &mut UnixStream, msg: &GatewayMessage) -> anyhow::Result<()> {
    stream.write_all(&control::encode(msg)?).await?;
    Ok(())
}

/// Incarnations in a row that may die before the first one ever serves; then startup
/// fails (TF Serving exits when its initial load fails) instead of looping forever.
const MAX_STARTUP_FAILURES: u32 = 5;

/// Runs the slot forever, publishing the live incarnation (or `None` while restarting).
/// If no incarnation ever serves and `MAX_STARTUP_FAILURES` die in a row, reports why on
/// `startup_failed` and stops.
pub async fn supervise(
    cfg: SupervisorConfig,
    current: watch::Sender<Option<Arc<Incarnation>>>,
    startup_failed: Arc<watch::Sender<Option<String>>>,
) {
    let _ = std::fs::remove_file(&cfg.socket_path);
    let listener = match UnixListener::bind(&cfg.socket_path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "cannot bind worker socket {}: {e}",
                cfg.socket_path.display()
            );
            return;
        }
    };
    let mut generation = 0u64;
    let mut backoff = Duration::from_millis(100);
    let mut ever_served = false;
    let mut failures_in_a_row = 0;
    loop {
        generation += 1;
        let started = Instant::now();
        let mut served = false;
        let why = match run_incarnation(&cfg, &listener, generation, &current, &mut served).await {
            Ok(status) => format!("worker exited ({status})"),
            Err(e) => format!("worker failed: {e:#}"),
        };
        tracing::warn!(slot = cfg.slot, generation, "{why}; restarting");
        current.send_replace(None);
        ever_served |= served;
        failures_in_a_row = if served { 0 } else { failures_in_a_row + 1 };
        if !ever_served && failures_in_a_row >= MAX_STARTUP_FAILURES {
            startup_failed.send_replace(Some(format!(
                "the worker died {failures_in_a_row} times before serving; last: {why}"
            )));
            return;
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn spawn_worker(cfg: &SupervisorConfig) -> anyhow::Result<Child> {
    Command::new(&cfg.worker_binary)
        .arg(format!("--gateway_socket={}", cfg.socket_path.display()))
        .arg(format!("--worker_id={}", cfg.slot))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start worker {}", cfg.worker_binary.display()))
}

/// Hands the segment's memfd to the worker; blocking, on the std socket.
fn attach(stream: UnixStream, segment: &Segment, generation: u64) -> anyhow::Result<UnixStream> {
    let std_stream = stream.into_std()?;
    std_stream.set_nonblocking(false)?;
    let payload = control::encode(&GatewayMessage::Attach { generation })?;
    shm_protocol::fd_passing::send_fd(&std_stream, segment.fd(), &payload)?;
    std_stream.set_nonblocking(true)?;
    Ok(UnixStream::from_std(std_stream)?)
}

async fn run_incarnation(
    cfg: &SupervisorConfig,
    listener: &UnixListener,
    generation: u64,
    current: &watch::Sender<Option<Arc<Incarnation>>>,
    served: &mut bool,
) -> anyhow::Result<String> {
    let mut child = spawn_worker(cfg)?;
    let handshake = async {
        let (mut stream, _) = listener.accept().await?;
        match read_message(&mut stream).await? {
            WorkerMessage::Hello { worker_id, pid } => {
                tracing::info!(
                    slot = cfg.slot,
                    worker_id,
                    pid,
                    generation,
                    "worker connected"
                );
            }
            other => bail!("expected Hello, got {other:?}"),
        }
        let segment = Segment::create(&cfg.segment, generation)?;
        let mut stream = attach(stream, &segment, generation)?;
        match read_message(&mut stream).await? {
            WorkerMessage::Attached { generation: g } if g == generation => {}
            other => bail!("expected Attached({generation}), got {other:?}"),
        }
        let (sender, receiver) = segment.into_gateway();
        let incarnation = Incarnation::start(generation, sender, receiver)?;
        write_message(
            &mut stream,
            &GatewayMessage::ServeModels {
                models: cfg.models.clone(),
                session: cfg.session.clone(),
                file_system_poll_wait_seconds: cfg.file_system_poll_wait_seconds,
            },
        )
        .await?;
        anyhow::Ok((stream, incarnation))
    };
    let (mut stream, incarnation) = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => r.map_err(|_| anyhow!("worker handshake timed out"))??,
        status = child.wait() => bail!("worker exited during handshake: {}", status?),
    };
    current.send_replace(Some(incarnation.clone()));
    let outcome = loop {
        tokio::select! {
            msg = read_message(&mut stream) => match msg {
                Ok(msg) => *served |= handle_report(cfg, msg),
                Err(e) => {
                    // EOF: the worker is gone (or going); reap it below.
                    break format!("control socket closed: {e}");
                }
            },
            status = child.wait() => break format!("{}", status?),
        }
    };
    incarnation.mark_dead();
    let _ = child.start_kill();
    let status = child
        .wait()
        .await
        .map(|s| s.to_string())
        .unwrap_or_default();
    Ok(format!("{outcome}; {status}"))
}

/// Applies a worker's report; true when a version became AVAILABLE.
fn handle_report(cfg: &SupervisorConfig, msg: WorkerMessage) -> bool {
    match msg {
        WorkerMessage::ServableState {
            model_name,
            version,
            state,
            error,
            signature_defs,
        } => {
            let signatures = SignatureDefMap::decode(signature_defs.as_slice()).unwrap_or_default();
            tracing::info!(model = %model_name, version, ?state, "servable state");
            let available = state == shm_protocol::control::ServableState::Available;
            cfg.servables.update(
                ServableId {
                    name: model_name,
                    version,
                },
                state,
                error,
                signatures,
            );
            available
        }
        WorkerMessage::NoVersions {
            model_name,
            base_path,
        } => {
            tracing::warn!(
                "No versions of servable {model_name} found under base path {base_path}. Did you forget to name your leaf directory as a number (eg. '/1/')?"
            );
            false
        }
        other => {
            tracing::warn!("unexpected worker message {other:?}");
            false
        }
    }
}
