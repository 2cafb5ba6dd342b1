//! tfgate-worker: owns TensorFlow sessions for the models the gateway assigns it and
//! serves requests from the shared-memory rings. Started and supervised by `tfgate`;
//! exits when the gateway's control socket closes.

#![deny(unsafe_code)]

mod ceiling;
mod cpus;
mod loader;
mod manager;
mod op_libraries;
mod predict;
mod run_mode;
mod serve;
mod signature;
mod source;
#[allow(unsafe_code)] // the TensorFlow C API wrapper: the worker's only unsafe code
mod tf;
mod version_policy;
mod warmup;

use anyhow::{bail, Context};
use clap::Parser;
use shm_protocol::Segment;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tfgate_frame::control;
use tfgate_proto::control::gateway_message as gm;
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::control::{GatewayMessage, WorkerMessage};

#[derive(Parser, Debug)]
#[command(
    name = "tfgate-worker",
    version,
    about = "tfgate worker process (started by tfgate)"
)]
struct Flags {
    /// The gateway's Unix socket for this worker slot.
    #[arg(long = "gateway_socket", required_unless_present = "measure_model")]
    gateway_socket: Option<PathBuf>,
    /// Benchmarks only: run this SavedModel version directory in-process and print its
    /// speed at each of --measure_batches (the model ceiling), then exit.
    /// `text` or `json` (the gateway's `--log_format`).
    #[arg(long = "log_format", default_value = "text")]
    log_format: String,
    #[arg(long = "measure_model")]
    measure_model: Option<String>,
    /// Benchmarks: the input to feed, as `ALIAS:WIDTH` (float32 `[batch, WIDTH]`) or
    /// `ALIAS:DTYPE:D1xD2x...` (`[batch, D1, D2, ...]`, DTYPE `float` or `int32`).
    #[arg(long = "measure_input", default_value = "x:64")]
    measure_input: String,
    /// Benchmarks: batch sizes, comma-separated.
    #[arg(long = "measure_batches", default_value = "1")]
    measure_batches: String,
    /// Benchmarks: seconds per batch size.
    #[arg(long = "measure_seconds", default_value_t = 2.0)]
    measure_seconds: f64,
    /// Benchmarks: TensorFlow's intra-op threads (0: the worker's default).
    #[arg(
        long = "measure_intra_op",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    measure_intra_op: i32,
    /// Benchmarks: TensorFlow's inter-op threads (0: the worker's default; -1: inline).
    #[arg(
        long = "measure_inter_op",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    measure_inter_op: i32,
    /// This worker's slot number.
    #[arg(long = "worker_id", default_value_t = 0)]
    worker_id: u32,
    /// The cores this worker runs on (a Linux CPU list, e.g. `0-3`): the process is
    /// pinned to them and TensorFlow's thread pools default to their number.
    #[arg(long = "cpus")]
    cpus: Option<String>,
    /// Shared libraries of TensorFlow ops and kernels to load before any model, after
    /// TensorFlow Text's (comma-separated; a tfgate extension). The gateway passes its
    /// own `--op_libraries` to the workers it starts; an attached worker takes it here.
    #[arg(long = "op_libraries", value_delimiter = ',')]
    op_libraries: Vec<PathBuf>,
}

/// Connects to the gateway, retrying while it starts (containers start in any order).
/// A socket this worker's user may not reach is no startup race: that fails at once.
fn connect(path: &PathBuf) -> anyhow::Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot connect to {}: only the gateway's own user may attach",
                        path.display()
                    )
                })
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("gateway not ready ({e}); retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot connect to {}", path.display()))
            }
        }
    }
}

/// Receives the Attach message with the segment's memfd (and the doorbell to ring for
/// responses, when the gateway sends one).
fn receive_segment(stream: &UnixStream) -> anyhow::Result<Segment> {
    let mut buf = vec![0u8; 4096];
    let (n, fds) = shm_protocol::fd_passing::recv_fds(stream, &mut buf)?;
    let mut fds = fds.into_iter();
    let fd = fds
        .next()
        .context("the Attach message carried no file descriptor")?;
    let ringer = fds.next().map(shm_protocol::Ringer::from_fd);
    if n < 4 {
        bail!("short Attach message");
    }
    let len = control::frame_len([buf[0], buf[1], buf[2], buf[3]])?;
    let mut body = buf[4..n].to_vec();
    if body.len() < len {
        let mut rest = vec![0u8; len - body.len()];
        (&*stream).read_exact(&mut rest)?;
        body.extend_from_slice(&rest);
    }
    match control::decode::<GatewayMessage>(&body[..len])?.message {
        Some(gm::Message::Attach(gm::Attach { generation })) => {
            let segment = Segment::attach(fd, generation)?;
            Ok(match ringer {
                Some(r) => segment.with_ringer(r),
                None => segment,
            })
        }
        other => bail!("expected Attach, got {other:?}"),
    }
}

