//! The model ceiling for benchmarks: how fast this worker's TensorFlow wrapper runs a
//! SavedModel in-process, with nothing around it — the same load and session run the
//! worker serves with, fed float32 `[batch, width]` inputs, back to back. Each batch size is
//! run both inline and on the inter-op pool (`run_mode.rs`), and the faster is the ceiling,
//! since the worker serves with whichever it finds faster. `tfgate-worker
//! --measure_model=DIR` prints one JSON line per batch size; `tfgate-bench` quotes it
//! beside the served numbers.

use crate::loader::Servable;
use crate::run_mode::RunMode;
use crate::signature::run_signature_in;
use crate::tf::Feed;
use std::time::{Duration, Instant};
use tfgate_proto::control::SessionConfig;
use tfgate_tensor::tensor::Tensor;

/// What to measure.
pub struct Ceiling {
    pub model_dir: String,
    pub input: String,
    pub width: usize,
    pub batches: Vec<usize>,
    pub duration: Duration,
    pub config_proto: Vec<u8>,
}

/// One mode's measurement at one batch size.
struct Measured {
    runs: usize,
    rows_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Runs each batch size for `duration` in each mode (after a short warm-up) and prints
/// `{"batch":B,"runs":N,"rows_per_s":R,"p50_us":P,"p99_us":Q,"mode":M,"other_p50_us":O}`
/// lines, for the faster mode M (by p50).
pub fn measure(c: &Ceiling) -> anyhow::Result<()> {
    let session = SessionConfig {
        tags: vec!["serve".into()],
        config_proto: c.config_proto.clone(),
    };
    let servable = Servable::load(1, &c.model_dir, &session)?;
    for &batch in &c.batches {
        let values: Vec<f32> = (0..batch * c.width)
            .map(|i| (i % 7) as f32 * 0.25)
            .collect();
        let input = Tensor::from_f32(vec![batch as i64, c.width as i64], &values)?;
        let mut results = Vec::new();
        for mode in [RunMode::Inline, RunMode::Pool] {
            let run = || {
                run_signature_in(
                    &servable,
                    "",
                    vec![(c.input.clone(), Feed::Copy(input.clone()))],
                    &[],
                    0,
                    mode,
                )
            };
            let warm = Instant::now();
            while warm.elapsed() < Duration::from_millis(300) {
                run()?;
            }
            let mut times = Vec::new();
            let started = Instant::now();
            while started.elapsed() < c.duration {
                let t = Instant::now();
                run()?;
                times.push(t.elapsed().as_nanos() as u64);
            }
            let secs = started.elapsed().as_secs_f64();
            times.sort_unstable();
            let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
            results.push((
                mode,
                Measured {
                    runs: times.len(),
                    rows_per_s: (times.len() * batch) as f64 / secs,
                    p50_us: pct(0.5),
                    p99_us: pct(0.99),
                },
            ));
        }
        results.sort_by(|a, b| a.1.p50_us.total_cmp(&b.1.p50_us));
        let (mode, best) = &results[0];
        let other = results.get(1).map_or(0.0, |(_, m)| m.p50_us);
        println!(
            "{{\"batch\":{batch},\"runs\":{},\"rows_per_s\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\"mode\":\"{}\",\"other_p50_us\":{other:.1}}}",
            best.runs,
            best.rows_per_s,
            best.p50_us,
            best.p99_us,
            mode.name()
        );
    }
    Ok(())
}
