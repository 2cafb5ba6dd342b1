"""TLS and mutual TLS with the official client (grpc.ssl_channel_credentials) and over
REST (--rest_api_enable_ssl), against certificates made fresh for each run
(tfgate-test-certs); and the TLS configurations tfgate refuses to start with."""
import http.client
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from test_official_client import BIN, ROOT, free_port, rest

CERTS_BIN = os.path.join(os.path.dirname(BIN), "tfgate-test-certs")
MODEL = ["--model_name=half_plus_two", f"--model_base_path={ROOT}/models/half_plus_two"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([CERTS_BIN, str(d)], check=True)
    return {name: (d / name).read_bytes() for name in os.listdir(d)} | {"dir": d}


def ssl_config(certs, path, client_verify):
    def quoted(b):
        return '"' + b.decode().replace("\n", "\\n") + '"'
    path.write_text(f"server_key: {quoted(certs['server.key'])}\n"
                    f"server_cert: {quoted(certs['server.pem'])}\n"
                    f"custom_ca: {quoted(certs['ca.pem'])}\n"
                    f"client_verify: {'true' if client_verify else 'false'}\n")
    return path


def credentials(certs, client=None):
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=certs["ca.pem"])
    return grpc.ssl_channel_credentials(root_certificates=certs["ca.pem"],
                                        private_key=certs[f"{client}.key"],
                                        certificate_chain=certs[f"{client}.pem"])


def predict(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [3.0]], dtype=tf.float32))
    return list(stub.Predict(request, 10.0).outputs["y"].float_val)


