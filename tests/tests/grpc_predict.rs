//! gRPC PredictionService/ModelService against the real binaries.

use tfgate_e2e::{count_to, float_tensor as floats, predict_request as request, Server};
use tfgate_proto::tensorflow::serving::model_spec::VersionChoice;
use tfgate_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use tfgate_proto::tensorflow::serving::{GetModelMetadataRequest, ModelSpec};

#[tokio::test]
async fn grpc_predict_values_and_errors() {
    let server = Server::start("half_plus_two");
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();

    let resp = client
        .predict(request(
            "half_plus_two",
            "x",
            floats(&[3, 1], &[1.0, 2.0, 5.0]),
        ))
        .await
        .unwrap()
        .into_inner();
    let y = &resp.outputs["y"];
    assert_eq!(y.float_val, vec![3.5, 4.0, 5.5]);
    assert_eq!(
        y.tensor_shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.size)
            .collect::<Vec<_>>(),
        vec![3, 1]
    );
    let spec = resp.model_spec.unwrap();
    assert_eq!(spec.name, "half_plus_two");
    assert_eq!(spec.signature_name, "serving_default");
    assert_eq!(spec.version_choice, Some(VersionChoice::Version(2)));

    // tensor_content input, the form numpy-based clients send.
    let mut content = floats(&[2], &[]);
    content.tensor_content = [2.0f32, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into();
    let resp = client
        .predict(request("half_plus_two", "x", content))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.outputs["y"].float_val, vec![4.0, 5.0]);

    let err = client
        .predict(request("half", "x", floats(&[1], &[1.0])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        err.message(),
        "Servable not found for request: Latest(half)"
    );

    let err = client
        .predict(request("half_plus_two", "z", floats(&[1], &[1.0])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "Signature input alias: x(feed name: x:0) not found in request and no default value provided. Inputs expected to be in the request {z}, or default input alias set: "
    );

    let mut bad_sig = request("half_plus_two", "x", floats(&[1], &[1.0]));
    bad_sig.model_spec.as_mut().unwrap().signature_name = "foo".into();
    let err = client.predict(bad_sig).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(err.message(), "Serving signature key \"foo\" not found.");

    let err = client
        .predict(request("", "x", floats(&[1], &[1.0])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "ModelSpec has no name specified.");

    let meta = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(ModelSpec {
                name: "half_plus_two".into(),
                ..Default::default()
            }),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        meta.metadata["signature_def"].type_url,
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    );
    // The fields are checked before the model is looked up, as in TF Serving.
    let e = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(ModelSpec {
                name: "no_such_model".into(),
                ..Default::default()
            }),
            metadata_field: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "GetModelMetadataRequest must specify at least one metadata_field"
    );
}

