//! tfgate-bench: a closed-loop load generator for tfgate's REST and gRPC APIs, with the
//! two ceilings every ratio is taken against, measured in the same invocation:
//!
//! - the **model ceiling**: the same SavedModel run in-process through the worker's
//!   TensorFlow wrapper (`tfgate-worker --measure_model`), at the batch sizes formed;
//! - the **HTTP ceiling**: the same hyper stack answering a canned predict response with
//!   no model behind it (this binary re-executed as `--serve-canned=PORT`).
//!
//! N connections each send one request, wait for the answer, send the next (REST:
//! HTTP/1.1 keep-alive with TF Serving's JSON; gRPC: the official protos over one HTTP/2
//! connection each). After a warm-up, latencies over a fixed time go into an
//! HdrHistogram. Prints a table naming the machine, then one JSON line.
//!
//! `cargo build --release && target/release/tfgate-bench [--seconds=S] [--concurrency=1,8,32,128]
//!  [--model=mlp] [--rows=1] [--quick]`; `--attach=REST_PORT` only loads a running server
//! (to profile it).

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tfgate_e2e::{bin_dir, float_tensor, http, machine, model_path, predict_request, Server};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    /// Only load an already running server on this REST port (for profiling).
    attach: Option<u16>,
    seconds: f64,
    warmup: f64,
    concurrency: Vec<usize>,
    model: String,
    width: usize,
    rows: usize,
    /// Extra tfgate flags (`--server_flags="--a=1 --b=2"`); TensorFlow's pool flags among
    /// them also configure the model ceiling.
    server_flags: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        attach: None,
        seconds: 3.0,
        warmup: 1.0,
        concurrency: vec![1, 8, 32, 128],
        model: "mlp".into(),
        width: 64,
        rows: 1,
        server_flags: Vec::new(),
    };
    for arg in std::env::args().skip(1) {
        let (k, v) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        match k {
            "--seconds" => a.seconds = v.parse().expect("--seconds"),
            "--concurrency" => {
                a.concurrency = v
                    .split(',')
                    .map(|c| c.parse().expect("--concurrency"))
                    .collect()
            }
            "--model" => a.model = v.into(),
            "--attach" => a.attach = Some(v.parse().expect("--attach")),
            "--width" => a.width = v.parse().expect("--width"),
            "--rows" => a.rows = v.parse().expect("--rows"),
            "--server_flags" => a.server_flags = v.split_whitespace().map(String::from).collect(),
            "--quick" => {
                a.seconds = 1.0;
                a.warmup = 0.3;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// CPU seconds a process has used (user + system), from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the comm: state is field 0, utime 11, stime 12; clock ticks are 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

/// The request body of a REST predict: `rows` rows of `width` floats.
fn rest_body(rows: usize, width: usize) -> String {
    let row = format!(
        "[{}]",
        (0..width)
            .map(|i| format!("{:.2}", (i % 7) as f32 * 0.25))
            .collect::<Vec<_>>()
            .join(",")
    );
    format!(r#"{{"instances": [{}]}}"#, vec![row; rows].join(","))
}

/// One keep-alive HTTP/1.1 connection: send, read the whole response, repeat.
struct RestConn {
    stream: tokio::net::TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl RestConn {
    async fn connect(port: u16, path: &str, body: &str) -> RestConn {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        RestConn {
            stream,
            request,
            buf: Vec::with_capacity(1 << 16),
        }
    }

    async fn call(&mut self) {
        self.stream.write_all(&self.request).await.expect("write");
        self.buf.clear();
        let header_end = loop {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..header_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        while self.buf.len() < header_end + len {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Rest,
    Grpc,
}

/// Runs `clients` closed loops for warm-up then `seconds`; returns the histogram (µs)
/// and the requests per second.
async fn load(
    protocol: Protocol,
    rest_port: u16,
    grpc_url: &str,
    model: &str,
    clients: usize,
    a: &Args,
) -> (Histogram<u64>, f64) {
    let warm_until = Instant::now() + Duration::from_secs_f64(a.warmup);
    let stop_at = warm_until + Duration::from_secs_f64(a.seconds);
    let body = rest_body(a.rows, a.width);
    let path = format!("/v1/models/{model}:predict");
    let values: Vec<f32> = (0..a.rows * a.width)
        .map(|i| (i % 7) as f32 * 0.25)
        .collect();
    let req = predict_request(
        model,
        "x",
        float_tensor(&[a.rows as i64, a.width as i64], &values),
    );
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (body, path, req, url) = (
            body.clone(),
            path.clone(),
            req.clone(),
            grpc_url.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            match protocol {
                Protocol::Rest => {
                    let mut conn = RestConn::connect(rest_port, &path, &body).await;
                    while Instant::now() < stop_at {
                        let t = Instant::now();
                        conn.call().await;
                        if t >= warm_until {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                        }
                    }
                }
                Protocol::Grpc => {
                    let mut client = PredictionServiceClient::connect(url)
                        .await
                        .expect("connect");
                    while Instant::now() < stop_at {
                        let t = Instant::now();
                        client.predict(req.clone()).await.expect("predict");
                        if t >= warm_until {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                        }
                    }
                }
            }
            hist
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("client")).expect("merge");
    }
    let rps = all.len() as f64 / a.seconds;
    (all, rps)
}

/// `--serve-canned=PORT`: hyper (the builder tfgate uses) answering every request with a
/// predict response of one 16-float row, no model behind it.
fn serve_canned(port: u16) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let body = bytes::Bytes::from(format!(
            "{{\n    \"predictions\": [[{}]\n    ]\n}}",
            vec!["0.0123456"; 16].join(", ")
        ));
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let _ = req.into_body().collect().await;
                            let mut resp = hyper::Response::new(Full::new(body));
                            resp.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Runs `tfgate-worker --measure_model` for the model ceiling at these batch sizes, with
/// the pools the server's flags give a worker (its share of the cores otherwise).
fn model_ceiling(
    model: &str,
    width: usize,
    batches: &[usize],
    server_flags: &[String],
) -> Vec<Value> {
    let list = batches
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let pool = |flag: &str| {
        server_flags
            .iter()
            .find_map(|f| f.strip_prefix(flag))
            .unwrap_or("0")
            .to_string()
    };
    let cpus = (0..std::thread::available_parallelism().map_or(1, |n| n.get()))
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = std::process::Command::new(bin_dir().join("tfgate-worker"))
        .arg(format!("--cpus={cpus}"))
        .arg(format!(
            "--measure_intra_op={}",
            pool("--tensorflow_intra_op_parallelism=")
        ))
        .arg(format!(
            "--measure_inter_op={}",
            pool("--tensorflow_inter_op_parallelism=")
        ))
        .arg(format!(
            "--measure_model={}",
            model_path(model).join("1").display()
        ))
        .arg(format!("--measure_input=x:{width}"))
        .arg(format!("--measure_batches={list}"))
        .arg("--measure_seconds=2")
        .output()
        .expect("run tfgate-worker --measure_model");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn batching_stats(port: u16) -> (u64, u64) {
    let Ok((200, body)) = http(port, "GET", "/tfgate/batching", "") else {
        return (0, 0);
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (
        v["batches"].as_u64().unwrap_or(0),
        v["rows"].as_u64().unwrap_or(0),
    )
}

fn main() {
    if let Some(port) =
        std::env::args().find_map(|a| a.strip_prefix("--serve-canned=").map(String::from))
    {
        return serve_canned(port.parse().expect("port"));
    }
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(port) = a.attach {
        for &c in &a.concurrency {
            let (h, rps) = rt.block_on(load(Protocol::Rest, port, "", &a.model, c, &a));
            println!(
                "REST conns {c}: {rps:.0} req/s, p50 {} µs, p99 {} µs",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99)
            );
        }
        return;
    }
    let mut rows: Vec<Value> = Vec::new();
    println!("machine: {}", machine());
    println!("model {} with {} row(s) of {} floats per request; {} s per row after {} s warm-up; tfgate flags: {}", a.model, a.rows, a.width, a.seconds, a.warmup, if a.server_flags.is_empty() { "(defaults)".to_string() } else { a.server_flags.join(" ") });
    println!(
        "{:<30} {:>6} {:>10} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "case", "conns", "req/s", "p50 µs", "p99 µs", "p999 µs", "gw µs/req", "batch"
    );
    let print = |case: &str,
                 c: usize,
                 rps: f64,
                 h: &Histogram<u64>,
                 cpu: Option<f64>,
                 batch: Option<f64>| {
        println!(
            "{:<30} {:>6} {:>10.0} {:>9} {:>9} {:>9} {:>10} {:>7}",
            case,
            c,
            rps,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            cpu.map_or("-".into(), |v| format!("{v:.1}")),
            batch.map_or("-".into(), |v| format!("{v:.1}"))
        );
    };

    // The HTTP ceiling.
    let canned_port = tfgate_e2e::free_port();
    let mut canned = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg(format!("--serve-canned={canned_port}"))
        .spawn()
        .expect("canned server");
    std::thread::sleep(Duration::from_millis(300));
    for &c in &a.concurrency {
        let (h, rps) = rt.block_on(load(Protocol::Rest, canned_port, "", &a.model, c, &a));
        print("REST HTTP ceiling (canned)", c, rps, &h, None, None);
        rows.push(json!({"case": "http_ceiling", "conns": c, "rps": rps, "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99)}));
    }
    let _ = canned.kill();
    let _ = canned.wait();

    let mut batch_sizes = vec![1usize];
    for batching in [false, true] {
        let mut flags: Vec<&str> = a.server_flags.iter().map(String::as_str).collect();
        if batching {
            flags.push("--enable_batching");
        }
        let server = Server::start_with(&a.model, &model_path(&a.model), &flags);
        for protocol in [Protocol::Rest, Protocol::Grpc] {
            for &c in &a.concurrency {
                let (b0, r0) = batching_stats(server.rest_port);
                let cpu0 = cpu_seconds(server.pid());
                let (h, rps) = rt.block_on(load(
                    protocol,
                    server.rest_port,
                    &server.grpc_url(),
                    &a.model,
                    c,
                    &a,
                ));
                let cpu = cpu_seconds(server.pid()) - cpu0;
                let (b1, r1) = batching_stats(server.rest_port);
                let total = (a.warmup + a.seconds) * rps;
                let per_req = cpu / total.max(1.0) * 1e6;
                let mean_batch = batching.then(|| (r1 - r0) as f64 / (b1 - b0).max(1) as f64);
                if let Some(m) = mean_batch {
                    batch_sizes.push(m.round().max(1.0) as usize);
                }
                let name = format!(
                    "{} batching {}",
                    if protocol == Protocol::Rest {
                        "REST"
                    } else {
                        "gRPC"
                    },
                    if batching { "on" } else { "off" }
                );
                print(&name, c, rps, &h, Some(per_req), mean_batch);
                rows.push(json!({
                    "case": name, "conns": c, "rps": rps,
                    "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999),
                    "gateway_cpu_us_per_request": per_req, "mean_batch": mean_batch,
                }));
            }
        }
    }

    batch_sizes.sort_unstable();
    batch_sizes.dedup();
    println!(
        "{:<30} {:>6} {:>10} {:>9} {:>9}",
        "model ceiling (in-process)", "batch", "rows/s", "p50 µs", "p99 µs"
    );
    for m in model_ceiling(&a.model, a.width, &batch_sizes, &a.server_flags) {
        println!(
            "{:<30} {:>6} {:>10.0} {:>9.1} {:>9.1}",
            "",
            m["batch"],
            m["rows_per_s"].as_f64().unwrap_or(0.0),
            m["p50_us"].as_f64().unwrap_or(0.0),
            m["p99_us"].as_f64().unwrap_or(0.0)
        );
        rows.push(json!({"case": "model_ceiling", "batch": m["batch"], "rows_per_s": m["rows_per_s"], "p50_us": m["p50_us"], "p99_us": m["p99_us"]}));
    }
    println!("{}", json!({ "machine": machine(), "rows": rows }));
}
