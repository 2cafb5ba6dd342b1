//! tfgate-bench: a closed-loop load generator for tfgate's REST and gRPC APIs that holds
//! every served number against ceilings measured in the same invocation (`ceilings.rs`):
//! the model run in-process, the HTTP stacks answering canned responses, and their
//! composition. Prints a table naming the machine, a summary of the ratios, then one JSON
//! line. `gw µs/req` is the CPU time of the gateway process (of the canned server, in the
//! ceiling rows) per request sent, `wk µs/req` the workers'; both from `/proc`, warm-up
//! included.
//!
//! `--shapes=image,sequence,identity` measures real models' tensor sizes over all five
//! paths (TF REST and gRPC, V2 HTTP binary, V2 gRPC, V2 shared memory) instead
//! (`shapes.rs`).
//!
//! `cargo build --release && target/release/tfgate-bench --help`

mod canned;
mod ceilings;
mod load;
mod paths;
mod phases;
mod procstat;
mod shapes;
mod shm_object;

use ceilings::ModelPoint;
use clap::{CommandFactory, FromArgMatches, Parser};
use load::{Measured, Payload, Protocol, Target};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tfgate_e2e::{bin_dir, http, machine, model_path, Server};

#[derive(Parser, Debug)]
#[command(
    name = "tfgate-bench",
    about = "Closed-loop load on tfgate's REST and gRPC APIs, with the HTTP and model ceilings measured in the same run",
    after_help = "Example: tfgate-bench --concurrency=1,32 --seconds=4\n         tfgate-bench --rows=4096 --concurrency=1 --protocols=grpc\n         tfgate-bench --shapes=image,sequence,identity --seconds=2"
)]
struct Args {
    /// Seconds measured per row (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of warm-up per row, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections, comma-separated: one table row each (with --shapes: 1 unless given).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// The model under models/ (written by scripts/setup.sh).
    #[arg(long, default_value = "mlp")]
    model: String,
    /// The float32 input's alias.
    #[arg(long, default_value = "x")]
    input: String,
    /// Floats per input row.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Floats per output row, for the canned answers.
    #[arg(long = "output_width", default_value_t = 16)]
    output_width: usize,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Which APIs to load, comma-separated: rest, grpc.
    #[arg(long, value_delimiter = ',', default_value = "rest,grpc")]
    protocols: Vec<String>,
    /// Also measure concurrency 1 with batching and this batch_timeout_micros (0: skip).
    #[arg(long = "batch_timeout_micros", default_value_t = 500)]
    batch_timeout_micros: u64,
    /// Seconds an idle server's CPU is measured for (0: skip).
    #[arg(long = "idle_seconds", default_value_t = 3.0)]
    idle_seconds: f64,
    /// Extra tfgate flags, space-separated (`--server_flags="--a=1 --b=2"`); TensorFlow's
    /// pool flags among them also configure the model ceiling.
    #[arg(long = "server_flags", default_value = "", allow_hyphen_values = true)]
    server_flags: String,
    /// One second per row after 0.3 s of warm-up.
    #[arg(long)]
    quick: bool,
    /// Only load an already running server on this REST port (for profiling it).
    #[arg(long)]
    attach: Option<u16>,
    /// With --attach: its gRPC port, for --protocols=grpc.
    #[arg(long = "attach_grpc")]
    attach_grpc: Option<u16>,
    /// Instead of the MLP: these model shapes (image, sequence, identity), comma-separated,
    /// each over all five paths beside its floors and model ceiling.
    #[arg(long, value_delimiter = ',')]
    shapes: Vec<String>,
    /// Internal: the size of the --shapes canned servers' answers, bytes.
    #[arg(long = "canned_response_bytes", hide = true, default_value_t = 0)]
    canned_response_bytes: usize,
    /// Internal: serve --canned_response_bytes HTTP answers on this port.
    #[arg(long = "serve-canned-http-bytes", hide = true)]
    serve_canned_http_bytes: Option<u16>,
    /// Internal: serve Predict answers of --canned_response_bytes tensor bytes on this port.
    #[arg(long = "serve-canned-grpc-bytes", hide = true)]
    serve_canned_grpc_bytes: Option<u16>,
    /// Internal: serve the canned REST answer on this port.
    #[arg(long = "serve-canned-rest", hide = true)]
    serve_canned_rest: Option<u16>,
    /// Internal: serve the canned gRPC answer on this port.
    #[arg(long = "serve-canned-grpc", hide = true)]
    serve_canned_grpc: Option<u16>,
}

