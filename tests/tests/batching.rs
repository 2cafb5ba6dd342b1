//! Server-side batching (`--enable_batching`): concurrent requests are merged into one
//! TensorFlow run and each gets exactly its own rows back; queue limits, oversize
//! requests, padding and deadlines answer as TF Serving's BatchingSession does.

use serde_json::Value;
use std::time::{Duration, Instant};
use tfgate_e2e::{
    bin_dir, copy_dir, count_to, float_tensor, free_port, http, model_path, predict_request,
    Server, TempDir,
};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;

fn params_file(dir: &TempDir, text: &str) -> String {
    let path = dir.0.join("batching.config");
    std::fs::write(&path, text).unwrap();
    format!("--batching_parameters_file={}", path.display())
}

fn stats(port: u16) -> Value {
    let (status, body) = http(port, "GET", "/tfgate/batching", "").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Hundreds of concurrent requests — one row and several, different non-batch shapes,
/// REST and gRPC — each get exactly the model's answer for their own inputs, while
/// the server runs far fewer batches than requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_rows() {
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &["--enable_batching"],
    );
    let port = server.rest_port;
    // REST: rows of shape [1] or [2], 1 to 3 rows per request.
    let rest: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..40 {
                    let width = 1 + (i + c) % 2;
                    let rows = 1 + (i * 7 + c) % 3;
                    let base = (c * 1000 + i * 10) as f32;
                    let instances: Vec<Vec<f32>> = (0..rows)
                        .map(|r| (0..width).map(|w| base + (r * width + w) as f32).collect())
                        .collect();
                    let body = serde_json::json!({ "instances": instances }).to_string();
                    let (status, text) =
                        http(port, "POST", "/v1/models/half_plus_two:predict", &body).unwrap();
                    assert_eq!(status, 200, "{text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let want: Vec<Vec<f64>> = instances
                        .iter()
                        .map(|row| row.iter().map(|x| (0.5 * x + 3.0) as f64).collect())
                        .collect();
                    assert_eq!(v["predictions"], serde_json::json!(want), "request {body}");
                }
            })
        })
        .collect();
    // gRPC: [n, 1] tensors with distinct values.
    let grpc: Vec<_> = (0..8)
        .map(|c| {
            let url = server.grpc_url();
            tokio::spawn(async move {
                let mut client = PredictionServiceClient::connect(url).await.unwrap();
                for i in 0..40 {
                    let rows = 1 + (i + c) % 4;
                    let xs: Vec<f32> = (0..rows)
                        .map(|r| (50_000 + c * 1000 + i * 10 + r) as f32)
                        .collect();
                    let req =
                        predict_request("half_plus_two", "x", float_tensor(&[rows as i64, 1], &xs));
                    let y = client.predict(req).await.unwrap().into_inner().outputs["y"].clone();
                    let want: Vec<f32> = xs.iter().map(|x| 0.5 * x + 3.0).collect();
                    assert_eq!(y.float_val, want);
                    assert_eq!(y.tensor_shape.unwrap().dim[0].size, rows as i64);
                }
            })
        })
        .collect();
    for r in rest {
        r.join().expect("a REST request got a wrong answer");
    }
    for g in grpc {
        g.await.expect("a gRPC request got a wrong answer");
    }
    let s = stats(port);
    let (batches, requests) = (
        s["batches"].as_u64().unwrap(),
        s["requests"].as_u64().unwrap(),
    );
    assert_eq!(requests, 640, "{s}");
    println!("{s}");
    assert!(batches < requests, "requests were merged: {s}");
}

/// Queue full, oversize request, padding, and an expired deadline, each with its exact
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_padding_and_deadlines_answer_like_tf_serving() {
    let dir = TempDir::new("batching");
    // Padding: a batch of 3 rows runs as 4 (allowed sizes 2, 4); a request of 5 is too big.
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &[
            "--enable_batching",
            &params_file(
                &dir,
                "max_batch_size { value: 4 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
            ),
        ],
    );
    let port = server.rest_port;
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [[1.0], [2.0], [3.0]]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["predictions"],
        serde_json::json!([[3.5], [4.0], [4.5]]),
        "no padded row comes back"
    );
    let s = stats(port);
    assert_eq!(s["padding_rows"], 1, "{s}");
    assert_eq!(s["batch_sizes"]["4-7"], 1, "{s}");
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [[1.0], [2.0], [3.0], [4.0], [5.0]]}"#,
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("Task size 5 is larger than maximum input batch size 4"),
        "{body}"
    );
    // A scalar input cannot be batched.
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"inputs": {"x": 1.0}}"#,
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("Batching Run() input tensors must have at least one dimension"),
        "{body}"
    );
    drop(server);

    // Queue full: one batch may wait while one runs.
    let slow = Server::start_with(
        "slow",
        &model_path("slow"),
        &[
            "--enable_batching",
            &params_file(
                &dir,
                "max_batch_size { value: 1 } max_enqueued_batches { value: 1 }",
            ),
        ],
    );
    let port = slow.rest_port;
    let long = |n: i64| {
        std::thread::spawn(move || {
            http(
                port,
                "POST",
                "/v1/models/slow:predict",
                &format!(r#"{{"instances": [{n}]}}"#),
            )
            .unwrap()
        })
    };
    // Long enough to still run while the next two arrive, on any machine; running (at
    // its worker) before the next one queues.
    let running = long(tfgate_e2e::slow_count_taking(port, Duration::from_secs(3)));
    tfgate_e2e::wait_in_flight(port, 1);
    let waiting = long(10);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (status, body) = http(
        port,
        "POST",
        "/v1/models/slow:predict",
        r#"{"instances": [10]}"#,
    )
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued and max_enqueued_batches is 1"),
        "{body}"
    );
    assert_eq!(running.join().unwrap().0, 200);
    assert_eq!(waiting.join().unwrap().0, 200);
    drop(slow);
}

