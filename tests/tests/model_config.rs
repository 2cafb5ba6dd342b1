//! Models as TF Serving users configure them: `--model_config_file` with several models,
//! version policies and labels; reloads by file polling and by
//! `ModelService/HandleReloadConfigRequest`, under traffic.

use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tfgate_e2e::{
    bin_dir, float_tensor, free_port, http, model_path, predict_request, Server, TempDir,
};
use tfgate_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use tfgate_proto::tensorflow::serving::model_spec::VersionChoice;
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tfgate_proto::tensorflow::serving::{
    model_server_config, ModelConfig, ModelConfigList, ModelServerConfig, ReloadConfigRequest,
};

/// A config entry in text format.
fn entry(name: &str, model: &str, extra: &str) -> String {
    format!(
        r#"config {{ name: "{name}" base_path: "{}" model_platform: "tensorflow" {extra} }}"#,
        model_path(model).display()
    )
}

fn write_config(path: &Path, entries: &[String]) {
    let text = format!("model_config_list {{\n{}\n}}\n", entries.join("\n"));
    // Written beside and renamed in, so a poll never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn predict(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http(port, "POST", path, r#"{"instances": [1.0]}"#).unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// half_plus_two at x = 1: version 1 says 2.5, version 2 says 3.5.
fn y(port: u16, path: &str) -> f64 {
    let (status, v) = predict(port, path);
    assert_eq!(status, 200, "{path}: {v}");
    v["predictions"][0].as_f64().unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(config: &Path, extra: &[&str]) -> Server {
    let mut flags = vec![format!("--model_config_file={}", config.display())];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Server waits for the first model's status to show AVAILABLE.
    Server::start_with_flags("half_plus_two", &flags)
}

fn labelled() -> Vec<String> {
    vec![
        entry(
            "half_plus_two",
            "half_plus_two",
            r#"model_version_policy { specific { versions: 1 versions: 2 } }
               version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }"#,
        ),
        entry("mlp", "mlp", ""),
    ]
}

#[tokio::test]
async fn several_models_policies_and_labels_from_a_config_file() {
    let dir = TempDir::new("config");
    let config = dir.0.join("models.config");
    write_config(&config, &labelled());
    let server = start(&config, &["--allow_version_labels_for_unavailable_models"]);
    let port = server.rest_port;
    wait_for("both versions", || {
        http(port, "GET", "/v1/models/half_plus_two", "")
            .unwrap()
            .1
            .matches("AVAILABLE")
            .count()
            == 2
    });
    assert_eq!(
        y(port, "/v1/models/half_plus_two/labels/stable:predict"),
        2.5
    );
    assert_eq!(
        y(port, "/v1/models/half_plus_two/labels/canary:predict"),
        3.5
    );
    assert_eq!(y(port, "/v1/models/half_plus_two/versions/1:predict"), 2.5);
    assert_eq!(y(port, "/v1/models/half_plus_two:predict"), 3.5);
    let (status, v) = predict(port, "/v1/models/half_plus_two/labels/beta:predict");
    assert_eq!(status, 400);
    assert_eq!(v["error"], "Unrecognized servable version label: beta");
    // Status ignores a label and lists every version, as TF Serving does.
    let (status, body) = http(port, "GET", "/v1/models/half_plus_two/labels/anything", "").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.matches("\"version\"").count(), 2, "{body}");
    let (status, body) = http(
        port,
        "GET",
        "/v1/models/half_plus_two/labels/stable/metadata",
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"version\": \"1\""), "{body}");
    // The second model of the file.
    let mlp = format!(r#"{{"instances": [[{}]]}}"#, vec!["0.5"; 64].join(","));
    let (status, body) = http(port, "POST", "/v1/models/mlp:predict", &mlp).unwrap();
    assert_eq!(status, 200, "{body}");

    // gRPC: version_label in ModelSpec; the response names the version.
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut req = predict_request("half_plus_two", "x", float_tensor(&[1, 1], &[1.0]));
    req.model_spec.as_mut().unwrap().version_choice =
        Some(VersionChoice::VersionLabel("stable".into()));
    let resp = client.predict(req.clone()).await.unwrap().into_inner();
    assert_eq!(resp.outputs["y"].float_val, vec![2.5]);
    assert_eq!(
        resp.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(1))
    );
    req.model_spec.as_mut().unwrap().version_choice =
        Some(VersionChoice::VersionLabel("beta".into()));
    let e = client.predict(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "Unrecognized servable version label: beta");
}

