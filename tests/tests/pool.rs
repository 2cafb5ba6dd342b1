//! The worker pool: several workers share the load, each pinned to its cores or given
//! its GPU; a version only one worker holds is routed only there; and clients see no
//! error when workers are SIGKILLed, SIGSTOPped, or stuck past a request's deadline.

use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tfgate_e2e::{
    copy_dir, count_to, float_tensor, holders_of, http, model_path, predict_request, segments_of,
    signal, OwnWorker, Segment, Server, TempDir, NOBODY,
};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;

fn workers(port: u16) -> Vec<Value> {
    let (status, body) = http(port, "GET", "/tfgate/workers", "").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["workers"].as_array().cloned().unwrap_or_default()
}

fn pids(port: u16) -> Vec<u64> {
    workers(port)
        .iter()
        .map(|w| w["pid"].as_u64().unwrap_or(0))
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every slot has a live worker that finished its initial load.
fn all_serving(port: u16, n: usize) -> bool {
    let w = workers(port);
    w.len() == n
        && w.iter()
            .all(|w| w["state"] == "serving" && w["pid"].is_u64())
}

/// A REST predict of half_plus_two (version 2: 0.5x + 3) whose answer is checked.
fn rest_predict(port: u16, path: &str, x: f32) -> Duration {
    let started = Instant::now();
    let body = format!(r#"{{"instances": [{x:.1}]}}"#);
    let (status, text) = http(port, "POST", path, &body).unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["predictions"][0].as_f64().unwrap(),
        (0.5 * x + 3.0) as f64,
        "{text}"
    );
    started.elapsed()
}

/// REST clients in threads, each predicting until `stop`; returns their request counts
/// and the longest wait any of them saw.
fn rest_load(
    port: u16,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u32, Duration)>> {
    (0..clients)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut n, mut longest) = (0u32, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let x = (c * 100_000) as f32 + n as f32;
                    let took = rest_predict(port, "/v1/models/half_plus_two:predict", x);
                    longest = longest.max(took);
                    n += 1;
                }
                (n, longest)
            })
        })
        .collect()
}

fn join(load: Vec<std::thread::JoinHandle<(u32, Duration)>>) -> (u32, Duration) {
    load.into_iter()
        .map(|h| h.join().expect("a client saw a wrong answer or an error"))
        .fold((0, Duration::ZERO), |(n, l), (m, k)| (n + m, l.max(k)))
}

/// Stops the clients of a test that SIGSTOPped a worker under
/// `--worker_heartbeat_timeout_ms=1000`: they were all answered, and none waited longer
/// than that timeout plus scheduling slack on a busy 2-core machine.
fn stop_clients_and_check_waits(
    stop: &AtomicBool,
    load: Vec<std::thread::JoinHandle<(u32, Duration)>>,
) {
    stop.store(true, Ordering::Relaxed);
    let (n, longest) = join(load);
    println!("{n} requests; longest client wait across the SIGSTOP: {longest:?}");
    assert!(n > 0);
    assert!(
        longest < Duration::from_millis(2500),
        "a client waited {longest:?}"
    );
}

fn allowed_cpus_of(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

fn env_of(pid: u64, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(String::from))
}

#[test]
fn two_workers_split_the_cores_and_both_take_traffic() {
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &["--num_workers=2"],
    );
    wait_for("both workers", Duration::from_secs(60), || {
        all_serving(server.rest_port, 2)
    });
    let before = workers(server.rest_port);
    for w in &before {
        let pid = w["pid"].as_u64().unwrap();
        assert_eq!(
            allowed_cpus_of(pid),
            w["cpus"].as_str().unwrap(),
            "worker {} is pinned to the cores it reports",
            w["id"]
        );
        assert_eq!(w["device"], "cpu");
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert_ne!(before[0]["cpus"], before[1]["cpus"], "one share each");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = rest_load(server.rest_port, 4, &stop);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (n, _) = join(load);
    let answered: Vec<u64> = workers(server.rest_port)
        .iter()
        .map(|w| w["requests_answered"].as_u64().unwrap())
        .collect();
    assert!(n > 0);
    assert!(
        answered.iter().all(|a| *a > 0),
        "both workers answered some of the {n} requests: {answered:?}"
    );
    assert_eq!(answered.iter().sum::<u64>(), n as u64);
}

