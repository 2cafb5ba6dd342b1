//! A hostile worker: after a valid handshake it reports half_plus_two AVAILABLE, takes
//! requests like any worker, and then writes into its response ring, its arena or the
//! segment header what a real worker never writes. Beside it a real `tfgate-worker`
//! serves the same model, REST and gRPC clients predict in a loop, and each scenario
//! checks what a user sees: every answer correct (the requests the hostile worker held
//! are sent again to the real one) or, for a worker that never answers, TF Serving's
//! deadline error; the hostile worker dropped with a reason naming what it did; the
//! gateway alive, without a panic in its log; the real worker serving throughout.
//!
//! The hostile worker is a thread of this test process (attach mode cannot tell: it
//! connects to `--worker_socket` like a worker container); it writes through
//! `shm_protocol::hostile` (the crate's `hostile` feature, enabled only here).

use serde_json::Value;
use shm_protocol::hostile::RawResponder;
use shm_protocol::{fd_passing, Descriptor, IncomingRequest, RequestReceiver, Segment};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tfgate_e2e::{float_tensor, http, model_path, predict_request, OwnWorker, Server, TempDir};
use tfgate_frame::{control, forged_response, request_view, ForgedTensor};
use tfgate_frame::{encode_response_bytes, ResponseRef, TensorRef, WorkerTiming};
use tfgate_proto::control::gateway_message as gm;
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::control::{GatewayMessage, WorkerMessage};
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tfgate_proto::tensorflow::serving::SignatureDefMap;
use tfgate_proto::tensorflow::{
    tensor_info, tensor_shape_proto, SignatureDef, TensorInfo, TensorShapeProto,
};
use tfgate_tensor::tensor::{DataType, TensorData};

/// What the hostile worker does with the requests it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Answers each request with random bytes as its frame.
    Garbage,
    /// Answers with a descriptor whose offset and length lie past the response arena.
    OutOfRange,
    /// Answers with a well-formed frame whose output claims 2^40 floats.
    HugeTensor,
    /// Answers correctly, then answers the same request again.
    DuplicateId,
    /// Answers correctly, but under an id the gateway never sent.
    UnknownId,
    /// Writes a stale generation into the segment header and acknowledges the attach
    /// with it.
    StaleGeneration,
    /// Publishes a response-ring head far ahead of the tail.
    CorruptRing,
    /// Never answers; rings the gateway's doorbell in a loop that never ends (answering
    /// heartbeats all along).
    SilentSpin,
}

impl Mode {
    /// What `/tfgate/workers` says of the dropped worker (its `last_exit`).
    fn reason(self) -> &'static str {
        match self {
            Mode::Garbage | Mode::OutOfRange | Mode::HugeTensor => "malformed response",
            Mode::DuplicateId | Mode::UnknownId => "which it does not hold",
            Mode::StaleGeneration => "expected Attached",
            Mode::CorruptRing => "corrupt ring",
            Mode::SilentSpin => "past its deadline",
        }
    }

    fn host(self) -> String {
        format!("hostile-{self:?}")
    }
}

/// The gateway drops a worker only after it misbehaved; these time out long before the
/// test would hang.
const WAIT: Duration = Duration::from_secs(60);

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn workers(port: u16) -> Vec<Value> {
    let (status, body) = http(port, "GET", "/tfgate/workers", "").expect("/tfgate/workers");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["workers"].as_array().cloned().unwrap_or_default()
}

