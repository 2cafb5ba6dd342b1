//! Real two-process tests: the test binary re-executes itself (`child_entry`, selected by
//! the `SHM_TEST_CHILD` env var) as the worker, and the memfd travels over a Unix socket
//! with `fd_passing`.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shm_protocol::fd_passing::{recv_fd, send_fd};
use shm_protocol::{
    IncomingRequest, RecvError, RequestSender, ResponseReceiver, ResponseSender, Segment,
    SegmentConfig, SpinConfig,
};
use tfgate_frame::{
    decode_response, request_view, RequestFrame, RequestKind, ResponseFrame, ResponseRef,
    TensorDataRef, TensorRef,
};
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

const CHILD_ENV: &str = "SHM_TEST_CHILD";
const SOCK_ENV: &str = "SHM_TEST_SOCK";
const COUNT_ENV: &str = "SHM_TEST_COUNT";
const GEN_ENV: &str = "SHM_TEST_GENERATION";

fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
    s = s.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// Deterministic pseudo-random payload for `seed`: random size, random bytes.
fn payload(seed: u64, out: &mut Vec<u8>) {
    let mut r = xorshift(seed);
    let k = r() % 100;
    let len = match k {
        0..80 => r() % 256,
        80..98 => 256 + r() % 3840,
        _ => 4096 + r() % 61440,
    } as usize;
    out.clear();
    out.reserve(len);
    while out.len() + 8 <= len {
        out.extend_from_slice(&r().to_le_bytes());
    }
    let tail = len - out.len();
    out.extend_from_slice(&r().to_le_bytes()[..tail]);
}

fn checksum(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ data.len() as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap()))
            .wrapping_mul(0x100_0000_01b3)
            .rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn scalar_u64(v: u64) -> Tensor {
    Tensor::new(
        DataType::Uint64,
        vec![],
        TensorData::Bytes(v.to_le_bytes().to_vec().into()),
    )
    .unwrap()
}

/// The worker's answer to one request: checks the request's checksum and replies with a
/// payload derived from its id (see [`verify`]). `Err` names what was wrong.
fn echo(
    req: &IncomingRequest,
    tx: &mut ResponseSender,
    buf: &mut Vec<u8>,
    reply: &mut Vec<u8>,
) -> Result<(), String> {
    let view = request_view(req).map_err(|e| format!("bad frame {}: {e}", req.id()))?;
    let (Some((_, data)), Some((_, sum))) = (view.inputs.first(), view.inputs.get(1)) else {
        return Err(format!("request {} lacks its inputs", req.id()));
    };
    buf.resize(data.byte_len(), 0);
    data.copy_to(buf).map_err(|e| e.to_string())?;
    let mut s = [0u8; 8];
    sum.copy_to(&mut s).map_err(|e| e.to_string())?;
    let got = checksum(buf);
    if got != u64::from_le_bytes(s) || view.model_name != "echo" {
        return Err(format!("checksum mismatch for request {}", req.id()));
    }
    payload(req.id() ^ 0x5555, reply);
    let reply_sum = checksum(reply).to_le_bytes();
    let shape = [reply.len() as i64];
    let outs = [
        (
            "sum",
            TensorRef {
                dtype: DataType::Uint64,
                shape: &[],
                data: TensorDataRef::Bytes(&reply_sum),
            },
        ),
        (
            "data",
            TensorRef {
                dtype: DataType::Uint8,
                shape: &shape,
                data: TensorDataRef::Bytes(reply),
            },
        ),
    ];
    let frame = ResponseRef::Ok {
        model_version: got as i64,
        outputs: &outs,
        timing: Default::default(),
    };
    let frame = frame.encode().map_err(|e| format!("encode: {e}"))?;
    tx.send(req.id(), &frame, Duration::from_secs(10))
        .map_err(|e| format!("send: {e}"))
}

/// The worker role, run in the child process.
fn run_child() -> i32 {
    let path = std::env::var(SOCK_ENV).unwrap();
    let mut sock = UnixStream::connect(path).unwrap();
    let mut gen = [0u8; 8];
    let (n, fd) = recv_fd(&sock, &mut gen).unwrap();
    assert_eq!(n, 8);
    let seg = match Segment::attach(fd.unwrap(), u64::from_le_bytes(gen)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("child: attach: {e}");
            return 2;
        }
    };
    let (mut rx, mut tx) = seg.into_worker();
    let mut buf = Vec::new();
    let mut reply = Vec::new();
    sock.set_nonblocking(true).unwrap();
    loop {
        let req = match rx.recv(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => {
                // Parent gone? (EOF on the socket)
                if matches!(sock.read(&mut [0u8; 1]), Ok(0)) {
                    return 0;
                }
                continue;
            }
            Err(RecvError::Closed) => return 0,
            Err(e) => {
                eprintln!("child: {e}");
                return 3;
            }
        };
        if let Err(e) = echo(&req, &mut tx, &mut buf, &mut reply) {
            eprintln!("child: {e}");
            return 4;
        }
    }
}