fn run_tfgate(args: &[String]) -> (Option<i32>, String) {
    let out = std::process::Command::new(bin_dir().join("tfgate"))
        .args(args)
        .arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={}", free_port()))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_files_tf_serving_refuses_are_refused() {
    let dir = TempDir::new("bad-config");
    let config = dir.0.join("models.config");
    let arg = format!("--model_config_file={}", config.display());

    std::fs::write(&config, "improperly formatted file").unwrap();
    let (code, err) = run_tfgate(std::slice::from_ref(&arg));
    assert_eq!(code, Some(255));
    assert!(
        err.contains("Error parsing text-format tensorflow.serving.ModelServerConfig"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{}'",
            config.display()
        )),
        "{err}"
    );
    // Labels at startup need --allow_version_labels_for_unavailable_models.
    write_config(&config, &labelled());
    let (code, err) = run_tfgate(std::slice::from_ref(&arg));
    assert_eq!(code, Some(255));
    assert!(
        err.contains("Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 2 of model half_plus_two, which is not currently available for inference"),
        "{err}"
    );
    write_config(
        &config,
        &[
            r#"config { name: "m" base_path: "relative/m" model_platform: "tensorflow" }"#
                .to_string(),
        ],
    );
    let (_, err) = run_tfgate(std::slice::from_ref(&arg));
    assert!(
        err.contains("INVALID_ARGUMENT: Expected model m to have an absolute path or URI; got base_path()=relative/m"),
        "{err}"
    );
    write_config(
        &config,
        &[r#"config { name: "m" base_path: "/m" model_platform: "pytorch" }"#.to_string()],
    );
    let (_, err) = run_tfgate(std::slice::from_ref(&arg));
    assert!(
        err.contains("INVALID_ARGUMENT: Model m requests unsupported platform pytorch"),
        "{err}"
    );
    let (_, err) = run_tfgate(&[format!(
        "--model_config_file={}",
        dir.0.join("none").display()
    )]);
    assert!(
        err.contains("NOT_FOUND:") && err.contains("No such file or directory"),
        "{err}"
    );
}

fn reload_request(entries: Vec<ModelConfig>) -> ReloadConfigRequest {
    ReloadConfigRequest {
        config: Some(ModelServerConfig {
            config: Some(model_server_config::Config::ModelConfigList(
                ModelConfigList { config: entries },
            )),
        }),
        metric_names: Vec::new(),
    }
}

fn model_config(name: &str, model: &str, versions: &[i64], labels: &[(&str, i64)]) -> ModelConfig {
    use tfgate_proto::tensorflow::serving::file_system_storage_path_source_config::{
        servable_version_policy::{PolicyChoice, Specific},
        ServableVersionPolicy,
    };
    ModelConfig {
        name: name.into(),
        base_path: model_path(model).display().to_string(),
        model_platform: "tensorflow".into(),
        model_version_policy: (!versions.is_empty()).then(|| ServableVersionPolicy {
            policy_choice: Some(PolicyChoice::Specific(Specific {
                versions: versions.to_vec(),
            })),
        }),
        version_labels: labels.iter().map(|(l, v)| (l.to_string(), *v)).collect(),
        ..Default::default()
    }
}

/// Clients keep predicting on `labels/stable` and the latest version while the config
/// changes under them; returns the answers each saw, in order.
fn traffic(port: u16, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Vec<f64>>> {
    [
        "/v1/models/half_plus_two/labels/stable:predict",
        "/v1/models/half_plus_two:predict",
    ]
    .into_iter()
    .map(|path| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(y(port, path));
            }
            seen
        })
    })
    .collect()
}

