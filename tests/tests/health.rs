//! Health through a worker's death and restart, and the drain on SIGTERM: `/healthz`,
//! `/readyz`, gRPC health (`--enable_grpc_healthcheck_service`) and `/tfgate/workers`.

use serde_json::Value;
use std::time::{Duration, Instant};
use tfgate_e2e::{count_to, http, model_path, signal, Server};
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn get(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http(port, "GET", path, "").unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, tonic::Code> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

async fn health_client(server: &Server) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn worker(port: u16) -> Value {
    get(port, "/tfgate/workers").1["workers"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_workers_death_and_restart() {
    let server = Server::start_with(
        "half_plus_two",
        &model_path("half_plus_two"),
        &["--enable_grpc_healthcheck_service"],
    );
    let port = server.rest_port;
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(
        get(port, "/readyz"),
        (200, serde_json::json!({"ready": true}))
    );
    let mut health = health_client(&server).await;
    let serving = ServingStatus::Serving as i32;
    for service in ["", "ModelService", "PredictionService"] {
        assert_eq!(
            check(&mut health, service).await,
            Ok(serving),
            "{service:?}"
        );
    }
    assert_eq!(
        check(&mut health, "NoSuchService").await,
        Err(tonic::Code::NotFound)
    );
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, serving);

    let before = worker(port);
    let pid = before["pid"].as_u64().unwrap();
    assert_eq!(before["state"], "serving");
    assert_eq!(before["restarts"], 0);
    signal("-9", pid);

    // Not ready until the replacement has the model again; alive throughout.
    let started = Instant::now();
    let not_ready = loop {
        let (status, body) = get(port, "/readyz");
        if status == 503 {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "/readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(not_ready["ready"], false);
    assert!(
        not_ready["waiting_for"]
            .to_string()
            .contains("half_plus_two"),
        "{not_ready}"
    );
    assert_eq!(get(port, "/healthz").0, 200);
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let next = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.status, serving,
        "SERVING again once the worker is back"
    );
    assert_eq!(get(port, "/readyz").0, 200);
    for service in ["", "ModelService", "PredictionService"] {
        assert_eq!(
            check(&mut health, service).await,
            Ok(serving),
            "{service:?}"
        );
    }
    // The worker reports its initial load done just after the model's AVAILABLE.
    let waiting = Instant::now();
    let after = loop {
        let w = worker(port);
        if w["state"] == "serving" || waiting.elapsed() > Duration::from_secs(5) {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(after["restarts"], 1);
    assert_eq!(after["state"], "serving");
    assert_ne!(after["pid"], before["pid"]);
    assert!(
        after["last_exit"].as_str().unwrap().contains("SIGKILL"),
        "{after}"
    );
    assert_eq!(after["versions"][0]["state"], "AVAILABLE");
}

/// SIGTERM with requests in flight: not ready at once, new requests refused after the
/// drain delay, every request in flight answered, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let mut server = Server::start_with(
        "slow",
        &model_path("slow"),
        &[
            "--num_workers=2",
            "--enable_grpc_healthcheck_service",
            "--drain_delay_ms=700",
        ],
    );
    let port = server.rest_port;
    let started = Instant::now();
    while get(port, "/tfgate/workers").1["workers"]
        .as_array()
        .is_none_or(|w| w.iter().any(|w| w["state"] != "serving"))
    {
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Four runs of about a second each, over REST and gRPC, in flight at SIGTERM.
    let n = 300_000i64;
    let rest: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                http(
                    port,
                    "POST",
                    "/v1/models/slow:predict",
                    &format!(r#"{{"instances": [{n}]}}"#),
                )
                .unwrap()
            })
        })
        .collect();
    let grpc: Vec<_> = (0..2)
        .map(|_| {
            let url = server.grpc_url();
            tokio::spawn(async move {
                let mut client = PredictionServiceClient::connect(url).await.unwrap();
                client.predict(count_to(n, None)).await
            })
        })
        .collect();
    let mut health = health_client(&server).await;
    let in_flight = || -> u64 {
        get(port, "/tfgate/workers").1["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["in_flight"].as_u64().unwrap())
            .sum()
    };
    let waiting = Instant::now();
    while in_flight() < 4 {
        assert!(
            waiting.elapsed() < Duration::from_secs(3),
            "requests never got in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    signal("-TERM", server.pid());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("shutting down"), "{body}");
    assert_eq!(
        health
            .check(HealthCheckRequest {
                service: String::new()
            })
            .await
            .unwrap()
            .into_inner()
            .status,
        ServingStatus::NotServing as i32
    );
    // Still served during the delay (load balancers are still catching up).
    assert_eq!(get(port, "/v1/models/slow").0, 200);

    // After the delay: new connections are refused, or answered 503.
    tokio::time::sleep(Duration::from_millis(900)).await;
    match http(
        port,
        "POST",
        "/v1/models/slow:predict",
        r#"{"instances": [1]}"#,
    ) {
        Err(_) => {}
        Ok((status, body)) => assert_eq!(status, 503, "{body}"),
    }

    for r in rest {
        let (status, body) = r.join().unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["predictions"][0], n);
    }
    for g in grpc {
        let resp = g.await.unwrap().expect("in-flight gRPC request answered");
        assert_eq!(resp.into_inner().outputs["count"].int64_val, vec![n]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after the drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

/// SIGTERM with the default `--drain_delay_ms=0` right after large requests were written
/// whole to their connections (most not yet parsed by the server) and while gRPC calls
/// and a REST request run at the worker: every one is answered 200 (HTTP/1 with
/// `Connection: close`), the gRPC calls OK, and the exit code is 0. Only connections
/// made after the signal are refused. The runs that are in progress at the signal are
/// the slow model's, counted on this machine to last about 2 s, and the signal waits
/// until the server holds them (its in-flight count), not on a fixed sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_already_received() {
    use std::io::Write;
    let dir = tfgate_e2e::TempDir::new("sigterm-drain");
    let config = dir.0.join("models.config");
    std::fs::write(
        &config,
        format!(
            r#"model_config_list {{
                 config {{ name: "half_plus_two" base_path: "{}" model_platform: "tensorflow" }}
                 config {{ name: "slow" base_path: "{}" model_platform: "tensorflow" }} }}"#,
            model_path("half_plus_two").display(),
            model_path("slow").display()
        ),
    )
    .unwrap();
    let mut server = Server::start_with_flags(
        "slow",
        &[&format!("--model_config_file={}", config.display())],
    );
    let port = server.rest_port;
    let count = tfgate_e2e::slow_count_taking(port, Duration::from_secs(2));
    // About 1.8 MB of JSON each.
    let n = 360_000usize;
    let body = format!(r#"{{"instances": [{}]}}"#, vec!["1.0"; n].join(", "));
    assert!(body.len() > 1_800_000);
    let body = std::sync::Arc::new(body);
    let (written_tx, written) = std::sync::mpsc::channel();
    let rest: Vec<_> = (0..12)
        .map(|_| {
            let body = body.clone();
            let written = written_tx.clone();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let head = format!(
                    "POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: localhost\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).unwrap();
                s.write_all(body.as_bytes()).unwrap();
                written.send(()).unwrap();
                tfgate_e2e::read_response(s).unwrap()
            })
        })
        .collect();
    let client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX);
    let grpc: Vec<_> = (0..3)
        .map(|_| {
            let mut client = client.clone();
            let req = count_to(count, None);
            tokio::spawn(async move { client.predict(req).await })
        })
        .collect();
    // One REST request still running at the signal: its answer comes after it.
    let slow_rest = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = format!(r#"{{"instances": [{count}]}}"#);
        write!(
            s,
            "POST /v1/models/slow:predict HTTP/1.1\r\nHost: localhost\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        tfgate_e2e::read_response(s).unwrap()
    });
    for _ in 0..12 {
        written
            .recv_timeout(Duration::from_secs(60))
            .expect("every request written whole");
    }
    // The three gRPC calls and the slow REST request are at the worker.
    tokio::task::block_in_place(|| tfgate_e2e::wait_in_flight(port, 4));
    signal("-TERM", server.pid());

    let mut closes = 0;
    for r in rest {
        let (status, head, body) = r.join().unwrap();
        assert_eq!(status, 200, "{head}{}", &body[..body.len().min(300)]);
        closes += usize::from(head.contains("\r\nconnection: close"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["predictions"].as_array().map(Vec::len), Some(n));
        assert_eq!(v["predictions"][0], 3.5);
    }
    for g in grpc {
        let resp = g
            .await
            .unwrap()
            .expect("a gRPC call running at SIGTERM is answered");
        assert_eq!(resp.into_inner().outputs["count"].int64_val, [count]);
    }
    let (status, head, body) = slow_rest.join().unwrap();
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.contains(&count.to_string()), "{body}");
    assert!(
        head.contains("\r\nconnection: close"),
        "an HTTP/1 answer after SIGTERM says Connection: close: {head}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after the drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    // Closed now: a new connection is refused.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // How many of the large ones were answered after the signal varies with the machine.
    eprintln!("{closes} of 12 large REST answers came after SIGTERM (Connection: close)");
}
