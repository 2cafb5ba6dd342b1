//! Two-process benchmark of the shared-memory transport against a Unix socket and memcpy.
//!
//! `cargo run --release -p tfgate-frame --bin shm-bench [-- --payload=BYTES]` (one
//! payload size's throughput as a JSON line). The binary re-executes itself
//! as the peer (`--peer shm|uds SOCKET_PATH`). Prints the machine, a table, and as its
//! last line one JSON object.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shm_protocol::fd_passing::{recv_fd, send_fd};
use shm_protocol::{
    InPlacePayload, RecvError, Region, RequestSender, ResponseReceiver, Segment, SegmentConfig,
    SpinConfig,
};
use tfgate_frame::{
    decode_response, request_view, RequestFrame, RequestKind, ResponseRef, TensorDataRef, TensorRef,
};
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

const UDS_MSG: usize = 64;
/// Small message: one 16-byte float tensor.
const SMALL_ELEMS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--peer") {
        let path = Path::new(&args[3]);
        match args[2].as_str() {
            "shm" => shm_peer(path),
            "uds" => uds_peer(path),
            other => panic!("unknown peer {other}"),
        }
        return;
    }
    if let Some(size) = args.iter().find_map(|a| a.strip_prefix("--payload=")) {
        // One payload size's one-way throughput, as a JSON line (tfgate-bench quotes it
        // beside a served request of that size).
        let Ok(size) = size.parse::<usize>() else {
            eprintln!("shm-bench: --payload takes a byte count");
            std::process::exit(2);
        };
        let (peer, tx, mut rx) = spawn_shm(SpinConfig::default(), 1);
        let budget = Duration::from_secs(1);
        let copy_out = ring_throughput(&tx, &mut rx, size, budget, 0, false);
        let in_place = ring_throughput(&tx, &mut rx, size, budget, 1 << 40, true);
        drop((tx, rx));
        drop(peer);
        let memcpy = memcpy_gbps(size, budget);
        let pread = pread_gbps(size, budget);
        println!(
            "{{\"payload_bytes\":{size},\"ring_gbps\":{copy_out:.3},\"ring_inplace_gbps\":{in_place:.3},\"memcpy_gbps\":{memcpy:.3},\"pread_gbps\":{pread:.3}}}"
        );
        return;
    }
    if let Ok(size) = std::env::var("SHM_BENCH_TPUT_ONLY") {
        // Development aid: one throughput measurement.
        let size: usize = size.parse().expect("size");
        let (peer, tx, mut rx) = spawn_shm(SpinConfig::default(), 1);
        let g = ring_throughput(
            &tx,
            &mut rx,
            size,
            Duration::from_secs(2),
            0,
            std::env::var("SHM_BENCH_IN_PLACE").is_ok(),
        );
        println!("{size} bytes: {g:.2} GB/s");
        drop((tx, rx));
        drop(peer);
        return;
    }
    if let Ok(n) = std::env::var("SHM_BENCH_RTT_ONLY") {
        // Development aid: SHM_BENCH_SPIN_US, SHM_BENCH_GAP_US.
        let env = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let spin = SpinConfig {
            spin: Duration::from_micros(env("SHM_BENCH_SPIN_US", 50)),
        };
        let gap = Duration::from_micros(env("SHM_BENCH_GAP_US", 0));
        let (peer, tx, mut rx) = spawn_shm(spin, 1);
        let mut v = ring_rtt(&tx, &mut rx, n.parse().expect("n"), gap, 0);
        println!(
            "rtt p50 {:.2} µs p99 {:.2} µs",
            pct(&mut v, 0.5),
            pct(&mut v, 0.99)
        );
        drop((tx, rx));
        drop(peer);
        return;
    }
    bench();
}

// ------------------------------------------------------------------------ peers

/// Model name that asks the echo peer to read payloads in place instead of copying out.
const IN_PLACE: &str = "in-place";

/// Reads every byte of an in-place payload once, in cache-sized chunks, and folds them
/// into a checksum so the reads cannot be optimised away.
fn read_in_place(p: &InPlacePayload, scratch: &mut [u8]) -> u64 {
    let mut sum = 0u64;
    let mut off = 0;
    while off < p.len() {
        let n = (p.len() - off).min(scratch.len());
        p.read_into(off, &mut scratch[..n]).expect("in bounds");
        sum = sum.wrapping_add(scratch[n - 1] as u64);
        off += n;
    }
    black_box(sum)
}

