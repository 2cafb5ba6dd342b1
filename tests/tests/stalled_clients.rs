//! No connection holds a place under `--max_connections` without making progress, on any
//! listener: a silent socket, a partial HTTP/2 preface, an idle HTTP/2 connection after
//! its SETTINGS, a stalled TLS handshake (REST and gRPC), and a silent gRPC Unix-socket
//! connection are each closed by the server within their bound, while ordinary requests
//! are answered beside them, and a request waiting for the place they held is answered
//! once they are gone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use tfgate_e2e::{bin_dir, http, model_path, write_ssl_config, write_test_certs, Server, TempDir};

const PREDICT: &str = r#"{"instances": [1.0]}"#;
/// Every bound under test.
const LIMIT_MS: u64 = 1000;
/// How long past its bound a stalled connection may stay open (a loaded 2-core machine).
const SLACK: Duration = Duration::from_secs(4);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const GOAWAY: u8 = 7;

fn limited(extra: &[&str]) -> Server {
    let name = "--model_name=half_plus_two".to_string();
    let base = format!(
        "--model_base_path={}",
        model_path("half_plus_two").display()
    );
    let header = format!("--rest_api_header_timeout_ms={LIMIT_MS}");
    let args = format!(
        "--grpc_channel_arguments=grpc.server_handshake_timeout_ms={LIMIT_MS},grpc.max_connection_idle_ms={LIMIT_MS}"
    );
    let mut flags = vec![
        name.as_str(),
        base.as_str(),
        header.as_str(),
        args.as_str(),
        "--max_connections=2",
    ];
    flags.extend_from_slice(extra);
    Server::start_with_flags("half_plus_two", &flags)
}

fn predict(port: u16) {
    let (status, body) = http(port, "POST", "/v1/models/half_plus_two:predict", PREDICT)
        .expect("an ordinary request is answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("3.5"), "{body}");
}

/// Reads until the server closes; the HTTP/2 frame types it sent (when `h2`), or None if
/// it was still open after `within`.
fn until_closed<S: Read>(s: &mut S, within: Duration, h2: bool) -> Option<Vec<u8>> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) if started.elapsed() < within => break,
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let mut types = Vec::new();
    let mut at = 0;
    while h2 && at + 9 <= got.len() {
        let len = (got[at] as usize) << 16 | (got[at + 1] as usize) << 8 | got[at + 2] as usize;
        types.push(got[at + 3]);
        at += 9 + len;
    }
    Some(types)
}

/// One stalled client of each kind, beside ordinary requests, then two holding both
/// places while an ordinary request waits for one.
fn holds_nothing_for_long<S: Read>(server: &Server, stall: impl Fn() -> S, h2: bool) {
    let mut first = stall();
    let started = Instant::now();
    predict(server.rest_port);
    assert!(
        started.elapsed() < Duration::from_millis(LIMIT_MS),
        "answered meanwhile"
    );
    let mut second = stall();
    // Both places held: this one waits until the server lets one go.
    let waited = Instant::now();
    predict(server.rest_port);
    assert!(
        waited.elapsed() < Duration::from_millis(LIMIT_MS) + SLACK,
        "the waiting request took {:?}",
        waited.elapsed()
    );
    for (which, s) in [("first", &mut first), ("second", &mut second)] {
        let left = (Duration::from_millis(LIMIT_MS) + SLACK).saturating_sub(started.elapsed());
        let frames = until_closed(s, left.max(Duration::from_millis(100)), h2);
        let frames =
            frames.unwrap_or_else(|| panic!("the {which} stalled connection is still open"));
        if h2 {
            assert!(
                frames.contains(&GOAWAY),
                "closed without GOAWAY: frames {frames:?}"
            );
        }
    }
}

fn tcp(port: u16, send: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(send).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(LIMIT_MS) + SLACK))
        .unwrap();
    // Let the server take it (and its place) before the next step.
    std::thread::sleep(Duration::from_millis(100));
    s
}

#[test]
fn a_silent_socket_on_either_port() {
    let server = limited(&[]);
    holds_nothing_for_long(&server, || tcp(server.rest_port, b""), false);
    holds_nothing_for_long(&server, || tcp(server.grpc_port, b""), false);
}

#[test]
fn a_partial_http2_preface_on_either_port() {
    let server = limited(&[]);
    holds_nothing_for_long(&server, || tcp(server.rest_port, &PREFACE[..10]), false);
    holds_nothing_for_long(&server, || tcp(server.grpc_port, &PREFACE[..10]), false);
}

#[test]
fn an_idle_http2_connection_gets_goaway_on_either_port() {
    let server = limited(&[]);
    let open = [PREFACE, SETTINGS].concat();
    holds_nothing_for_long(&server, || tcp(server.rest_port, &open), true);
    holds_nothing_for_long(&server, || tcp(server.grpc_port, &open), true);
}

#[test]
fn a_silent_grpc_unix_socket_connection_takes_a_place_and_leaves_it() {
    let dir = TempDir::new("stalled-uds");
    let socket = dir.0.join("grpc.sock");
    let flag = format!("--grpc_socket_path={}", socket.display());
    let server = limited(&[&flag]);
    let stall = || {
        let s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(LIMIT_MS) + SLACK))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s
    };
    holds_nothing_for_long(&server, stall, false);
    let open = [PREFACE, SETTINGS].concat();
    holds_nothing_for_long(
        &server,
        || {
            let mut s = stall();
            s.write_all(&open).unwrap();
            s
        },
        true,
    );
}

