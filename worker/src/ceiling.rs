//! The model ceiling for benchmarks: how fast this worker's TensorFlow wrapper runs a
//! SavedModel in-process, with nothing around it — the same load and session run the
//! worker serves with, fed one input of `[batch, ...]` (float32 or int32, see
//! [`InputSpec`]), back to back. Each batch size is run both inline and on the inter-op
//! pool (`run_mode.rs`), and the faster is the ceiling, since the worker serves with
//! whichever it finds faster. `tfgate-worker --measure_model=DIR` prints one JSON line per
//! batch size; `tfgate-bench` quotes it beside the served numbers.

use crate::loader::Servable;
use crate::run_mode::RunMode;
use crate::signature::run_signature_in;
use crate::tf::Feed;
use anyhow::{bail, Context};
use std::time::{Duration, Instant};
use tfgate_proto::control::SessionConfig;
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

/// The input fed, from `--measure_input`: `ALIAS:WIDTH` (float32 `[batch, WIDTH]`, the
/// MLP's form) or `ALIAS:DTYPE:D1xD2x...` (`[batch, D1, D2, ...]`; DTYPE `float` or
/// `int32`), so that models of any shape (images, token ids) have a ceiling too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub alias: String,
    pub dtype: DataType,
    /// The dimensions after the batch's.
    pub dims: Vec<i64>,
}

impl InputSpec {
    pub fn parse(s: &str) -> anyhow::Result<InputSpec> {
        let usage = "--measure_input is ALIAS:WIDTH or ALIAS:DTYPE:D1xD2x...";
        let parts: Vec<&str> = s.split(':').collect();
        let (alias, dtype, dims) = match parts.as_slice() {
            [alias, width] => (*alias, DataType::Float, *width),
            [alias, dtype, dims] => {
                let dtype = match *dtype {
                    "float" | "float32" => DataType::Float,
                    "int32" => DataType::Int32,
                    other => bail!("--measure_input: dtype {other:?} is not float or int32"),
                };
                (*alias, dtype, *dims)
            }
            _ => bail!(usage),
        };
        if alias.is_empty() {
            bail!(usage);
        }
        let dims = dims
            .split('x')
            .filter(|d| !d.is_empty())
            .map(|d| {
                d.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|&d| d > 0)
                    .with_context(|| format!("--measure_input: dimension {d:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(InputSpec {
            alias: alias.to_string(),
            dtype,
            dims,
        })
    }

    /// The input for a batch of `batch`: floats cycling through a few exact values, or
    /// int32 ids below 1000 (valid in any embedding of a vocabulary that large).
    pub fn tensor(&self, batch: usize) -> anyhow::Result<Tensor> {
        let shape: Vec<i64> = std::iter::once(batch as i64)
            .chain(self.dims.iter().copied())
            .collect();
        let elements = tfgate_tensor::tensor::num_elements(&shape)?;
        let bytes: Vec<u8> = match self.dtype {
            DataType::Int32 => (0..elements)
                .flat_map(|i| ((i % 1000) as i32).to_le_bytes())
                .collect(),
            _ => (0..elements)
                .flat_map(|i| ((i % 7) as f32 * 0.25).to_le_bytes())
                .collect(),
        };
        Ok(Tensor::new(
            self.dtype,
            shape,
            TensorData::Bytes(bytes.into()),
        )?)
    }
}

/// What to measure.
pub struct Ceiling {
    pub model_dir: String,
    pub input: InputSpec,
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
        let input = c.input.tensor(batch)?;
        let mut results = Vec::new();
        for mode in [RunMode::Inline, RunMode::Pool] {
            let run = || {
                run_signature_in(
                    &servable,
                    "",
                    vec![(c.input.alias.clone(), Feed::Copy(input.clone()))],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_specs_parse_in_both_forms() {
        let mlp = InputSpec::parse("x:64").unwrap();
        assert_eq!(
            (mlp.alias.as_str(), mlp.dtype, mlp.dims),
            ("x", DataType::Float, vec![64])
        );
        let image = InputSpec::parse("image:float:224x224x3").unwrap();
        assert_eq!(
            (image.dtype, image.dims),
            (DataType::Float, vec![224, 224, 3])
        );
        let t = InputSpec::parse("tokens:int32:128")
            .unwrap()
            .tensor(2)
            .unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (DataType::Int32, vec![2, 128]));
        let TensorData::Bytes(b) = &t.data else {
            panic!("int32 is bytes")
        };
        let last = i32::from_le_bytes([b[252 * 4], b[252 * 4 + 1], b[252 * 4 + 2], b[252 * 4 + 3]]);
        assert_eq!(last, 252);
        for bad in ["x", "x:0", "x:bool:3", ":64", "x:float:3xy", "a:b:c:d"] {
            assert!(InputSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
