//! What tfgate listens on: no REST unless asked, never plaintext REST beside a TLS config
//! by accident.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tfgate_e2e::{
    bin_dir, exit_of, free_port, http, listening_ports, model_path, write_ssl_config,
    write_test_certs, Server, TempDir,
};

fn half_plus_two() -> [String; 2] {
    [
        "--model_name=half_plus_two".to_string(),
        format!(
            "--model_base_path={}",
            model_path("half_plus_two").display()
        ),
    ]
}

/// Without `--rest_api_port`, as with TF Serving's binary, only the gRPC port listens.
#[test]
fn rest_is_off_unless_asked() {
    let grpc = free_port();
    let mut child = Command::new(bin_dir().join("tfgate"))
        .arg(format!("--port={grpc}"))
        .args(half_plus_two())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !listening_ports(pid).contains(&grpc) {
        let exited = child.try_wait().unwrap();
        assert!(exited.is_none(), "tfgate exited: {exited:?}");
        assert!(Instant::now() < deadline, "gRPC never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // REST would be bound right after gRPC.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(listening_ports(pid), vec![grpc]);
    assert!(child.try_wait().unwrap().is_none(), "tfgate still serves");
    let _ = child.kill();
    let _ = child.wait();
}

/// `--ssl_config_file` secures gRPC; a REST port beside it must say how REST is meant to
/// be served, else tfgate refuses to start rather than open a plaintext port.
#[test]
fn plaintext_rest_beside_tls_only_on_purpose() {
    let dir = TempDir::new("rest-tls");
    write_test_certs(&dir.0).unwrap();
    let config = write_ssl_config(&dir.0, false).unwrap();
    let ssl = format!("--ssl_config_file={}", config.display());
    let rest = free_port();
    let mut cmd = Command::new(bin_dir().join("tfgate"));
    cmd.arg(format!("--port={}", free_port()))
        .arg(format!("--rest_api_port={rest}"))
        .arg(&ssl)
        .args(half_plus_two());
    let (code, err) = exit_of(cmd, Duration::from_secs(60));
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains(&format!(
            "Failed to start server. Error: INVALID_ARGUMENT: --ssl_config_file is set but \
             REST on --rest_api_port={rest} would be plaintext; pass --rest_api_enable_ssl to \
             serve REST over TLS, --rest_api_plaintext_with_ssl_config to serve it in \
             plaintext on purpose, or --rest_api_port=0 for no REST"
        )),
        "{err}"
    );

    // Asked for: plaintext REST beside TLS gRPC, TF Serving's behaviour.
    let [name, base] = half_plus_two();
    let server = Server::start_with_flags(
        "half_plus_two",
        &[&name, &base, &ssl, "--rest_api_plaintext_with_ssl_config"],
    );
    let (status, body) = http(
        server.rest_port,
        "POST",
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [1.0]}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, serde_json::json!({"predictions": [3.5]}));
}

/// `--grpc_socket_path` replaces a socket left by a server that died, but never deletes
/// anything else: with a regular file there, tfgate refuses to start and says so, and the
/// file survives.
#[test]
fn grpc_socket_path_replaces_only_a_stale_socket() {
    let dir = TempDir::new("grpc-socket");
    let path = dir.0.join("tfgate.sock");
    std::fs::write(&path, b"someone's data").unwrap();
    let mut cmd = Command::new(bin_dir().join("tfgate"));
    cmd.arg("--port=0")
        .arg(format!("--grpc_socket_path={}", path.display()))
        .args(half_plus_two());
    let (code, err) = exit_of(cmd, Duration::from_secs(60));
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains(&format!(
            "Failed to start server. Error: FAILED_PRECONDITION: --grpc_socket_path={}: a \
             regular file is there, not a socket; not replacing it",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"someone's data");

    // A stale socket (its server gone) is replaced, and gRPC is served there.
    std::fs::remove_file(&path).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let socket = format!("--grpc_socket_path={}", path.display());
    let [name, base] = half_plus_two();
    let _server = Server::start_with_flags("half_plus_two", &[&name, &base, &socket]);
    assert!(
        std::os::unix::net::UnixStream::connect(&path).is_ok(),
        "tfgate listens on the replaced socket"
    );
}
