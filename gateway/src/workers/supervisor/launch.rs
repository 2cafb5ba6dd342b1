//! How a slot's worker comes to be: spawned and connected to the slot's own socket, or
//! taken from the lobby (attach mode); either way handed a fresh segment and its model
//! list. Also the successor a drifting worker gets: launched and loaded beside it.

use super::{Supervisor, WorkerSource};
use crate::servables::ServableId;
use crate::server_core::Models;
use crate::workers::attach;
use crate::workers::control::{encode, read_message};
use crate::workers::incarnation::{Attached, Incarnation};
use crate::workers::process::WorkerProcess;
use crate::workers::succession::{initial_load, Successor};
use anyhow::{anyhow, bail, Context};
use shm_protocol::Segment;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tfgate_proto::control::gateway_message::{self as gm, ServeModels};
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;
use tokio::sync::watch;

/// A worker that said in its Hello why it cannot serve (an op library that did not load).
#[derive(Debug, thiserror::Error)]
#[error("worker refused to start: {0}")]
pub(super) struct WorkerRefused(pub String);

/// How long a new worker may take to connect and attach.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Starts a successor and waits for its initial load; it must hold AVAILABLE every
    /// version the slot serves now.
    pub(super) async fn prepare_successor(
        &self,
        source: &WorkerSource,
        generation: u64,
        mut models: watch::Receiver<Models>,
        why: String,
    ) -> anyhow::Result<Successor> {
        let WorkerSource::Spawn {
            listener,
            socket_path,
        } = source
        else {
            bail!("an attached worker has no successor: the gateway starts no workers");
        };
        let mut attached = self
            .launch((listener, socket_path), generation, &mut models)
            .await?;
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

    fn spawn_worker(&self, socket_path: &Path) -> anyhow::Result<tokio::process::Child> {
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
            crate::workers::worker_logs::forward(stderr, plan.id.to_string(), child.id());
        }
        Ok(child)
    }

    /// The models to serve, as the worker is told them.
    pub(super) fn serve_models(&self, models: &mut watch::Receiver<Models>) -> gm::Message {
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

    /// Spawns a worker process and hands it a fresh segment once it connects.
    pub(super) async fn launch(
        &self,
        (listener, socket_path): (&UnixListener, &Path),
        generation: u64,
        models: &mut watch::Receiver<Models>,
    ) -> anyhow::Result<Attached> {
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

    /// Hands a worker taken from the lobby a fresh segment (attach mode).
    pub(super) async fn admit(
        &self,
        arrival: attach::Arrival,
        generation: u64,
        models: &mut watch::Receiver<Models>,
    ) -> anyhow::Result<Attached> {
        let (stream, incarnation) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.handshake(arrival, generation, models),
        )
        .await
        .map_err(|_| anyhow!("worker handshake timed out"))??;
        Ok(Attached {
            process: WorkerProcess::Attached,
            stream,
            incarnation,
        })
    }
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