def wait_available(proc, channel):
    """Polls GetModelStatus over `channel` until the model is AVAILABLE."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    deadline = time.time() + 90
    while True:
        assert proc.poll() is None, "tfgate exited"
        assert time.time() < deadline, "tfgate did not start"
        try:
            if stub.GetModelStatus(request, 5.0).model_version_status[0].state == \
                    get_model_status_pb2.ModelVersionStatus.AVAILABLE:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)


def start(*flags):
    return subprocess.Popen([BIN, *MODEL, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def refused(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_grpc_over_tls(certs, tmp_path):
    """--ssl_config_file without client_verify: the official client with the CA's root
    talks TLS, on the TCP port and the Unix socket; a plaintext client gets nothing;
    REST in plaintext beside it, as in TF Serving, once asked for on purpose."""
    config = ssl_config(certs, tmp_path / "ssl.config", client_verify=False)
    port, rest_port, sock = free_port(), free_port(), tmp_path / "tfgate.sock"
    proc = start(f"--port={port}", f"--rest_api_port={rest_port}", f"--ssl_config_file={config}",
                 f"--grpc_socket_path={sock}", "--rest_api_plaintext_with_ssl_config")
    try:
        secure = grpc.secure_channel(f"localhost:{port}", credentials(certs))
        wait_available(proc, secure)
        assert predict(secure) == [3.5, 4.5]
        # A client certificate is not asked for, so one sent is no obstacle.
        assert predict(grpc.secure_channel(f"localhost:{port}", credentials(certs, "client"))) == [3.5, 4.5]
        assert refused(lambda: predict(grpc.insecure_channel(f"localhost:{port}"))) == \
            grpc.StatusCode.UNAVAILABLE
        # A client that does not trust the server's CA refuses it.
        untrusting = grpc.ssl_channel_credentials(root_certificates=certs["stranger.pem"])
        assert refused(lambda: predict(grpc.secure_channel(f"localhost:{port}", untrusting))) == \
            grpc.StatusCode.UNAVAILABLE
        # The Unix socket is TLS too, as in TF Serving.
        over_uds = grpc.secure_channel(f"unix:{sock}", credentials(certs),
                                       options=[("grpc.default_authority", "localhost")])
        assert predict(over_uds) == [3.5, 4.5]
        assert refused(lambda: predict(grpc.insecure_channel(
            f"unix:{sock}", options=[("grpc.default_authority", "localhost")]))) == grpc.StatusCode.UNAVAILABLE
        status, body = rest(rest_port, "POST", "/v1/models/half_plus_two:predict", '{"instances": [1.0]}')
        assert (status, body) == (200, {"predictions": [3.5]})
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_mutual_tls_on_grpc_and_rest(certs, tmp_path):
    """client_verify: only a client certificate from custom_ca gets in, over gRPC and,
    with --rest_api_enable_ssl, over REST (HTTPS) as well."""
    config = ssl_config(certs, tmp_path / "ssl.config", client_verify=True)
    port, rest_port = free_port(), free_port()
    proc = start(f"--port={port}", f"--rest_api_port={rest_port}", f"--ssl_config_file={config}",
                 "--rest_api_enable_ssl")
    try:
        with_client = grpc.secure_channel(f"localhost:{port}", credentials(certs, "client"))
        wait_available(proc, with_client)
        assert predict(with_client) == [3.5, 4.5]
        for creds in (credentials(certs), credentials(certs, "stranger")):
            assert refused(lambda: predict(grpc.secure_channel(f"localhost:{port}", creds))) == \
                grpc.StatusCode.UNAVAILABLE

        def https(client):
            context = ssl.create_default_context(cadata=certs["ca.pem"].decode())
            if client:
                context.load_cert_chain(certs["dir"] / f"{client}.pem", certs["dir"] / f"{client}.key")
            req = urllib.request.Request(f"https://localhost:{rest_port}/v1/models/half_plus_two:predict",
                                         method="POST", data=b'{"instances": [1.0, 5.0]}')
            with urllib.request.urlopen(req, timeout=30, context=context) as r:
                return r.status, json.loads(r.read())

        assert https("client") == (200, {"predictions": [3.5, 5.5]})
        for client in (None, "stranger"):
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                https(client)
        # Plain HTTP on the TLS port gets no HTTP answer.
        with pytest.raises((OSError, http.client.HTTPException)):
            rest(rest_port, "GET", "/v1/models/half_plus_two")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tls_configs_tfgate_cannot_honour_stop_it(certs, tmp_path):
    def run(*flags):
        out = subprocess.run([BIN, f"--port={free_port()}", *MODEL, *flags],
                             capture_output=True, text=True, timeout=60)
        return out.returncode, out.stderr

    # A usable config, but REST would be plaintext beside it without anyone asking.
    good = ssl_config(certs, tmp_path / "good.config", client_verify=False)
    rest_port = free_port()
    code, err = run(f"--ssl_config_file={good}", f"--rest_api_port={rest_port}")
    assert code == 255 and ("Failed to start server. Error: INVALID_ARGUMENT: --ssl_config_file is set "
                            f"but REST on --rest_api_port={rest_port} would be plaintext; pass "
                            "--rest_api_enable_ssl to serve REST over TLS, "
                            "--rest_api_plaintext_with_ssl_config to serve it in plaintext on purpose, "
                            "or --rest_api_port=0 for no REST") in err, err

    bad = tmp_path / "bad.config"
    bad.write_text('server_key: "nope"\nserver_cert: "nope"\n')
    code, err = run(f"--ssl_config_file={bad}")
    assert code == 255 and (f"Failed to start server. Error: INVALID_ARGUMENT: {bad}: "
                            "server_cert holds no PEM certificate") in err, err

    no_ca = ssl_config(certs, tmp_path / "no_ca.config", client_verify=True)
    no_ca.write_text("\n".join(line for line in no_ca.read_text().splitlines()
                               if not line.startswith("custom_ca")))
    code, err = run(f"--ssl_config_file={no_ca}")
    assert code == 255 and "client_verify needs custom_ca" in err, err

    code, err = run(f"--ssl_config_file={tmp_path}/missing.config")
    assert code == 255 and (f"Failed to start server. Error: NOT_FOUND: {tmp_path}/missing.config; "
                            "No such file or directory") in err, err

    code, err = run(f"--rest_api_port={free_port()}", "--rest_api_enable_ssl")
    assert code == 255 and "--rest_api_enable_ssl needs --ssl_config_file" in err, err
