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
from tensorflow_serving.apis import (classification_pb2, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from test_api_suite import MODELS, start, stop
from test_official_client import rest


def config(name, base_path, extra=""):
    return ("model_config_list {\n"
            f'  config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow"'
            f" {extra} }}\n}}\n")


def example(x):
    return tf.train.Example(features=tf.train.Features(
        feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}))


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
        # Classify and Regress are logged too (the regress context merged into each example).
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = classification_pb2.ClassificationRequest()
            request.model_spec.name = "half_plus_two"
            request.model_spec.signature_name = "classify_x_to_y"
            request.input.example_list.examples.extend([example(2.0), example(6.0)])
            stub.Classify(request, 10.0)
            request = regression_pb2.RegressionRequest()
            request.model_spec.name = "half_plus_two"
            request.model_spec.signature_name = "regress_x_to_y"
            request.input.example_list_with_context.context.CopyFrom(example(10.0))
            request.input.example_list_with_context.examples.extend([example(2.0),
                                                                     tf.train.Example()])
            stub.Regress(request, 10.0)
        # A request that fails is not logged.
        assert rest(rest_port, "POST", "/v1/models/half_plus_two:predict",
                    '{"instances": ["a"]}')[0] == 400
    finally:
        stop(proc)

    path = log_dir / "half_plus_two.tfrecord"
    logs = read_log(str(path))
    kinds = [log.WhichOneof("log_type") for log in logs]
    assert (kinds.count("predict_log"), kinds.count("classify_log"),
            kinds.count("regress_log")) == (120, 1, 1)
    (classify,) = [log.classify_log for log in logs if log.HasField("classify_log")]
    assert classify.request.model_spec.signature_name == "classify_x_to_y"
    assert list(classify.request.input.example_list.examples) == [example(2.0), example(6.0)]
    assert [[c.score for c in cl.classes]
            for cl in classify.response.result.classifications] == [[4.0], [6.0]]
    (regress,) = [log.regress_log for log in logs if log.HasField("regress_log")]
    assert list(regress.request.input.example_list.examples) == [example(2.0), example(10.0)]
    assert [r.value for r in regress.response.result.regressions] == [4.0, 8.0]
    seen = set()
    for log in logs:
        if not log.HasField("predict_log"):
            continue
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
                  f'{{model_path="{version}",status="OK"}} 122')
        assert series in page.splitlines(), page
    finally:
        stop(proc)
