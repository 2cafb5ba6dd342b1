//! The gateway and worker endpoints in one process (two threads at most): backpressure,
//! out-of-order completion, errors that name the sizing flags, closing.

use std::time::{Duration, Instant};

use shm_protocol::{RecvError, Segment, SegmentConfig, SendError, SpinConfig};
use tfgate_frame::{decode_response, request_view, RequestFrame, RequestKind, ResponseFrame};
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

fn config(ring: u32, arena: u64) -> SegmentConfig {
    SegmentConfig {
        ring_capacity: ring,
        request_arena_bytes: arena,
        response_arena_bytes: arena,
        spin: SpinConfig {
            spin: Duration::from_micros(20),
        },
        prefault: false,
    }
}

fn request(bytes: usize) -> RequestFrame {
    RequestFrame {
        deadline_ns: 0,
        kind: RequestKind::Predict,
        model_name: "m".into(),
        version: None,
        signature_name: String::new(),
        output_filter: vec![],
        inputs: vec![(
            "x".into(),
            Tensor::new(
                DataType::Uint8,
                vec![bytes as i64],
                TensorData::Bytes(vec![7; bytes].into()),
            )
            .unwrap(),
        )],
    }
}

fn ok(bytes: usize) -> ResponseFrame {
    ResponseFrame::Ok {
        model_version: 1,
        outputs: vec![(
            "y".into(),
            Tensor::new(
                DataType::Uint8,
                vec![bytes as i64],
                TensorData::Bytes(vec![9; bytes].into()),
            )
            .unwrap(),
        )],
        timing: Default::default(),
    }
}

const T: Duration = Duration::from_millis(500);

#[test]
fn request_arena_exhaustion_out_of_order_completion_and_recovery() {
    let seg = Segment::create(&config(64, 64 << 10), 1).unwrap();
    let worker = Segment::attach(seg.fd().try_clone_to_owned().unwrap(), 1).unwrap();
    let (tx, mut rx) = seg.into_gateway();
    let (mut wrx, mut wtx) = worker.into_worker();

    // Fill the 64 KiB request arena with ~8 KiB requests.
    let mut sent = 0u64;
    loop {
        match tx.try_send(sent, &request(8000).encode().expect("encode")) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!((6..=8).contains(&sent), "{sent}");
    assert!(matches!(
        tx.try_send(0, &request(1).encode().expect("encode")),
        Err(SendError::DuplicateId(0))
    ));
    assert_eq!(tx.in_flight() as u64, sent);

    // The worker answers in reverse order; each answer frees that request's block.
    let mut incoming = Vec::new();
    while let Some(r) = wrx.recv(Duration::ZERO).unwrap() {
        assert_eq!(request_view(&r).unwrap().to_frame().unwrap(), request(8000));
        incoming.push(r);
    }
    assert_eq!(incoming.len() as u64, sent);
    let freed0 = tx.freed_count();
    for r in incoming.iter().rev() {
        wtx.send(r.id(), &ok(10).encode().expect("encode"), T)
            .unwrap();
    }
    for i in (0..sent).rev() {
        let (id, frame) = rx.recv(T, decode_response).unwrap().unwrap();
        assert_eq!(id, i);
        assert_eq!(frame.unwrap(), ok(10));
    }
    assert_eq!(tx.freed_count(), freed0 + sent);
    assert_eq!(tx.in_flight(), 0);
    assert_eq!(tx.free_bytes(), tx.arena_capacity(), "all blocks coalesced");
    // A request as large as the whole arena now fits (needs every block coalesced).
    let big = (64 << 10) - 256;
    tx.try_send(1000, &request(big).encode().expect("encode"))
        .unwrap();
    let r = wrx.recv(T).unwrap().unwrap();
    assert_eq!(request_view(&r).unwrap().inputs[0].1.byte_len(), big);
    wtx.send(1000, &ok(1).encode().expect("encode"), T).unwrap();
    assert_eq!(rx.recv(T, decode_response).unwrap().unwrap().0, 1000);
}

#[test]
fn in_flight_is_bounded_by_the_ring() {
    let seg = Segment::create(&config(4, 1 << 20), 1).unwrap();
    let worker = Segment::attach(seg.fd().try_clone_to_owned().unwrap(), 1).unwrap();
    let (tx, mut rx) = seg.into_gateway();
    let (mut wrx, mut wtx) = worker.into_worker();
    for i in 0..4 {
        tx.try_send(i, &request(10).encode().expect("encode"))
            .unwrap();
    }
    assert!(matches!(
        tx.try_send(4, &request(10).encode().expect("encode")),
        Err(SendError::Full)
    ));
    let r = wrx.recv(T).unwrap().unwrap();
    assert!(
        matches!(
            tx.try_send(4, &request(10).encode().expect("encode")),
            Err(SendError::Full)
        ),
        "popped but not answered"
    );
    wtx.send(r.id(), &ok(1).encode().expect("encode"), T)
        .unwrap();
    rx.recv(T, decode_response).unwrap().unwrap().1.unwrap();
    tx.try_send(4, &request(10).encode().expect("encode"))
        .unwrap();
}

#[test]
fn too_large_says_what_and_an_error_frame_still_fits() {
    let seg = Segment::create(&config(8, 64 << 10), 1).unwrap();
    let worker = Segment::attach(seg.fd().try_clone_to_owned().unwrap(), 1).unwrap();
    let (tx, mut rx) = seg.into_gateway();
    let (mut wrx, mut wtx) = worker.into_worker();
    let e = tx
        .try_send(1, &request(100_000).encode().expect("encode"))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("request needs "), "{msg}");
    assert!(
        msg.ends_with("but the request arena holds 65536 bytes"),
        "{msg}"
    );
    assert_eq!(tx.in_flight(), 0);

    tx.try_send(2, &request(10).encode().expect("encode"))
        .unwrap();
    let r = wrx.recv(T).unwrap().unwrap();
    let e = wtx
        .send(r.id(), &ok(70_000).encode().expect("encode"), T)
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.ends_with("response arena holds 65536 bytes"), "{msg}");
    let err = ResponseFrame::Err {
        code: tfgate_tensor::code::Code::ResourceExhausted,
        message: msg,
    };
    wtx.send(r.id(), &err.encode().expect("encode"), T).unwrap();
    assert_eq!(rx.recv(T, decode_response).unwrap().unwrap(), (2, Ok(err)));
}

