//! codec-bench: how fast TF Serving's REST JSON codec (`gateway/src/rest/json`) reads and
//! writes tensors, on its own (no socket, no worker), for the payloads users send: an
//! image as `instances: images.tolist()` (TF Serving's REST tutorials), a model's
//! logits, a transformer's hidden states. Prints a table naming the machine, then one
//! JSON line. serde_json parsing the same body into a `Value` is printed beside as a
//! point of reference, not as a ceiling. Beside each float32 encode, the same values
//! written with `ryu` (the well-kept crate's shortest text) in the same layout: the
//! ceiling for printing that many floats on this machine (compare the µs; ryu's text
//! is shorter, and is not TF Serving's).
//!
//! `cargo build --release -p tfgate-e2e --bin codec-bench && target/release/codec-bench`

use std::hint::black_box;
use std::time::{Duration, Instant};

use tfgate::codec_bench::{rest_decode, rest_encode, rest_parse, v2_decode};
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

/// Deterministic values in [0, 1), as a float32 image normalised by 255 would hold.
fn values(n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// `vals` laid out as the encoder lays out a float32 tensor (rows of `row` values,
/// `, ` between them), each value as ryu's shortest text.
fn ryu_rows(vals: &[f32], row: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(vals.len() * 14);
    let mut text = ryu::Buffer::new();
    for chunk in vals.chunks(row.max(1)) {
        out.push(b'[');
        for (i, v) in chunk.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(text.format_finite(*v).as_bytes());
        }
        out.extend_from_slice(b"],\n");
    }
    out
}

/// Deterministic token ids below BERT's vocabulary size.
fn token_ids(n: usize) -> Vec<i32> {
    values(n).iter().map(|v| (v * 30522.0) as i32).collect()
}

/// `json.dumps({"instances": array.tolist()})` for an array of `shape`: Python turns
/// each float32 into a double and prints its shortest repr, with ", " between.
fn instances_body(shape: &[usize], vals: &[Number]) -> Vec<u8> {
    format!("{{\"instances\": {}}}", nested(shape, vals)).into_bytes()
}

/// A V2 infer body of one input `x` whose `data` is `array.tolist()`, as tritonclient's
/// JSON mode sends it.
fn v2_body(shape: &[usize], datatype: &str, vals: &[Number]) -> Vec<u8> {
    format!(
        "{{\"inputs\": [{{\"name\": \"x\", \"shape\": {shape:?}, \"datatype\": \"{datatype}\", \"data\": {}}}]}}",
        nested(shape, vals)
    )
    .into_bytes()
}

/// `array.tolist()` of an array of `shape`, as `json.dumps` prints it.
fn nested(shape: &[usize], vals: &[Number]) -> String {
    fn nest(out: &mut String, shape: &[usize], vals: &[Number], at: &mut usize) {
        out.push('[');
        for i in 0..shape[0] {
            if i > 0 {
                out.push_str(", ");
            }
            if shape.len() == 1 {
                match vals[*at] {
                    Number::Float(v) => {
                        let v = f64::from(v);
                        if v == v.trunc() {
                            out.push_str(&format!("{v:.1}"));
                        } else {
                            out.push_str(&format!("{v}"));
                        }
                    }
                    Number::Int(v) => out.push_str(&v.to_string()),
                }
                *at += 1;
            } else {
                nest(out, &shape[1..], vals, at);
            }
        }
        out.push(']');
    }
    let mut out = String::new();
    nest(&mut out, shape, vals, &mut 0);
    out
}

/// One element of a generated body.
#[derive(Clone, Copy)]
enum Number {
    Float(f32),
    Int(i32),
}

/// `n` elements of `dtype` (float32 or int32).
fn elements(dtype: DataType, n: usize) -> Vec<Number> {
    match dtype {
        DataType::Int32 => token_ids(n).into_iter().map(Number::Int).collect(),
        _ => values(n).into_iter().map(Number::Float).collect(),
    }
}

