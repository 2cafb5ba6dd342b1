"""tfgate against the official TensorFlow Serving Python client (tensorflow-serving-api)
and TensorFlow's own tensor helpers, over gRPC and REST, on real processes."""
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("TFGATE_BIN", os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "tfgate"))


def rest(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else body.encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def start_server():
    """Starts tfgate on free ports; None if it exited at startup (a port was taken)."""
    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen([BIN, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                             "--model_name=half_plus_two",
                             f"--model_base_path={ROOT}/models/half_plus_two"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            return None
        try:
            if rest(rest_port, "GET", "/v1/models/half_plus_two")[0] == 200:
                return proc, grpc_port, rest_port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail("tfgate did not start within 90 s")


@pytest.fixture(scope="module")
def server():
    for _ in range(3):
        started = start_server()
        if started:
            break
    else:
        pytest.fail("tfgate exited at startup three times")
    proc, grpc_port, rest_port = started
    yield grpc_port, rest_port
    proc.terminate()
    proc.wait(timeout=10)


def test_predict_with_official_stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server[0]}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0], [5.0]], dtype=tf.float32))
    response = stub.Predict(request, 10.0)
    assert list(response.outputs["y"].float_val) == [3.5, 4.0, 5.5]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [[3.5], [4.0], [5.5]])
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


def test_numpy_tensor_content(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server[0]}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))  # numpy arrays travel as tensor_content
    y = tf.make_ndarray(stub.Predict(request, 10.0).outputs["y"])
    np.testing.assert_allclose(y, 0.5 * x + 3.0)


def test_errors_with_official_stub(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server[0]}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0]))
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(request, 10.0)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "Servable not found for request: Latest(half)"


def test_model_status(server):
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server[0]}"))
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    status = stub.GetModelStatus(request, 10.0)
    assert [(v.version, v.state) for v in status.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_rest_matches_readme(server):
    status, body = rest(server[1], "POST", "/v1/models/half_plus_two:predict",
                        '{"instances": [[1.0], [2.0], [5.0]]}')
    assert (status, body) == (200, {"predictions": [[3.5], [4.0], [5.5]]})


def test_classify_and_regress_with_official_stub(server):
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server[0]}"))

    def example(x):
        return tf.train.Example(features=tf.train.Features(
            feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}))

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend([example(2.0), example(6.0)])
    result = stub.Classify(request, 10.0)
    assert [[(c.label, c.score) for c in cl.classes] for cl in result.result.classifications] == [
        [("", 4.0)], [("", 6.0)]]
    assert result.model_spec.version.value == 2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list_with_context.context.CopyFrom(example(10.0))
    request.input.example_list_with_context.examples.extend([example(2.0), tf.train.Example()])
    result = stub.Regress(request, 10.0)
    assert [r.value for r in result.result.regressions] == [4.0, 8.0]