/// The half_plus_two signature a real worker reports (predict: x -> y, floats).
fn signatures() -> Vec<u8> {
    let info = |name: &str| TensorInfo {
        encoding: Some(tensor_info::Encoding::Name(name.into())),
        dtype: 1,
        tensor_shape: Some(TensorShapeProto {
            dim: [-1, 1]
                .into_iter()
                .map(|size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
    };
    let predict = SignatureDef {
        inputs: [("x".to_string(), info("x:0"))].into_iter().collect(),
        outputs: [("y".to_string(), info("y:0"))].into_iter().collect(),
        method_name: "tensorflow/serving/predict".into(),
        ..Default::default()
    };
    let map = SignatureDefMap {
        signature_def: [("serving_default".to_string(), predict)]
            .into_iter()
            .collect(),
    };
    prost::Message::encode_to_vec(&map)
}

fn send(stream: &mut UnixStream, msg: wm::Message) -> std::io::Result<()> {
    control::write_message(stream, &WorkerMessage { message: Some(msg) })
        .map_err(std::io::Error::other)
}

/// Receives the Attach message with the segment's memfd and doorbell.
fn attach(stream: &UnixStream) -> (u64, Segment) {
    let mut buf = vec![0u8; 4096];
    let (n, fds) = fd_passing::recv_fds(stream, &mut buf).expect("Attach");
    let mut fds = fds.into_iter();
    let memfd = fds.next().expect("the segment's memfd");
    let ringer = shm_protocol::Ringer::from_fd(fds.next().expect("the doorbell"));
    let len = control::frame_len([buf[0], buf[1], buf[2], buf[3]]).expect("length");
    assert!(n >= 4 + len, "Attach arrived in one piece");
    let msg: GatewayMessage = control::decode(&buf[4..4 + len]).expect("Attach");
    let Some(gm::Message::Attach(gm::Attach { generation })) = msg.message else {
        panic!("expected Attach, got {msg:?}");
    };
    let segment = Segment::attach(memfd, generation)
        .expect("a valid segment")
        .with_ringer(ringer);
    (generation, segment)
}

/// The hostile worker: a thread that attaches and misbehaves until its socket closes.
struct Hostile {
    /// Set when the gateway closed the control socket (the worker was dropped).
    closed: Arc<AtomicBool>,
    /// The control socket, shut down on drop so that a scenario that fails while the
    /// gateway still holds the worker does not wait on it forever.
    socket: UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    fn start(socket: &Path, mode: Mode) -> Hostile {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let stream = UnixStream::connect(socket).expect("connect to --worker_socket");
        let socket = stream.try_clone().expect("clone the socket");
        let thread = std::thread::spawn(move || run_hostile(stream, mode, &flag));
        Hostile {
            closed,
            socket,
            thread: Some(thread),
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_hostile(mut stream: UnixStream, mode: Mode, closed: &Arc<AtomicBool>) {
    send(
        &mut stream,
        wm::Message::Hello(wm::Hello {
            worker_id: 99,
            pid: std::process::id(),
            host: mode.host(),
            refused: String::new(),
        }),
    )
    .expect("Hello");
    let (generation, segment) = attach(&stream);
    let (requests, mut responder) = segment.into_hostile_worker();
    if mode == Mode::StaleGeneration {
        // The header's generation field (after the 8-byte magic and two u32s).
        let stale = generation.wrapping_sub(1);
        responder
            .write_segment(16, &stale.to_le_bytes())
            .expect("inside the segment");
        let _ = send(
            &mut stream,
            wm::Message::Attached(wm::Attached { generation: stale }),
        );
        // The gateway refuses; its end closes.
        let mut byte = [0u8; 1];
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        while matches!((&stream).read(&mut byte), Ok(n) if n > 0) {}
        closed.store(true, Ordering::Relaxed);
        return;
    }
    send(
        &mut stream,
        wm::Message::Attached(wm::Attached { generation }),
    )
    .expect("Attached");
    let reader = stream.try_clone().expect("clone the socket");
    let writer = Arc::new(Mutex::new(stream));
    {
        let mut w = writer.lock().expect("socket");
        let msg: GatewayMessage =
            control::read_message(&mut *w).expect("ServeModels from the gateway");
        assert!(matches!(msg.message, Some(gm::Message::ServeModels(_))));
        send(
            &mut w,
            wm::Message::ServableState(wm::ServableState {
                model_name: "half_plus_two".into(),
                version: 2,
                state: State::Available as i32,
                signature_defs: signatures(),
                ..Default::default()
            }),
        )
        .expect("AVAILABLE");
        send(&mut w, wm::Message::InitialLoadDone(wm::InitialLoadDone {})).expect("done");
    }
    // Heartbeats are answered, so only what the worker writes into shared memory can
    // give it away.
    let control = {
        let (writer, closed) = (writer.clone(), closed.clone());
        let mut reader = reader;
        std::thread::spawn(move || loop {
            match control::read_message::<GatewayMessage>(&mut reader) {
                Ok(GatewayMessage {
                    message: Some(gm::Message::Ping(gm::Ping { seq })),
                }) => {
                    let mut w = writer.lock().expect("socket");
                    let _ = send(&mut w, wm::Message::Pong(wm::Pong { seq, rss_bytes: 0 }));
                }
                Ok(_) => {}
                Err(_) => {
                    closed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        })
    };
    misbehave(mode, requests, &mut responder, closed);
    let _ = control.join();
}

/// Where the answer to the request at ring index `head` goes: each ring slot owns a
/// stretch of the arena, so an answer is not overwritten before the gateway read it.
fn slot_offset(responder: &RawResponder, head: u64) -> u64 {
    let layout = responder.layout();
    let stretch = layout.response_arena_size / layout.ring_capacity;
    (head % layout.ring_capacity) * stretch
}

/// Writes `frame` into the arena and pushes its descriptor under `id`.
fn push_frame(responder: &mut RawResponder, id: u64, frame: &[u8]) {
    let offset = slot_offset(responder, responder.head());
    responder
        .write_arena(offset, frame)
        .expect("inside the arena");
    let desc = Descriptor {
        id,
        offset,
        len: frame.len() as u64,
        ..Descriptor::default()
    };
    while !responder.push(desc).unwrap_or(true) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The right answer (y = 0.5 x + 3), as a real worker's frame.
fn correct_answer(req: &IncomingRequest) -> Vec<u8> {
    let view = request_view(req).expect("the gateway's request frame");
    let x = view.inputs[0].1.to_tensor().expect("input x");
    let TensorData::Bytes(bytes) = &x.data else {
        panic!("x is not a float tensor");
    };
    let y: Vec<u8> = bytes
        .chunks_exact(4)
        .flat_map(|c| {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            (0.5 * v + 3.0).to_le_bytes()
        })
        .collect();
    let outputs = [(
        "y",
        TensorRef {
            dtype: DataType::Float,
            shape: &x.shape,
            data: tfgate_frame::TensorDataRef::Bytes(&y),
        },
    )];
    encode_response_bytes(ResponseRef::Ok {
        model_version: 2,
        outputs: &outputs,
        timing: WorkerTiming::default(),
    })
    .expect("scratch mapping")
    .expect("a valid frame")
}

/// A small xorshift: garbage that differs from run to run is not needed, only garbage.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn misbehave(
    mode: Mode,
    mut requests: RequestReceiver,
    responder: &mut RawResponder,
    closed: &AtomicBool,
) {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let arena = responder.layout().response_arena_size;
    while !closed.load(Ordering::Relaxed) {
        if mode == Mode::SilentSpin {
            // Takes requests off the ring (they count as running) and answers none.
            let _ = requests.recv(Duration::ZERO);
            responder.ring_doorbell();
            continue;
        }
        let req = match requests.recv(Duration::from_millis(20)) {
            Ok(Some(req)) => req,
            Ok(None) => continue,
            Err(_) => return,
        };
        let id = req.id();
        match mode {
            Mode::Garbage => {
                let n = 64 + (noise.next() % 4096) as usize;
                let frame = noise.bytes(n);
                push_frame(responder, id, &frame);
            }
            Mode::OutOfRange => {
                let desc = Descriptor {
                    id,
                    offset: arena - 64,
                    len: 1 << 40,
                    ..Descriptor::default()
                };
                let _ = responder.push(desc);
            }
            Mode::HugeTensor => {
                let claim = ForgedTensor {
                    name: "y".into(),
                    dtype: DataType::Float as i32,
                    shape: vec![1 << 40],
                    offset: 64,
                    len: 4 << 40,
                };
                let frame = forged_response(2, &[claim], 64).expect("a forged frame");
                push_frame(responder, id, &frame);
            }
            Mode::DuplicateId => {
                let frame = correct_answer(&req);
                push_frame(responder, id, &frame);
                push_frame(responder, id, &frame);
            }
            Mode::UnknownId => {
                let frame = correct_answer(&req);
                push_frame(responder, id + (1 << 32), &frame);
            }
            Mode::CorruptRing => {
                // The response ring's head is the first word of its control block.
                let head_at = responder.layout().response_ring_offset;
                let bogus = responder.head() + (1 << 40);
                responder
                    .write_segment(head_at, &bogus.to_le_bytes())
                    .expect("inside the segment");
                responder.ring_doorbell();
            }
            Mode::StaleGeneration | Mode::SilentSpin => unreachable!("handled above"),
        }
    }
}

/// What the clients saw: answers checked correct, and errors by what they said (the
/// first few kept).
#[derive(Default)]
struct Seen {
    correct: u32,
    failed: u32,
    errors: Vec<String>,
}

impl Seen {
    fn error(&mut self, e: String) {
        self.failed += 1;
        if self.errors.len() < 20 {
            self.errors.push(e);
        }
    }
}

/// Stops the clients however the scenario ends (a failed assertion included), so that
/// they do not run on into the next one.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// REST and gRPC clients predicting until `stop`, each answer checked.
fn clients(
    server: &Server,
    stop: &Arc<AtomicBool>,
    deadline: Duration,
) -> Vec<std::thread::JoinHandle<Seen>> {
    let mut handles = Vec::new();
    let port = server.rest_port;
    for c in 0..2 {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let x = (c * 100_000 + n) as f32;
                n += 1;
                let body = format!(r#"{{"instances": [{x:.1}]}}"#);
                match http(port, "POST", "/v1/models/half_plus_two:predict", &body) {
                    Ok((200, text)) => {
                        let v: Value = serde_json::from_str(&text).expect("JSON");
                        assert_eq!(
                            v["predictions"][0].as_f64(),
                            Some(f64::from(0.5 * x + 3.0)),
                            "a wrong answer: {text}"
                        );
                        seen.correct += 1;
                    }
                    Ok((status, text)) => seen.error(format!("REST {status} {text}")),
                    Err(e) => seen.error(format!("REST transport: {e}")),
                }
            }
            seen
        }));
    }
    let url = server.grpc_url();
    let stop = stop.clone();
    handles.push(std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut seen = Seen::default();
            let mut client = PredictionServiceClient::connect(url).await.expect("gRPC");
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let x = 500_000.0 + n as f32;
                n += 1;
                let mut req = tonic::Request::new(predict_request(
                    "half_plus_two",
                    "x",
                    float_tensor(&[1, 1], &[x]),
                ));
                // As the `grpc-timeout` header only (no client-side timer), so the
                // status seen is the server's.
                let timeout = format!("{}m", deadline.as_millis());
                req.metadata_mut()
                    .insert("grpc-timeout", timeout.parse().expect("ascii header"));
                match client.predict(req).await {
                    Ok(resp) => {
                        let y = &resp.into_inner().outputs["y"];
                        assert_eq!(y.float_val, vec![0.5 * x + 3.0], "a wrong answer");
                        seen.correct += 1;
                    }
                    Err(status) => {
                        seen.error(format!("gRPC {:?} {}", status.code(), status.message()))
                    }
                }
            }
            seen
        })
    }));
    handles
}

