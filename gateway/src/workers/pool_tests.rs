//! The supervisor's driving of the lifecycle, end to end without TensorFlow: a pool in
//! attach mode and a fake worker (a thread speaking the control protocol) that serves,
//! dies and leaves. The real workers' pool tests are in `tests/tests/pool.rs`.

use super::{Device, SupervisorConfig, WorkerPlan, WorkerPool};
use crate::servables::{Servables, WorkerId};
use shm_protocol::{fd_passing, Segment, SegmentConfig};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tfgate_frame::control;
use tfgate_proto::control::gateway_message as gm;
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::control::{GatewayMessage, WorkerMessage};

/// What the fake worker does once it has loaded.
#[derive(Clone, Copy)]
enum Then {
    /// Closes its socket, as a crashed process's closes.
    Die,
    /// Says it is leaving, and exits on Shutdown.
    Leave,
}

fn send(stream: &mut UnixStream, msg: wm::Message) {
    let msg = WorkerMessage { message: Some(msg) };
    control::write_message(stream, &msg).expect("write to the gateway");
}

fn read(stream: &mut UnixStream) -> Option<gm::Message> {
    control::read_message::<GatewayMessage>(stream)
        .ok()
        .and_then(|m| m.message)
}

/// Attaches, reports its initial load done, answers three heartbeats, then does `then`.
fn fake_worker(socket: PathBuf, then: Then) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stream = UnixStream::connect(&socket).expect("connect");
        let hello = wm::Hello {
            worker_id: 0,
            pid: std::process::id(),
            host: "fake".into(),
            refused: String::new(),
        };
        send(&mut stream, wm::Message::Hello(hello));
        let mut buf = vec![0u8; 4096];
        let (n, fds) = fd_passing::recv_fds(&stream, &mut buf).expect("Attach");
        let len = control::frame_len([buf[0], buf[1], buf[2], buf[3]]).expect("length");
        assert!(n >= 4 + len);
        let msg: GatewayMessage = control::decode(&buf[4..4 + len]).expect("Attach");
        let Some(gm::Message::Attach(gm::Attach { generation })) = msg.message else {
            panic!("expected Attach, got {msg:?}");
        };
        let mut fds = fds.into_iter();
        let memfd = fds.next().expect("memfd");
        let ringer = shm_protocol::Ringer::from_fd(fds.next().expect("doorbell"));
        let segment = Segment::attach(memfd, generation)
            .expect("segment")
            .with_ringer(ringer);
        let _endpoints = segment.into_worker();
        send(
            &mut stream,
            wm::Message::Attached(wm::Attached { generation }),
        );
        assert!(matches!(
            read(&mut stream),
            Some(gm::Message::ServeModels(_))
        ));
        send(
            &mut stream,
            wm::Message::InitialLoadDone(wm::InitialLoadDone {}),
        );
        let mut pings = 0;
        while let Some(msg) = read(&mut stream) {
            match msg {
                gm::Message::Ping(gm::Ping { seq }) => {
                    send(
                        &mut stream,
                        wm::Message::Pong(wm::Pong { seq, rss_bytes: 0 }),
                    );
                    pings += 1;
                }
                gm::Message::Shutdown(_) => return,
                _ => {}
            }
            match then {
                Then::Die if pings == 3 => {
                    // The socket first, so that its close is what the gateway sees
                    // (the doorbell's, closed with the segment, would do as well).
                    drop(stream);
                    std::thread::sleep(Duration::from_millis(300));
                    return;
                }
                Then::Leave if pings == 3 => {
                    send(&mut stream, wm::Message::Leaving(wm::Leaving {}))
                }
                _ => {}
            }
        }
    })
}

fn config(socket: &Path, runtime: &Path) -> SupervisorConfig {
    let segment = SegmentConfig {
        ring_capacity: 8,
        request_arena_bytes: 1 << 20,
        response_arena_bytes: 1 << 20,
        ..SegmentConfig::default()
    };
    SupervisorConfig {
        worker_binary: PathBuf::new(),
        worker_socket: Some(socket.to_path_buf()),
        max_attached_workers: 2,
        min_attached_slots: 1,
        runtime_dir: runtime.to_path_buf(),
        segment,
        session: Default::default(),
        load: Default::default(),
        file_system_poll_wait_seconds: 1,
        heartbeat_timeout: Duration::from_millis(400),
        run_grace: Duration::from_secs(2),
        replace_after_unload_excess: 0,
        log_format: "text".into(),
        op_libraries: Vec::new(),
    }
}

/// Waits (up to 10 s) until slot 0 shows `state` and `done` holds of its report.
async fn wait_for(pool: &WorkerPool, state: &str, done: impl Fn(&super::SlotReport) -> bool) {
    for _ in 0..1000 {
        let reports = pool.report();
        if let Some(r) = reports.iter().find(|r| r.id == WorkerId(0)) {
            if r.state.name() == state && done(r) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("slot 0 never showed {state}: {:?}", pool.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_slot_serves_loses_its_worker_takes_the_next_and_stops() {
    let dir = std::env::temp_dir().join(format!("tfgate-pool-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("private").join("workers.sock");
    let plans = vec![WorkerPlan {
        id: WorkerId(0),
        device: Device::Attached,
        cpus: Vec::new(),
    }];
    let (_models_tx, models) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let (pool, failed) =
        WorkerPool::start(config(&socket, &dir), plans, Servables::default(), models);
    wait_for(&pool, "waiting", |_| true).await;

    // Started, connected, serving; then it dies: the slot waits for the next.
    let first = fake_worker(socket.clone(), Then::Die);
    wait_for(&pool, "serving", |r| r.generation == Some(1)).await;
    wait_for(&pool, "waiting", |r| r.restarts == 1).await;
    let report = &pool.report()[0];
    assert!(
        report
            .last_exit
            .as_deref()
            .unwrap_or("")
            .starts_with("its control socket closed"),
        "{report:?}"
    );
    assert!(report.pid.is_none());
    let _ = first.join();

    // The next worker takes the slot (generation 2) and leaves: among the first
    // --num_workers, the slot is kept, waiting, not counted as a restart.
    let second = fake_worker(socket.clone(), Then::Leave);
    wait_for(&pool, "serving", |r| r.generation == Some(2)).await;
    wait_for(&pool, "waiting", |r| {
        r.last_exit.as_deref() == Some("left when asked to stop")
    })
    .await;
    assert_eq!(pool.report()[0].restarts, 1);
    let _ = second.join();

    pool.shutdown().await;
    let report = &pool.report()[0];
    assert_eq!(report.state.name(), "stopped");
    assert_eq!(report.last_exit.as_deref(), Some("shut down"));
    assert!(failed.borrow().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
