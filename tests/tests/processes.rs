//! Process isolation: the worker is a separate process, only it maps TensorFlow, and the
//! gateway survives the worker's death.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tfgate_e2e::{holders_of, http, maps_library, segments_of, signal, worker_of, Server};

fn predict(server: &Server) -> (u16, String) {
    http(
        server.rest_port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap()
}

#[test]
fn worker_is_a_separate_process_and_only_it_links_tensorflow() {
    let server = Server::start("half_plus_two");
    let worker = worker_of(server.pid());
    assert_ne!(worker, server.pid());
    assert!(
        maps_library(worker, "libtensorflow"),
        "the worker maps libtensorflow"
    );
    assert!(
        !maps_library(server.pid(), "libtensorflow"),
        "the gateway must not map libtensorflow"
    );
}

#[test]
fn gateway_survives_a_worker_crash() {
    let server = Server::start("half_plus_two");
    let first = worker_of(server.pid());
    assert_eq!(predict(&server).0, 200);
    signal("-9", first);

    // The gateway keeps its sockets open; requests during the restart wait for the new
    // worker instead of failing.
    let (status, body) = predict(&server);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"predictions": [3.5]}));

    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let w = worker_of(server.pid());
        if w != first {
            break w;
        }
        assert!(Instant::now() < deadline, "worker was not restarted");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(first, second);
    assert!(server.child.id() > 0);
}

/// Stops the gateway with `sig` and checks that its worker goes too and that no process
/// holds the shared-memory segment any more (a memfd lives exactly as long as an fd to
/// it). Returns the gateway's exit status.
fn stop_gateway_with(sig: &str) -> std::process::ExitStatus {
    let mut server = Server::start("half_plus_two");
    let worker = worker_of(server.pid());
    assert_eq!(predict(&server).0, 200);
    // One segment, held by both ends: the gateway created it, the worker got its fd.
    let segments = segments_of(server.pid());
    assert_eq!(
        segments.len(),
        1,
        "the gateway holds one segment per worker"
    );
    assert_eq!(
        segments_of(worker),
        segments,
        "the worker holds the segment the gateway created"
    );
    signal(sig, server.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "gateway ignored {sig}");
        std::thread::sleep(Duration::from_millis(20));
    };
    while std::path::Path::new(&format!("/proc/{worker}")).exists() {
        // A zombie that was reparented still has /proc until reaped; check its state.
        let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap_or_default();
        if stat.contains(") Z ") || stat.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker outlived its gateway ({sig})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (holders, scanned) = holders_of(&segments);
    assert!(scanned > 0);
    assert!(
        holders.is_empty(),
        "the segment is still held by {holders:?} ({sig})"
    );
    status
}

#[test]
fn worker_exits_with_its_gateway() {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(stop_gateway_with("-KILL").signal(), Some(9));
    // SIGTERM and SIGINT are a graceful shutdown: exit code 0.
    assert!(stop_gateway_with("-TERM").success());
    assert!(stop_gateway_with("-INT").success());
}

/// Many clients at once, each checking that it gets its own answer back (responses are
/// matched to requests by id across the rings).
#[test]
fn concurrent_clients_get_their_own_answers() {
    let server = Server::start("half_plus_two");
    let port = server.rest_port;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..100 {
                    let x = (t * 1000 + i) as f32;
                    let body = format!(r#"{{"instances": [{x:.1}]}}"#);
                    let (status, text) =
                        http(port, "POST", "/v1/models/half_plus_two:predict", &body).unwrap();
                    assert_eq!(status, 200, "{text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        v["predictions"][0].as_f64().unwrap(),
                        (0.5 * x + 3.0) as f64
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Killing the worker under load loses no request: those in flight are re-dispatched to
/// the next incarnation, and new ones wait for it.
#[test]
fn no_request_is_lost_when_the_worker_dies_under_load() {
    let server = Server::start("half_plus_two");
    let port = server.rest_port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let x = (t * 10_000 + done) as f32;
                    let body = format!(r#"{{"instances": [{x:.1}]}}"#);
                    let (status, text) =
                        http(port, "POST", "/v1/models/half_plus_two:predict", &body).unwrap();
                    assert_eq!(status, 200, "request {done} of client {t}: {text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        v["predictions"][0].as_f64().unwrap(),
                        (0.5 * x + 3.0) as f64
                    );
                    done += 1;
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let first = worker_of(server.pid());
    signal("-9", first);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: i32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total > 0);
    assert_ne!(worker_of(server.pid()), first, "a new worker serves");
}

/// Startup errors end the process with TF Serving's `Failed to start server` line
/// instead of retrying forever.
#[test]
fn startup_errors_exit_with_a_message() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(tfgate_e2e::bin_dir().join("tfgate"))
            .args(args)
            .arg(format!("--port={}", tfgate_e2e::free_port()))
            .arg(format!("--rest_api_port={}", tfgate_e2e::free_port()))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let model = tfgate_e2e::model_path("half_plus_two");
    let (code, err) = run(&[
        "--model_name=m",
        &format!("--model_base_path={}", model.display()),
        "--worker_binary=/nonexistent/tfgate-worker",
    ]);
    assert_eq!(code, Some(255));
    assert!(
        err.contains(
            "Failed to start server. Error: worker binary /nonexistent/tfgate-worker not found"
        ),
        "{err}"
    );
    // A worker that dies at once, every time: startup gives up after a few tries.
    let (code, err) = run(&[
        "--model_name=m",
        &format!("--model_base_path={}", model.display()),
        "--worker_binary=/bin/false",
    ]);
    assert_eq!(code, Some(255));
    assert!(
        err.contains("Failed to start server. Error: the worker died 5 times before serving"),
        "{err}"
    );
    let (code, err) = run(&[]);
    assert_eq!(code, Some(255));
    assert!(
        err.contains(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        ),
        "{err}"
    );
}