#[test]
fn each_gpu_worker_sees_only_its_gpu() {
    // No GPU-capable TensorFlow can be installed here: this checks the environment each
    // worker process is given, and that it serves.
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &["--worker_gpus=0,1"],
    );
    wait_for("both workers", Duration::from_secs(60), || {
        all_serving(server.rest_port, 2)
    });
    for (i, w) in workers(server.rest_port).iter().enumerate() {
        assert_eq!(w["device"], format!("gpu:{i}"));
        let pid = w["pid"].as_u64().unwrap();
        assert_eq!(
            env_of(pid, "CUDA_VISIBLE_DEVICES").as_deref(),
            Some(i.to_string().as_str())
        );
    }
    rest_predict(server.rest_port, "/v1/models/half_plus_two:predict", 1.0);
}

#[test]
fn a_version_only_one_worker_holds_is_routed_only_there() {
    let base = TempDir::new("pool-versions");
    let source = model_path("half_plus_two");
    copy_dir(&source.join("1"), &base.0.join("1")).unwrap();
    // Heartbeats effectively off: worker 1 is stopped on purpose below.
    let server = Server::start_with(
        "half_plus_two",
        &base.0,
        &[
            "--num_workers=2",
            "--file_system_poll_wait_seconds=1",
            "--worker_heartbeat_timeout_ms=120000",
        ],
    );
    let port = server.rest_port;
    wait_for("both workers", Duration::from_secs(60), || {
        all_serving(port, 2)
    });

    // Worker 1 stops (its Source with it); only worker 0 can see version 2 arrive.
    let stopped = workers(port)[1]["pid"].as_u64().unwrap();
    signal("-STOP", stopped);
    copy_dir(&source.join("2"), &base.0.join(".incoming")).unwrap();
    std::fs::rename(base.0.join(".incoming"), base.0.join("2")).unwrap();
    wait_for("version 2 on worker 0", Duration::from_secs(30), || {
        workers(port)[0]["versions"].as_array().is_some_and(|v| {
            v.iter()
                .any(|v| v["version"] == 2 && v["state"] == "AVAILABLE")
        })
    });
    let answered = |i: usize| workers(port)[i]["requests_answered"].as_u64().unwrap();
    let (a0, a1) = (answered(0), answered(1));
    // Each would hang until the REST timeout if it were sent to the stopped worker.
    for i in 0..20 {
        let took = rest_predict(
            port,
            "/v1/models/half_plus_two/versions/2:predict",
            i as f32,
        );
        assert!(took < Duration::from_secs(5), "request {i} took {took:?}");
        rest_predict(port, "/v1/models/half_plus_two:predict", i as f32);
    }
    assert_eq!(answered(0), a0 + 40);
    assert_eq!(answered(1), a1);
    let w1 = &workers(port)[1];
    assert!(
        !w1["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == 2),
        "worker 1 never reported version 2: {w1}"
    );

    // Woken up, worker 1 catches up and serves version 2 too.
    signal("-CONT", stopped);
    wait_for("version 2 on worker 1", Duration::from_secs(30), || {
        workers(port)[1]["versions"].as_array().is_some_and(|v| {
            v.iter()
                .any(|v| v["version"] == 2 && v["state"] == "AVAILABLE")
        })
    });
    assert_eq!(
        workers(port)[1]["pid"].as_u64(),
        Some(stopped),
        "not restarted"
    );
}

/// Chaos: two workers under steady REST and gRPC load lose a worker to SIGKILL five
/// times; every request is answered correctly, the gateway lives on, both workers come
/// back, the gateway holds one shared-memory segment per live worker throughout (a dead
/// incarnation's is let go), and no process holds any of them after shutdown.
#[test]
fn chaos_sigkill_workers_under_rest_and_grpc_load() {
    let mut server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &["--num_workers=2"],
    );
    let (port, gateway) = (server.rest_port, server.pid());
    wait_for("both workers", Duration::from_secs(60), || {
        all_serving(port, 2)
    });
    let mut seen: std::collections::BTreeSet<Segment> =
        one_segment_per_worker(port, gateway).into_iter().collect();

    let stop = Arc::new(AtomicBool::new(false));
    let rest = rest_load(port, 2, &stop);
    let grpc_url = server.grpc_url();
    let grpc: Vec<_> = (0..2)
        .map(|c| {
            let stop = stop.clone();
            let url = grpc_url.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut client = PredictionServiceClient::connect(url).await.unwrap();
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let x = 1000.0 * (c + 1) as f32 + n as f32;
                        let req =
                            predict_request("half_plus_two", "x", float_tensor(&[1, 1], &[x]));
                        let resp = client.predict(req).await.expect("gRPC predict failed");
                        assert_eq!(
                            resp.into_inner().outputs["y"].float_val,
                            vec![0.5 * x + 3.0]
                        );
                        n += 1;
                    }
                    n
                })
            })
        })
        .collect();

    for kill in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        let victim = workers(port)[kill % 2]["pid"].as_u64().unwrap();
        signal("-KILL", victim);
        wait_for(
            "the killed worker's replacement",
            Duration::from_secs(30),
            || all_serving(port, 2) && !pids(port).contains(&victim),
        );
        seen.extend(one_segment_per_worker(port, gateway));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (rest_n, _) = join(rest);
    let grpc_n: u32 = grpc
        .into_iter()
        .map(|h| h.join().expect("gRPC client"))
        .sum();
    assert!(rest_n > 0 && grpc_n > 0, "rest {rest_n}, grpc {grpc_n}");

    assert_eq!(server.pid(), gateway);
    let w = workers(port);
    assert_eq!(
        w.iter()
            .map(|w| w["restarts"].as_u64().unwrap())
            .sum::<u64>(),
        5
    );
    assert!(all_serving(port, 2));

    signal("-TERM", gateway as u64);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "gateway did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert_eq!(
        seen.len(),
        7,
        "a fresh segment for each of the 7 incarnations"
    );
    let seen: Vec<Segment> = seen.into_iter().collect();
    let (holders, scanned) = holders_of(&seen);
    assert!(scanned > 0);
    assert!(holders.is_empty(), "segments still held by {holders:?}");
}

