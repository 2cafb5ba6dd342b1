//! Entry points for the in-process fuzz targets (`fuzz/`, docs/fuzzing.md). Each runs one
//! of the gateway's parsers on untrusted bytes the way the server runs it and asserts
//! what must hold of what it accepts; a panic is a finding. Public only so that the
//! cargo-fuzz crate can link them: nothing in the server calls them.

use crate::rest::json;
use crate::text_format;
use prost::Message;
use tfgate_proto::tensorflow::serving::{MonitoringConfig, SslConfig};
use tfgate_proto::tensorflow::Example;
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

/// The dtypes REST bodies are decoded into (one-input signatures are tried with each).
const REST_DTYPES: &[DataType] = &[
    DataType::Float,
    DataType::Double,
    DataType::Int32,
    DataType::Uint8,
    DataType::Int16,
    DataType::Int8,
    DataType::String,
    DataType::Int64,
    DataType::Bool,
    DataType::Bfloat16,
    DataType::Uint16,
    DataType::Half,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Complex64,
];

/// A `:predict` body (`rest/json`: the parser, then `decode_predict` against a
/// signature of one input `x` of each dtype, and of inputs `x`, `s`, `i`, `b` of several
/// dtypes). What decodes must be consistent tensors, and what the encoder makes of them
/// as outputs must parse again. The server's reader (`PredictBody`, which skips the
/// document for a body of numbers only) must answer exactly as the document does.
pub fn rest_predict(body: &[u8]) {
    let doc = match json::parse(body) {
        Ok(doc) => doc,
        Err(e) => {
            // The reader, whatever it guesses, fails as the document does.
            for dtype in [None, Some(DataType::Float)] {
                let read = json::PredictBody::read(body, |_| dtype).err();
                assert_eq!(
                    read.as_ref(),
                    Some(&e),
                    "the reader reads {:?}",
                    lossy(body)
                );
            }
            return;
        }
    };
    let mut signatures: Vec<Vec<(String, DataType)>> = REST_DTYPES
        .iter()
        .map(|d| vec![("x".to_string(), *d)])
        .collect();
    signatures.push(vec![
        ("x".to_string(), DataType::Float),
        ("s".to_string(), DataType::String),
        ("i".to_string(), DataType::Int64),
        ("b".to_string(), DataType::Bool),
    ]);
    for signature in &signatures {
        let decoded = json::decode_predict(&doc, signature);
        // The reader told the signature's dtype (as the server tells it), and told
        // float whatever the signature (a guess that decoding must correct).
        let dtype = match signature.as_slice() {
            [(_, d)] => Some(*d),
            _ => None,
        };
        for guess in [dtype, Some(DataType::Float)] {
            let read = json::PredictBody::read(body, |_| guess);
            let read = match read {
                Ok(read) => read,
                Err(e) => panic!("the reader refuses {:?}: {e:?}", lossy(body)),
            };
            assert_eq!(
                read.decode(signature),
                decoded,
                "the reader decodes {:?} otherwise",
                lossy(body)
            );
        }
        let Ok(decoded) = decoded else {
            continue;
        };
        for (name, t) in &decoded.inputs {
            if let Err(e) = t.check() {
                panic!("decoded input {name} is inconsistent: {e}");
            }
        }
        let Ok(out) = json::encode_predict(decoded.format, &decoded.inputs) else {
            continue;
        };
        if let Err(e) = json::parse(&out) {
            panic!(
                "the encoder wrote JSON its parser refuses ({}): {}",
                e.message,
                String::from_utf8_lossy(&out)
            );
        }
        round_trip(&decoded, &out, signature);
    }
}

