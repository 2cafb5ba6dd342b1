//! `--shapes=image,sequence,identity`: real models' tensor sizes over all five paths
//! (`paths.rs`), where the MLP mode has small tensors over two. Per shape, one tfgate
//! (V2 system shared memory on, the Prometheus page on) with batching off, then one with
//! batching on, each path loaded in closed loops; beside them, measured in the same
//! invocation:
//!
//! - each path's **floor**: the same client against a canned server that reads the same
//!   request and answers as many bytes as tfgate answered on that path (`canned.rs`);
//!   V2 gRPC's floor is the canned TF `Predict` service, sent a `PredictRequest` of the
//!   same input bytes (there is no canned V2 service), and says so;
//! - the **model ceiling** at batch 1 (`tfgate-worker --measure_model`, `ceilings.rs`).
//!
//! A row's overhead is its p50 less the floor's and the model's: what tfgate adds. Its
//! MB/s is the tensor bytes (input and output) moved per µs of the p50 spent outside the
//! model, all copies and encodings included. The summary gives, per shape, TF REST JSON's
//! p50 less V2 binary's (the cost of JSON for the same tensor on the same server), and
//! for each shared-memory row the rate from region to TensorFlow: the input's bytes over
//! the mean `batch_formation` phase (`phases.rs`), beside `shm-bench`'s memcpy of the
//! same payload.

use crate::ceilings;
use crate::load::Measured;
use crate::paths::{self, Against, Dtype, Exchange, Path, Payload};
use crate::phases;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tfgate_e2e::{bin_dir, machine, model_path, Server};

/// A served model's one input and one output (float32), at batch 1.
pub struct ModelShape {
    /// The shape's name, and its model's under models/.
    pub name: &'static str,
    pub input: &'static str,
    pub dtype: Dtype,
    pub input_shape: Vec<i64>,
    pub output: &'static str,
    pub output_shape: Vec<i64>,
}

impl ModelShape {
    pub fn input_bytes(&self) -> usize {
        self.input_shape.iter().product::<i64>() as usize * 4
    }

    pub fn output_bytes(&self) -> usize {
        self.output_shape.iter().product::<i64>() as usize * 4
    }

    /// `tfgate-worker --measure_input`'s spelling of the input.
    fn measure_input(&self) -> String {
        let dims: Vec<String> = self.input_shape[1..].iter().map(i64::to_string).collect();
        format!("{}:{}:{}", self.input, self.dtype.measure(), dims.join("x"))
    }
}

/// The shapes `scripts/make_models.py` writes models for.
pub fn catalog(name: &str) -> Option<ModelShape> {
    Some(match name {
        // 602 KB of pixels in, 4 KB of logits out.
        "image" => ModelShape {
            name: "image",
            input: "image",
            dtype: Dtype::Fp32,
            input_shape: vec![1, 224, 224, 3],
            output: "logits",
            output_shape: vec![1, 1000],
        },
        // 512 B of token ids in, 384 KiB of hidden states out.
        "sequence" => ModelShape {
            name: "sequence",
            input: "tokens",
            dtype: Dtype::Int32,
            input_shape: vec![1, 128],
            output: "hidden",
            output_shape: vec![1, 128, 768],
        },
        // 1 MiB each way, and no compute: the transport alone.
        "identity" => ModelShape {
            name: "identity",
            input: "x",
            dtype: Dtype::Fp32,
            input_shape: vec![1, 262_144],
            output: "y",
            output_shape: vec![1, 262_144],
        },
        _ => return None,
    })
}

/// How long and how hard each row loads.
pub struct Settings {
    pub concurrency: Vec<usize>,
    pub warmup: Duration,
    pub seconds: Duration,
    /// Extra tfgate flags (`--server_flags`); `--gateway_threads` also sizes the canned
    /// servers, the pool flags the model ceiling.
    pub server_flags: Vec<String>,
    /// The canned servers' threads (`--gateway_threads`, 0: as tfgate picks).
    pub canned_threads: usize,
}

/// One loaded row of tfgate.
struct Row {
    path: Path,
    batching: &'static str,
    conns: usize,
    m: Measured,
    /// Mean `batch_formation` µs per request over the row, and the requests it counts
    /// (shared-memory rows only).
    formation: Option<(f64, f64)>,
}

/// The arithmetic of one row against its floor and the model.
#[derive(Debug, PartialEq)]
pub struct Split {
    /// p50 − floor p50 − model p50, µs.
    pub overhead_us: f64,
    /// (input + output tensor bytes) / (p50 − model p50): MB/s outside the model.
    pub mb_per_s: Option<f64>,
}