/// The gateway role, run in the child process: creates the segment, hands it to the
/// parent (the worker here), and streams requests with up to 64 in flight, checking every
/// answer, until it has had `SHM_TEST_COUNT` answers (then it exits 0) or is killed.
fn run_gateway_child() -> i32 {
    let path = std::env::var(SOCK_ENV).unwrap();
    let count: u64 = std::env::var(COUNT_ENV).unwrap().parse().unwrap();
    let generation: u64 = std::env::var(GEN_ENV).unwrap().parse().unwrap();
    let sock = UnixStream::connect(path).unwrap();
    let seg = Segment::create(&test_config(), generation).unwrap();
    send_fd(&sock, seg.fd(), &generation.to_le_bytes()).unwrap();
    let (tx, mut rx) = seg.into_gateway();
    let mut frame = new_frame();
    let mut scratch = Vec::new();
    let (mut sent, mut received) = (0u64, 0u64);
    while received < count {
        while sent < received + 64 {
            request_for(sent, &mut frame);
            send_blocking(&tx, sent, &frame);
            sent += 1;
        }
        match rx.recv(Duration::from_secs(10), decode_response) {
            Ok(Some((id, f))) => verify(id, f.unwrap(), &mut scratch),
            other => {
                eprintln!("gateway child: no answer after {received}: {other:?}");
                return 3;
            }
        }
        received += 1;
    }
    0
}

/// Entry point of the child process; a no-op in a normal test run.
#[test]
fn child_entry() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("gateway") => std::process::exit(run_gateway_child()),
        Ok(_) => std::process::exit(run_child()),
        Err(_) => {}
    }
}

fn test_config() -> SegmentConfig {
    SegmentConfig {
        ring_capacity: 256,
        request_arena_bytes: 16 << 20,
        response_arena_bytes: 16 << 20,
        spin: SpinConfig {
            spin: Duration::from_micros(50),
        },
        prefault: false,
    }
}