/// The label moves from version 1 to 2 by a gRPC reload while clients use
/// `labels/stable`: not one request fails, and they switch once, from 1 to 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reloads_move_a_label_add_and_remove_models_under_traffic() {
    let dir = TempDir::new("reload");
    let config = dir.0.join("models.config");
    write_config(
        &config,
        &[entry(
            "half_plus_two",
            "half_plus_two",
            "model_version_policy { specific { versions: 1 } }",
        )],
    );
    let server = start(&config, &[]);
    let port = server.rest_port;
    let mut models = ModelServiceClient::connect(server.grpc_url())
        .await
        .unwrap();

    // Labels need an AVAILABLE version; the error is also the RPC's status.
    let e = models
        .handle_reload_config_request(reload_request(vec![model_config(
            "half_plus_two",
            "half_plus_two",
            &[1],
            &[("stable", 2)],
        )]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "Request to assign label to version 2 of model half_plus_two, which is not currently available for inference"
    );
    let resp = models
        .handle_reload_config_request(reload_request(vec![model_config(
            "half_plus_two",
            "half_plus_two",
            &[1],
            &[("stable", 1)],
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status.unwrap().error_code, 0);

    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(port, &stop);
    // Version 2 joins; then the label moves; then version 1 goes.
    let both = model_config("half_plus_two", "half_plus_two", &[1, 2], &[("stable", 1)]);
    models
        .handle_reload_config_request(reload_request(vec![both]))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        wait_for("version 2", || {
            predict(port, "/v1/models/half_plus_two/versions/2:predict").0 == 200
        })
    })
    .await
    .unwrap();
    let moved = model_config("half_plus_two", "half_plus_two", &[1, 2], &[("stable", 2)]);
    models
        .handle_reload_config_request(reload_request(vec![moved]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let only_2 = model_config("half_plus_two", "half_plus_two", &[2], &[("stable", 2)]);
    models
        .handle_reload_config_request(reload_request(vec![only_2.clone()]))
        .await
        .unwrap();

    // A model added by reload is AVAILABLE when the call returns.
    let with_mlp = vec![only_2.clone(), model_config("mlp", "mlp", &[], &[])];
    models
        .handle_reload_config_request(reload_request(with_mlp))
        .await
        .unwrap();
    let mlp = format!(r#"{{"instances": [[{}]]}}"#, vec!["0.5"; 64].join(","));
    let (status, body) = http(port, "POST", "/v1/models/mlp:predict", &mlp).unwrap();
    assert_eq!(status, 200, "{body}");
    // And removed by the next one.
    models
        .handle_reload_config_request(reload_request(vec![only_2]))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        wait_for("mlp to go", || {
            http(port, "POST", "/v1/models/mlp:predict", &mlp)
                .unwrap()
                .0
                == 404
        })
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let seen = c.join().expect("a request failed during the reloads");
        assert!(!seen.is_empty());
        let switches = seen.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(switches <= 1, "answers flip-flopped: {seen:?}");
        assert_eq!(*seen.last().unwrap(), 3.5);
    }
    assert_eq!(
        predict(port, "/v1/models/half_plus_two/versions/1:predict").0,
        404,
        "version 1 was unloaded"
    );

    // Only a model list can be reloaded.
    let e = models
        .handle_reload_config_request(ReloadConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"
    );
    let e = models
        .handle_reload_config_request(reload_request(vec![
            model_config("a", "mlp", &[], &[]),
            model_config("a", "mlp", &[], &[]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "Illegal to list model a multiple times in config list"
    );
}

/// The config file is re-read every --model_config_file_poll_wait_seconds: under steady
/// traffic on `labels/stable`, a version joins, the label moves, the old version goes, a
/// model is added and another removed, a broken file changes nothing — and not one
/// request fails.
#[test]
fn the_config_file_is_polled_and_applied_under_traffic() {
    let dir = TempDir::new("poll");
    let config = dir.0.join("models.config");
    let hpt = |versions: &str, stable: i64| {
        entry(
            "half_plus_two",
            "half_plus_two",
            &format!(
                "model_version_policy {{ specific {{ {versions} }} }} version_labels {{ key: \"stable\" value: {stable} }}"
            ),
        )
    };
    write_config(&config, &[hpt("versions: 1", 1)]);
    let server = start(
        &config,
        &[
            "--model_config_file_poll_wait_seconds=1",
            "--allow_version_labels_for_unavailable_models",
        ],
    );
    let port = server.rest_port;
    assert_eq!(
        y(port, "/v1/models/half_plus_two/labels/stable:predict"),
        2.5
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push(y(port, "/v1/models/half_plus_two/labels/stable:predict"));
                }
                seen
            })
        })
        .collect();

    // Version 2 joins, with a second model.
    write_config(
        &config,
        &[hpt("versions: 1 versions: 2", 1), entry("mlp", "mlp", "")],
    );
    wait_for("version 2 and mlp", || {
        predict(port, "/v1/models/half_plus_two/versions/2:predict").0 == 200
            && http(port, "GET", "/v1/models/mlp", "")
                .unwrap()
                .1
                .contains("AVAILABLE")
    });
    // The label moves; then version 1 and mlp go.
    write_config(
        &config,
        &[hpt("versions: 1 versions: 2", 2), entry("mlp", "mlp", "")],
    );
    wait_for("the label to move", || {
        y(port, "/v1/models/half_plus_two/labels/stable:predict") == 3.5
    });
    std::fs::write(&config, "not a config").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        y(port, "/v1/models/half_plus_two/labels/stable:predict"),
        3.5,
        "a broken file changes nothing"
    );
    write_config(&config, &[hpt("versions: 2", 2)]);
    wait_for("version 1 and mlp to go", || {
        predict(port, "/v1/models/half_plus_two/versions/1:predict").0 == 404
            && http(port, "GET", "/v1/models/mlp", "")
                .unwrap()
                .1
                .contains("END")
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let seen = c.join().expect("a request failed during the reloads");
        let switches = seen.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(switches, 1, "one switch from version 1 to 2: {seen:?}");
        assert_eq!((seen[0], *seen.last().unwrap()), (2.5, 3.5));
    }
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/mlp:predict",
        r#"{"instances": [[1.0]]}"#,
    )
    .unwrap();
    assert_eq!(status, 404, "{body}");
}

/// A base path on a store tfgate cannot read is refused by its scheme at startup, never
/// joined to the working directory and polled forever (`gs://` and `s3://` are read:
/// tests/python/test_model_store.py).
#[test]
fn an_unknown_scheme_is_refused_by_name() {
    let mut cmd = std::process::Command::new(tfgate_e2e::bin_dir().join("tfgate"));
    cmd.arg(format!("--port={}", tfgate_e2e::free_port()))
        .arg("--model_name=x")
        .arg("--model_base_path=hdfs://namenode/models/x");
    let (code, err) = tfgate_e2e::exit_of(cmd, std::time::Duration::from_secs(30));
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains(
            "Failed to start server. Error: INVALID_ARGUMENT: model x: base_path hdfs://namenode/models/x: file system scheme 'hdfs' is not supported (tfgate reads local paths, gs:// and s3://)"
        ),
        "{err}"
    );
}
