//! End-to-end benchmark: the real `tfgate` + `tfgate-worker` on the demo models, driven
//! over gRPC (tonic client, one HTTP/2 connection per client task) and REST (one
//! HTTP/1.1 connection per request). Prints a table and the machine it ran on.
//!
//! `cargo build --release && cargo run --release -p tfgate-e2e --bin bench`
//! (`BENCH_FLAGS="--tensorflow_inter_op_parallelism=-1"` passes flags to tfgate;
//! `BENCH_QUICK=1` runs a tenth of the requests.)
//!
//! `cargo run --release -p tfgate-e2e --bin bench -- pool` measures the worker pool
//! instead: MLP throughput with 1 worker (both cores) against 2 workers (one core each),
//! and the longest time a client waits across a worker's SIGKILL.

use std::time::{Duration, Instant};
use tfgate_e2e::{float_tensor, http, machine, predict_request, Server};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tfgate_proto::tensorflow::serving::PredictRequest;

fn request(model: &str, shape: &[i64]) -> PredictRequest {
    let n: i64 = shape.iter().product();
    let mut t = float_tensor(shape, &[]);
    t.tensor_content = (0..n)
        .flat_map(|i| ((i % 7) as f32 * 0.25).to_le_bytes())
        .collect();
    predict_request(model, "x", t)
}

struct Row {
    case: String,
    clients: usize,
    p50_us: f64,
    p99_us: f64,
    rps: f64,
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

async fn grpc_run(
    url: &str,
    req: PredictRequest,
    clients: usize,
    per_client: usize,
) -> (Vec<u64>, f64) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.to_string();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = PredictionServiceClient::connect(url)
                .await
                .expect("connect");
            client.predict(req.clone()).await.expect("warm-up");
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let resp = client.predict(req.clone()).await.expect("predict");
                lat.push(t.elapsed().as_nanos() as u64);
                assert!(!resp.into_inner().outputs.is_empty());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    (all, rps)
}

fn rest_run(port: u16, model: &str, body: &str, n: usize) -> (Vec<u64>, f64) {
    let path = format!("/v1/models/{model}:predict");
    http(port, "POST", &path, body).expect("warm-up");
    let started = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = http(port, "POST", &path, body).expect("rest");
        assert_eq!(status, 200);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    (lat, n as f64 / started.elapsed().as_secs_f64())
}

