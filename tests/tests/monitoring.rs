//! Monitoring: `--monitoring_config_file` turns on TF Serving's Prometheus page on the REST
//! port, and its series move as TF Serving's do — requests counted by status, latency for
//! successes, runtime, the batching session, loads and warmup — beside tfgate's own
//! worker series, which see a worker die and come back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tfgate_e2e::{
    float_tensor, http, http_full, model_path, predict_request, signal, worker_of, Server, TempDir,
};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;

/// A monitoring config file enabling Prometheus (at `path`, if given).
fn monitoring_flag(dir: &TempDir, path: Option<&str>) -> String {
    let file = dir.0.join("monitoring.config");
    let text = match path {
        Some(p) => format!("prometheus_config {{ enable: true, path: \"{p}\" }}"),
        None => "prometheus_config { enable: true }".to_string(),
    };
    std::fs::write(&file, text).unwrap();
    format!("--monitoring_config_file={}", file.display())
}

/// A scraped page: each sample line's series (`name{labels}`) and value; and the raw text.
struct Page {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Page {
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

fn scrape(port: u16, path: &str) -> Page {
    let (status, headers, text) = http_full(port, "GET", path, &[], b"").unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        headers.contains("content-type: text/plain\r\n"),
        "{headers}"
    );
    let samples = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse::<f64>().unwrap())
        })
        .collect();
    Page { text, samples }
}

const DEFAULT_PATH: &str = "/monitoring/prometheus/metrics";