/// What a row's p50 leaves once the floor and the model are taken out.
pub fn split(p50_us: f64, floor_p50_us: f64, model_p50_us: f64, tensor_bytes: usize) -> Split {
    let outside = p50_us - model_p50_us;
    Split {
        overhead_us: p50_us - floor_p50_us - model_p50_us,
        mb_per_s: (outside > 0.0).then(|| tensor_bytes as f64 / outside),
    }
}

/// Runs every shape named in `names` and prints their tables and one JSON line.
pub fn run(names: &[String], s: &Settings, rt: &tokio::runtime::Runtime) {
    let shapes: Vec<ModelShape> = names
        .iter()
        .map(|n| {
            catalog(n).unwrap_or_else(|| {
                crate::fail(&format!(
                    "--shapes: unknown shape {n:?} (image, sequence, identity)"
                ))
            })
        })
        .collect();
    for shape in &shapes {
        if !model_path(shape.name).join("1").is_dir() {
            crate::fail(&format!(
                "no models/{}/1: run scripts/setup.sh first",
                shape.name
            ));
        }
    }
    println!("machine: {}", machine());
    println!(
        "{} s per row after {} s warm-up; concurrency {:?}; tfgate flags: {}",
        s.seconds.as_secs_f64(),
        s.warmup.as_secs_f64(),
        s.concurrency,
        if s.server_flags.is_empty() {
            "(defaults)".to_string()
        } else {
            s.server_flags.join(" ")
        }
    );
    let config = std::env::temp_dir().join(format!(
        "tfgate-bench-{}-monitoring.config",
        std::process::id()
    ));
    if let Err(e) = std::fs::write(&config, phases::CONFIG) {
        crate::fail(&format!("cannot write {}: {e}", config.display()));
    }
    let monitoring = format!("--monitoring_config_file={}", config.display());
    let results: Vec<Value> = shapes
        .iter()
        .map(|shape| run_shape(shape, s, rt, &monitoring))
        .collect();
    let _ = std::fs::remove_file(&config);
    println!("{}", json!({ "machine": machine(), "shapes": results }));
}

/// Loads `path` on `port` (tfgate or a canned floor) at `conns` connections.
fn load(
    rt: &tokio::runtime::Runtime,
    path: Path,
    port: u16,
    against: Against,
    payload: &Payload,
    conns: usize,
    s: &Settings,
) -> Measured {
    let (clients, regions) = paths::connect(rt, path, port, against, payload, conns);
    let m = match clients {
        Ok(clients) => rt.block_on(paths::drive(clients, s.warmup, s.seconds)),
        Err(e) => {
            eprintln!("{} on port {port}: {e}", path.name());
            Measured {
                hist: hdrhistogram::Histogram::new(3).expect("a 3-digit histogram is valid"),
                rps: 0.0,
                total: 1,
                failed: 1,
            }
        }
    };
    paths::unregister(port, &regions);
    m
}