/// gRPC clients predicting back to back until `stop`, each request's latency kept with
/// its start time; any error fails the run.
async fn grpc_until(
    url: &str,
    req: PredictRequest,
    clients: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(Instant, u64)> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, req, stop) = (url.to_string(), req.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = PredictionServiceClient::connect(url)
                .await
                .expect("connect");
            let mut lat = Vec::new();
            while !*stop.borrow() {
                let t = Instant::now();
                let resp = client.predict(req.clone()).await.expect("predict");
                lat.push((t, t.elapsed().as_nanos() as u64));
                assert!(!resp.into_inner().outputs.is_empty());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all
}

fn worker_pids(port: u16) -> Vec<u32> {
    let (_, body) = http(port, "GET", "/tfgate/workers", "").expect("workers");
    body.split("\"pid\":")
        .skip(1)
        .filter_map(|s| {
            s.trim_start()
                .split([',', '\n'])
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

fn all_serving(port: u16, n: usize) -> bool {
    let (_, body) = http(port, "GET", "/tfgate/workers", "").expect("workers");
    body.matches("\"state\": \"serving\"").count() == n
}

async fn wait_serving(port: u16, n: usize) {
    let started = Instant::now();
    while !all_serving(port, n) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "workers never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pool: throughput by worker count, and the wait a SIGKILL costs clients.
async fn pool_bench(quick: bool) {
    let secs = if quick { 2 } else { 6 };
    println!("machine: {}", machine());
    println!(
        "{:<30} {:>7} {:>7} {:>10} {:>10} {:>10}",
        "case", "workers", "clients", "p50 µs", "p99 µs", "req/s"
    );
    for shape in [vec![1i64, 64], vec![256, 64]] {
        for workers in [1usize, 2] {
            let flag = format!("--num_workers={workers}");
            let server = Server::start_with("mlp", &tfgate_e2e::model_path("mlp"), &[&flag]);
            wait_serving(server.rest_port, workers).await;
            let req = request("mlp", &shape);
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let run = tokio::spawn({
                let url = server.grpc_url();
                async move { grpc_until(&url, req, 8, stop).await }
            });
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let _ = stop_tx.send(true);
            let done = run.await.expect("run");
            let mut lat: Vec<u64> = done.iter().map(|(_, l)| *l).collect();
            let rps = lat.len() as f64 / secs as f64;
            println!(
                "{:<30} {:>7} {:>7} {:>10.1} {:>10.1} {:>10.0}",
                format!("gRPC mlp {shape:?}"),
                workers,
                8,
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99),
                rps
            );
        }
    }
    println!();
    println!(
        "{:<30} {:>7} {:>7} {:>10} {:>12} {:>10}",
        "SIGKILL under load", "workers", "clients", "p50 µs", "longest ms", "requests"
    );
    for workers in [1usize, 2] {
        let flag = format!("--num_workers={workers}");
        let server = Server::start_with("mlp", &tfgate_e2e::model_path("mlp"), &[&flag]);
        let port = server.rest_port;
        for kill in 1..=3 {
            wait_serving(port, workers).await;
            // Let the supervisor's crash backoff reset between kills.
            tokio::time::sleep(Duration::from_secs(if quick { 1 } else { 11 })).await;
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let run = tokio::spawn({
                let (url, req) = (server.grpc_url(), request("mlp", &[1, 64]));
                async move { grpc_until(&url, req, 4, stop).await }
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            let victim = worker_pids(port)[0];
            let _ = std::process::Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status();
            tokio::time::sleep(Duration::from_millis(2000)).await;
            let _ = stop_tx.send(true);
            let done = run.await.expect("no request may fail across the kill");
            let mut lat: Vec<u64> = done.iter().map(|(_, l)| *l).collect();
            let n = lat.len();
            let longest = lat.iter().copied().max().unwrap_or(0) as f64 / 1e6;
            println!(
                "{:<30} {:>7} {:>7} {:>10.1} {:>12.1} {:>10}",
                format!("kill {kill}, gRPC mlp [1, 64]"),
                workers,
                4,
                pct(&mut lat, 0.5),
                longest,
                n
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("pool") {
        return pool_bench(std::env::var("BENCH_QUICK").is_ok()).await;
    }
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let n = if quick { 200 } else { 2000 };
    let mut rows = Vec::new();
    for (model, shape) in [
        ("half_plus_two", vec![1i64, 1]),
        ("mlp", vec![1, 64]),
        ("mlp", vec![256, 64]),
    ] {
        let extra = std::env::var("BENCH_FLAGS").unwrap_or_default();
        let extra: Vec<&str> = extra.split_whitespace().collect();
        let server = Server::start_with(model, &tfgate_e2e::model_path(model), &extra);
        let req = request(model, &shape);
        let label = format!("{model} {shape:?}");
        for clients in [1usize, 8] {
            let (mut lat, rps) =
                grpc_run(&server.grpc_url(), req.clone(), clients, n / clients.min(4)).await;
            rows.push(Row {
                case: format!("gRPC {label}"),
                clients,
                p50_us: pct(&mut lat, 0.5),
                p99_us: pct(&mut lat, 0.99),
                rps,
            });
        }
        let rows_json: Vec<String> = (0..shape[0])
            .map(|r| {
                format!(
                    "[{}]",
                    (0..shape[1])
                        .map(|c| format!("{:.2}", ((r * shape[1] + c) % 7) as f32 * 0.25))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        let body = format!(r#"{{"instances": [{}]}}"#, rows_json.join(","));
        let port = server.rest_port;
        let (mut lat, rps) =
            tokio::task::spawn_blocking(move || rest_run(port, model, &body, n / 2))
                .await
                .expect("rest");
        rows.push(Row {
            case: format!("REST {label}"),
            clients: 1,
            p50_us: pct(&mut lat, 0.5),
            p99_us: pct(&mut lat, 0.99),
            rps,
        });
        drop(server);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("machine: {}", machine());
    println!(
        "{:<34} {:>7} {:>10} {:>10} {:>10}",
        "case", "clients", "p50 µs", "p99 µs", "req/s"
    );
    for r in &rows {
        println!(
            "{:<34} {:>7} {:>10.1} {:>10.1} {:>10.0}",
            r.case, r.clients, r.p50_us, r.p99_us, r.rps
        );
    }
}