/// Echo worker: decodes every request, copies each input out into a private buffer (as
/// into a TensorFlow tensor), and answers with the inputs if they are small, else with
/// an empty Ok.
fn shm_peer(path: &Path) {
    let sock = UnixStream::connect(path).expect("connect");
    let mut gen = [0u8; 8];
    let (_, fd) = recv_fd(&sock, &mut gen).expect("recv_fd");
    let seg = Segment::attach(fd.expect("fd"), u64::from_le_bytes(gen)).expect("attach");
    let (mut rx, mut tx) = seg.into_worker();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut scratch = vec![0u8; 64 << 10];
    loop {
        let req = match rx.recv(Duration::from_secs(1)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(RecvError::Closed) => return,
            Err(e) => panic!("peer: {e}"),
        };
        let view = request_view(&req).expect("frame");
        bufs.resize_with(view.inputs.len(), Vec::new);
        let mut small = true;
        let in_place = view.model_name == IN_PLACE;
        for ((_, t), buf) in view.inputs.iter().zip(bufs.iter_mut()) {
            if in_place {
                // As the worker feeds TensorFlow: the payload stays in shared memory and
                // is read once where it lies (here streamed through a cache-sized scratch).
                read_in_place(&t.in_place().expect("in place"), &mut scratch);
            } else {
                buf.resize(t.byte_len(), 0);
                t.copy_to(buf).expect("copy");
            }
            small &= t.byte_len() <= 64;
        }
        let shapes: Vec<Vec<i64>> = view
            .inputs
            .iter()
            .map(|(_, t)| t.shape().to_vec())
            .collect();
        let outs: Vec<(&str, TensorRef<'_>)> = if small {
            view.inputs
                .iter()
                .zip(bufs.iter())
                .zip(shapes.iter())
                .map(|(((n, t), b), s)| {
                    let data = TensorDataRef::Bytes(b);
                    let t = TensorRef {
                        dtype: t.dtype(),
                        shape: s,
                        data,
                    };
                    (n.as_str(), t)
                })
                .collect()
        } else {
            Vec::new()
        };
        let frame = ResponseRef::Ok {
            model_version: 1,
            outputs: &outs,
            timing: Default::default(),
        };
        let frame = frame.encode().expect("encode");
        tx.send(req.id(), &frame, Duration::from_secs(10))
            .expect("send");
    }
}

fn uds_peer(path: &Path) {
    let mut sock = UnixStream::connect(path).expect("connect");
    let mut buf = [0u8; UDS_MSG];
    while sock.read_exact(&mut buf).is_ok() {
        if sock.write_all(&buf).is_err() {
            return;
        }
    }
}