/// Ends the bench with a message (bad flags, a server that cannot start).
pub fn fail(why: &str) -> ! {
    eprintln!("tfgate-bench: {why}");
    std::process::exit(2)
}

/// One measured row.
struct Row {
    case: String,
    protocol: Protocol,
    /// "off", "on", or "on, timeout N µs".
    batching: String,
    conns: usize,
    m: Measured,
    gateway_us: Option<f64>,
    worker_us: Option<f64>,
    mean_batch: Option<f64>,
}

impl Row {
    fn p(&self, q: f64) -> u64 {
        self.m.hist.value_at_quantile(q)
    }
}

fn header() {
    println!(
        "{:<34} {:>5} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>8} {:>6}",
        "case",
        "conns",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "gw µs/req",
        "wk µs/req",
        "batch",
        "in MB/s",
        "errors"
    );
}

fn print_row(r: &Row, input_bytes: usize) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:<34} {:>5} {:>9.0} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>8.1} {:>6}",
        r.case,
        r.conns,
        r.m.rps,
        r.p(0.5),
        r.p(0.99),
        r.p(0.999),
        opt(r.gateway_us),
        opt(r.worker_us),
        opt(r.mean_batch),
        r.m.rps * input_bytes as f64 / 1e6,
        r.m.failed
    );
}

/// Batches and rows the server's batch queues have run so far.
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

/// The worker processes' pids, from `/tfgate/workers`.
fn worker_pids(port: u16) -> Vec<u32> {
    let Ok((200, body)) = http(port, "GET", "/tfgate/workers", "") else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
                .collect()
        })
        .unwrap_or_default()
}

fn protocols(a: &Args) -> Vec<Protocol> {
    a.protocols
        .iter()
        .map(|p| match p.as_str() {
            "rest" => Protocol::Rest,
            "grpc" => Protocol::Grpc,
            other => fail(&format!("--protocols: unknown API {other:?} (rest, grpc)")),
        })
        .collect()
}

/// Starts the canned server of `protocol` (this binary re-executed) on a free port.
fn start_canned(protocol: Protocol, a: &Args) -> (std::process::Child, u16) {
    let flag = match protocol {
        Protocol::Rest => "--serve-canned-rest",
        Protocol::Grpc => "--serve-canned-grpc",
    };
    canned::start(
        flag,
        &[
            format!("--rows={}", a.rows),
            format!("--output_width={}", a.output_width),
            format!("--server_flags={}", a.server_flags),
        ],
    )
}

