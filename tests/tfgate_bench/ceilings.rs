//! The ceilings every served number is held against, measured in the same invocation:
//!
//! - the **model ceiling**: the SavedModel run in-process through the worker's own
//!   TensorFlow wrapper (`tfgate-worker --measure_model`), back to back, at the batch
//!   sizes the served runs formed, with the thread pools the server's flags give;
//! - the **HTTP ceilings** (`canned.rs`), measured like any served case;
//! - the **shared-memory transport's** throughput for one request's payload
//!   (`shm-bench --payload=BYTES`), for large tensors.
//!
//! Composed: at concurrency 1 a request cannot beat the HTTP ceiling's p50 plus the
//! model's p50 at its rows (the *floor*); under load the machine cannot serve more than
//! 1 / (1/HTTP ceiling + rows/model rows per second at the batch formed) requests per
//! second (the *composed ceiling*): both share the same cores.

use serde_json::Value;
use std::path::Path;

/// One batch size of the model ceiling.
#[derive(Clone, Debug)]
pub struct ModelPoint {
    pub batch: usize,
    pub rows_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// How the worker runs a batch this size (`inline` or `pool`), when it says.
    pub mode: String,
}

/// The model ceiling at `batches`, with the pools `server_flags` give a worker. `input`
/// is `tfgate-worker --measure_input`'s: `ALIAS:WIDTH` (float32 rows) or
/// `ALIAS:DTYPE:D1xD2x...` (the dimensions after the batch's).
pub fn model(
    bin_dir: &Path,
    model_version_dir: &Path,
    input: &str,
    batches: &[usize],
    server_flags: &[String],
) -> Vec<ModelPoint> {
    let list: Vec<String> = batches.iter().map(usize::to_string).collect();
    let pool = |flag: &str| {
        server_flags
            .iter()
            .find_map(|f| f.strip_prefix(flag))
            .unwrap_or("0")
            .to_string()
    };
    let cpus: Vec<String> = (0..std::thread::available_parallelism().map_or(1, |n| n.get()))
        .map(|c| c.to_string())
        .collect();
    let out = std::process::Command::new(bin_dir.join("tfgate-worker"))
        .arg(format!("--cpus={}", cpus.join(",")))
        .arg(format!(
            "--measure_intra_op={}",
            pool("--tensorflow_intra_op_parallelism=")
        ))
        .arg(format!(
            "--measure_inter_op={}",
            pool("--tensorflow_inter_op_parallelism=")
        ))
        .arg(format!("--measure_model={}", model_version_dir.display()))
        .arg(format!("--measure_input={input}"))
        .arg(format!("--measure_batches={}", list.join(",")))
        .arg("--measure_seconds=2")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => crate::fail(&format!("cannot run tfgate-worker --measure_model: {e}")),
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|m| ModelPoint {
            batch: m["batch"].as_u64().unwrap_or(0) as usize,
            rows_per_s: m["rows_per_s"].as_f64().unwrap_or(0.0),
            p50_us: m["p50_us"].as_f64().unwrap_or(0.0),
            p99_us: m["p99_us"].as_f64().unwrap_or(0.0),
            mode: m["mode"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// The model ceiling's rows/s at `rows` per batch: the measured point, or the two
/// around it interpolated (batches are measured at rounded mean sizes).
pub fn rows_per_s_at(points: &[ModelPoint], rows: f64) -> Option<f64> {
    let mut pts: Vec<&ModelPoint> = points.iter().filter(|p| p.rows_per_s > 0.0).collect();
    pts.sort_by_key(|p| p.batch);
    let below = pts.iter().rev().find(|p| p.batch as f64 <= rows);
    let above = pts.iter().find(|p| p.batch as f64 >= rows);
    match (below, above) {
        (Some(b), Some(a)) if a.batch != b.batch => {
            let f = (rows - b.batch as f64) / (a.batch - b.batch) as f64;
            Some(b.rows_per_s + f * (a.rows_per_s - b.rows_per_s))
        }
        (Some(p), _) | (None, Some(p)) => Some(p.rows_per_s),
        (None, None) => None,
    }
}

/// Requests per second the machine could serve if the gateway added nothing to the HTTP
/// stack: the HTTP ceiling's time per request plus the model's time for `rows_per_request`
/// rows at the batch formed.
pub fn composed(http_rps: f64, model_rows_per_s: f64, rows_per_request: usize) -> f64 {
    1.0 / (1.0 / http_rps + rows_per_request as f64 / model_rows_per_s)
}

/// The shared-memory transport's one-way throughput for a payload of `bytes`, GB/s
/// (`shm-bench --payload=BYTES`: the gateway's copy into the arena, read in place).
pub fn shm_gbps(bin_dir: &Path, bytes: usize) -> Option<f64> {
    shm_bench(bin_dir, bytes)?["ring_inplace_gbps"].as_f64()
}

/// `shm-bench --payload=BYTES`'s JSON line: `ring_inplace_gbps` (the gateway's copy into
/// the arena, read in place by the peer), `ring_gbps` (copied out too) and `memcpy_gbps`
/// (one plain memcpy of the payload in this process), GB/s.
pub fn shm_bench(bin_dir: &Path, bytes: usize) -> Option<Value> {
    let out = std::process::Command::new(bin_dir.join("shm-bench"))
        .arg(format!("--payload={bytes}"))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("payload_bytes").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(batch: usize, rows_per_s: f64) -> ModelPoint {
        ModelPoint {
            batch,
            rows_per_s,
            p50_us: 0.0,
            p99_us: 0.0,
            mode: String::new(),
        }
    }

    #[test]
    fn interpolates_between_measured_batches() {
        let pts = [point(1, 10_000.0), point(10, 100_000.0)];
        assert_eq!(rows_per_s_at(&pts, 1.0), Some(10_000.0));
        assert_eq!(rows_per_s_at(&pts, 5.5), Some(55_000.0));
        assert_eq!(rows_per_s_at(&pts, 40.0), Some(100_000.0));
        assert_eq!(rows_per_s_at(&[], 4.0), None);
    }

    #[test]
    fn composed_ceiling_adds_the_times() {
        // 10 µs of HTTP plus 25 µs of model per request: 1 / 35 µs.
        let c = composed(100_000.0, 40_000.0, 1);
        assert!((c - 1e6 / 35.0).abs() < 1e-6, "{c}");
    }
}
