//! REST predict against the real binaries: values, formats, dtypes and TF Serving's errors.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tfgate_e2e::{http, http_full, Server};

fn post(server: &Server, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http(server.rest_port, "POST", path, body).expect("http");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

#[test]
fn half_plus_two_row_and_columnar() {
    let server = Server::start("half_plus_two");
    // The newest version (2: y = 0.5x + 3) serves by default.
    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [[1.0], [2.0], [5.0]]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"predictions": [[3.5], [4.0], [5.5]]}));

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [1.0, 2.0, 5.0]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"predictions": [3.5, 4.0, 5.5]}));

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"inputs": {"x": [[2.0], [3.0]]}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"outputs": [[4.0], [4.5]]}));

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two/versions/2:predict",
        r#"{"inputs": [4.0]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"outputs": [5.0]}));

    let (_, headers, _) = http_full(
        server.rest_port,
        "POST",
        "/v1/models/half_plus_two:predict",
        &[],
        br#"{"inputs": [1.0]}"#,
    )
    .unwrap();
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
}

#[test]
fn rest_errors_match_tf_serving() {
    let server = Server::start("half_plus_two");
    let (status, body) = post(
        &server,
        "/v1/models/half:predict",
        r#"{"instances": [1.0]}"#,
    );
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Servable not found for request: Latest(half)"})
        )
    );

    // Only the latest version is loaded (default policy latest{1}).
    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two/versions/1:predict",
        r#"{"instances": [1.0]}"#,
    );
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Servable not found for request: Specific(half_plus_two, 1)"})
        )
    );

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [1.0,"#,
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("JSON Parse error"),
        "{body}"
    );

    let (status, body) = post(&server, "/v1/models/half_plus_two:predict", "");
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "JSON Parse error: The document is empty"})
        )
    );

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"inputs": {"z": [1.0]}}"#,
    );
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Missing named input: x in 'inputs' object."})
        )
    );

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"instances": [{"z": 1.0}]}"#,
    );
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have named input: z"})
        )
    );

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"signature_name": "foo", "instances": [1.0]}"#,
    );
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Serving signature name: \"foo\" not found in signature def"})
        )
    );

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:predict",
        r#"{"foo": [1.0]}"#,
    );
    assert_eq!(
        (status, body),
        (400, json!({"error": "Missing 'inputs' or 'instances' key"}))
    );

    let (status, body) = post(&server, "/v1/models/half_plus_two/version/2:predict", "{}");
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Malformed request: POST /v1/models/half_plus_two/version/2:predict"})
        )
    );

    let (status, _) = http(server.rest_port, "GET", "/not-v1", "").unwrap();
    assert_eq!(status, 404);
}

#[test]
fn mixed_dtypes_and_binary_strings() {
    let server = Server::start("mixed_types");
    let (status, body) = post(
        &server,
        "/v1/models/mixed_types:predict",
        r#"{"instances": [{"a": 1, "b": 0.5, "s": "ab"}, {"a": -4, "b": 2.25, "s": {"b64": "/wA="}}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["predictions"][0],
        json!({"a_times_2": 2, "s_bytes": {"b64": "YWI="}, "s_length": 2, "s_upper": "AB", "sum": 1.5})
    );
    let second = &body["predictions"][1];
    assert_eq!(second["a_times_2"], json!(-8));
    assert_eq!(
        second["s_bytes"],
        json!({"b64": "/wA="}),
        "binary strings survive end to end"
    );
    assert_eq!(second["s_length"], json!(2));
    assert_eq!(second["sum"], json!(-1.75));

    let (status, body) = post(
        &server,
        "/v1/models/mixed_types:predict",
        r#"{"inputs": {"a": [7], "b": [1.0], "s": ["hello"]}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"]["a_times_2"], json!([14]));
    assert_eq!(body["outputs"]["s_upper"], json!(["HELLO"]));
    assert_eq!(body["outputs"]["s_length"], json!([5]));
    assert_eq!(body["outputs"]["sum"], json!([8.0]));

    // int64 inputs take JSON integers only.
    let (status, body) = post(
        &server,
        "/v1/models/mixed_types:predict",
        r#"{"inputs": {"a": [1.5], "b": [1.0], "s": ["x"]}}"#,
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn classify_and_regress_over_tf_examples() {
    let server = Server::start("half_plus_two");
    // Version 2: y = 0.5 * x + 3.
    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:classify",
        r#"{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]}"#,
    );
    assert_eq!(
        (status, body),
        (200, json!({"results": [[["", 4.0]], [["", 5.0]]]}))
    );

    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:regress",
        r#"{"signature_name": "regress_x_to_y2", "context": {"x": 1.0}, "examples": [{"x": 2.0}, {}]}"#,
    );
    // y2 = 0.5 * x + 3; the second example takes x from the context.
    assert_eq!((status, body), (200, json!({"results": [4.0, 3.5]})));

    // serving_default is a predict signature over `x`: without
    // --enable_signature_method_name_check (TF Serving's default) its method is not
    // checked, but it has no `inputs` to feed examples to.
    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:classify",
        r#"{"examples": [{"x": 2.0}]}"#,
    );
    // TF Serving quotes the signature (`DebugString`) after the reason.
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("No classification inputs found in SignatureDef: inputs {")
            && error.contains("method_name: \"tensorflow/serving/predict\""),
        "{error}"
    );
    let checking = Server::start_with(
        "half_plus_two",
        &tfgate_e2e::model_path("half_plus_two"),
        &["--enable_signature_method_name_check"],
    );
    let (status, body) = post(
        &checking,
        "/v1/models/half_plus_two:classify",
        r#"{"examples": [{"x": 2.0}]}"#,
    );
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict"})
        )
    );
    let (status, body) = post(
        &server,
        "/v1/models/half_plus_two:regress",
        r#"{"signature_name": "nope", "examples": [{"x": 2.0}]}"#,
    );
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "No signature was found with the name: nope"})
        )
    );
}