def test_multi_inference_with_official_stub(server):
    from tensorflow_serving.apis import inference_pb2

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server[0]}"))

    def request(*tasks, xs=(2.0, 6.0)):
        r = inference_pb2.MultiInferenceRequest()
        for name, signature, method in tasks:
            task = r.tasks.add()
            task.model_spec.name = name
            task.model_spec.signature_name = signature
            task.method_name = method
        for x in xs:
            r.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
        return r

    regress, classify = "tensorflow/serving/regress", "tensorflow/serving/classify"
    # Version 2: y = 0.5 * x + 3, y2 = 0.5 * x + 3 as well but through its own signature.
    result = stub.MultiInference(request(
        ("half_plus_two", "regress_x_to_y", regress),
        ("half_plus_two", "classify_x_to_y", classify),
        ("half_plus_two", "regress_x_to_y2", regress)), 10.0)
    assert len(result.results) == 3
    assert [r.value for r in result.results[0].regression_result.regressions] == [4.0, 6.0]
    assert [[(c.label, c.score) for c in cl.classes]
            for cl in result.results[1].classification_result.classifications] == [[("", 4.0)], [("", 6.0)]]
    assert [r.value for r in result.results[2].regression_result.regressions] == [4.0, 6.0]
    assert [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value)
            for r in result.results] == [("half_plus_two", "regress_x_to_y", 2),
                                         ("half_plus_two", "classify_x_to_y", 2),
                                         ("half_plus_two", "regress_x_to_y2", 2)]

    def error(req):
        with pytest.raises(grpc.RpcError) as e:
            stub.MultiInference(req, 10.0)
        return e.value.code(), e.value.details()

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert error(request(("half_plus_two", "regress_x_to_y", regress),
                         ("half_plus_two", "regress_x_to_y", regress))) == (
        invalid, "Duplicate evaluation of signature: regress_x_to_y")
    assert error(request(("half_plus_two", "regress_x_to_y", regress),
                         ("other", "classify_x_to_y", classify))) == (
        invalid, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    assert error(request(("half_plus_two", "regress_x_to_y", regress),
                         ("", "classify_x_to_y", classify))) == (
        invalid, "Found ModelSpec with an empty model name.")
    assert error(request(("half_plus_two", "nope", regress))) == (
        invalid, "Requested signature not found in model graph: nope")
    assert error(request(("half_plus_two", "regress_x_to_y", "tensorflow/serving/predict"))) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")
    assert error(request(("half_plus_two", "regress_x_to_y", regress), xs=())) == (
        invalid, "Input is empty.")
    assert error(request()) == (invalid, "ModelSpec has no name specified.")
    assert error(request(("nope", "regress_x_to_y", regress))) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    # serving_default predicts from `x`; it has no `inputs` for examples. TF Serving quotes
    # the signature after the reason.
    code, details = error(request(("half_plus_two", "", classify)))
    assert code == invalid
    assert details.startswith("No classification inputs found in SignatureDef: inputs {"), details
    assert 'method_name: "tensorflow/serving/predict"' in details, details


def test_grpc_on_a_unix_socket_only(tmp_path):
    """--grpc_socket_path with --port=0: gRPC on the Unix socket alone (a stale file is
    replaced). grpc-python sends the percent-encoded socket path as :authority, which
    tfgate accepts (TF Serving does) on every request of a connection; a client that
    names "localhost", as grpc-go does, works too."""
    sock = tmp_path / "tfgate.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))  # left behind when closed, as by a server that died
    stale.close()
    rest_port = free_port()
    proc = subprocess.Popen([BIN, "--port=0", f"--grpc_socket_path={sock}", f"--rest_api_port={rest_port}",
                             "--model_name=half_plus_two", f"--model_base_path={ROOT}/models/half_plus_two"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if rest(rest_port, "GET", "/v1/models/half_plus_two")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, "tfgate did not start"
            time.sleep(0.1)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
        for options in ([], [("grpc.default_authority", "localhost")]):
            channel = grpc.insecure_channel(f"unix:{sock}", options=options)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            futures = [stub.Predict.future(request, 10.0) for _ in range(20)]
            assert [list(f.result().outputs["y"].float_val) for f in futures] == [[3.5]] * 20
            assert list(stub.Predict(request, 10.0).outputs["y"].float_val) == [3.5]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_startup_refuses_what_it_cannot_honour(tmp_path):
    """ALTS is refused rather than served in plaintext; no gRPC listener at all is TF
    Serving's startup error. (TLS: test_tls.py.)"""
    def run(*flags):
        out = subprocess.run([BIN, f"--rest_api_port={free_port()}", "--model_name=m",
                              f"--model_base_path={ROOT}/models/half_plus_two", *flags],
                             capture_output=True, text=True, timeout=60)
        return out.returncode, out.stderr

    code, err = run(f"--port={free_port()}", "--use_alts_credentials")
    assert code == 255 and "ALTS is not supported" in err, err
    code, err = run("--port=0")
    assert code == 255 and ("Failed to start server. Error: INVALID_ARGUMENT: At least one of "
                            "server_options.grpc_port or server_options.grpc_socket_path must be set.") in err, err