#[test]
fn worker_blocks_while_the_response_arena_is_full() {
    let seg = Segment::create(&config(64, 64 << 10), 1).unwrap();
    let worker = Segment::attach(seg.fd().try_clone_to_owned().unwrap(), 1).unwrap();
    let (tx, mut rx) = seg.into_gateway();
    let (mut wrx, mut wtx) = worker.into_worker();
    for i in 0..20 {
        tx.try_send(i, &request(1).encode().expect("encode"))
            .unwrap();
    }
    let mut answered = 0;
    let t0 = Instant::now();
    loop {
        let r = wrx.recv(T).unwrap().unwrap();
        match wtx.send(
            r.id(),
            &ok(10_000).encode().expect("encode"),
            Duration::from_millis(50),
        ) {
            Ok(()) => answered += 1,
            Err(SendError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert!((5..=7).contains(&answered), "{answered}");
    // The gateway consumes in a second thread; the blocked worker proceeds.
    let h = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 20 {
            if let Some((id, f)) = rx.recv(T, decode_response).unwrap() {
                assert_eq!(f.unwrap(), ok(10_000));
                got.push(id);
            }
        }
        got
    });
    wtx.send(
        answered,
        &ok(10_000).encode().expect("encode"),
        Duration::from_secs(10),
    )
    .unwrap();
    for id in answered + 1..20 {
        let r = wrx.recv(T).unwrap().unwrap();
        assert_eq!(r.id(), id);
        wtx.send(
            id,
            &ok(10_000).encode().expect("encode"),
            Duration::from_secs(10),
        )
        .unwrap();
    }
    let got = h.join().unwrap();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[test]
fn closing_either_side_is_reported() {
    let seg = Segment::create(&config(8, 1 << 20), 1).unwrap();
    let worker = Segment::attach(seg.fd().try_clone_to_owned().unwrap(), 1).unwrap();
    let (tx, mut rx) = seg.into_gateway();
    let (wrx, mut wtx) = worker.into_worker();
    tx.try_send(1, &request(1).encode().expect("encode"))
        .unwrap();
    drop(wrx);
    assert!(matches!(
        tx.try_send(2, &request(1).encode().expect("encode")),
        Err(SendError::Closed)
    ));
    wtx.send(1, &ok(1).encode().expect("encode"), T).unwrap();
    drop(wtx);
    assert!(
        rx.recv(T, decode_response).unwrap().is_some(),
        "drains before reporting Closed"
    );
    let t0 = Instant::now();
    assert!(matches!(
        rx.recv(Duration::from_secs(5), decode_response),
        Err(RecvError::Closed)
    ));
    assert!(t0.elapsed() < Duration::from_secs(1));
    // And the worker sees the gateway close.
    let seg = Segment::create(&config(8, 1 << 20), 2).unwrap();
    let worker = Segment::attach(seg.fd().try_clone_to_owned().unwrap(), 2).unwrap();
    let (tx, _rx) = seg.into_gateway();
    let (mut wrx, _wtx) = worker.into_worker();
    tx.try_send(5, &request(3).encode().expect("encode"))
        .unwrap();
    drop(tx);
    assert_eq!(wrx.recv(T).unwrap().unwrap().id(), 5);
    assert!(matches!(wrx.recv(T), Err(RecvError::Closed)));
}

#[test]
fn recv_times_out() {
    let seg = Segment::create(&config(8, 1 << 20), 1).unwrap();
    let worker = Segment::attach(seg.fd().try_clone_to_owned().unwrap(), 1).unwrap();
    let (_tx, mut rx) = seg.into_gateway();
    let (mut wrx, _wtx) = worker.into_worker();
    for timeout in [Duration::ZERO, Duration::from_millis(30)] {
        let t0 = Instant::now();
        assert!(rx.recv(timeout, decode_response).unwrap().is_none());
        assert!(wrx.recv(timeout).unwrap().is_none());
        assert!(t0.elapsed() < 2 * timeout + Duration::from_millis(50));
    }
}

#[test]
fn handles_are_send_and_sync_where_needed() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<shm_protocol::RequestSender>();
    send::<shm_protocol::ResponseReceiver>();
    send::<shm_protocol::RequestReceiver>();
    send::<shm_protocol::ResponseSender>();
    send::<shm_protocol::IncomingRequest>();
    send::<Segment>();
}

#[test]
fn numeric_payloads_can_be_read_in_place_strings_cannot() {
    let seg = Segment::create(&config(8, 1 << 20), 1).unwrap();
    let fd = seg.fd().try_clone_to_owned().unwrap();
    let (tx, _rx) = seg.into_gateway();
    let (mut wrx, _wtx) = Segment::attach(fd, 1).unwrap().into_worker();

    let values = [1.5f32, -2.0, 3.25];
    let mut frame = request(1);
    frame.inputs = vec![
        ("f".into(), Tensor::from_f32(vec![3], &values).unwrap()),
        (
            "s".into(),
            Tensor::new(
                DataType::String,
                vec![1],
                TensorData::Strings(vec![b"ab".to_vec()]),
            )
            .unwrap(),
        ),
    ];
    tx.try_send(1, &frame.encode().expect("encode")).unwrap();
    let req = wrx.recv(T).unwrap().expect("request");
    let view = request_view(&req).unwrap();
    let payload = view.inputs[0].1.in_place().unwrap();
    assert_eq!(payload.len(), 12);
    assert_eq!(
        payload.as_ptr() as usize % 64,
        0,
        "payloads are 64-byte aligned"
    );
    let mut read = [0u8; 12];
    // SAFETY: the payload is valid for len() bytes of reads while `payload` lives.
    unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), read.as_mut_ptr(), 12) };
    let floats: Vec<f32> = read
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, values);
    assert!(view.inputs[1].1.in_place().is_err());
}
