"""Request logging: a model whose ModelConfig asks for it (logging_config { sampling_config
{ sampling_rate } }) has its Predict requests and responses written under
--request_log_dir as PredictionLog records in a TFRecord file. TensorFlow's own reader
reads the file back under load, and the file replays as a version's warmup data."""
import json
import os
import shutil
import threading
import urllib.request

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from test_api_suite import MODELS, start, stop
from test_official_client import rest


def config(name, base_path, extra=""):
    return ("model_config_list {\n"
            f'  config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow"'
            f" {extra} }}\n}}\n")


def read_log(path):
    logs = []
    for record in tf.data.TFRecordDataset([path]):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def test_sampled_requests_are_logged_and_replay_as_warmup(tmp_path):
    log_dir = tmp_path / "logs"
    cfg = config("half_plus_two", f"{MODELS}/half_plus_two",
                 "logging_config { sampling_config { sampling_rate: 1.0 } }")
    proc, grpc_port, rest_port = start(str(tmp_path), cfg, ["half_plus_two"],
                                       f"--request_log_dir={log_dir}")
    try:
        # Under load: REST from four threads, gRPC from a fifth, every input distinct.
        errors = []

        def rest_load(k):
            for i in range(25):
                x = k * 100 + i
                status, body = rest(rest_port, "POST", "/v1/models/half_plus_two:predict",
                                    json.dumps({"instances": [float(x)]}))
                if (status, body) != (200, {"predictions": [x * 0.5 + 3]}):
                    errors.append((status, body))

        def grpc_load():
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                for i in range(20):
                    req = predict_pb2.PredictRequest()
                    req.model_spec.name = "half_plus_two"
                    req.inputs["x"].CopyFrom(tf.make_tensor_proto([1000.0 + i]))
                    stub.Predict(req, 30.0)

        threads = [threading.Thread(target=rest_load, args=(k,)) for k in range(4)]
        threads.append(threading.Thread(target=grpc_load))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        # A request that fails is not logged.
        assert rest(rest_port, "POST", "/v1/models/half_plus_two:predict",
                    '{"instances": ["a"]}')[0] == 400
    finally:
        stop(proc)

    path = log_dir / "half_plus_two.tfrecord"
    logs = read_log(str(path))
    assert len(logs) == 120
    seen = set()
    for log in logs:
        assert log.log_metadata.model_spec.name == "half_plus_two"
        assert log.log_metadata.sampling_config.sampling_rate == 1.0
        request, response = log.predict_log.request, log.predict_log.response
        assert request.model_spec.version.value == 2
        assert request.model_spec.signature_name == "serving_default"
        x = tf.make_ndarray(request.inputs["x"]).tolist()
        y = tf.make_ndarray(response.outputs["y"]).tolist()
        assert y == [v * 0.5 + 3 for v in x]
        seen.add(x[0])
    assert seen == {float(k * 100 + i) for k in range(4) for i in range(25)} | {
        1000.0 + i for i in range(20)}

    # The log, as a new model's warmup file, replays before it serves.
    version = tmp_path / "replay" / "1"
    shutil.copytree(f"{MODELS}/half_plus_two/2", version)
    os.makedirs(version / "assets.extra", exist_ok=True)
    shutil.copy(path, version / "assets.extra" / "tf_serving_warmup_requests")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    proc, _, rest_port = start(str(tmp_path), config("half_plus_two", str(tmp_path / "replay")),
                               ["half_plus_two"], f"--monitoring_config_file={monitoring}")
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics") as r:
            page = r.read().decode()
        series = (':tensorflow:serving:model_warmup_records_read'
                  f'{{model_path="{version}",status="OK"}} 120')
        assert series in page.splitlines(), page
    finally:
        stop(proc)
