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

/// `hpt` (half_plus_two) answers x = 1 with `y` (2.5 from version 1, 3.5 from 2).
fn assert_hpt_says(port: u16, y: &str) {
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!((status, body.contains(y)), (200, true), "{body}");
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
    assert_hpt_says(port, "2.5");
    // Fixed before the next attempt.
    std::fs::remove_file(base.0.join("2/saved_model.pb")).unwrap();
    copy_dir(&source.join("2"), &base.0.join("2")).unwrap();
    wait_for("the retry to succeed", Duration::from_secs(30), || {
        version_status(port, "hpt", 2).is_some_and(|v| v["state"] == "AVAILABLE")
    });
    assert_hpt_says(port, "3.5");
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
    assert_hpt_says(port, "3.5");
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

fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// TensorFlow keeps the memory of an unloaded version; a worker that holds much more than
/// a fresh one would is replaced by one that loads the same versions, under traffic,
/// without a failed request, and the resident set comes back down.
#[test]
fn a_worker_bloated_by_unloads_is_replaced_without_a_failed_request() {
    let base = TempDir::new("bloat");
    copy_dir(&model_path("big").join("1"), &base.0.join("1")).unwrap();
    let server = Server::start_with(
        "big",
        &base.0,
        &[
            "--file_system_poll_wait_seconds=1",
            "--replace_worker_after_unload_excess_mb=32",
        ],
    );
    let port = server.rest_port;
    let workers = || -> Value {
        let (_, body) = http(port, "GET", "/tfgate/workers", "").unwrap();
        serde_json::from_str::<Value>(&body).unwrap()["workers"][0].clone()
    };
    let first = workers()["pid"].as_u64().unwrap();
    let rss_with_v1 = rss_kib(first);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = http(
                    port,
                    "POST",
                    "/v1/models/big:predict",
                    r#"{"instances": [0.0]}"#,
                )
                .unwrap();
                assert_eq!(status, 200, "request {n}: {body}");
                n += 1;
            }
            n
        })
    };
    copy_dir(&model_path("big").join("2"), &base.0.join(".incoming")).unwrap();
    std::fs::rename(base.0.join(".incoming"), base.0.join("2")).unwrap();
    wait_for("the replacement", Duration::from_secs(60), || {
        workers()["replacements"] == 1 && workers()["state"] == "serving"
    });
    wait_for("version 2 only", Duration::from_secs(30), || {
        version_status(port, "big", 1).is_some_and(|v| v["state"] == "END")
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = client
        .join()
        .expect("a request failed across the replacement");
    assert!(n > 0);
    let w = workers();
    let second = w["pid"].as_u64().unwrap();
    assert_ne!(second, first);
    assert_eq!(w["restarts"], 0, "replaced, not restarted: {w}");
    let why = w["last_exit"].as_str().unwrap().to_string();
    let bloated_mib: u64 = why
        .strip_prefix("replaced: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{why}"));
    let fresh = rss_kib(second);
    println!(
        "resident set: {} MiB with version 1, {bloated_mib} MiB after swapping to version 2, {} MiB in the replacement",
        rss_with_v1 >> 10,
        fresh >> 10
    );
    assert!(
        fresh >> 10 < bloated_mib.saturating_sub(32),
        "{} MiB after replacement, {bloated_mib} MiB before",
        fresh >> 10
    );
    assert!(!pid_alive(first), "the old worker exited");
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/big/versions/2:predict",
        r#"{"instances": [0.0]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// With --allow_partial_startup, models that cannot load at startup do not stop the
/// server: the others serve, /readyz names the missing ones, and they load once fixed.
/// Without it, startup fails as TF Serving's does.
#[test]
fn partial_startup_serves_what_loads_and_picks_up_the_rest() {
    let dir = TempDir::new("partial");
    let broken = dir.0.join("broken");
    std::fs::create_dir_all(broken.join("1")).unwrap();
    std::fs::write(broken.join("1/saved_model.pb"), b"not a SavedModel").unwrap();
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let config = dir.0.join("models.config");
    let entry = |name: &str, path: &std::path::Path| {
        format!(
            r#"config {{ name: "{name}" base_path: "{}" model_platform: "tensorflow" }}"#,
            path.display()
        )
    };
    std::fs::write(
        &config,
        format!(
            "model_config_list {{ {} {} {} }}",
            entry("half_plus_two", &model_path("half_plus_two")),
            entry("broken", &broken),
            entry("empty", &empty)
        ),
    )
    .unwrap();
    let config_flag = format!("--model_config_file={}", config.display());

    let server = Server::start_with_flags(
        "half_plus_two",
        &[
            &config_flag,
            "--allow_partial_startup",
            "--max_num_load_retries=0",
            "--file_system_poll_wait_seconds=1",
        ],
    );
    let port = server.rest_port;
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(port, "GET", "/readyz", "").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("model broken") && body.contains("model empty"),
        "{body}"
    );

    // Fixed in place, and a version for the empty one: both load.
    std::fs::remove_file(broken.join("1/saved_model.pb")).unwrap();
    copy_dir(&model_path("half_plus_two").join("1"), &broken.join("1")).unwrap();
    copy_dir(&model_path("half_plus_two").join("2"), &empty.join("2")).unwrap();
    wait_for("every model", Duration::from_secs(30), || {
        http(port, "GET", "/readyz", "").unwrap().0 == 200
    });
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/broken:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!((status, body.contains("2.5")), (200, true), "{body}");
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/empty:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!((status, body.contains("3.5")), (200, true), "{body}");
    drop(server);

    // Without the flag, a model that fails at startup stops the server.
    std::fs::write(broken.join("1/saved_model.pb"), b"broken again").unwrap();
    std::fs::write(
        &config,
        format!(
            "model_config_list {{ {} {} }}",
            entry("half_plus_two", &model_path("half_plus_two")),
            entry("broken", &broken)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin_dir().join("tfgate"))
        .arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={}", free_port()))
        .arg(&config_flag)
        .arg("--max_num_load_retries=0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: {{{name: broken version: 1} due to error: "),
        "{err}"
    );
}
