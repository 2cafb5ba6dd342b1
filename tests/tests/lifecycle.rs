//! How versions load: warmup records replayed before a version serves, failed loads
//! retried, half-copied version directories left alone until complete.

use serde_json::Value;
use std::time::{Duration, Instant};
use tfgate_e2e::{bin_dir, copy_dir, free_port, http, model_path, Server, TempDir};

fn calls(server: &Server) -> i64 {
    let (status, body) = http(
        server.rest_port,
        "POST",
        "/v1/models/counter:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["predictions"][0].as_i64().unwrap()
}

fn status(port: u16, model: &str) -> Value {
    let (_, body) = http(port, "GET", &format!("/v1/models/{model}"), "").unwrap();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn version_status(port: u16, model: &str, version: i64) -> Option<Value> {
    status(port, model)["model_version_status"]
        .as_array()?
        .iter()
        .find(|v| v["version"].as_str() == Some(version.to_string().as_str()))
        .cloned()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counter model counts its runs; its three warmup records (two predict, one
/// regress) run before it serves, so the first request is run number 4.
#[test]
fn warmup_records_run_before_a_version_serves() {
    let server = Server::start("counter");
    assert_eq!(calls(&server), 4, "three warmup runs, then this one");
    assert_eq!(calls(&server), 5);

    let twice = Server::start_with(
        "counter",
        &model_path("counter"),
        &["--num_request_iterations_for_warmup=2"],
    );
    assert_eq!(calls(&twice), 7, "each record twice");

    let off = Server::start_with(
        "counter",
        &model_path("counter"),
        &["--enable_model_warmup=false"],
    );
    assert_eq!(calls(&off), 1);
}

/// A warmup file that is not TFRecord fails the load, with TF Serving's message.
#[test]
fn a_broken_warmup_file_fails_the_load() {
    let base = TempDir::new("bad-warmup");
    copy_dir(&model_path("counter").join("1"), &base.0.join("1")).unwrap();
    let file = base.0.join("1/assets.extra/tf_serving_warmup_requests");
    std::fs::write(&file, b"these bytes are not TFRecord framing").unwrap();
    let out = std::process::Command::new(bin_dir().join("tfgate"))
        .arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={}", free_port()))
        .arg("--model_name=counter")
        .arg(format!("--model_base_path={}", base.0.display()))
        .arg("--max_num_load_retries=0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        err.contains(
            "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: {{{name: counter version: 1} due to error: DATA_LOSS: corrupted record at 0 (Is this even a TFRecord file?). Please verify your warmup data is in TFRecord format.}, }"
        ),
        "{err}"
    );
}

/// A version whose load fails is retried --max_num_load_retries times; meanwhile its
/// status shows LOADING with the error, and a retry after the cause is fixed succeeds.
#[test]
fn a_failed_load_is_retried_and_can_succeed() {
    let base = TempDir::new("retry");
    let source = model_path("half_plus_two");
    copy_dir(&source.join("1"), &base.0.join("1")).unwrap();
    let server = Server::start_with(
        "hpt",
        &base.0,
        &[
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=3",
            "--load_retry_interval_micros=2000000",
        ],
    );
    let port = server.rest_port;
    // Version 2 arrives broken (and stays so long enough to count as complete).
    std::fs::create_dir_all(base.0.join("2")).unwrap();
    std::fs::write(base.0.join("2/saved_model.pb"), b"not a SavedModel").unwrap();
    wait_for("a failed first attempt", Duration::from_secs(30), || {
        version_status(port, "hpt", 2)
            .is_some_and(|v| v["state"] == "LOADING" && v["status"]["error_code"] != "OK")
    });
    let v2 = version_status(port, "hpt", 2).unwrap();
    assert!(
        !v2["status"]["error_message"].as_str().unwrap().is_empty(),
        "{v2}"
    );
    // Version 1 keeps serving meanwhile.
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!((status, body.contains("2.5")), (200, true), "{body}");
    // Fixed before the next attempt.
    std::fs::remove_file(base.0.join("2/saved_model.pb")).unwrap();
    copy_dir(&source.join("2"), &base.0.join("2")).unwrap();
    wait_for("the retry to succeed", Duration::from_secs(30), || {
        version_status(port, "hpt", 2).is_some_and(|v| v["state"] == "AVAILABLE")
    });
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!((status, body.contains("3.5")), (200, true), "{body}");
}

/// A version directory still being copied in is not loaded until it stops changing (TF
/// Serving loads it half-copied and fails); then it loads and serves.
#[test]
fn a_half_copied_version_is_not_loaded_until_complete() {
    let base = TempDir::new("half-copied");
    let source = model_path("half_plus_two");
    copy_dir(&source.join("1"), &base.0.join("1")).unwrap();
    let server = Server::start_with(
        "hpt",
        &base.0,
        &[
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
        ],
    );
    let port = server.rest_port;
    // Copy version 2 in slowly: the graph file grows for 3.5 s, variables last.
    let graph = std::fs::read(source.join("2/saved_model.pb")).unwrap();
    let dest = base.0.join("2");
    std::fs::create_dir_all(&dest).unwrap();
    let chunks = 12;
    let step = graph.len().div_ceil(chunks);
    for (i, chunk) in graph.chunks(step).enumerate() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dest.join("saved_model.pb"))
            .unwrap();
        f.write_all(chunk).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            version_status(port, "hpt", 2).is_none(),
            "version 2 was picked up after {} of {chunks} chunks: {}",
            i + 1,
            status(port, "hpt")
        );
    }
    copy_dir(&source.join("2/variables"), &dest.join("variables")).unwrap();
    wait_for("version 2", Duration::from_secs(30), || {
        version_status(port, "hpt", 2).is_some_and(|v| v["state"] == "AVAILABLE")
    });
    let v2 = version_status(port, "hpt", 2).unwrap();
    assert_eq!(
        v2["status"]["error_code"], "OK",
        "loaded whole, first time: {v2}"
    );
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!((status, body.contains("3.5")), (200, true), "{body}");
}

/// An unload waits for the requests already sent to that version: a new version
/// arriving while requests for the old one queue on the worker costs none of them.
#[test]
fn requests_in_flight_survive_the_unload_of_their_version() {
    let base = TempDir::new("unload-in-flight");
    copy_dir(&model_path("slow").join("1"), &base.0.join("1")).unwrap();
    let server = Server::start_with("slow", &base.0, &["--file_system_poll_wait_seconds=1"]);
    let port = server.rest_port;
    // Four runs of about 1.5 s, one after another on the one worker, all for version 1.
    let n = 450_000;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                http(
                    port,
                    "POST",
                    "/v1/models/slow:predict",
                    &format!(r#"{{"instances": [{n}]}}"#),
                )
                .unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    copy_dir(&model_path("slow").join("1"), &base.0.join(".incoming")).unwrap();
    std::fs::rename(base.0.join(".incoming"), base.0.join("2")).unwrap();
    for c in clients {
        let (status, body) = c.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&n.to_string()), "{body}");
    }
    wait_for("version 1 to be unloaded", Duration::from_secs(30), || {
        version_status(port, "slow", 1).is_some_and(|v| v["state"] == "END")
            && version_status(port, "slow", 2).is_some_and(|v| v["state"] == "AVAILABLE")
    });
}