/// A request whose deadline passes while it waits never runs: the counter model counts
/// its runs, and the expired request is not among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expires_in_the_queue_never_runs() {
    let dir = TempDir::new("batching-deadline");
    let config = dir.0.join("models.config");
    std::fs::write(
        &config,
        format!(
            r#"model_config_list {{
                 config {{ name: "slow" base_path: "{}" model_platform: "tensorflow" }}
                 config {{ name: "counter" base_path: "{}" model_platform: "tensorflow" }} }}"#,
            model_path("slow").display(),
            model_path("counter").display()
        ),
    )
    .unwrap();
    let server = Server::start_with_flags(
        "counter",
        &[
            &format!("--model_config_file={}", config.display()),
            "--enable_batching",
        ],
    );
    let port = server.rest_port;
    let counter = move || {
        let (status, body) = http(
            port,
            "POST",
            "/v1/models/counter:predict",
            r#"{"instances": [1.0]}"#,
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["predictions"][0]
            .as_i64()
            .unwrap()
    };
    assert_eq!(counter(), 4, "three warmup runs, then this one");
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    // The one worker is busy counting for about a second and a half.
    let long = tokio::spawn({
        let mut client = client.clone();
        async move { client.predict(count_to(450_000, None)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut expiring =
        tonic::Request::new(predict_request("counter", "x", float_tensor(&[1], &[1.0])));
    expiring
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let e = client.predict(expiring).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    long.await.unwrap().unwrap();
    let answered = tokio::task::spawn_blocking(counter).await.unwrap();
    assert_eq!(answered, 5, "the expired request was never run");
}

/// `--enable_per_model_batching_parameters`: a version's `batching_params.pbtxt` decides;
/// a version without one does not batch. And the flags' startup rule.
#[test]
fn per_model_parameters_and_the_startup_rule() {
    let base = TempDir::new("per-model");
    copy_dir(&model_path("half_plus_two").join("2"), &base.0.join("2")).unwrap();
    std::fs::write(
        base.0.join("2/batching_params.pbtxt"),
        "max_batch_size { value: 2 }",
    )
    .unwrap();
    let server = Server::start_with(
        "hpt",
        &base.0,
        &[
            "--enable_batching",
            "--enable_per_model_batching_parameters",
        ],
    );
    let (status, body) = http(
        server.rest_port,
        "POST",
        "/v1/models/hpt:predict",
        r#"{"instances": [[1.0], [2.0], [3.0]]}"#,
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("Task size 3 is larger than maximum input batch size 2"),
        "{body}"
    );
    drop(server);

    let plain = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &[
            "--enable_batching",
            "--enable_per_model_batching_parameters",
        ],
    );
    let (status, body) = http(
        plain.rest_port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"inputs": {"x": 1.0}}"#,
    )
    .unwrap();
    assert_eq!(
        status, 200,
        "a version without the file does not batch: {body}"
    );
    drop(plain);

    let out = std::process::Command::new(bin_dir().join("tfgate"))
        .arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={}", free_port()))
        .arg("--model_name=half_plus_two")
        .arg(format!(
            "--model_base_path={}",
            model_path("half_plus_two").display()
        ))
        .arg("--batching_parameters_file=/some/file")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        err.contains("Failed to start server. Error: INVALID_ARGUMENT: server_options.batching_parameters_file is set without setting server_options.enable_batching to true."),
        "{err}"
    );
}

/// `pad_variable_length_inputs`: requests whose rows differ in width share one batch, the
/// narrower one padded with its own first element, and its answer keeps the batch's width,
/// as in TF Serving. Without it they run apart and each gets its own width back.
#[test]
fn variable_length_inputs_are_padded_only_when_asked() {
    for pad in [true, false] {
        let dir = TempDir::new("pad");
        // Two rows fill a batch; a lone request waits up to 300 ms for a second.
        let flags = params_file(
            &dir,
            &format!(
                "max_batch_size {{ value: 2 }} batch_timeout_micros {{ value: 300000 }} pad_variable_length_inputs: {pad}"
            ),
        );
        let server = Server::start_with(
            "half_plus_two",
            &model_path("half_plus_two"),
            &["--enable_batching", &flags],
        );
        let port = server.rest_port;
        let ask = move |body: &'static str| {
            std::thread::spawn(move || {
                let (status, text) =
                    http(port, "POST", "/v1/models/half_plus_two:predict", body).unwrap();
                assert_eq!(status, 200, "{text}");
                serde_json::from_str::<Value>(&text).unwrap()["predictions"].clone()
            })
        };
        let wide = ask(r#"{"instances": [[1.0, 2.0]]}"#);
        std::thread::sleep(Duration::from_millis(50));
        let narrow = ask(r#"{"instances": [[3.0]]}"#);
        let (wide, narrow) = (wide.join().unwrap(), narrow.join().unwrap());
        assert_eq!(wide, serde_json::json!([[3.5, 4.0]]));
        let batches = stats(port)["batches"].as_u64().unwrap();
        if pad {
            // [[3]] ran as [[3, 3]]: padded with its first element, answered at width 2.
            assert_eq!(narrow, serde_json::json!([[4.5, 4.5]]));
            assert_eq!(batches, 1, "one padded batch");
        } else {
            assert_eq!(narrow, serde_json::json!([[4.5]]));
            assert_eq!(batches, 2, "different widths run apart");
        }
    }
}