/// The second oracle of `rest_predict`: the response the encoder writes for the decoded
/// tensors, sent back as a request (its one key renamed: `predictions` → `instances`,
/// `outputs` → `inputs`), decodes to the same tensors. Values compare exactly, except
/// that a NaN only stays a NaN (JSON has one) and a `double` may move by a few ulps,
/// since TF Serving parses without rapidjson's full-precision flag.
fn round_trip(decoded: &json::PredictJson, out: &[u8], signature: &[(String, DataType)]) {
    // Row format with one tensor is written as bare values, which a signature of
    // several inputs cannot take back (it needs named objects): not a round trip.
    if decoded.format == json::PredictFormat::Row
        && decoded.inputs.len() == 1
        && signature.len() > 1
    {
        return;
    }
    let (from, to): (&[u8], &[u8]) = match decoded.format {
        json::PredictFormat::Row => (b"\"predictions\"", b"\"instances\""),
        json::PredictFormat::Columnar => (b"\"outputs\"", b"\"inputs\""),
    };
    let Some(at) = out.windows(from.len()).position(|w| w == from) else {
        panic!(
            "no {} key in {}",
            String::from_utf8_lossy(from),
            String::from_utf8_lossy(out)
        );
    };
    let mut again = Vec::with_capacity(out.len());
    again.extend_from_slice(&out[..at]);
    again.extend_from_slice(to);
    again.extend_from_slice(&out[at + from.len()..]);
    let redecoded = json::parse(&again)
        .and_then(|doc| json::decode_predict(&doc, signature))
        .unwrap_or_else(|e| {
            panic!(
                "the encoder's JSON does not decode back ({}): {}",
                e.message,
                String::from_utf8_lossy(&again)
            )
        });
    let mut want: Vec<&(String, Tensor)> = decoded.inputs.iter().collect();
    let mut got: Vec<&(String, Tensor)> = redecoded.inputs.iter().collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let names = |v: &[&(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&want), names(&got), "inputs after a round trip");
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        assert_eq!(a.dtype, b.dtype, "{name}: dtype after a round trip");
        assert_eq!(a.shape, b.shape, "{name}: shape after a round trip");
        if !same_values(a, b) {
            panic!("{name}: values after a round trip: {a:?} became {b:?}");
        }
    }
}

/// Element-wise equality as a JSON round trip keeps it (see [`round_trip`]).
fn same_values(a: &Tensor, b: &Tensor) -> bool {
    match (&a.data, &b.data) {
        (TensorData::Strings(x), TensorData::Strings(y)) => x == y,
        (TensorData::Bytes(x), TensorData::Bytes(y)) if x.len() == y.len() => match a.dtype {
            DataType::Float | DataType::Complex64 => x
                .chunks_exact(4)
                .zip(y.chunks_exact(4))
                .all(|(p, q)| same_float(f32_of(p).into(), f32_of(q).into(), 0)),
            DataType::Double => x
                .chunks_exact(8)
                .zip(y.chunks_exact(8))
                .all(|(p, q)| same_float(f64_of(p), f64_of(q), 4)),
            DataType::Half | DataType::Bfloat16 => {
                let nan = |h: u16| match a.dtype {
                    DataType::Half => h & 0x7c00 == 0x7c00 && h & 0x03ff != 0,
                    _ => h & 0x7f80 == 0x7f80 && h & 0x007f != 0,
                };
                x.chunks_exact(2).zip(y.chunks_exact(2)).all(|(p, q)| {
                    let (p, q) = (
                        u16::from_le_bytes([p[0], p[1]]),
                        u16::from_le_bytes([q[0], q[1]]),
                    );
                    p == q || (nan(p) && nan(q))
                })
            }
            _ => x == y,
        },
        _ => false,
    }
}

