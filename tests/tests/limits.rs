//! What one client can hold: a few hundred connections trickling their headers a byte at
//! a time do not keep ordinary requests from being answered, and are closed once
//! `--rest_api_header_timeout_ms` has passed; a body that never completes gets 504 naming
//! `--rest_api_body_timeout_ms`; past `--max_connections` a connection waits in the
//! backlog until another closes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tfgate_e2e::{http, model_path, read_response, Server};

const PREDICT: &str = r#"{"instances": [1.0]}"#;

fn server(flags: &[&str]) -> Server {
    Server::start_with("half_plus_two", &model_path("half_plus_two"), flags)
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("connect")
}

/// Whether the server ended the connection (EOF, a reset, or a response to the partial
/// request) within `within`, rather than holding it open.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let _ = s.set_read_timeout(Some(within));
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

#[test]
fn slow_clients_hold_nothing_for_long() {
    let server = server(&["--rest_api_header_timeout_ms=3000"]);
    let port = server.rest_port;
    let header = b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let slow: Vec<TcpStream> = (0..300).map(|_| connect(port)).collect();
    let started = Instant::now();
    // One byte per connection every 200 ms, never the end of the header.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let mut slow: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let byte = header.get(i).copied().unwrap_or(b'x');
                // A connection the server closed fails its write: leave it.
                slow.retain_mut(|s| s.write_all(&[byte]).is_ok());
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // Ordinary requests meanwhile: answered, right, and promptly (usually ~1 ms here).
    for _ in 0..50 {
        let t = Instant::now();
        let (status, body) = http(port, "POST", "/v1/models/half_plus_two:predict", PREDICT)
            .expect("an ordinary request is answered");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("3.5"), "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "an ordinary request took {:?} beside 300 slow clients",
            t.elapsed()
        );
    }
    // The header timeout closes every slow connection though it keeps sending.
    let mut still_open = 0;
    for mut s in slow {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        if !closed_by_server(&mut s, left.max(Duration::from_millis(10))) {
            still_open += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    assert_eq!(
        still_open, 0,
        "slow connections still open 10 s after a 3 s header timeout"
    );
    // And the server still answers.
    let (status, _) = http(port, "POST", "/v1/models/half_plus_two:predict", PREDICT).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn a_body_that_never_completes_gets_504_naming_the_flag() {
    let server = server(&["--rest_api_body_timeout_ms=500"]);
    let mut s = connect(server.rest_port);
    s.write_all(
        b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: localhost\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"instances\"",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let (status, _, body) = read_response(s).unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("Request body not received within 500 ms; raise --rest_api_body_timeout_ms"),
        "{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn past_max_connections_a_connection_waits_for_a_place() {
    let server = server(&["--max_connections=3"]);
    let port = server.rest_port;
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(port)).collect();
    // Let the server accept the three before the fourth arrives.
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = connect(port);
    fourth
        .write_all(
            format!(
                "POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: localhost\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{PREDICT}",
                PREDICT.len()
            )
            .as_bytes(),
        )
        .unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 64];
    let waited = fourth.read(&mut buf);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the fourth connection was served while three held every place: {waited:?}"
    );
    // One leaves: the fourth gets its place and its answer.
    held.pop();
    fourth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (status, _, body) = read_response(fourth).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("3.5"), "{body}");
}