/// The median time of `f` over repeated runs for about `budget` (at least 5 runs).
fn median(budget: Duration, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

struct Row {
    what: String,
    bytes: usize,
    took: Duration,
}

impl Row {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.took.as_secs_f64() / 1e6
    }
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("CODEC_BENCH_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1500),
    );
    let mut rows = Vec::new();

    // Decoding: what the REST front end does with a body before it reaches a worker.
    let payloads: [(&str, DataType, Vec<usize>); 4] = [
        (
            "image 1x224x224x3 float32",
            DataType::Float,
            vec![1, 224, 224, 3],
        ),
        ("MLP row 1x64 float32", DataType::Float, vec![1, 64]),
        ("token ids 1x128 int32", DataType::Int32, vec![1, 128]),
        ("1 MiB float32 (4096x64)", DataType::Float, vec![4096, 64]),
    ];
    // CODEC_BENCH_ONLY=text runs only the rows whose payload names contain it (for a
    // profile of one of them).
    let only = std::env::var("CODEC_BENCH_ONLY").unwrap_or_default();
    for (name, dtype, shape) in payloads.iter().filter(|p| p.0.contains(&only)) {
        let n: usize = shape.iter().product();
        let vals = elements(*dtype, n);
        let body = instances_body(shape, &vals);
        let t = rest_decode(&body, "x", *dtype).expect("the body decodes");
        assert_eq!(t.shape, shape.iter().map(|&d| d as i64).collect::<Vec<_>>());
        let took = median(budget, || {
            black_box(rest_decode(black_box(&body), "x", *dtype).ok());
        });
        rows.push(Row {
            what: format!("decode {name}"),
            bytes: body.len(),
            took,
        });
        let took = median(budget, || {
            black_box(rest_parse(black_box(&body)).ok());
        });
        rows.push(Row {
            what: "  (the general path's document alone)".into(),
            bytes: body.len(),
            took,
        });
        let took = median(budget, || {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).ok());
        });
        rows.push(Row {
            what: "  (serde_json into a Value, for reference)".into(),
            bytes: body.len(),
            took,
        });
        // The same tensor as KServe V2 JSON `data`.
        let datatype = if *dtype == DataType::Int32 {
            "INT32"
        } else {
            "FP32"
        };
        let v2: &'static [u8] = Box::leak(v2_body(shape, datatype, &vals).into_boxed_slice());
        v2_decode(v2, false).expect("the V2 body decodes");
        for (what, as_values) in [
            (format!("decode V2 JSON {name}"), false),
            ("  (its head read as one Value, as before)".into(), true),
        ] {
            let took = median(budget, || {
                black_box(v2_decode(black_box(v2), as_values).ok());
            });
            rows.push(Row {
                what,
                bytes: v2.len(),
                took,
            });
        }
    }

    // Encoding: what the REST front end does with a worker's answer.
    let outputs: [(&str, DataType, Vec<usize>); 4] = [
        ("logits 1x1000 float32", DataType::Float, vec![1, 1000]),
        (
            "hidden states 1x128x768 float32",
            DataType::Float,
            vec![1, 128, 768],
        ),
        ("1 MiB float32 (4096x64)", DataType::Float, vec![4096, 64]),
        ("1 MiB int32 (4096x64)", DataType::Int32, vec![4096, 64]),
    ];
    for (name, dtype, shape) in outputs.iter().filter(|p| p.0.contains(&only)) {
        let n: usize = shape.iter().product();
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let t = match dtype {
            DataType::Int32 => {
                let bytes: Vec<u8> = token_ids(n).iter().flat_map(|v| v.to_le_bytes()).collect();
                Tensor::new(DataType::Int32, dims, TensorData::Bytes(bytes.into()))
            }
            _ => Tensor::from_f32(dims, &values(n)),
        }
        .expect("tensor");
        let outs = [("y".to_string(), t)];
        let body = rest_encode(&outs, true).expect("encodes");
        let took = median(budget, || {
            black_box(rest_encode(black_box(&outs), true).ok());
        });
        rows.push(Row {
            what: format!("encode {name}"),
            bytes: body.len(),
            took,
        });
        if *dtype == DataType::Float {
            let vals = values(n);
            let row = shape.last().copied().unwrap_or(1);
            let bytes = ryu_rows(&vals, row).len();
            let took = median(budget, || {
                black_box(ryu_rows(black_box(&vals), row));
            });
            rows.push(Row {
                what: "  (the same floats by ryu, shortest: a ceiling)".into(),
                bytes,
                took,
            });
        }
    }

    println!("machine: {}", tfgate_e2e::machine());
    println!(
        "{:<46} {:>11} {:>10} {:>9}",
        "TF Serving REST JSON codec", "JSON bytes", "median µs", "MB/s"
    );
    for r in &rows {
        println!(
            "{:<46} {:>11} {:>10.1} {:>9.1}",
            r.what,
            r.bytes,
            r.took.as_secs_f64() * 1e6,
            r.mbps()
        );
    }
    println!("(MB/s: JSON bytes read or written per second; medians over {budget:?} each)");
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"what\":{:?},\"bytes\":{},\"us\":{:.1},\"mbps\":{:.1}}}",
                r.what.trim(),
                r.bytes,
                r.took.as_secs_f64() * 1e6,
                r.mbps()
            )
        })
        .collect();
    println!("{{\"codec\":[{}]}}", json.join(","));
}