/// Waits until every slot serves, the gateway holds exactly one segment per worker and
/// each worker holds one of them (its own); returns the gateway's.
fn one_segment_per_worker(port: u16, gateway: u32) -> Vec<Segment> {
    let mut held = Vec::new();
    wait_for(
        "the gateway to hold one segment per serving worker, each worker its own",
        Duration::from_secs(10),
        || {
            let workers = pids(port);
            if workers.contains(&0) || !all_serving(port, workers.len()) {
                return false;
            }
            held = segments_of(gateway);
            held.len() == workers.len()
                && workers.iter().all(|&w| {
                    let own = segments_of(w as u32);
                    own.len() == 1 && held.contains(&own[0])
                })
        },
    );
    held
}

/// A SIGSTOPped worker stops answering heartbeats: it is killed and replaced, and its
/// requests go to the other worker, so clients wait at most about the heartbeat timeout.
#[test]
fn a_stopped_worker_is_replaced_while_clients_keep_their_answers() {
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &["--num_workers=2", "--worker_heartbeat_timeout_ms=1000"],
    );
    let port = server.rest_port;
    wait_for("both workers", Duration::from_secs(60), || {
        all_serving(port, 2)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = rest_load(port, 3, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = workers(port)[0]["pid"].as_u64().unwrap();
    signal("-STOP", stopped);
    wait_for(
        "the stopped worker's replacement",
        Duration::from_secs(30),
        || all_serving(port, 2) && !pids(port).contains(&stopped),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop_clients_and_check_waits(&stop, load);
    let w0 = &workers(port)[0];
    assert_eq!(w0["restarts"], 1);
    assert!(
        w0["last_exit"].as_str().unwrap().contains("no heartbeat"),
        "{w0}"
    );
}

/// A worker still running a request well past the request's deadline is taken for
/// stuck (heartbeats are off here, so only that can give it away): it is replaced and
/// the next request is served.
#[tokio::test]
async fn a_run_past_its_deadline_gets_its_worker_replaced() {
    let server = Server::start_with(
        "slow",
        &model_path("slow"),
        &[
            "--worker_heartbeat_timeout_ms=120000",
            "--worker_run_grace_ms=300",
        ],
    );
    let port = server.rest_port;
    let stuck = workers(port)[0]["pid"].as_u64().unwrap();
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    // A stopped process is what a kernel spinning without checking for cancellation
    // looks like from outside: the run never returns.
    signal("-STOP", stuck);
    let started = Instant::now();
    let err = client
        .predict(count_to(10, Some(Duration::from_millis(500))))
        .await
        .unwrap_err();
    // The server answers DEADLINE_EXCEEDED 10 ms before the deadline; tonic's client
    // enforces the same `grpc-timeout` itself and reports its own expiry as CANCELLED
    // "Timeout expired" when the answer is later than that (parallel tests on 2 cores).
    // Either way no answer came within the deadline; the replacement below is the check.
    let expired = err.code() == tonic::Code::DeadlineExceeded
        || (err.code() == tonic::Code::Cancelled && err.message() == "Timeout expired");
    assert!(expired, "{err:?}");
    tokio::task::spawn_blocking(move || {
        wait_for(
            "the stuck worker's replacement",
            Duration::from_secs(30),
            || all_serving(port, 1) && !pids(port).contains(&stuck),
        )
    })
    .await
    .unwrap();
    let replaced_after = started.elapsed();
    assert!(
        replaced_after < Duration::from_secs(10),
        "replaced after {replaced_after:?}"
    );
    let w = &workers(port)[0];
    assert!(
        w["last_exit"]
            .as_str()
            .unwrap()
            .contains("past its deadline"),
        "{w}"
    );
    let resp = client
        .predict(count_to(10, Some(Duration::from_secs(20))))
        .await
        .unwrap();
    assert_eq!(resp.into_inner().outputs["count"].int64_val, vec![10]);
}

/// Slots serving, by the pid of their worker.
fn serving_pids(port: u16) -> Vec<u64> {
    workers(port)
        .iter()
        .filter(|w| w["state"] == "serving")
        .filter_map(|w| w["pid"].as_u64())
        .collect()
}

#[test]
fn attached_workers_are_taken_in_replaced_and_let_go_under_load() {
    let dir = TempDir::new("attach");
    let socket = dir.0.join("run").join("workers.sock");
    // Workers first: they wait for the gateway's socket, as containers started in any
    // order do.
    let a = OwnWorker::start(&socket);
    let mut b = OwnWorker::start(&socket);
    let flag = format!("--worker_socket={}", socket.display());
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &[&flag, "--num_workers=2"],
    );
    let port = server.rest_port;
    wait_for("both attached workers", Duration::from_secs(60), || {
        all_serving(port, 2)
    });
    let mut pids = serving_pids(port);
    pids.sort();
    let mut expected = vec![a.pid(), b.pid()];
    expected.sort();
    assert_eq!(pids, expected, "each slot holds one of the workers started");
    assert!(workers(port).iter().all(|w| w["device"] == "attached"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        workers(port).iter().all(|w| w["host"] == hostname.trim()),
        "each slot names its worker's host"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the gateway's user may attach");
    let parent = socket.parent().unwrap();
    let mode = std::fs::metadata(parent).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the socket's directory is created private");

    let stop = Arc::new(AtomicBool::new(false));
    let load = rest_load(port, 4, &stop);
    std::thread::sleep(Duration::from_millis(500));

    // A crash: its requests go to the other worker; its slot waits for a worker to
    // attach, and a new one (a restarted container) is taken in.
    signal("-KILL", a.pid());
    drop(a);
    wait_for(
        "the killed worker's slot to wait",
        Duration::from_secs(10),
        || workers(port).iter().any(|w| w["state"] == "waiting"),
    );
    let c = OwnWorker::start(&socket);
    wait_for("the new worker to serve", Duration::from_secs(60), || {
        serving_pids(port).contains(&c.pid())
    });
    let slots = workers(port);
    assert_eq!(
        slots.len(),
        2,
        "the new worker took the free slot: {slots:?}"
    );
    assert!(slots
        .iter()
        .any(|w| w["restarts"] == 1 && w["generation"] == 2));

    // A scale-down: SIGTERM makes the worker leave once it has answered what it holds,
    // with exit code 0, and no client sees it go.
    signal("-TERM", b.pid());
    assert_eq!(b.exit_code(Duration::from_secs(10)), Some(0));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (n, _) = join(load);
    assert!(n > 0);
    assert_eq!(serving_pids(port), vec![c.pid()]);
    assert!(workers(port)
        .iter()
        .any(|w| w["last_exit"] == "left when asked to stop"));

    // A third worker while every slot is taken opens a slot of its own.
    let d = OwnWorker::start(&socket);
    let _e = OwnWorker::start(&socket);
    wait_for("three attached workers", Duration::from_secs(60), || {
        serving_pids(port).len() == 3
    });
    assert!(serving_pids(port).contains(&d.pid()));
    rest_predict(port, "/v1/models/half_plus_two:predict", 1.0);

    // The gateway's exit takes the socket with it and lets every worker go.
    drop(server);
    let mut c = c;
    assert!(c.exit_code(Duration::from_secs(10)).is_some());
    assert!(!socket.exists(), "the socket is removed at exit");
}

/// An attached worker that stops answering (SIGSTOP: from outside, what a wedged process
/// looks like) is dropped after the heartbeat timeout without a client seeing an error;
/// the gateway cannot kill a process it did not start, but the worker exits as soon as it
/// runs again, since its socket was closed, and a fresh worker takes its place.
#[test]
fn a_stopped_attached_worker_is_dropped_and_exits_when_it_resumes() {
    let dir = TempDir::new("attach-stop");
    let socket = dir.0.join("run").join("workers.sock");
    let mut a = OwnWorker::start(&socket);
    let b = OwnWorker::start(&socket);
    let flag = format!("--worker_socket={}", socket.display());
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &[
            &flag,
            "--num_workers=2",
            "--worker_heartbeat_timeout_ms=1000",
        ],
    );
    let port = server.rest_port;
    wait_for("both attached workers", Duration::from_secs(60), || {
        all_serving(port, 2)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = rest_load(port, 3, &stop);
    std::thread::sleep(Duration::from_millis(300));
    signal("-STOP", a.pid());
    wait_for(
        "the stopped worker to be dropped",
        Duration::from_secs(30),
        || serving_pids(port) == vec![b.pid()],
    );
    let dropped = workers(port);
    assert!(
        dropped.iter().any(|w| w["last_exit"]
            .as_str()
            .unwrap_or("")
            .contains("no heartbeat")),
        "{dropped:?}"
    );
    let c = OwnWorker::start(&socket);
    wait_for("its replacement", Duration::from_secs(60), || {
        serving_pids(port).contains(&c.pid())
    });
    signal("-CONT", a.pid());
    assert!(
        a.exit_code(Duration::from_secs(10)).is_some(),
        "a dropped worker leaves once it runs again"
    );
    stop_clients_and_check_waits(&stop, load);
}

/// A local process cannot grow the gateway without bound: beyond
/// `--max_attached_workers` slots a worker is turned away (it exits with an error, as a
/// container's restart policy would see), and a slot above `--num_workers` whose worker
/// left for good (SIGTERM: a scale-down) is closed, so the next worker opens one again.
#[test]
fn attached_slots_are_capped_and_closed_when_their_workers_leave() {
    let dir = TempDir::new("attach-cap");
    let socket = dir.0.join("run").join("workers.sock");
    let mut started: Vec<OwnWorker> = (0..3).map(|_| OwnWorker::start(&socket)).collect();
    let flag = format!("--worker_socket={}", socket.display());
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &[&flag, "--num_workers=1", "--max_attached_workers=2"],
    );
    let port = server.rest_port;
    wait_for("two attached workers", Duration::from_secs(60), || {
        all_serving(port, 2)
    });
    let mut turned_away = None;
    wait_for(
        "the third worker to be turned away",
        Duration::from_secs(30),
        || {
            turned_away = started
                .iter_mut()
                .position(|w| w.0.try_wait().ok().flatten().is_some());
            turned_away.is_some()
        },
    );
    let mut gone = started.remove(turned_away.unwrap_or_default());
    assert_ne!(gone.exit_code(Duration::from_secs(1)), Some(0));
    assert!(
        server.log().contains("turned a worker away"),
        "{}",
        server.log()
    );
    assert_eq!(workers(port).len(), 2, "no third slot: {:?}", workers(port));
    let mut pids = serving_pids(port);
    pids.sort();
    let mut expected: Vec<u64> = started.iter().map(|w| w.pid()).collect();
    expected.sort();
    assert_eq!(pids, expected);

    // A scale-down: the leaving worker's slot closes, down to --num_workers.
    let mut leaving = started.pop().unwrap();
    signal("-TERM", leaving.pid());
    assert_eq!(leaving.exit_code(Duration::from_secs(10)), Some(0));
    wait_for(
        "the left worker's slot to close",
        Duration::from_secs(10),
        || workers(port).len() == 1,
    );
    assert_eq!(serving_pids(port), vec![started[0].pid()]);
    rest_predict(port, "/v1/models/half_plus_two:predict", 1.0);

    // The next worker opens a slot again (taking the freed id).
    let next = OwnWorker::start(&socket);
    wait_for("the next worker to serve", Duration::from_secs(60), || {
        serving_pids(port).contains(&next.pid()) && workers(port).len() == 2
    });
    let mut ids: Vec<u64> = workers(port)
        .iter()
        .filter_map(|w| w["id"].as_u64())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1]);
}

/// Only the gateway's user may attach. A worker of another user (`nobody`) cannot even
/// reach the socket, whose directory is private; and with the directory and socket
/// opened up by mistake, the gateway still refuses it by its uid: the worker exits with
/// an error and no slot opens. Needs root (to start a process as `nobody`).
#[test]
fn a_worker_of_another_user_is_refused() {
    assert_eq!(
        effective_uid(),
        0,
        "this test starts a worker as `nobody`, which needs root: run the suite as root (CI does)"
    );
    let dir = TempDir::new("attach-uid");
    let socket = dir.0.join("run").join("workers.sock");
    let ours = OwnWorker::start(&socket);
    let flag = format!("--worker_socket={}", socket.display());
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &[&flag, "--num_workers=1"],
    );
    let port = server.rest_port;
    wait_for("our worker", Duration::from_secs(60), || {
        all_serving(port, 1)
    });

    let mut theirs = OwnWorker::start_as_nobody(&socket);
    assert_ne!(theirs.exit_code(Duration::from_secs(10)), Some(0));
    let err = theirs.stderr();
    assert!(
        err.contains("only the gateway's own user may attach") && err.contains("Permission denied"),
        "{err}"
    );

    use std::os::unix::fs::PermissionsExt;
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(socket.parent().unwrap(), 0o777);
    open(&socket, 0o666);
    let mut theirs = OwnWorker::start_as_nobody(&socket);
    assert_ne!(theirs.exit_code(Duration::from_secs(10)), Some(0));
    let log = server.log();
    assert!(
        log.contains("refused a worker connection from another user")
            && log.contains(&NOBODY.to_string()),
        "{log}"
    );
    assert_eq!(serving_pids(port), vec![ours.pid()]);
    assert_eq!(
        workers(port).len(),
        1,
        "no slot opened: {:?}",
        workers(port)
    );
    rest_predict(port, "/v1/models/half_plus_two:predict", 1.0);
}

/// This process's effective uid, from /proc (the tests bind no libc).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|euid| euid.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// A socket whose directory others may enter or write is refused at startup, and the
/// directory is left as it was (it may be /tmp).
#[test]
fn a_worker_socket_in_a_shared_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("attach-shared");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = dir.0.join("workers.sock");
    let mut gateway = std::process::Command::new(tfgate_e2e::bin_dir().join("tfgate"))
        .arg(format!("--worker_socket={}", socket.display()))
        .arg(format!(
            "--model_base_path={}",
            model_path("half_plus_two").display()
        ))
        .arg(format!("--port={}", tfgate_e2e::free_port()))
        .arg(format!("--rest_api_port={}", tfgate_e2e::free_port()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = gateway.kill();
            let _ = gateway.wait();
            panic!("tfgate started with its worker socket in a directory open to everyone");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = gateway.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("Failed to start server")
            && err.contains("is mode 1777")
            && err.contains("no one else may enter (mode 0700)"),
        "{err}"
    );
    assert!(!socket.exists());
    let mode = std::fs::metadata(&dir.0).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);
}
