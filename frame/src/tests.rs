//! Round trips, rejection of inconsistent tensors, and fuzzing of the decoder against
//! arbitrary bytes behind arbitrary descriptors.

use super::*;
use shm_protocol::{Frame, Region};

fn region(len: usize) -> Region {
    Region::scratch(len).unwrap()
}

pub(crate) fn sample_request() -> RequestFrame {
    RequestFrame {
        deadline_ns: 1234,
        kind: RequestKind::Predict,
        model_name: "half_plus_two".into(),
        version: Some(123),
        signature_name: "serving_default".into(),
        output_filter: vec!["y".into()],
        inputs: vec![
            (
                "x".into(),
                Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
            ),
            (
                "s".into(),
                Tensor::new(
                    DataType::String,
                    vec![3],
                    TensorData::Strings(vec![b"".to_vec(), vec![0xff, 0, 7], b"hello".to_vec()]),
                )
                .unwrap(),
            ),
            (
                "scalar".into(),
                Tensor::new(
                    DataType::Int64,
                    vec![],
                    TensorData::Bytes(vec![9; 8].into()),
                )
                .unwrap(),
            ),
            (
                "empty".into(),
                Tensor::new(
                    DataType::Int32,
                    vec![0, 5],
                    TensorData::Bytes(vec![].into()),
                )
                .unwrap(),
            ),
        ],
    }
}

#[test]
fn request_round_trip() {
    let r = region(1 << 16);
    let f = sample_request();
    let e = f.encode().unwrap();
    e.write(&r, 128).unwrap();
    let v = decode_request(&r, 128, e.len()).unwrap();
    assert_eq!(v.to_frame().unwrap(), f);
    let s = &v.inputs[1].1;
    assert_eq!(s.string_count(), Some(3));
    assert_eq!(s.string(1).unwrap(), vec![0xff, 0, 7]);
    assert_eq!(s.byte_len(), 8);
    let x = &v.inputs[0].1;
    let mut dst = vec![0u8; x.byte_len()];
    x.copy_to(&mut dst).unwrap();
    assert_eq!(&dst[..4], &1.0f32.to_le_bytes());
    assert!(x.copy_to(&mut [0u8; 3]).is_err());
    assert!(x.string(0).is_err());
}

#[test]
fn response_round_trip() {
    let r = region(1 << 16);
    let t = Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]).unwrap();
    let outs = [("y", TensorRef::from(&t))];
    let timing = WorkerTiming {
        received_ns: 1,
        run_ns: 2,
        replied_ns: 3,
    };
    let e = ResponseRef::Ok {
        model_version: 5,
        outputs: &outs,
        timing,
    }
    .encode()
    .unwrap();
    e.write(&r, 0).unwrap();
    let got = decode_response(&r, 0, e.len()).unwrap();
    assert_eq!(
        got,
        ResponseFrame::Ok {
            model_version: 5,
            outputs: vec![("y".into(), t)],
            timing,
        }
    );
    let e = ResponseRef::Err {
        code: Code::InvalidArgument,
        message: "bad",
    }
    .encode()
    .unwrap();
    e.write(&r, 4096).unwrap();
    assert_eq!(
        decode_response(&r, 4096, e.len()).unwrap(),
        ResponseFrame::Err {
            code: Code::InvalidArgument,
            message: "bad".into()
        }
    );
    // A request is not a response.
    let e = sample_request();
    let e = e.encode().unwrap();
    e.write(&r, 0).unwrap();
    assert!(matches!(
        decode_response(&r, 0, e.len()),
        Err(FrameError::WrongKind { .. })
    ));
}

#[test]
fn encode_rejects_inconsistent_tensors() {
    let mut f = sample_request();
    f.inputs[0].1.shape = vec![5];
    assert!(matches!(f.encode(), Err(FrameError::Tensor { .. })));
    let mut f = sample_request();
    f.inputs[0].1.shape = vec![1; 33];
    assert!(matches!(f.encode(), Err(FrameError::RankTooLarge { .. })));
}