/// Writes one message to the gateway.
fn send(w: &mut impl std::io::Write, msg: wm::Message) -> Result<(), control::ControlError> {
    control::write_message(w, &WorkerMessage { message: Some(msg) })
}

/// Reads the gateway's next message (`None`: one this worker does not know).
fn receive(r: &mut impl Read) -> Result<Option<gm::Message>, control::ControlError> {
    Ok(control::read_message::<GatewayMessage>(r)?.message)
}

fn run(flags: Flags) -> anyhow::Result<()> {
    // If the gateway dies, so do we (it is our parent when not in a container).
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // Pinned before TensorFlow starts a thread, so all of them inherit the set.
    let share = match &flags.cpus {
        Some(list) => {
            let cpus = cpus::parse_list(list)?;
            cpus::pin(&cpus)?;
            Some(cpus.len() as i32)
        }
        None => None,
    };
    // Before any model: a graph is checked against the op registry when it loads.
    let loading = Instant::now();
    let op_libraries = op_libraries::load(&flags.op_libraries);
    if let Ok(loaded) = &op_libraries {
        tracing::info!(
            ms = loading.elapsed().as_millis() as u64,
            "TensorFlow {}; op libraries loaded: {loaded}",
            tf::op_library::tensorflow_version()
        );
    }
    if let Some(model_dir) = &flags.measure_model {
        op_libraries?;
        return measure(&flags, model_dir, share);
    }
    let socket = flags
        .gateway_socket
        .as_ref()
        .context("--gateway_socket is required")?;
    let mut stream = match connect(socket) {
        Ok(stream) => stream,
        // No gateway to tell: the op library's error is the one that matters.
        Err(e) => return op_libraries.and(Err(e)),
    };
    send(
        &mut stream,
        wm::Message::Hello(wm::Hello {
            worker_id: flags.worker_id,
            pid: std::process::id(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            refused: match &op_libraries {
                Ok(_) => String::new(),
                Err(e) => format!("{e:#}"),
            },
        }),
    )?;
    if op_libraries.is_err() {
        // The gateway has been told why: wait for it to hang up (so it reads the Hello
        // before it sees this process exit), then refuse to start.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.read(&mut [0u8; 1]);
        op_libraries?;
    }
    let segment = receive_segment(&stream)?;
    let generation = segment.generation();
    let (requests, responses) = segment.into_worker();
    send(
        &mut stream,
        wm::Message::Attached(wm::Attached { generation }),
    )?;

    let (models, mut session, load, poll_every) = match receive(&mut stream)? {
        Some(gm::Message::ServeModels(gm::ServeModels {
            models,
            session,
            load,
            file_system_poll_wait_seconds,
        })) => (
            models,
            session.unwrap_or_default(),
            load.context("ServeModels without a LoadConfig")?,
            file_system_poll_wait_seconds,
        ),
        other => bail!("expected ServeModels, got {other:?}"),
    };
    if let Some(n) = share {
        session.config_proto = pools_sized_to(&session.config_proto, n)?;
    }
    let (unrouted_tx, unrouted) = std::sync::mpsc::channel();
    let manager = Arc::new(manager::Manager::new(
        manager::ManagerConfig { session, load },
        unrouted,
    ));
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let report = move |msg: wm::Message| {
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = send(&mut *w, msg) {
            tracing::error!("cannot report to gateway: {e}");
        }
    };

    // The model list; the gateway replaces it on a config reload.
    let models = Arc::new(Mutex::new(models));
    let (poll_now, poll_requests) = std::sync::mpsc::channel::<()>();

    // Asked to stop (SIGTERM: `docker stop`, a scale-down, a pod deleted): tell the
    // gateway, which routes around this worker and sends Shutdown once it has answered
    // everything it holds. Until then it serves on.
    {
        let leaving = report.clone();
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    tracing::info!("SIGTERM: leaving once the gateway lets this worker go");
                    leaving(wm::Message::Leaving(wm::Leaving {}));
                }
            })?;
    }

    // The control socket: heartbeats are answered from here, also while a model loads;
    // its closing means the gateway is gone, so exit rather than linger.
    let mut reader = stream;
    let pong = report.clone();
    let new_models = models.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || loop {
            match receive(&mut reader) {
                Ok(Some(gm::Message::Ping(gm::Ping { seq }))) => {
                    pong(wm::Message::Pong(wm::Pong {
                        seq,
                        rss_bytes: manager::rss_bytes(),
                    }))
                }
                Ok(Some(gm::Message::ServeModels(gm::ServeModels { models, .. }))) => {
                    *new_models.lock().unwrap_or_else(|e| e.into_inner()) = models;
                    let _ = poll_now.send(());
                }
                Ok(Some(gm::Message::Unrouted(gm::Unrouted {
                    model_name,
                    version,
                }))) => {
                    let _ = unrouted_tx.send((model_name, version));
                }
                Ok(Some(gm::Message::Shutdown(_))) | Err(_) => std::process::exit(0),
                Ok(other) => tracing::warn!("ignoring control message {other:?}"),
            }
        })?;

    // The initial load happens before serving, as in TF Serving; later polls run beside
    // the serving thread, every `poll_every` seconds and at once when the list changes.
    let current = || models.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut initial_report = report.clone();
    manager.initial_poll(&current(), &mut initial_report);
    report(wm::Message::InitialLoadDone(wm::InitialLoadDone {}));
    {
        let manager = manager.clone();
        let models = models.clone();
        let mut report = report.clone();
        let every = (poll_every > 0).then(|| Duration::from_secs(poll_every as u64));
        std::thread::Builder::new()
            .name("source".into())
            .spawn(move || loop {
                let woken = match every {
                    Some(every) => poll_requests
                        .recv_timeout(every)
                        .map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected)),
                    None => poll_requests.recv().map_err(|_| true),
                };
                if woken == Err(true) {
                    return; // the control thread is gone; the process is exiting
                }
                let list = models.lock().unwrap_or_else(|e| e.into_inner()).clone();
                manager.poll(&list, &mut report);
            })?;
    }
    serve::serve(&manager, requests, responses)
}