/// One shape: tfgate with batching off and on, the floors, the model; prints its table
/// and summary and returns them for the JSON line.
fn run_shape(
    shape: &ModelShape,
    s: &Settings,
    rt: &tokio::runtime::Runtime,
    monitoring: &str,
) -> Value {
    let payload = Payload::new(shape);
    let tensor_bytes = shape.input_bytes() + shape.output_bytes();
    println!();
    println!(
        "{}: {} {:?} {:?} ({} B) -> {} float32 {:?} ({} B)",
        shape.name,
        shape.input,
        shape.dtype,
        shape.input_shape,
        shape.input_bytes(),
        shape.output,
        shape.output_shape,
        shape.output_bytes()
    );
    let mut rows: Vec<Row> = Vec::new();
    // tfgate's answer on each path (batching off), which sizes the canned floors.
    let mut answers: BTreeMap<Path, Exchange> = BTreeMap::new();
    for (batching, extra) in [("off", None), ("on", Some("--enable_batching"))] {
        let mut flags: Vec<&str> = s.server_flags.iter().map(String::as_str).collect();
        flags.push("--enable_v2_system_shared_memory");
        flags.push(monitoring);
        flags.extend(extra);
        let server = Server::start_with(shape.name, &model_path(shape.name), &flags);
        for path in Path::ALL {
            let port = if path.grpc() {
                server.grpc_port
            } else {
                server.rest_port
            };
            match paths::probe(rt, path, port, &payload) {
                Ok(exchange) => {
                    answers.entry(path).or_insert(exchange);
                }
                Err(e) => eprintln!("{} {}, batching {batching}: {e}", shape.name, path.name()),
            }
            for &conns in &s.concurrency {
                let before = (path == Path::V2Shm)
                    .then(|| phases::scrape(server.rest_port, shape.name, "batch_formation"))
                    .flatten();
                let m = load(rt, path, port, Against::Tfgate, &payload, conns, s);
                let after = before
                    .and_then(|_| phases::scrape(server.rest_port, shape.name, "batch_formation"));
                let formation = match (before, after) {
                    (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => {
                        Some(((s1 - s0) / (c1 - c0), c1 - c0))
                    }
                    _ => None,
                };
                rows.push(Row {
                    path,
                    batching,
                    conns,
                    m,
                    formation,
                });
            }
        }
    }

    // The floors, one canned server per path, answering what tfgate answered.
    let mut floors: BTreeMap<(Path, usize), Measured> = BTreeMap::new();
    for path in Path::ALL {
        let Some(answer) = answers.get(&path) else {
            continue;
        };
        let (flag, bytes) = if path.grpc() {
            ("--serve-canned-grpc-bytes", shape.output_bytes())
        } else {
            ("--serve-canned-http-bytes", answer.response_body_bytes)
        };
        let (mut child, port) = crate::canned::start(
            flag,
            &[
                format!("--canned_response_bytes={bytes}"),
                format!("--server_flags=--gateway_threads={}", s.canned_threads),
            ],
        );
        for &conns in &s.concurrency {
            let m = load(rt, path, port, Against::Canned, &payload, conns, s);
            floors.insert((path, conns), m);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    let model = ceilings::model(
        &bin_dir(),
        &model_path(shape.name).join("1"),
        &shape.measure_input(),
        &[1],
        &s.server_flags,
    );
    let model_p50 = model.iter().find(|m| m.batch == 1).map(|m| m.p50_us);
    let shm = (shape.input_bytes() >= 64 << 10)
        .then(|| ceilings::shm_bench(&bin_dir(), shape.input_bytes()))
        .flatten();

    // The table.
    println!(
        "{:<17} {:>5} {:>5} {:>8} {:>8} {:>7} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6}",
        "path",
        "batch",
        "conns",
        "p50 µs",
        "p99 µs",
        "req/s",
        "req B",
        "resp B",
        "floor µs",
        "model µs",
        "overhead",
        "MB/s",
        "errors"
    );
    let mut json_rows = Vec::new();
    for r in &rows {
        let p50 = r.m.hist.value_at_quantile(0.5) as f64;
        let floor = floors.get(&(r.path, r.conns));
        let floor_p50 = floor
            .filter(|f| f.failed == 0 && !f.hist.is_empty())
            .map(|f| f.hist.value_at_quantile(0.5) as f64);
        let sp = match (floor_p50, model_p50) {
            (Some(f), Some(m)) => Some(split(p50, f, m, tensor_bytes)),
            _ => None,
        };
        let answer = answers.get(&r.path).copied().unwrap_or_default();
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        println!(
            "{:<17} {:>5} {:>5} {:>8} {:>8} {:>7.0} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6}",
            r.path.name(),
            r.batching,
            r.conns,
            r.m.hist.value_at_quantile(0.5),
            r.m.hist.value_at_quantile(0.99),
            r.m.rps,
            answer.request_bytes,
            answer.response_bytes,
            opt(floor_p50, 0),
            opt(model_p50, 0),
            opt(sp.as_ref().map(|x| x.overhead_us), 0),
            opt(sp.as_ref().and_then(|x| x.mb_per_s), 0),
            r.m.failed
        );
        json_rows.push(json!({
            "path": r.path.name(), "batching": r.batching, "conns": r.conns,
            "p50_us": r.m.hist.value_at_quantile(0.5), "p99_us": r.m.hist.value_at_quantile(0.99),
            "rps": r.m.rps, "request_bytes": answer.request_bytes,
            "response_bytes": answer.response_bytes, "failed": r.m.failed,
            "floor_p50_us": floor_p50, "floor_failed": floor.map(|f| f.failed),
            "model_p50_us": model_p50,
            "overhead_us": sp.as_ref().map(|x| x.overhead_us),
            "mb_per_s": sp.as_ref().and_then(|x| x.mb_per_s),
            "batch_formation_us": r.formation.map(|f| f.0),
        }));
    }
    println!(
        "floor: the same client against hyper answering the same byte count (HTTP paths), or \
         tonic's Predict answering tensor_content of the output's bytes (TF gRPC; V2 gRPC's \
         floor sends that Predict the same input bytes); model: tfgate-worker --measure_model \
         at batch 1; MB/s: {tensor_bytes} tensor bytes / (p50 − model p50)"
    );
    for f in floors.values().filter(|f| f.failed > 0) {
        println!("  a floor had {} errors (see above)", f.failed);
    }

    // The summary.
    let mut summary = BTreeMap::new();
    let p50_of = |path: Path, batching: &str| {
        rows.iter()
            .find(|r| r.path == path && r.batching == batching && r.conns == s.concurrency[0])
            .filter(|r| !r.m.hist.is_empty())
            .map(|r| r.m.hist.value_at_quantile(0.5) as i64)
    };
    let deltas: Vec<Option<i64>> = ["off", "on"]
        .iter()
        .map(|b| Some(p50_of(Path::TfRest, b)? - p50_of(Path::V2Binary, b)?))
        .collect();
    let spell = |d: Option<i64>| d.map_or("-".to_string(), |d| d.to_string());
    println!(
        "{}: REST JSON p50 − V2 binary p50 = {} µs (batching off), {} µs (batching on), conns {}",
        shape.name,
        spell(deltas[0]),
        spell(deltas[1]),
        s.concurrency[0]
    );
    summary.insert(
        "rest_json_minus_v2_binary_p50_us".to_string(),
        json!({"batching_off": deltas[0], "batching_on": deltas[1], "conns": s.concurrency[0]}),
    );
    let gbps = |field: &str| shm.as_ref().and_then(|v| v[field].as_f64());
    // Only where the input is large enough for a rate to mean something (shm-bench's
    // threshold too): the identity shape's 1 MiB, the image's 602 KB.
    for r in rows
        .iter()
        .filter(|r| r.path == Path::V2Shm && shm.is_some())
    {
        let Some((us, n)) = r.formation else {
            continue;
        };
        let mbps = (us > 0.0).then(|| shape.input_bytes() as f64 / us);
        let share = |field: &str| {
            mbps.zip(gbps(field)).map_or("-".into(), |(m, g)| {
                format!("{:.0} %", m / (g * 1000.0) * 100.0)
            })
        };
        println!(
            "{}: V2 shared memory, batching {}, conns {}: region → TensorFlow {} MB/s ({} B / mean batch_formation {:.1} µs over {n:.0} requests) = {} of memcpy, {} of pread; shm-bench --payload={}: memcpy {} MB/s, pread from /dev/shm into the arena {} MB/s, ring in-place {} MB/s",
            shape.name,
            r.batching,
            r.conns,
            mbps.map_or("-".into(), |m| format!("{m:.0}")),
            shape.input_bytes(),
            us,
            share("memcpy_gbps"),
            share("pread_gbps"),
            shape.input_bytes(),
            gbps("memcpy_gbps").map_or("-".into(), |g| format!("{:.0}", g * 1000.0)),
            gbps("pread_gbps").map_or("-".into(), |g| format!("{:.0}", g * 1000.0)),
            gbps("ring_inplace_gbps").map_or("-".into(), |g| format!("{:.0}", g * 1000.0)),
        );
        summary.insert(
            format!("shm batching {} c={}", r.batching, r.conns),
            json!({
                "region_to_tensorflow_mb_per_s": mbps, "batch_formation_us": us, "requests": n,
                "shm_bench_memcpy_mb_per_s": gbps("memcpy_gbps").map(|g| g * 1000.0),
                "shm_bench_pread_mb_per_s": gbps("pread_gbps").map(|g| g * 1000.0),
                "shm_bench_ring_inplace_mb_per_s": gbps("ring_inplace_gbps").map(|g| g * 1000.0),
            }),
        );
    }
    let json_floors: Vec<Value> = floors
        .iter()
        .map(|((path, conns), f)| {
            json!({"path": path.name(), "conns": conns, "p50_us": f.hist.value_at_quantile(0.5),
                   "rps": f.rps, "failed": f.failed})
        })
        .collect();
    json!({
        "shape": shape.name, "input_bytes": shape.input_bytes(),
        "output_bytes": shape.output_bytes(), "rows": json_rows, "floors": json_floors,
        "model_p50_us": model_p50, "summary": summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_splits_into_floor_model_and_overhead() {
        // 1000 µs served, 300 µs of floor, 200 µs of model: 500 µs added; 1.6 MB moved in
        // the 800 µs outside the model: 2000 MB/s.
        let sp = split(1000.0, 300.0, 200.0, 1_600_000);
        assert_eq!(sp.overhead_us, 500.0);
        assert_eq!(sp.mb_per_s, Some(2000.0));
        // A model slower than the row's p50 (noise) leaves no rate.
        assert_eq!(split(100.0, 50.0, 150.0, 10).mb_per_s, None);
    }

    #[test]
    fn shapes_have_the_issues_sizes() {
        let image = catalog("image").expect("image");
        assert_eq!((image.input_bytes(), image.output_bytes()), (602_112, 4000));
        assert_eq!(image.measure_input(), "image:float:224x224x3");
        let sequence = catalog("sequence").expect("sequence");
        assert_eq!(sequence.measure_input(), "tokens:int32:128");
        assert_eq!(sequence.output_bytes(), 128 * 768 * 4);
        assert_eq!(catalog("identity").map(|i| i.input_bytes()), Some(1 << 20));
        assert!(catalog("mlp").is_none());
    }
}