struct Peer {
    child: Child,
    sock: UnixStream,
    path: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spawn_peer(kind: &str) -> Peer {
    let path = std::env::temp_dir().join(format!("shm-bench-{}-{kind}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind");
    let child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--peer")
        .arg(kind)
        .arg(&path)
        .spawn()
        .expect("spawn peer");
    let (sock, _) = listener.accept().expect("accept");
    Peer { child, sock, path }
}

fn spawn_shm(spin: SpinConfig, generation: u64) -> (Peer, RequestSender, ResponseReceiver) {
    let peer = spawn_peer("shm");
    // Steady state of a long-running gateway: every arena page already touched.
    let config = SegmentConfig {
        spin,
        prefault: true,
        ..SegmentConfig::default()
    };
    let seg = Segment::create(&config, generation).expect("create");
    send_fd(&peer.sock, seg.fd(), &generation.to_le_bytes()).expect("send_fd");
    let (tx, rx) = seg.into_gateway();
    (peer, tx, rx)
}

// ------------------------------------------------------------------------ measurements

fn frame_with(bytes: Vec<u8>, dtype: DataType, shape: Vec<i64>) -> RequestFrame {
    RequestFrame {
        deadline_ns: 0,
        kind: RequestKind::Predict,
        model_name: "copy-out".into(),
        version: None,
        signature_name: "serving_default".into(),
        output_filter: vec![],
        inputs: vec![(
            "x".into(),
            Tensor::new(dtype, shape, TensorData::Bytes(bytes.into())).expect("tensor"),
        )],
    }
}

fn send(tx: &RequestSender, rx: &mut ResponseReceiver, id: u64, frame: &RequestFrame) {
    loop {
        match tx.try_send(id, &frame.encode().expect("encode")) {
            Ok(()) => return,
            Err(e) if e.is_full() => {
                let _ = rx
                    .recv(Duration::from_secs(5), decode_response)
                    .expect("recv");
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Round trips of a small message, one at a time; `gap` between them (idle mode).
fn ring_rtt(
    tx: &RequestSender,
    rx: &mut ResponseReceiver,
    n: usize,
    gap: Duration,
    id0: u64,
) -> Vec<u64> {
    let frame = frame_with(
        vec![1; SMALL_ELEMS * 4],
        DataType::Float,
        vec![SMALL_ELEMS as i64],
    );
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        send(tx, rx, id0 + i as u64, &frame);
        let (_, f) = rx
            .recv(Duration::from_secs(5), decode_response)
            .expect("recv")
            .expect("response");
        out.push(t.elapsed().as_nanos() as u64);
        black_box(f.expect("frame"));
    }
    out
}

fn uds_rtt(sock: &mut UnixStream, n: usize, gap: Duration) -> Vec<u64> {
    let msg = [7u8; UDS_MSG];
    let mut buf = [0u8; UDS_MSG];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        sock.write_all(&msg).expect("write");
        sock.read_exact(&mut buf).expect("read");
        out.push(t.elapsed().as_nanos() as u64);
    }
    out
}

/// One-way payload throughput: `size`-byte tensors, several in flight; the peer copies
/// every tensor out into its own buffer, or (`in_place`) reads it where it lies, as the
/// worker's TensorFlow feed does. Returns GB/s (1e9 bytes/s).
fn ring_throughput(
    tx: &RequestSender,
    rx: &mut ResponseReceiver,
    size: usize,
    budget: Duration,
    id0: u64,
    in_place: bool,
) -> f64 {
    let mut frame = frame_with(vec![0x5a; size], DataType::Uint8, vec![size as i64]);
    if in_place {
        frame.model_name = IN_PLACE.into();
    }
    let window = std::env::var("SHM_BENCH_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
        // About 4 MiB in flight, at least two frames (one being written while the peer
        // reads the other): the blocks get reused while still in cache; a deeper
        // pipeline only adds cache misses.
        .unwrap_or_else(|| ((4usize << 20) / size).clamp(2, 16));
    // Warm up (fault in the arena pages used).
    let mut id = id0;
    for _ in 0..window * 2 {
        send(tx, rx, id, &frame);
        id += 1;
    }
    while tx.in_flight() > 0 {
        rx.recv(Duration::from_secs(5), decode_response)
            .expect("recv");
    }
    let t = Instant::now();
    let mut bytes = 0u64;
    while t.elapsed() < budget {
        for _ in 0..window {
            if tx.in_flight() >= window {
                let (_, f) = rx
                    .recv(Duration::from_secs(5), decode_response)
                    .expect("recv")
                    .expect("response");
                black_box(f.expect("frame"));
            }
            send(tx, rx, id, &frame);
            id += 1;
            bytes += size as u64;
        }
    }
    while tx.in_flight() > 0 {
        rx.recv(Duration::from_secs(5), decode_response)
            .expect("recv");
    }
    bytes as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn memcpy_gbps(size: usize, budget: Duration) -> f64 {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    let mut bytes = 0u64;
    while t.elapsed() < budget {
        for _ in 0..8 {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
            bytes += size as u64;
        }
    }
    bytes as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// GB/s of the kernel's copy from a `/dev/shm` object into shared memory (`pread`, as
/// the gateway reads a V2 client's shared-memory input into the request arena), timed
/// like `memcpy_gbps`: the ceiling of that path's one copy.
fn pread_gbps(size: usize, budget: Duration) -> f64 {
    use std::os::fd::AsFd;
    let path = format!("/dev/shm/tfgate-shm-bench-{}", std::process::id());
    std::fs::write(&path, vec![0x5au8; size]).expect("a /dev/shm object");
    let file = std::fs::File::open(&path).expect("open the /dev/shm object");
    let _ = std::fs::remove_file(&path);
    let arena = Region::scratch(size).expect("a shared mapping");
    let copy = || {
        arena
            .fill_from_file(0, size, file.as_fd(), 0)
            .expect("pread")
    };
    copy();
    let t = Instant::now();
    let mut bytes = 0u64;
    while t.elapsed() < budget {
        for _ in 0..8 {
            copy();
            bytes += size as u64;
        }
    }
    bytes as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Total GB/s of two memcpys running at once, one per core: the memory bandwidth a
/// two-copy path (producer copies in, consumer copies out, in parallel) can share.
fn memcpy_pair_gbps(size: usize, budget: Duration) -> f64 {
    std::thread::scope(|s| {
        let a = s.spawn(|| memcpy_gbps(size, budget));
        let b = memcpy_gbps(size, budget);
        a.join().expect("memcpy thread") + b
    })
}

/// One payload size: GB/s of each path and the per-round ring/memcpy ratios (medians).
struct Throughput {
    memcpy: f64,
    memcpy_pair: f64,
    copy_out: f64,
    in_place: f64,
    copy_out_ratio: f64,
    in_place_ratio: f64,
}

fn size_label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn machine() -> (String, String, usize) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    (cpu, kernel, nproc)
}

fn bench() {
    let started = Instant::now();
    let (cpu, kernel, nproc) = machine();
    println!("machine: nproc={nproc}, cpu={cpu}, kernel={kernel}");
    let spin = SpinConfig::default();
    println!("spin before park: {:?}; idle gap 1.5 ms", spin.spin);

    let (peer, tx, mut rx) = spawn_shm(spin, 1);
    ring_rtt(&tx, &mut rx, 20_000, Duration::ZERO, 0); // warm-up
    let mut ring_load = ring_rtt(&tx, &mut rx, 200_000, Duration::ZERO, 1 << 32);
    let mut ring_idle = ring_rtt(&tx, &mut rx, 800, Duration::from_micros(1500), 2 << 32);
    let sizes = [
        (4usize << 10, "4kib"),
        (64 << 10, "64kib"),
        (1 << 20, "1mib"),
        (16 << 20, "16mib"),
    ];
    // Memory bandwidth on a shared VM drifts by 2x within seconds, so each size measures
    // memcpy, copy-out and in-place back to back in short rounds, and each ring number is
    // divided by the memcpy of its own round: the ratios compare numbers taken under the
    // same conditions. The table shows the medians over the rounds.
    const ROUNDS: u64 = 7;
    let mut tput = Vec::new();
    for (i, (size, _)) in sizes.iter().enumerate() {
        let budget = Duration::from_millis(if *size >= 1 << 20 { 300 } else { 200 });
        let (mut m, mut c, mut p, mut rc, mut rp) = (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let id = ((10 + i as u64) << 32) + (round << 28);
            let memcpy = memcpy_gbps(*size, budget);
            let copy_out = ring_throughput(&tx, &mut rx, *size, budget, id, false);
            let in_place = ring_throughput(&tx, &mut rx, *size, budget, id + (1 << 27), true);
            m.push(memcpy);
            c.push(copy_out);
            p.push(in_place);
            rc.push(copy_out / memcpy);
            rp.push(in_place / memcpy);
        }
        tput.push(Throughput {
            memcpy_pair: memcpy_pair_gbps(*size, budget),
            memcpy: median(&mut m),
            copy_out: median(&mut c),
            in_place: median(&mut p),
            copy_out_ratio: median(&mut rc),
            in_place_ratio: median(&mut rp),
        });
    }
    drop((tx, rx));
    drop(peer);

    // The same loaded round trip with spin = 0 (park at once), to show the trade-off.
    let (peer, tx, mut rx) = spawn_shm(
        SpinConfig {
            spin: Duration::ZERO,
        },
        2,
    );
    ring_rtt(&tx, &mut rx, 2_000, Duration::ZERO, 0);
    let mut ring_nospin = ring_rtt(&tx, &mut rx, 20_000, Duration::ZERO, 1 << 32);
    drop((tx, rx));
    drop(peer);

    // Idle with a longer spin: the waiting gateway thread still spins when the (slow to
    // wake) peer answers, so only one cold wake-up is paid per round trip.
    let long_spin = SpinConfig {
        spin: Duration::from_micros(200),
    };
    let (peer, tx, mut rx) = spawn_shm(long_spin, 3);
    ring_rtt(&tx, &mut rx, 2_000, Duration::ZERO, 0);
    let mut ring_idle_long = ring_rtt(&tx, &mut rx, 800, Duration::from_micros(1500), 1 << 32);
    drop((tx, rx));
    drop(peer);

    let mut uds = spawn_peer("uds");
    uds_rtt(&mut uds.sock, 20_000, Duration::ZERO);
    let mut uds_load = uds_rtt(&mut uds.sock, 200_000, Duration::ZERO);
    let mut uds_idle = uds_rtt(&mut uds.sock, 800, Duration::from_micros(1500));
    drop(uds);

    println!();
    println!(
        "{:<44} {:>10} {:>10}",
        "round trip, small message", "p50 µs", "p99 µs"
    );
    let rows: [(&str, &mut Vec<u64>); 6] = [
        ("shm ring, under load (back-to-back)", &mut ring_load),
        ("shm ring, idle (1 msg / 1.5 ms)", &mut ring_idle),
        (
            "shm ring, under load, spin=0 (park at once)",
            &mut ring_nospin,
        ),
        ("shm ring, idle, spin=200 µs", &mut ring_idle_long),
        ("unix socket, under load (back-to-back)", &mut uds_load),
        ("unix socket, idle (1 msg / 1.5 ms)", &mut uds_idle),
    ];
    let mut p = Vec::new();
    for (name, v) in rows {
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        println!("{name:<44} {p50:>10.2} {p99:>10.2}");
        p.push((p50, p99));
    }
    println!();
    println!(
        "{:<22} {:>14} {:>7} {:>15} {:>7} {:>12}",
        "one-way tensor payload", "copy-out GB/s", "ratio", "in-place GB/s", "ratio", "memcpy GB/s"
    );
    for ((size, _), t) in sizes.iter().zip(&tput) {
        println!(
            "{:<22} {:>14.2} {:>6.0}% {:>15.2} {:>6.0}% {:>12.2}",
            size_label(*size),
            t.copy_out,
            100.0 * t.copy_out_ratio,
            t.in_place,
            100.0 * t.in_place_ratio,
            t.memcpy,
        );
    }
    println!("(GB/s: medians of {ROUNDS} rounds; ratio: median of each round's ring/memcpy)");
    let pair: Vec<String> = sizes
        .iter()
        .zip(&tput)
        .map(|((size, _), t)| {
            format!(
                "{} {:.2} ({:.2}x)",
                size_label(*size),
                t.memcpy_pair,
                t.memcpy_pair / t.memcpy
            )
        })
        .collect();
    println!(
        "two memcpys at once, one per core, total GB/s (x one memcpy): {}",
        pair.join(", ")
    );
    println!();
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
    let mut json = format!(
        "{{\"ring_rtt_p50_us\":{:.3},\"ring_rtt_p99_us\":{:.3},\"ring_idle_rtt_p50_us\":{:.3},\"ring_idle_rtt_p99_us\":{:.3},\"ring_nospin_rtt_p50_us\":{:.3},\"ring_idle_spin200_rtt_p50_us\":{:.3},\"uds_rtt_p50_us\":{:.3},\"uds_rtt_p99_us\":{:.3},\"uds_idle_rtt_p50_us\":{:.3},\"uds_idle_rtt_p99_us\":{:.3}",
        p[0].0, p[0].1, p[1].0, p[1].1, p[2].0, p[3].0, p[4].0, p[4].1, p[5].0, p[5].1
    );
    for ((_, key), t) in sizes.iter().zip(&tput) {
        json.push_str(&format!(
            ",\"ring_gbps_{key}\":{:.3},\"ring_inplace_gbps_{key}\":{:.3},\"memcpy_gbps_{key}\":{:.3},\"ring_ratio_{key}\":{:.3},\"ring_inplace_ratio_{key}\":{:.3},\"memcpy_pair_gbps_{key}\":{:.3}",
            t.copy_out, t.in_place, t.memcpy, t.copy_out_ratio, t.in_place_ratio, t.memcpy_pair
        ));
    }
    json.push_str(&format!(",\"nproc\":{nproc}}}"));
    println!("{json}");
}
