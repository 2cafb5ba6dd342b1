//! The descriptor budget: at its descriptor limit the gateway pauses its accept loop
//! instead of spinning on EMFILE (warning about it, rate-limited) and serves again once
//! descriptors free; a `--max_connections` that cannot fit beside the rest is refused at
//! startup with the numbers, and the default is lowered to fit.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use tfgate_e2e::{bin_dir, exit_of, free_port, http, model_path, Server};

const PREDICT: &str = r#"{"instances": [1.0]}"#;

/// User and system CPU time of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's closing parenthesis: fields 3 onwards; utime and stime are 14, 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn at_the_descriptor_limit_accept_pauses_and_recovers() {
    let server = Server::start("half_plus_two");
    let pid = server.pid();
    // Room for a few more descriptors only.
    let limit = open_descriptors(pid) + 8;
    let ok = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit")
        .success();
    assert!(ok, "prlimit");
    // More connections than descriptors: the kernel completes them, accept fails.
    let crowd: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", server.rest_port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_time(pid);
    let measured = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(pid) - before;
    let share = used.as_secs_f64() / measured.elapsed().as_secs_f64();
    assert!(
        share < 0.15,
        "the gateway used {:.0} % of a core at its descriptor limit",
        share * 100.0
    );
    let log = server.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("REST accept failed") && l.contains("Too many open files"))
        .count();
    assert!(warnings >= 1, "no warning about the limit in:\n{log}");
    assert!(
        warnings <= 4,
        "{warnings} warnings in under 3 s: not rate-limited"
    );
    // Descriptors free: it serves again.
    drop(crowd);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http(
            server.rest_port,
            "POST",
            "/v1/models/half_plus_two:predict",
            PREDICT,
        ) {
            Ok((200, body)) => {
                assert!(body.contains("3.5"), "{body}");
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "not serving again 20 s after descriptors freed: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn max_connections_must_fit_the_descriptor_limit() {
    let start = |max: Option<&str>| {
        let mut cmd = Command::new("bash");
        let mut line = format!(
            "ulimit -n 1024 && exec {} --port={} --rest_api_port={} --model_name=half_plus_two \
             --model_base_path={} --file_system_poll_wait_seconds=0",
            bin_dir().join("tfgate").display(),
            free_port(),
            free_port(),
            model_path("half_plus_two").display()
        );
        if let Some(m) = max {
            line.push_str(&format!(" --max_connections={m}"));
        }
        cmd.args(["-c", &line]);
        cmd
    };
    let (code, err) = exit_of(start(Some("5000")), Duration::from_secs(30));
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains(
            "Failed to start server. Error: INVALID_ARGUMENT: --max_connections=5000 cannot fit \
             in this process's descriptor limit of 1024"
        ),
        "{err}"
    );
    // The default is lowered with a warning, and the server starts.
    let (code, err) = exit_of(start(None), Duration::from_secs(5));
    assert_eq!(code, None, "it should still be serving: {err}");
    assert!(
        err.contains("--max_connections lowered from 10000 to 888"),
        "{err}"
    );
}
