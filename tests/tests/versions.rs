//! Model versions come and go while serving: the worker's Source polls the base path
//! (`--file_system_poll_wait_seconds`), loads a new version before unloading the old one,
//! and falls back when the newest version disappears.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tfgate_e2e::{copy_dir, http, model_path, Server, TempDir};

fn predict(server: &Server) -> Value {
    let (status, body) = http(
        server.rest_port,
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_for(server: &Server, expected: Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if predict(server) == expected {
            return;
        }
        assert!(Instant::now() < deadline, "never served {expected}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(server: &Server) -> Value {
    let (_, body) = http(server.rest_port, "GET", "/v1/models/hpt", "").unwrap();
    serde_json::from_str(&body).unwrap()
}

#[test]
fn new_versions_are_picked_up_and_old_ones_unloaded() {
    let base = TempDir::new("versions");
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
    assert_eq!(
        predict(&server),
        json!({"predictions": [2.5]}),
        "version 1: 0.5x + 2"
    );

    // Publish version 2 atomically (copy beside, then rename in), as TF Serving advises.
    copy_dir(&source.join("2"), &base.0.join(".incoming")).unwrap();
    std::fs::rename(base.0.join(".incoming"), base.0.join("2")).unwrap();
    wait_for(&server, json!({"predictions": [3.5]}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&server)["model_version_status"]
        .as_array()
        .is_some_and(|vs| {
            !vs.iter()
                .any(|v| v["version"] == "1" && v["state"] == "END")
        })
    {
        assert!(
            Instant::now() < deadline,
            "version 1 was never unloaded: {}",
            status(&server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = http(
        server.rest_port,
        "POST",
        "/v1/models/hpt/versions/1:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!(code, 404, "{body}");

    // A broken new version fails to load; the serving version stays.
    std::fs::create_dir_all(base.0.join("3")).unwrap();
    std::fs::write(base.0.join("3").join("saved_model.pb"), b"not a SavedModel").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(&server);
        let v3 = st["model_version_status"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["version"] == "3").cloned());
        if let Some(v3) = v3.filter(|v| v["state"] == "END") {
            assert_ne!(v3["status"]["error_code"], "OK", "{v3}");
            break;
        }
        assert!(Instant::now() < deadline, "version 3 never failed: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(predict(&server), json!({"predictions": [3.5]}));
    std::fs::remove_dir_all(base.0.join("3")).unwrap();

    // Removing the newest version brings the previous one back.
    std::fs::remove_dir_all(base.0.join("2")).unwrap();
    wait_for(&server, json!({"predictions": [2.5]}));
}