fn main() {
    let matches = Args::command().get_matches();
    let mut a = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let concurrency_given =
        matches.value_source("concurrency") != Some(clap::parser::ValueSource::DefaultValue);
    let server_flags: Vec<String> = a
        .server_flags
        .split_whitespace()
        .map(String::from)
        .collect();
    let shape = canned::CannedShape {
        rows: a.rows,
        width: a.output_width,
        threads: server_flags
            .iter()
            .find_map(|f| f.strip_prefix("--gateway_threads="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    if let Some(port) = a.serve_canned_rest {
        return canned::serve_rest(port, shape);
    }
    if let Some(port) = a.serve_canned_grpc {
        return canned::serve_grpc(port, shape);
    }
    if let Some(port) = a.serve_canned_http_bytes {
        return canned::serve_http_bytes(port, a.canned_response_bytes, shape.threads);
    }
    if let Some(port) = a.serve_canned_grpc_bytes {
        return canned::serve_grpc_bytes(port, a.canned_response_bytes, shape.threads);
    }
    if a.quick {
        a.seconds = 1.0;
        a.warmup = 0.3;
    }
    if !a.shapes.is_empty() {
        if !concurrency_given {
            a.concurrency = vec![1];
        }
        if a.seconds <= 0.0 || a.concurrency.is_empty() || a.concurrency.contains(&0) {
            fail("--seconds and --concurrency must be positive");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail(&format!("cannot start a runtime: {e}")));
        let settings = shapes::Settings {
            concurrency: a.concurrency.clone(),
            warmup: Duration::from_secs_f64(a.warmup.max(0.0)),
            seconds: Duration::from_secs_f64(a.seconds),
            server_flags: server_flags.clone(),
            canned_threads: shape.threads,
        };
        return shapes::run(&a.shapes, &settings, &rt);
    }
    if a.seconds <= 0.0 || a.concurrency.contains(&0) || a.rows == 0 || a.width == 0 {
        fail("--seconds, --concurrency, --rows and --width must be positive");
    }
    let protocols = protocols(&a);
    let server_flags: Vec<String> = a
        .server_flags
        .split_whitespace()
        .map(String::from)
        .collect();
    let payload = Payload {
        model: a.model.clone(),
        input: a.input.clone(),
        rows: a.rows,
        width: a.width,
    };
    let warmup = Duration::from_secs_f64(a.warmup);
    let seconds = Duration::from_secs_f64(a.seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start a runtime: {e}")));
    if let Some(rest_port) = a.attach {
        for &protocol in &protocols {
            let port = match protocol {
                Protocol::Rest => rest_port,
                Protocol::Grpc => a
                    .attach_grpc
                    .unwrap_or_else(|| fail("--protocols=grpc with --attach needs --attach_grpc")),
            };
            for &c in &a.concurrency {
                let target = Target { protocol, port };
                let m = rt.block_on(load::run(&target, &payload, c, warmup, seconds));
                println!(
                    "{} conns {c}: {:.0} req/s, p50 {} µs, p99 {} µs, {} failed",
                    protocol.name(),
                    m.rps,
                    m.hist.value_at_quantile(0.5),
                    m.hist.value_at_quantile(0.99),
                    m.failed
                );
            }
        }
        return;
    }
    let model_dir = model_path(&a.model);
    if !model_dir.join("1").is_dir() {
        fail(&format!(
            "no version 1 under {}: run scripts/setup.sh first",
            model_dir.display()
        ));
    }

    println!("machine: {}", machine());
    println!(
        "model {} with {} row(s) of {} floats per request ({} bytes); {} s per row after {} s warm-up; tfgate flags: {}",
        a.model,
        a.rows,
        a.width,
        payload.input_bytes(),
        a.seconds,
        a.warmup,
        if server_flags.is_empty() {
            "(defaults)".to_string()
        } else {
            server_flags.join(" ")
        }
    );
    header();
    let mut rows: Vec<Row> = Vec::new();

    // The HTTP ceilings.
    for &protocol in &protocols {
        let (mut child, port) = start_canned(protocol, &a);
        for &c in &a.concurrency {
            let target = Target { protocol, port };
            let cpu0 = procstat::cpu_seconds(child.id());
            let m = rt.block_on(load::run(&target, &payload, c, warmup, seconds));
            let cpu = procstat::cpu_seconds(child.id()) - cpu0;
            let row = Row {
                case: format!("{} HTTP ceiling (canned)", protocol.name()),
                protocol,
                batching: "ceiling".into(),
                conns: c,
                // The canned server's own CPU: what the HTTP stack alone costs.
                gateway_us: Some(cpu / m.total.max(1) as f64 * 1e6),
                m,
                worker_us: None,
                mean_batch: None,
            };
            print_row(&row, payload.input_bytes());
            rows.push(row);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    // tfgate: batching off, on, and on with a timeout (concurrency 1 only). Requests of
    // more rows than TF Serving's default max_batch_size (1000) get a larger one.
    let params_file = |name: &str, timeout: u64| {
        let path =
            std::env::temp_dir().join(format!("tfgate-bench-{}-{name}.pbtxt", std::process::id()));
        let mut text = format!("batch_timeout_micros {{ value: {timeout} }}\n");
        if a.rows > 1000 {
            text.push_str(&format!("max_batch_size {{ value: {} }}\n", a.rows));
        }
        if let Err(e) = std::fs::write(&path, text) {
            fail(&format!("cannot write {}: {e}", path.display()));
        }
        path
    };
    let on_file = params_file("on", 0);
    let timeout_file = params_file("timeout", a.batch_timeout_micros);
    let mut idle: Option<(f64, f64)> = None;
    let mut setups: Vec<(String, Vec<String>, Vec<usize>)> = vec![
        ("off".into(), vec![], a.concurrency.clone()),
        (
            "on".into(),
            std::iter::once("--enable_batching".to_string())
                .chain(
                    (a.rows > 1000)
                        .then(|| format!("--batching_parameters_file={}", on_file.display())),
                )
                .collect(),
            a.concurrency.clone(),
        ),
    ];
    if a.batch_timeout_micros > 0 {
        setups.push((
            format!("on, timeout {} µs", a.batch_timeout_micros),
            vec![
                "--enable_batching".into(),
                format!("--batching_parameters_file={}", timeout_file.display()),
            ],
            vec![1],
        ));
    }
    for (batching, extra, concurrency) in &setups {
        let mut flags: Vec<&str> = server_flags.iter().map(String::as_str).collect();
        flags.extend(extra.iter().map(String::as_str));
        let server = Server::start_with(&a.model, &model_dir, &flags);
        let workers = worker_pids(server.rest_port);
        if idle.is_none() && a.idle_seconds > 0.0 {
            // Let the start-up settle, then watch the server do nothing.
            std::thread::sleep(Duration::from_secs(1));
            let (g0, w0) = (
                procstat::cpu_seconds(server.pid()),
                procstat::cpu_seconds_of(&workers),
            );
            std::thread::sleep(Duration::from_secs_f64(a.idle_seconds));
            let (g1, w1) = (
                procstat::cpu_seconds(server.pid()),
                procstat::cpu_seconds_of(&workers),
            );
            idle = Some((
                (g1 - g0) / a.idle_seconds * 100.0,
                (w1 - w0) / a.idle_seconds * 100.0,
            ));
        }
        for &protocol in &protocols {
            for &c in concurrency {
                let port = match protocol {
                    Protocol::Rest => server.rest_port,
                    Protocol::Grpc => server.grpc_port,
                };
                let (b0, r0) = batching_stats(server.rest_port);
                let g0 = procstat::cpu_seconds(server.pid());
                let w0 = procstat::cpu_seconds_of(&workers);
                let target = Target { protocol, port };
                let m = rt.block_on(load::run(&target, &payload, c, warmup, seconds));
                let g = procstat::cpu_seconds(server.pid()) - g0;
                let w = procstat::cpu_seconds_of(&workers) - w0;
                let (b1, r1) = batching_stats(server.rest_port);
                let n = m.total.max(1) as f64;
                let on = batching != "off";
                let row = Row {
                    case: format!("{} batching {batching}", protocol.name()),
                    protocol,
                    batching: batching.clone(),
                    conns: c,
                    gateway_us: Some(g / n * 1e6),
                    worker_us: Some(w / n * 1e6),
                    mean_batch: (on && b1 > b0).then(|| (r1 - r0) as f64 / (b1 - b0) as f64),
                    m,
                };
                print_row(&row, payload.input_bytes());
                rows.push(row);
            }
        }
    }
    let _ = std::fs::remove_file(&timeout_file);
    let _ = std::fs::remove_file(&on_file);

    // The model ceiling at the sizes that ran: a request's rows, and each mean batch.
    let mut batch_sizes = vec![a.rows];
    for r in &rows {
        if let Some(b) = r.mean_batch {
            batch_sizes.push((b.round() as usize).max(1));
        }
    }
    batch_sizes.sort_unstable();
    batch_sizes.dedup();
    let model = ceilings::model(
        &bin_dir(),
        &model_dir.join("1"),
        &format!("{}:{}", a.input, a.width),
        &batch_sizes,
        &server_flags,
    );
    println!(
        "{:<34} {:>5} {:>9} {:>8} {:>8}  run",
        "model ceiling (in-process)", "batch", "rows/s", "p50 µs", "p99 µs"
    );
    for m in &model {
        println!(
            "{:<34} {:>5} {:>9.0} {:>8.1} {:>8.1}  {}",
            "", m.batch, m.rows_per_s, m.p50_us, m.p99_us, m.mode
        );
    }

    let summary = summarize(&rows, &model, &a, &payload, idle);
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "case": r.case, "conns": r.conns, "rps": r.m.rps,
                "p50_us": r.p(0.5), "p99_us": r.p(0.99), "p999_us": r.p(0.999),
                "gateway_cpu_us_per_request": r.gateway_us, "worker_cpu_us_per_request": r.worker_us,
                "mean_batch": r.mean_batch, "failed": r.m.failed,
            })
        })
        .collect();
    let json_model: Vec<Value> = model
        .iter()
        .map(|m| json!({"batch": m.batch, "rows_per_s": m.rows_per_s, "p50_us": m.p50_us, "p99_us": m.p99_us, "mode": m.mode}))
        .collect();
    println!(
        "{}",
        json!({ "machine": machine(), "rows": json_rows, "model_ceiling": json_model, "summary": summary })
    );
}

/// Each served row against its floor or composed ceiling, the timeout case, idle CPU and
/// the payload throughput; printed, and returned for the JSON line.
fn summarize(
    rows: &[Row],
    model: &[ModelPoint],
    a: &Args,
    payload: &Payload,
    idle: Option<(f64, f64)>,
) -> Value {
    let ceiling = |protocol: Protocol, conns: usize| {
        rows.iter()
            .find(|r| r.batching == "ceiling" && r.protocol == protocol && r.conns == conns)
    };
    let model_p50 = model.iter().find(|m| m.batch == a.rows).map(|m| m.p50_us);
    let mut out = BTreeMap::new();
    println!("against the ceilings of this run");
    for r in rows
        .iter()
        .filter(|r| r.batching == "off" || r.batching == "on")
    {
        let Some(http) = ceiling(r.protocol, r.conns) else {
            continue;
        };
        let key = format!("{} c={}", r.case, r.conns);
        if r.conns == 1 {
            let Some(model_p50) = model_p50 else {
                continue;
            };
            let floor = http.p(0.5) as f64 + model_p50;
            let over = r.p(0.5) as f64 - floor;
            println!(
                "  {:<32} c=1    p50 {:>6} µs = floor {:>6.0} µs ({} HTTP p50 {} + model p50 {:.0}) {:+.0} µs",
                r.case,
                r.p(0.5),
                floor,
                r.protocol.name(),
                http.p(0.5),
                model_p50,
                over
            );
            out.insert(
                key,
                json!({"p50_us": r.p(0.5), "floor_us": floor, "over_floor_us": over}),
            );
        } else {
            let rows_per_batch = r.mean_batch.unwrap_or(a.rows as f64);
            let Some(model_rps) = ceilings::rows_per_s_at(model, rows_per_batch) else {
                continue;
            };
            let composed = ceilings::composed(http.m.rps, model_rps, a.rows);
            let ratio = r.m.rps / composed;
            println!(
                "  {:<32} c={:<4} {:>7.0} req/s = {:>4.0} % of composed ceiling {:>7.0} (1/(1/{:.0} + {}/{:.0} rows/s at batch {:.1}))",
                r.case,
                r.conns,
                r.m.rps,
                ratio * 100.0,
                composed,
                http.m.rps,
                a.rows,
                model_rps,
                rows_per_batch
            );
            out.insert(
                key,
                json!({"rps": r.m.rps, "composed_ceiling": composed, "ratio": ratio}),
            );
        }
    }
    for r in rows
        .iter()
        .filter(|r| r.batching.starts_with("on, timeout"))
    {
        let unbatched = rows
            .iter()
            .find(|o| o.batching == "off" && o.protocol == r.protocol && o.conns == 1);
        if let Some(u) = unbatched {
            let delta = r.p(0.5) as i64 - u.p(0.5) as i64;
            println!(
                "  {:<32} c=1    p50 {:>6} µs = unbatched p50 {} µs {:+} µs (timeout {} µs)",
                r.case,
                r.p(0.5),
                u.p(0.5),
                delta,
                a.batch_timeout_micros
            );
            out.insert(
                format!("{} c=1", r.case),
                json!({"p50_us": r.p(0.5), "unbatched_p50_us": u.p(0.5), "delta_us": delta}),
            );
        }
    }
    for (batching, protocol) in [("on", Protocol::Rest), ("on", Protocol::Grpc)] {
        let at = |c: usize| {
            rows.iter()
                .find(|r| r.batching == batching && r.protocol == protocol && r.conns == c)
        };
        let off = rows
            .iter()
            .filter(|r| r.batching == "off" && r.protocol == protocol && r.conns > 1);
        for o in off {
            if let Some(on) = at(o.conns) {
                println!(
                    "  {} c={}: batching on {:.0} / off {:.0} req/s = {:.2}x",
                    protocol.name(),
                    o.conns,
                    on.m.rps,
                    o.m.rps,
                    on.m.rps / o.m.rps.max(1.0)
                );
            }
        }
    }
    if let Some((g, w)) = idle {
        println!(
            "  idle server over {} s: gateway {:.2} % + worker {:.2} % of one core",
            a.idle_seconds, g, w
        );
        out.insert(
            "idle".into(),
            json!({"gateway_percent_of_core": g, "worker_percent_of_core": w}),
        );
    }
    if payload.input_bytes() >= 64 << 10 {
        let shm = ceilings::shm_gbps(&bin_dir(), payload.input_bytes());
        for r in rows.iter().filter(|r| r.batching == "off" && r.conns == 1) {
            let mbps = r.m.rps * payload.input_bytes() as f64 / 1e6;
            println!(
                "  {} c=1: {:.0} MB/s of input; shm-bench --payload={}: {}",
                r.case,
                mbps,
                payload.input_bytes(),
                shm.map_or("-".into(), |g| format!("{:.0} MB/s", g * 1000.0))
            );
        }
        out.insert("shm_inplace_gbps".into(), json!(shm));
    }
    json!(out)
}