/// Mutates encoded frames byte by byte (and with random garbage) and decodes them:
/// every outcome must be Ok or a FrameError, never a panic or an out-of-bounds read.
#[test]
fn fuzz_decoder_never_panics() {
    let len = 1 << 14;
    let r = region(len);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let f = sample_request();
    let e = f.encode().unwrap();
    let t = Tensor::new(
        DataType::String,
        vec![2],
        TensorData::Strings(vec![b"ab".to_vec(), b"c".to_vec()]),
    )
    .unwrap();
    let outs = [("o", TensorRef::from(&t))];
    let re = ResponseRef::Ok {
        model_version: 1,
        outputs: &outs,
        timing: WorkerTiming::default(),
    }
    .encode()
    .unwrap();
    let mut clean_req = vec![0u8; e.len() as usize];
    e.write(&r, 0).unwrap();
    r.read_into(0, &mut clean_req).unwrap();
    let mut clean_resp = vec![0u8; re.len() as usize];
    re.write(&r, 0).unwrap();
    r.read_into(0, &mut clean_resp).unwrap();

    let mut ok = 0;
    let cases = 120_000u32;
    for case in 0..cases {
        let (clean, is_req) = if case % 3 == 0 {
            (&clean_resp, false)
        } else {
            (&clean_req, true)
        };
        let mut buf = clean.clone();
        match case % 4 {
            0 => {
                // Flip a few random bytes.
                for _ in 0..1 + rnd() % 4 {
                    let i = (rnd() as usize) % buf.len();
                    buf[i] = rnd() as u8;
                }
            }
            1 => {
                // Overwrite an aligned u64 with an interesting value.
                let i = ((rnd() as usize) % (buf.len() / 8)) * 8;
                let vals = [
                    0u64,
                    1,
                    63,
                    64,
                    u64::MAX,
                    u64::MAX - 63,
                    1 << 40,
                    len as u64,
                    rnd(),
                ];
                let v = vals[(rnd() as usize) % vals.len()];
                buf[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            2 => {
                // Fuzz the metadata region only (postcard varints, names, shapes).
                let meta_off = u64::from_le_bytes(buf[8..16].try_into().unwrap()) as usize;
                if meta_off < buf.len() {
                    let i = meta_off + (rnd() as usize) % (buf.len() - meta_off);
                    buf[i] = rnd() as u8;
                }
            }
            _ => {
                // Random garbage with a valid magic/kind.
                for b in buf.iter_mut().skip(8) {
                    *b = rnd() as u8;
                }
            }
        }
        r.write_from(0, &buf).unwrap();
        // Random descriptor length, sometimes past the arena end.
        let dlen = match rnd() % 4 {
            0 => rnd() % (2 * len as u64),
            1 => u64::MAX - rnd() % 128,
            _ => buf.len() as u64,
        };
        let doff = if rnd() % 8 == 0 { rnd() } else { 0 };
        if is_req {
            if let Ok(v) = decode_request(&r, doff, dlen) {
                ok += 1;
                for (_, t) in &v.inputs {
                    let _ = t.to_tensor();
                    for i in 0..t.string_count().unwrap_or(0).min(4) {
                        let _ = t.string(i);
                    }
                }
            }
        } else if decode_response(&r, doff, dlen).is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 0 && ok < cases as usize, "{ok}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 100_000,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Arbitrary bytes behind an arbitrary descriptor: decoding returns a value or a
    /// FrameError, never panics, and never reads outside the arena. Half the cases keep
    /// a valid frame header so the fuzzing reaches the metadata and payload checks.
    #[test]
    fn proptest_arbitrary_frames_never_panic(
        keep_header in proptest::bool::ANY,
        request in proptest::bool::ANY,
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1024),
        doff in proptest::prop_oneof![proptest::strategy::Just(0u64), 0u64..4096, proptest::num::u64::ANY],
        dlen in proptest::prop_oneof![0u64..2048, proptest::num::u64::ANY],
    ) {
        let r = region(4096);
        let mut buf = bytes;
        if keep_header {
            let frame = sample_request();
            if request {
                frame.encode().unwrap().write(&r, 0).unwrap();
            } else {
                ResponseRef::Err { code: Code::Cancelled, message: "x" }.encode().unwrap().write(&r, 0).unwrap();
            }
            let mut head = [0u8; 16];
            r.read_into(0, &mut head).unwrap();
            let n = buf.len().min(16);
            buf[..n].copy_from_slice(&head[..n]);
        }
        r.write_from(0, &buf).unwrap();
        if request {
            if let Ok(v) = decode_request(&r, doff, dlen) {
                for (_, t) in &v.inputs {
                    let _ = t.to_tensor();
                }
            }
        } else {
            let _ = decode_response(&r, doff, dlen);
        }
    }
}