#[test]
fn model_status_and_metadata() {
    let server = Server::start("half_plus_two");
    let get = |path: &str| {
        let (status, text) = http(server.rest_port, "GET", path, "").unwrap();
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    };
    assert_eq!(
        get("/v1/models/half_plus_two"),
        (
            200,
            json!({"model_version_status": [{"version": "2", "state": "AVAILABLE",
                   "status": {"error_code": "OK", "error_message": ""}}]})
        )
    );
    assert_eq!(get("/v1/models/half_plus_two/versions/2").0, 200);
    assert_eq!(
        get("/v1/models/half_plus_two/versions/1"),
        (
            404,
            json!({"error": "Could not find version 1 of model half_plus_two"})
        )
    );
    assert_eq!(
        get("/v1/models/nope"),
        (
            404,
            json!({"error": "Could not find any versions of model nope"})
        )
    );
    assert_eq!(
        get("/v1/models"),
        (400, json!({"error": "Missing model name in request."}))
    );

    let (status, meta) = get("/v1/models/half_plus_two/metadata");
    assert_eq!(status, 200);
    assert_eq!(
        meta["model_spec"],
        json!({"name": "half_plus_two", "signature_name": "", "version": "2"})
    );
    let sigs = &meta["metadata"]["signature_def"]["signature_def"];
    assert_eq!(
        sigs["serving_default"]["inputs"]["x"]["dtype"],
        json!("DT_FLOAT")
    );
    assert_eq!(sigs["serving_default"]["inputs"]["x"]["name"], json!("x:0"));
    assert_eq!(
        sigs["serving_default"]["method_name"],
        json!("tensorflow/serving/predict")
    );
    assert_eq!(sigs["serving_default"]["defaults"], json!({}));
    assert_eq!(
        sigs["classify_x_to_y"]["inputs"]["inputs"]["dtype"],
        json!("DT_STRING")
    );
    assert_eq!(
        sigs["regress_x2_to_y3"]["method_name"],
        json!("tensorflow/serving/regress")
    );
}

#[test]
fn gzip_bodies_and_cors() {
    let model = tfgate_e2e::model_path("half_plus_two");
    let server = Server::start_with("half_plus_two", &model, &["--rest_api_enable_cors_support"]);
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(br#"{"instances": [1.0, 2.0]}"#).unwrap();
        e.finish().unwrap()
    };
    let (status, headers, body) = http_full(
        server.rest_port,
        "POST",
        "/v1/models/half_plus_two:predict",
        &[("Content-Encoding", "gzip")],
        &gz,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"predictions": [3.5, 4.0]})
    );
    assert!(
        headers.contains("access-control-allow-origin: *"),
        "{headers}"
    );
    assert!(
        headers.contains("access-control-allow-methods: post, get"),
        "{headers}"
    );

    let (status, headers, _) = http_full(
        server.rest_port,
        "OPTIONS",
        "/v1/models/half_plus_two:predict",
        &[("Origin", "https://example.com")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        headers.contains("access-control-allow-headers: content-type"),
        "{headers}"
    );
    let (status, _, body) = http_full(
        server.rest_port,
        "OPTIONS",
        "/v1/models/half_plus_two:predict",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "Origin header is missing in CORS preflight"})
    );

    // Without the flag TF Serving still checks a preflight's Origin, and sends no CORS
    // headers.
    let plain = Server::start("half_plus_two");
    let (status, headers, _) = http_full(
        plain.rest_port,
        "OPTIONS",
        "/v1/models/half_plus_two:predict",
        &[("Origin", "https://example.com")],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(!headers.contains("access-control"), "{headers}");
    let (status, _, body) = http_full(
        plain.rest_port,
        "OPTIONS",
        "/v1/models/half_plus_two:predict",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
}

/// `--rest_api_timeout_in_ms` of 0 or less means no timeout, as in TF Serving. The run
/// takes longer than the default (30 s), so that 0 read as "the default" would fail too.
#[test]
fn a_zero_rest_timeout_means_none() {
    const DEFAULT: Duration = Duration::from_millis(30_000);
    let server = Server::start_with(
        "slow",
        &tfgate_e2e::model_path("slow"),
        &["--rest_api_timeout_in_ms=0"],
    );
    let count = |n: u64| {
        let body = format!(r#"{{"instances": [{n}]}}"#);
        let started = Instant::now();
        let (status, text) = long_post(server.rest_port, "/v1/models/slow:predict", &body);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!((status, v), (200, json!({"predictions": [n]})));
        started.elapsed()
    };
    // How fast the model counts here, then a count that takes about 40 s.
    let probe = 2_000_000;
    let rate = probe as f64 / count(probe).as_secs_f64();
    let mut n = (rate * 40.0) as u64;
    let mut took = count(n);
    if took <= DEFAULT {
        // The machine got faster; the run must still outlast the default.
        n *= 2;
        took = count(n);
    }
    assert!(took > DEFAULT, "counting to {n} took only {took:?}");
}

/// A POST whose answer may take minutes (the shared client gives up after 60 s).
fn long_post(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, _, body) = tfgate_e2e::read_response(s).unwrap();
    (status, body)
}