/// gRPC over TLS, REST plaintext beside it: a client that never finishes its handshake
/// leaves within `grpc.server_handshake_timeout_ms`.
#[test]
fn a_stalled_tls_handshake_on_the_grpc_port() {
    let dir = TempDir::new("stalled-tls");
    write_test_certs(&dir.0).unwrap();
    let config = write_ssl_config(&dir.0, false).unwrap();
    let ssl = format!("--ssl_config_file={}", config.display());
    let server = limited(&[&ssl, "--rest_api_plaintext_with_ssl_config"]);
    // A ClientHello's first bytes, then nothing.
    holds_nothing_for_long(
        &server,
        || tcp(server.grpc_port, &[0x16, 0x03, 0x01]),
        false,
    );
}

/// REST over TLS: a stalled handshake leaves within `--rest_api_header_timeout_ms`.
#[test]
fn a_stalled_tls_handshake_on_the_rest_port() {
    let dir = TempDir::new("stalled-rest-tls");
    write_test_certs(&dir.0).unwrap();
    let config = write_ssl_config(&dir.0, false).unwrap();
    let grpc = tfgate_e2e::free_port();
    let rest = tfgate_e2e::free_port();
    let mut child = std::process::Command::new(bin_dir().join("tfgate"))
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .arg("--model_name=half_plus_two")
        .arg(format!(
            "--model_base_path={}",
            model_path("half_plus_two").display()
        ))
        .arg(format!("--ssl_config_file={}", config.display()))
        .arg("--rest_api_enable_ssl")
        .arg(format!("--rest_api_header_timeout_ms={LIMIT_MS}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !tfgate_e2e::listening_ports(child.id()).contains(&rest) {
        assert!(Instant::now() < deadline, "REST never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    for hello in [&b""[..], &[0x16, 0x03, 0x01]] {
        let mut s = tcp(rest, hello);
        let started = Instant::now();
        let closed = until_closed(&mut s, Duration::from_millis(LIMIT_MS) + SLACK, false);
        assert!(
            closed.is_some(),
            "a stalled REST TLS handshake is still open"
        );
        assert!(started.elapsed() >= Duration::from_millis(LIMIT_MS / 2));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One HPACK literal header field without indexing, new name (lengths under 127).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// p99 of ordinary REST predictions over `seconds`.
fn ordinary_p99(port: u16, seconds: u64) -> Duration {
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut took = Vec::new();
    while Instant::now() < until {
        let t = Instant::now();
        predict(port);
        took.push(t.elapsed());
    }
    took.sort();
    took[took.len() * 99 / 100]
}

/// An HTTP/2 client opening streams and resetting them at once ("rapid reset",
/// CVE-2023-44487) on the gRPC port is sent GOAWAY, and ordinary clients beside it keep
/// their p99 latency within 2x (plus a millisecond of scheduling noise) of a run without it.
#[test]
fn a_rapid_reset_client_gets_goaway() {
    let server = Server::start("half_plus_two");
    let quiet = ordinary_p99(server.rest_port, 3);
    let grpc_port = server.grpc_port;
    let attacker = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", grpc_port)).unwrap();
        s.write_all(&[PREFACE, SETTINGS].concat()).unwrap();
        let mut reader = s.try_clone().unwrap();
        let goaway = std::thread::spawn(move || {
            reader
                .set_read_timeout(Some(Duration::from_secs(12)))
                .unwrap();
            until_closed(&mut reader, Duration::from_secs(12), true)
        });
        let mut headers = Vec::new();
        literal(&mut headers, ":method", "POST");
        literal(&mut headers, ":scheme", "http");
        literal(
            &mut headers,
            ":path",
            "/tensorflow.serving.PredictionService/Predict",
        );
        literal(&mut headers, ":authority", "localhost");
        literal(&mut headers, "content-type", "application/grpc");
        literal(&mut headers, "te", "trailers");
        let started = Instant::now();
        let mut stream = 1u32;
        while started.elapsed() < Duration::from_secs(10) {
            // HEADERS (END_HEADERS) then RST_STREAM (CANCEL), in one write.
            let mut burst = frame(1, 4, stream, &headers);
            burst.extend(frame(3, 0, stream, &8u32.to_be_bytes()));
            if s.write_all(&burst).is_err() {
                break;
            }
            stream += 2;
        }
        (goaway.join().unwrap(), started.elapsed(), stream / 2)
    });
    let loud = ordinary_p99(server.rest_port, 3);
    let (frames, took, streams) = attacker.join().unwrap();
    let frames = frames.expect("the attacking connection is still open");
    assert!(
        frames.contains(&GOAWAY),
        "no GOAWAY after {streams} reset streams: frames {frames:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "it ran its 10 s: {streams} streams"
    );
    assert!(
        loud <= quiet * 2 + Duration::from_millis(1),
        "ordinary p99 {loud:?} beside the attack, {quiet:?} without"
    );
}