fn f32_of(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn f64_of(b: &[u8]) -> f64 {
    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Equal, both NaN, or (finite, same sign) at most `ulps` apart.
fn same_float(p: f64, q: f64, ulps: u64) -> bool {
    if p == q && p.is_sign_negative() == q.is_sign_negative() {
        return true;
    }
    if p.is_nan() && q.is_nan() {
        return true;
    }
    p.is_finite()
        && q.is_finite()
        && p.is_sign_negative() == q.is_sign_negative()
        && p.to_bits().abs_diff(q.to_bits()) <= ulps
}

/// A `:classify` / `:regress` body (`decode_examples`): every example it makes, and the
/// context, must be a `tensorflow.Example` that decodes.
pub fn rest_examples(body: &[u8]) {
    let Ok(doc) = json::parse(body) else {
        return;
    };
    let Ok(decoded) = json::decode_examples(&doc) else {
        return;
    };
    for e in decoded.examples.iter().chain(decoded.context.iter()) {
        if let Err(err) = Example::decode(e.as_slice()) {
            panic!("an encoded Example does not decode: {err}");
        }
    }
}

/// Text-format configs, the first byte choosing which: `--model_config_file` (then what
/// the server checks of the model list), `--batching_parameters_file`,
/// `--monitoring_config_file`, `--ssl_config_file` (then the certificate checks). Only
/// "no panic" holds; what parses is checked as the server checks it.
pub fn text_config(data: &[u8]) {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    match which % 4 {
        0 => {
            let Ok(config) = crate::model_config::parse(text) else {
                return;
            };
            let _ = text_format::debug_string("tensorflow.serving.ModelServerConfig", &config);
            if let Some(models) = crate::model_config::model_list(&config) {
                let _ = crate::model_config::validate_list(models);
                for m in models {
                    let _ = crate::model_config::platform(m);
                    let _ = crate::model_config::served_model(m);
                }
            }
        }
        1 => {
            let _ = crate::batching::Parameters::parse(text, "fuzz");
        }
        2 => {
            if let Ok(config) =
                text_format::parse::<MonitoringConfig>("tensorflow.serving.MonitoringConfig", text)
            {
                let _ = crate::monitoring::config::path_of(config);
            }
        }
        _ => {
            if let Ok(ssl) = text_format::parse::<SslConfig>("tensorflow.serving.SSLConfig", text) {
                let _ = crate::tls::Tls::new(ssl);
            }
        }
    }
}

/// A float's or double's bits (the first 4 bytes, the first 8): `WriteDecimal`'s fast
/// path (`rest/json/float.rs`) must print exactly what the literal algorithm prints.
pub fn write_decimal(data: &[u8]) {
    use crate::rest::json::float::{decimal_f32, decimal_f64, literal_f32, literal_f64};
    if let Some(b) = data.first_chunk::<4>() {
        let v = f32::from_le_bytes(*b);
        let (fast, literal) = (decimal_f32(v), literal_f32(v));
        assert_eq!(&*fast, &*literal, "float {v:e} ({:#x})", v.to_bits());
    }
    if let Some(b) = data.first_chunk::<8>() {
        let v = f64::from_le_bytes(*b);
        let (fast, literal) = (decimal_f64(v), literal_f64(v));
        assert_eq!(&*fast, &*literal, "double {v:e} ({:#x})", v.to_bits());
    }
}

pub use crate::rest::route::{GET_PATTERN, POST_PATTERN};

/// What the REST router makes of a path: the POST and GET matches (for the fuzz target
/// to hold against TF Serving's regexes), after routing it as both methods, which must
/// not panic.
pub fn rest_route(
    path: &str,
) -> (
    Option<crate::rest::route::PostCaptures<'_>>,
    Option<crate::rest::route::GetCaptures<'_>>,
) {
    use crate::rest::route;
    let _ = route::parse(&hyper::Method::POST, path);
    let _ = route::parse(&hyper::Method::GET, path);
    (route::match_post(path), route::match_get(path))
}

/// A KServe V2 REST infer body (`v2/rest.rs::decode_request`) with its
/// `Inference-Header-Content-Length`, chosen by the first byte: 0 none, 1 `0` (a raw
/// binary request), else the next two bytes (little-endian) as the JSON header's length.
/// Shared memory is off, so a region named anywhere is refused. What decodes must account
/// for every byte (the binary inputs claim exactly what follows the JSON), and its inputs,
/// decoded against a signature of the datatypes and shapes they declare, must make
/// consistent tensors. The decoder here is the oracle a faster one must agree with.
pub fn v2_infer(data: &[u8]) {
    use crate::v2::infer::{Given, InputData};
    use crate::v2::rest::{decode_request, decode_request_as_values, summary};
    use crate::v2::{datatype, shared_memory::Registry};
    use tfgate_proto::tensorflow::TensorShapeProto;
    use tfgate_proto::tensorflow::{tensor_shape_proto::Dim, SignatureDef, TensorInfo};

    let (header, body) = match data {
        [] => return,
        [0, rest @ ..] => (None, rest),
        [1, rest @ ..] => (Some("0".to_string()), rest),
        [_, a, b, rest @ ..] => (Some(u16::from_le_bytes([*a, *b]).to_string()), rest),
        _ => return,
    };
    // Numbers read without a `Value` each decode as the `Value`s do.
    let both = [decode_request, decode_request_as_values].map(|decode| {
        let body = bytes::Bytes::copy_from_slice(body);
        summary(decode(
            header.as_deref(),
            body,
            &Registry::default(),
            1 << 20,
        ))
    });
    assert_eq!(both[0], both[1], "the head's numbers read otherwise");
    let Ok(request) = decode_request(
        header.as_deref(),
        bytes::Bytes::copy_from_slice(body),
        &Registry::default(),
        1 << 20,
    ) else {
        return;
    };
    assert!(request.wanted.iter().all(|w| w.region.is_none()));
    let Given::Listed(inputs) = request.inputs else {
        let Given::Raw(raw) = request.inputs else {
            unreachable!()
        };
        assert_eq!(raw.len(), body.len(), "a raw request is the whole body");
        return;
    };
    let json_len = header.map_or(body.len(), |h| h.parse().unwrap_or(usize::MAX));
    let claimed: usize = inputs
        .iter()
        .map(|i| match &i.data {
            InputData::Raw(b) => b.len(),
            InputData::Packed(_) | InputData::Region(..) => 0,
        })
        .sum();
    assert_eq!(
        claimed,
        body.len() - json_len,
        "binary inputs claim exactly the bytes after the JSON"
    );
    let mut signature = SignatureDef::default();
    for i in &inputs {
        let Some(dtype) = datatype::parse(&i.datatype) else {
            continue;
        };
        let dim = i.shape.iter().map(|&size| Dim {
            size,
            name: String::new(),
        });
        signature.inputs.insert(
            i.name.clone(),
            TensorInfo {
                dtype: dtype as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: dim.collect(),
                    unknown_rank: false,
                }),
                ..Default::default()
            },
        );
    }
    if let Ok(tensors) = crate::request::DecodeInputs::decode(Given::Listed(inputs), &signature) {
        for (name, t) in tensors {
            if let Err(e) = t.check() {
                panic!("decoded input {name} is inconsistent: {e}");
            }
        }
    }
}

fn lossy(body: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(body)
}

#[cfg(test)]
mod tests {
    /// The committed seeds (`fuzz/seeds/TARGET`) run through each target's checks in
    /// every `cargo test`, so an oracle that stops holding on a plain input fails CI, not
    /// only a fuzzing run.
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(target);
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("a seed directory entry").path();
                let bytes = std::fs::read(&path).expect("a seed file");
                (path.display().to_string(), bytes)
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out
    }

    #[test]
    fn the_seeds_hold_every_oracle() {
        for (target, run) in [
            ("rest_predict", super::rest_predict as fn(&[u8])),
            ("rest_examples", super::rest_examples),
            ("text_config", super::text_config),
            ("write_decimal", super::write_decimal),
            ("v2_infer", super::v2_infer),
        ] {
            for (name, bytes) in seeds(target) {
                eprintln!("{name}");
                run(&bytes);
            }
        }
    }
}