/// `--measure_model`: the model ceiling (see `ceiling.rs`), with the session config a
/// worker would use: the given pool sizes, or its share of the cores.
fn measure(flags: &Flags, model_dir: &str, share: Option<i32>) -> anyhow::Result<()> {
    use prost::Message;
    let input = ceiling::InputSpec::parse(&flags.measure_input)?;
    let batches = flags
        .measure_batches
        .split(',')
        .map(|b| b.trim().parse::<usize>().context("--measure_batches"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pools = tfgate_proto::tensorflow::ConfigProto {
        intra_op_parallelism_threads: flags.measure_intra_op,
        inter_op_parallelism_threads: flags.measure_inter_op,
        ..Default::default()
    };
    let config_proto = pools_sized_to(&pools.encode_to_vec(), share.unwrap_or(0))?;
    ceiling::measure(&ceiling::Ceiling {
        model_dir: model_dir.to_string(),
        input,
        batches,
        duration: Duration::from_secs_f64(flags.measure_seconds),
        config_proto,
    })
}

/// The session config with thread pools left at 0 (TensorFlow's choice) sized to the
/// worker's `share` of the cores.
fn pools_sized_to(config_proto: &[u8], share: i32) -> anyhow::Result<Vec<u8>> {
    use prost::Message;
    let mut config = tfgate_proto::tensorflow::ConfigProto::decode(config_proto)
        .context("the gateway sent a malformed ConfigProto")?;
    for pool in [
        &mut config.intra_op_parallelism_threads,
        &mut config.inter_op_parallelism_threads,
    ] {
        if *pool == 0 {
            *pool = share;
        }
    }
    Ok(config.encode_to_vec())
}

fn main() {
    let flags = Flags::parse();
    // As the gateway logs (its --log_format is passed on): text, or JSON lines.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match flags.log_format.as_str() {
        "json" => logs.json().init(),
        _ => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    if let Err(e) = run(flags) {
        tracing::error!("worker failed: {e:#}");
        std::process::exit(1);
    }
}