fn temp_sock(tag: &str, generation: u64) -> (UnixListener, TempSock) {
    let path = std::env::temp_dir().join(format!(
        "shm-test-{}-{tag}-{generation}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    (UnixListener::bind(&path).unwrap(), TempSock(path))
}

/// This test binary, re-executed as the peer playing `role`, connecting to `sock`.
fn child_command(role: &str, sock: &TempSock) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env(SOCK_ENV, &sock.0)
        .stdout(Stdio::null());
    cmd
}

struct Parent {
    child: Child,
    sock: UnixStream,
    tx: RequestSender,
    rx: ResponseReceiver,
    _path: TempSock,
}

struct TempSock(PathBuf);
impl Drop for TempSock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(generation: u64, tag: &str) -> Parent {
    let (listener, path) = temp_sock(tag, generation);
    let child = child_command("worker", &path).spawn().unwrap();
    let (sock, _) = listener.accept().unwrap();
    let seg = Segment::create(&test_config(), generation).unwrap();
    send_fd(&sock, seg.fd(), &generation.to_le_bytes()).unwrap();
    let (tx, rx) = seg.into_gateway();
    Parent {
        child,
        sock,
        tx,
        rx,
        _path: path,
    }
}

fn request_for(id: u64, frame: &mut RequestFrame) {
    let mut data = Vec::new();
    payload(id, &mut data);
    let sum = checksum(&data);
    frame.inputs[0].1.shape = vec![data.len() as i64];
    frame.inputs[0].1.data = TensorData::Bytes(data.into());
    frame.inputs[1].1 = scalar_u64(sum);
}

fn new_frame() -> RequestFrame {
    RequestFrame {
        deadline_ns: 0,
        kind: RequestKind::Predict,
        model_name: "echo".into(),
        version: None,
        signature_name: "serving_default".into(),
        output_filter: vec![],
        inputs: vec![
            (
                "data".into(),
                Tensor::new(DataType::Uint8, vec![0], TensorData::Bytes(vec![].into())).unwrap(),
            ),
            ("sum".into(), scalar_u64(0)),
        ],
    }
}

/// Checks a response against what the child must have computed for `id`.
fn verify(id: u64, frame: ResponseFrame, scratch: &mut Vec<u8>) {
    let ResponseFrame::Ok {
        model_version,
        outputs,
        ..
    } = frame
    else {
        panic!("error response for {id}")
    };
    payload(id, scratch);
    assert_eq!(
        model_version as u64,
        checksum(scratch),
        "request checksum echoed for {id}"
    );
    payload(id ^ 0x5555, scratch);
    let TensorData::Bytes(sum) = &outputs[0].1.data else {
        panic!()
    };
    let TensorData::Bytes(data) = &outputs[1].1.data else {
        panic!()
    };
    assert_eq!(
        u64::from_le_bytes(sum[..].try_into().unwrap()),
        checksum(data),
        "response checksum for {id}"
    );
    assert_eq!(data, scratch, "response payload for {id}");
}

fn send_blocking(tx: &RequestSender, id: u64, frame: &RequestFrame) {
    loop {
        match tx.try_send(id, &frame.encode().expect("encode")) {
            Ok(()) => return,
            Err(e) if e.is_full() => std::thread::yield_now(),
            Err(e) => panic!("send {id}: {e}"),
        }
    }
}

#[test]
fn two_processes_one_million_messages() {
    const N: u64 = 1_000_000;
    let t0 = Instant::now();
    let Parent {
        mut child,
        sock,
        tx,
        mut rx,
        _path,
    } = start(1, "million");
    let receiver = std::thread::spawn(move || {
        let mut scratch = Vec::new();
        let mut next = 0u64;
        while next < N {
            match rx.recv(Duration::from_secs(10), decode_response).unwrap() {
                Some((id, frame)) => {
                    // One worker, FIFO: responses come back in order.
                    assert_eq!(id, next);
                    verify(id, frame.unwrap(), &mut scratch);
                    next += 1;
                }
                None => panic!("no response for 10 s after {next}"),
            }
        }
        // The worker closes its sender after the gateway's sender is dropped.
        assert!(matches!(
            rx.recv(Duration::from_secs(10), decode_response),
            Err(RecvError::Closed)
        ));
        next
    });
    let mut frame = new_frame();
    for id in 0..N {
        request_for(id, &mut frame);
        send_blocking(&tx, id, &frame);
    }
    drop(tx);
    assert_eq!(receiver.join().unwrap(), N);
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    drop(sock);
    eprintln!("{N} round trips in {:?}", t0.elapsed());
}

#[test]
fn sigkill_of_the_worker_does_not_hang_the_gateway() {
    let Parent {
        mut child,
        mut sock,
        tx,
        mut rx,
        _path,
    } = start(1, "kill");
    let mut frame = new_frame();
    let mut scratch = Vec::new();
    let (mut sent, mut received) = (0u64, 0u64);
    // Stream with up to 64 in flight; kill the worker in the middle of it.
    while received < 20_000 {
        while sent < received + 64 {
            request_for(sent, &mut frame);
            send_blocking(&tx, sent, &frame);
            sent += 1;
        }
        let (id, f) = rx
            .recv(Duration::from_secs(10), decode_response)
            .unwrap()
            .expect("worker alive");
        verify(id, f.unwrap(), &mut scratch);
        received += 1;
    }
    child.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    child.wait().unwrap();

    // Whatever the worker had already answered may still arrive; then recv times out.
    let timeout = Duration::from_millis(200);
    loop {
        let t = Instant::now();
        let r = rx.recv(timeout, decode_response).unwrap();
        assert!(
            t.elapsed() < timeout + Duration::from_millis(150),
            "recv overran its timeout"
        );
        match r {
            Some((id, f)) => verify(id, f.unwrap(), &mut scratch),
            None => {
                assert!(t.elapsed() >= timeout);
                break;
            }
        }
        assert!(killed_at.elapsed() < Duration::from_secs(5));
    }
    // The socket shows the death too (EOF).
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(sock.read(&mut [0u8; 1]).unwrap(), 0);
    // Sends do not block either: they succeed until the table is full, then say Full.
    let mut full = false;
    for id in sent..sent + 1000 {
        request_for(id, &mut frame);
        match tx.try_send(id, &frame.encode().expect("encode")) {
            Ok(()) => {}
            Err(e) if e.is_full() => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full);
    drop((tx, rx));

    // The gateway keeps running: a new incarnation (generation 2) serves normally.
    let Parent {
        mut child,
        sock,
        tx,
        mut rx,
        _path,
    } = start(2, "kill");
    for id in 0..1000 {
        request_for(id, &mut frame);
        send_blocking(&tx, id, &frame);
        let (got, f) = rx
            .recv(Duration::from_secs(10), decode_response)
            .unwrap()
            .unwrap();
        assert_eq!(got, id);
        verify(id, f.unwrap(), &mut scratch);
    }
    drop((tx, sock));
    assert!(child.wait().unwrap().success());
}

/// How the gateway child of [`serve_gateway_child`] ends.
#[derive(Clone, Copy)]
enum GatewayEnd {
    /// SIGKILLed once the worker side has answered this many requests.
    KilledAfter(u64),
    /// Exits by itself after this many answers, closing the channel.
    ExitsAfter(u64),
}

/// Plays the worker side for a gateway child: attaches its segment and answers its
/// requests until `end`. When the gateway is killed, the worker side must notice (recv
/// keeps returning within its timeout, frames written before the kill are whole, the
/// socket shows EOF) and keep running. Returns the child, the socket and how many
/// requests were served.
fn serve_gateway_child(generation: u64, end: GatewayEnd, tag: &str) -> (Child, UnixStream, u64) {
    let (kill_after, count) = match end {
        GatewayEnd::KilledAfter(n) => (n, u64::MAX),
        GatewayEnd::ExitsAfter(n) => (u64::MAX, n),
    };
    let (listener, path) = temp_sock(tag, generation);
    let mut child = child_command("gateway", &path)
        .env(COUNT_ENV, count.to_string())
        .env(GEN_ENV, generation.to_string())
        .spawn()
        .unwrap();
    let (sock, _) = listener.accept().unwrap();
    let mut gen = [0u8; 8];
    let (_, fd) = recv_fd(&sock, &mut gen).unwrap();
    assert_eq!(u64::from_le_bytes(gen), generation);
    let seg = Segment::attach(fd.unwrap(), generation).unwrap();
    let (mut rx, mut tx) = seg.into_worker();
    let (mut buf, mut reply) = (Vec::new(), Vec::new());
    let mut served = 0u64;
    while served < kill_after {
        match rx.recv(Duration::from_secs(10)) {
            Ok(Some(req)) => match echo(&req, &mut tx, &mut buf, &mut reply) {
                Ok(()) => served += 1,
                // A gateway that has all its answers closes the channel; what it had
                // queued beyond them finds no one to answer to.
                Err(e) => {
                    assert!(served >= count, "after {served} answers: {e}");
                    break;
                }
            },
            // The gateway child finished its count and dropped its sender.
            Err(RecvError::Closed) => break,
            Ok(None) => panic!("worker side: no request for 10 s after {served}"),
            Err(e) => panic!("worker side after {served}: {e}"),
        }
    }
    if let GatewayEnd::KilledAfter(_) = end {
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        // What the dead gateway had already queued is still there to read, whole; after
        // that recv times out on schedule instead of hanging.
        let timeout = Duration::from_millis(200);
        loop {
            let t = Instant::now();
            let r = rx.recv(timeout);
            assert!(t.elapsed() < timeout + Duration::from_millis(150));
            match r {
                Ok(Some(req)) => {
                    let view =
                        request_view(&req).expect("a frame written before the kill is whole");
                    assert_eq!(view.model_name, "echo");
                    served += 1;
                }
                Ok(None) | Err(RecvError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mut sock = &sock;
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            sock.read(&mut [0u8; 1]).unwrap(),
            0,
            "EOF from the dead gateway"
        );
    }
    drop((rx, tx));
    (child, sock, served)
}

#[test]
fn sigkill_of_the_gateway_leaves_the_worker_side_running() {
    let (_, _, served) = serve_gateway_child(1, GatewayEnd::KilledAfter(20_000), "gwkill");
    assert!(served >= 20_000);
    // The same process attaches the next gateway's segment (generation 2) and serves it
    // to the end: nothing of the first segment is left in its way.
    let (mut child, _sock, served) =
        serve_gateway_child(2, GatewayEnd::ExitsAfter(5_000), "gwkill");
    assert!(served >= 5_000);
    assert!(
        child.wait().unwrap().success(),
        "second gateway saw every answer"
    );
}