/// Serializes the scenarios: each runs a gateway and a TensorFlow worker, which is
/// enough for a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn scenario(mode: Mode) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("hostile");
    // In a directory of its own, which the gateway creates private (0700).
    let socket: PathBuf = dir.0.join("run").join("workers.sock");
    let real = OwnWorker::start(&socket);
    let flag = format!("--worker_socket={}", socket.display());
    // A worker that never answers is dropped only after the request's deadline and the
    // run grace: keep both short.
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &[
            &flag,
            "--num_workers=1",
            "--rest_api_timeout_in_ms=2000",
            "--worker_run_grace_ms=300",
        ],
    );
    let port = server.rest_port;
    let real_serving = |port| {
        workers(port)
            .iter()
            .any(|w| w["pid"].as_u64() == Some(real.pid()) && w["state"] == "serving")
    };
    wait_for("the real worker", WAIT, || real_serving(port));

    let hostile = Hostile::start(&socket, mode);
    let host = mode.host();
    if mode != Mode::StaleGeneration {
        wait_for("the hostile worker to serve", WAIT, || {
            workers(port)
                .iter()
                .any(|w| w["host"] == host.as_str() && w["state"] == "serving")
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let load = clients(&server, &stop, Duration::from_secs(2));

    let dropped = |port| {
        workers(port).into_iter().find(|w| {
            w["last_exit"]
                .as_str()
                .is_some_and(|e| e.contains(mode.reason()))
        })
    };
    // Checked after the clients report, so that a failure shows what they saw.
    let deadline = Instant::now() + WAIT;
    let was_dropped = loop {
        if dropped(port).is_some() && hostile.closed.load(Ordering::Relaxed) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The clients go on against the real worker alone for a while.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = load
        .into_iter()
        .map(|h| h.join().expect("a client saw a wrong answer"))
        .collect();
    drop(hostile);

    let correct: u32 = seen.iter().map(|s| s.correct).sum();
    let failed: u32 = seen.iter().map(|s| s.failed).sum();
    let errors: Vec<&String> = seen.iter().flat_map(|s| &s.errors).collect();
    println!("{mode:?}: {correct} correct answers, {failed} errors: {errors:?}");
    assert!(
        was_dropped,
        "the hostile worker was not dropped within {WAIT:?}: {:?}",
        workers(port)
    );
    assert!(correct > 0);
    match mode {
        // A worker that holds requests and never answers cannot be told from a slow
        // one before their deadline: those requests fail with TF Serving's deadline
        // error, and only those.
        Mode::SilentSpin => assert!(
            errors
                .iter()
                .all(|e| e.starts_with("REST 504") || e.starts_with("gRPC DeadlineExceeded")),
            "{errors:?}"
        ),
        // Everything else the hostile worker held was sent again to the real one.
        _ => assert!(failed == 0, "{failed} errors: {errors:?}"),
    }

    let w = dropped(port).expect("the dropped slot");
    println!("{mode:?}: {w}");
    assert_ne!(w["state"], "serving", "{w}");
    assert!(real_serving(port), "the real worker serves on");
    let (status, text) = http(
        port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [1.0]}"#,
    )
    .expect("predict");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        (status, v["predictions"][0].as_f64()),
        (200, Some(3.5)),
        "{text}"
    );
    let mut server = server;
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "the gateway is alive"
    );
    let log = server.log();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");
}

#[test]
fn garbage_frames_get_the_worker_dropped_and_its_requests_resent() {
    scenario(Mode::Garbage);
}

#[test]
fn offsets_past_the_arena_get_the_worker_dropped_and_its_requests_resent() {
    scenario(Mode::OutOfRange);
}

#[test]
fn a_frame_claiming_a_huge_tensor_gets_the_worker_dropped_and_its_requests_resent() {
    scenario(Mode::HugeTensor);
}

#[test]
fn a_duplicate_answer_gets_the_worker_dropped() {
    scenario(Mode::DuplicateId);
}

#[test]
fn an_answer_to_an_unknown_request_gets_the_worker_dropped_and_its_requests_resent() {
    scenario(Mode::UnknownId);
}

#[test]
fn a_stale_generation_is_refused_at_attach() {
    scenario(Mode::StaleGeneration);
}

#[test]
fn a_corrupt_response_ring_gets_the_worker_dropped_and_its_requests_resent() {
    scenario(Mode::CorruptRing);
}

#[test]
fn a_worker_that_spins_and_never_answers_is_dropped_after_the_deadline() {
    scenario(Mode::SilentSpin);
}