#[test]
fn the_page_is_served_only_where_the_monitoring_config_says() {
    let server = Server::start("half_plus_two");
    let (status, _) = http(server.rest_port, "GET", DEFAULT_PATH, "").unwrap();
    assert_eq!(status, 404, "no page without --monitoring_config_file");
    drop(server);

    let dir = TempDir::new("monitoring-path");
    let flag = monitoring_flag(&dir, Some("/metrics"));
    let server = Server::start_with("half_plus_two", &model_path("half_plus_two"), &[&flag]);
    let page = scrape(server.rest_port, "/metrics");
    assert!(page.text.contains("# TYPE "), "{}", page.text);
    let (status, _) = http(server.rest_port, "GET", DEFAULT_PATH, "").unwrap();
    assert_eq!(status, 404, "only the configured path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_series_count_requests_runs_batches_and_loads() {
    let dir = TempDir::new("monitoring-series");
    let flag = monitoring_flag(&dir, None);
    let base = model_path("half_plus_two");
    let server = Server::start_with("half_plus_two", &base, &[&flag, "--enable_batching"]);
    let port = server.rest_port;
    let loaded = scrape(port, DEFAULT_PATH);
    let v2 = base.join("2").display().to_string();
    assert_eq!(
        loaded.get(&format!(
            ":tensorflow:cc:saved_model:load_attempt_count{{model_path=\"{v2}\",status=\"success\"}}"
        )),
        1.0,
        "{}",
        loaded.text
    );
    assert!(
        loaded.get(&format!(
            ":tensorflow:cc:saved_model:load_latency{{model_path=\"{v2}\"}}"
        )) > 0.0
    );

    for x in [1.0, 2.0, 3.0] {
        let body = format!("{{\"instances\": [{x}]}}");
        let (status, _) = http(port, "POST", "/v1/models/half_plus_two:predict", &body).unwrap();
        assert_eq!(status, 200);
    }
    let (status, _) = http(
        port,
        "POST",
        "/v1/models/nope:predict",
        "{\"instances\": [1.0]}",
    )
    .unwrap();
    assert_eq!(status, 404);
    let (status, _) = http(port, "GET", "/v1/models/half_plus_two", "").unwrap();
    assert_eq!(status, 200);
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let good = predict_request("half_plus_two", "x", float_tensor(&[1], &[4.0]));
    client.predict(good).await.unwrap();
    let bad = predict_request("half_plus_two", "nope", float_tensor(&[1], &[4.0]));
    let e = client.predict(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    let page = scrape(port, DEFAULT_PATH);
    // What moved since the first scrape (starting the server polled the status URL).
    let delta = |series: &str| page.get(series) - loaded.get(series);
    let count = |labels: &str| delta(&format!(":tensorflow:serving:request_count{{{labels}}}"));
    // Three REST predicts, one status GET and one gRPC predict.
    assert_eq!(
        count("model_name=\"half_plus_two\",status=\"OK\""),
        5.0,
        "{}",
        page.text
    );
    assert_eq!(count("model_name=\"nope\",status=\"NOT_FOUND\""), 1.0);
    assert_eq!(
        count("model_name=\"half_plus_two\",status=\"INVALID_ARGUMENT\""),
        1.0
    );
    let latency = |labels: &str| {
        delta(&format!(
            ":tensorflow:serving:request_latency_count{{model_name=\"half_plus_two\",{labels}}}"
        ))
    };
    assert_eq!(latency("API=\"predict\",entrypoint=\"REST\""), 3.0);
    assert_eq!(latency("API=\"\",entrypoint=\"REST\""), 1.0);
    assert_eq!(latency("API=\"Predict\",entrypoint=\"GRPC\""), 1.0);
    assert!(page
        .text
        .contains("# TYPE :tensorflow:serving:request_latency histogram"));
    assert!(page.text.contains(
        ":tensorflow:serving:request_latency_bucket{model_name=\"half_plus_two\",API=\"predict\",entrypoint=\"REST\",le=\"58.32\"}"
    ));
    assert_eq!(
        page.get(":tensorflow:serving:runtime_latency_count{model_name=\"half_plus_two\",API=\"Predict\",runtime=\"TF1\"}"),
        4.0
    );
    // Four runs went through the batch queue: each waited, and every batch is counted.
    assert_eq!(
        page.get(":tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name=\"batch_threads\"}"),
        4.0
    );
    let batches = page.get(":tensorflow:serving:batching_session:wrapped_run_count");
    assert!((1.0..=4.0).contains(&batches), "{batches}");
    assert_eq!(
        page.get(":tensorflow:serving:batching_session:input_batch_size_count"),
        batches
    );
    assert_eq!(
        page.get(":tensorflow:serving:batching_session:input_batch_size_sum"),
        4.0,
        "four rows in all"
    );
    // Each of the four predicts' latency, split by phase.
    let phase = |p: &str, part: &str| {
        page.get(&format!(
            ":tfgate:request:phase_latency_{part}{{model_name=\"half_plus_two\",version=\"2\",signature=\"serving_default\",phase=\"{p}\"}}"
        ))
    };
    for p in [
        "queue",
        "batch_formation",
        "transfer",
        "worker",
        "session_run",
        "response_encoding",
    ] {
        assert_eq!(phase(p, "count"), 4.0, "{p}: {}", page.text);
    }
    assert!(phase("session_run", "sum") > 0.0);
    assert!(page.get(":tfgate:worker:request_arena_bytes{worker=\"0\"}") >= (1u64 << 20) as f64);
}

#[test]
fn warmup_and_a_worker_restart_show_up() {
    let dir = TempDir::new("monitoring-worker");
    let flag = monitoring_flag(&dir, None);
    let base = model_path("counter");
    let server = Server::start_with("counter", &base, &[&flag]);
    let port = server.rest_port;
    let page = scrape(port, DEFAULT_PATH);
    let v1 = base.join("1").display().to_string();
    let warmup = format!("model_path=\"{v1}\",status=\"OK\"");
    assert_eq!(
        page.get(&format!(
            ":tensorflow:serving:model_warmup_records_read{{{warmup}}}"
        )),
        3.0,
        "{}",
        page.text
    );
    assert_eq!(
        page.get(&format!(
            ":tensorflow:serving:model_warmup_latency_count{{{warmup}}}"
        )),
        1.0
    );
    assert_eq!(
        page.get(":tfgate:worker:state{worker=\"0\",state=\"serving\"}"),
        1.0
    );
    assert_eq!(page.get(":tfgate:worker:restarts{worker=\"0\"}"), 0.0);
    assert!(page.get(":tfgate:worker:resident_bytes{worker=\"0\"}") > 1e6);

    let victim = worker_of(server.pid());
    signal("-KILL", victim);
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = scrape(port, DEFAULT_PATH);
        if page.get(":tfgate:worker:state{worker=\"0\",state=\"serving\"}") == 1.0
            && page.get(":tfgate:worker:restarts{worker=\"0\"}") == 1.0
        {
            break page;
        }
        assert!(Instant::now() < deadline, "no restart seen: {}", page.text);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        page.get(":tfgate:worker:recovery_latency_count{worker=\"0\"}"),
        1.0,
        "{}",
        page.text
    );
    // The replacement loaded and warmed the version up again.
    assert_eq!(
        page.get(&format!(
            ":tensorflow:serving:model_warmup_latency_count{{{warmup}}}"
        )),
        2.0
    );
}

/// `--log_format=json`: every line tfgate and its workers write — TensorFlow's own C++
/// logging included — is one JSON object, and a worker's death, restart and the model
/// loads are there with their reasons.
#[test]
fn json_logs_are_one_object_per_line_and_tell_what_happened() {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("json-logs");
    let log_path = dir.0.join("tfgate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (grpc, rest) = (tfgate_e2e::free_port(), tfgate_e2e::free_port());
    let mut child = Command::new(tfgate_e2e::bin_dir().join("tfgate"))
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg("--model_name=half_plus_two")
        .arg(format!(
            "--model_base_path={}",
            model_path("half_plus_two").display()
        ))
        .args(["--log_format=json", "--no_such_flag=1"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let wait_serving = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, body)) = http(rest, "GET", "/tfgate/workers", "") {
                if body.contains("\"serving\"") && body.contains("AVAILABLE") {
                    return body;
                }
            }
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_serving("tfgate did not start");
    let worker = worker_of(child.id());
    signal("-KILL", worker);
    std::thread::sleep(Duration::from_millis(200));
    wait_serving("the worker did not come back");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<String> = lines
        .iter()
        .map(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    assert!(has("unknown argument: --no_such_flag=1"), "{text}");
    assert!(
        has("Reading SavedModel from"),
        "TensorFlow's own lines, wrapped: {text}"
    );
    assert_eq!(
        messages.iter().filter(|m| *m == "loaded").count(),
        2,
        "a load by the first worker and one by its replacement: {text}"
    );
    let exit = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("worker exited"))
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(exit["level"], "WARN");
    let why = exit["fields"]["message"].as_str().unwrap_or_default();
    assert!(why.ends_with("; restarting"), "with its reason: {why}");
    assert_eq!(exit["fields"]["worker"], "0");
}

/// A real Prometheus (Debian's, installed by scripts/setup.sh), configured as it would be
/// for TF Serving, scrapes tfgate, and its query API returns TF Serving's series with
/// their labels.
#[test]
fn prometheus_scrapes_tf_servings_series_from_tfgate() {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("prometheus");
    let flag = monitoring_flag(&dir, None);
    let server = Server::start_with("half_plus_two", &model_path("half_plus_two"), &[&flag]);
    for _ in 0..3 {
        let (status, _) = http(
            server.rest_port,
            "POST",
            "/v1/models/half_plus_two:predict",
            "{\"instances\": [1.0]}",
        )
        .unwrap();
        assert_eq!(status, 200);
    }
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tfgate\n    metrics_path: {DEFAULT_PATH}\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            server.rest_port
        ),
    )
    .unwrap();
    let port = tfgate_e2e::free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus (scripts/setup.sh installs it)");
    // {__name__=":tensorflow:serving:request_count",model_name="half_plus_two"}
    let query = "/api/v1/query?query=%7B__name__%3D%22%3Atensorflow%3Aserving%3Arequest_count%22%2Cmodel_name%3D%22half_plus_two%22%2Cstatus%3D%22OK%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Ok((200, body)) = http(port, "GET", query, "") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if let Some(r) = v["data"]["result"].as_array().filter(|r| !r.is_empty()) {
                break r.clone();
            }
        }
        if Instant::now() > deadline {
            let _ = prometheus.kill();
            panic!("Prometheus found no :tensorflow:serving:request_count within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(result.len(), 1, "{result:?}");
    let metric = &result[0]["metric"];
    assert_eq!(metric["__name__"], ":tensorflow:serving:request_count");
    assert_eq!(metric["job"], "tfgate");
    let value: f64 = result[0]["value"][1].as_str().unwrap().parse().unwrap();
    // Three predicts, and the status polls that started the server.
    assert!(value >= 3.0, "{result:?}");
}