/// Tensors that can never fit in the shared-memory arenas fail with an error naming the
/// flag that sizes them, and the server keeps serving.
#[tokio::test]
async fn oversized_tensors_name_the_arena_flags() {
    let model = tfgate_e2e::model_path("half_plus_two");
    let server = Server::start_with(
        "half_plus_two",
        &model,
        &["--shm_request_arena_mb=4", "--shm_response_arena_mb=1"],
    );
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let big = |n: usize| {
        let mut t = floats(&[n as i64, 1], &[]);
        t.tensor_content = vec![0u8; n * 4].into();
        request("half_plus_two", "x", t)
    };

    // 8 MB of input: larger than the whole 4 MiB request arena.
    let err = client.predict(big(2 << 20)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--shm_request_arena_mb"),
        "{}",
        err.message()
    );

    // 2 MB in fits the request arena; 2 MB out does not fit the 1 MiB response arena.
    let err = client.predict(big(512 << 10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--shm_response_arena_mb"),
        "{}",
        err.message()
    );

    let ok = client
        .predict(request("half_plus_two", "x", floats(&[1], &[1.0])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.outputs["y"].float_val, vec![3.5]);
}

#[tokio::test]
async fn tensor_content_outputs_on_request() {
    let model = tfgate_e2e::model_path("half_plus_two");
    let server = Server::start_with(
        "half_plus_two",
        &model,
        &[
            "--enable_serialization_as_tensor_content",
            "--enable_batching=false",
        ],
    );
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let resp = client
        .predict(request("half_plus_two", "x", floats(&[2], &[1.0, 3.0])))
        .await
        .unwrap()
        .into_inner();
    let y = &resp.outputs["y"];
    assert!(y.float_val.is_empty());
    let expected: Vec<u8> = [3.5f32, 4.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(y.tensor_content, expected);
}

/// The only slot's worker pid and restart count, as `/tfgate/workers` shows them.
fn only_worker(rest_port: u16) -> (u64, u64) {
    let (status, body) = tfgate_e2e::http(rest_port, "GET", "/tfgate/workers", "").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let w = &v["workers"][0];
    (
        w["pid"].as_u64().expect("a live worker"),
        w["restarts"].as_u64().unwrap_or(u64::MAX),
    )
}

/// The gRPC deadline bounds the session run itself (RunOptions.timeout_in_ms), so a
/// request the client gave up on does not keep the worker busy: the next one is served
/// by the same worker. (Were the run not cancelled, the watchdog would kill the worker
/// `--worker_run_grace_ms` after the deadline and a new one would answer: the pid and
/// restart count tell the two apart.)
#[tokio::test]
async fn deadlines_cancel_the_session_run() {
    let server = Server::start("slow");
    let (pid, restarts) = only_worker(server.rest_port);
    assert_eq!(restarts, 0);
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let resp = client
        .predict(count_to(1000, Some(std::time::Duration::from_secs(30))))
        .await
        .unwrap();
    assert_eq!(resp.into_inner().outputs["count"].int64_val, vec![1000]);

    // Counting to 10^15 would take days.
    let err = client
        .predict(count_to(
            1_000_000_000_000_000,
            Some(std::time::Duration::from_millis(300)),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");

    // Served by the same (single-threaded) worker: only possible if the run was cancelled.
    let resp = client
        .predict(count_to(10, Some(std::time::Duration::from_secs(20))))
        .await
        .unwrap();
    assert_eq!(resp.into_inner().outputs["count"].int64_val, vec![10]);
    assert_eq!(
        only_worker(server.rest_port),
        (pid, restarts),
        "the worker that ran the cancelled request served the next one"
    );
}

/// `--grpc_channel_arguments` bounds message sizes, answered in gRPC C++'s words, and
/// the server keeps serving what fits.
#[tokio::test]
async fn channel_arguments_bound_message_sizes() {
    let model = tfgate_e2e::model_path("half_plus_two");
    let server = Server::start_with(
        "half_plus_two",
        &model,
        &["--grpc_channel_arguments=grpc.max_receive_message_length=4096,grpc.max_send_message_length=2048,grpc.optimization_target=throughput"],
    );
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let predict = |n: usize| request("half_plus_two", "x", floats(&[n as i64], &vec![1.0; n]));

    let ok = client.predict(predict(100)).await.unwrap().into_inner();
    assert_eq!(ok.outputs["y"].float_val, vec![3.5; 100]);

    // 2000 floats in: over the 4096-byte receive limit.
    let err = client.predict(predict(2000)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .starts_with("Received message larger than max (")
            && err.message().ends_with(" vs. 4096)"),
        "{}",
        err.message()
    );
    // 800 floats in fit; 800 out do not fit the 2048-byte send limit.
    let err = client.predict(predict(800)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().starts_with("Sent message larger than max (")
            && err.message().ends_with(" vs. 2048)"),
        "{}",
        err.message()
    );
    let ok = client.predict(predict(1)).await.unwrap().into_inner();
    assert_eq!(ok.outputs["y"].float_val, vec![3.5]);
}

/// `--bind_address=127.0.0.1` keeps both listeners on loopback (TF Serving binds every
/// interface).
#[tokio::test]
async fn bind_address_keeps_listeners_on_loopback() {
    let model = tfgate_e2e::model_path("half_plus_two");
    let server = Server::start_with("half_plus_two", &model, &["--bind_address=127.0.0.1"]);
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // A listening socket (state 0A) bound to 127.0.0.1 (0100007F) on each port.
    for port in [server.grpc_port, server.rest_port] {
        let local = format!("0100007F:{port:04X}");
        assert!(
            tcp.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == local && f[3] == "0A"
            }),
            "no loopback listener on {port}:\n{tcp}"
        );
        let any = format!("00000000:{port:04X}");
        assert!(
            !tcp.lines().any(|l| l.contains(&any)),
            "{port} bound to 0.0.0.0"
        );
    }
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let ok = client
        .predict(request("half_plus_two", "x", floats(&[1], &[1.0])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.outputs["y"].float_val, vec![3.5]);
}
