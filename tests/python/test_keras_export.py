"""A Keras 3 export (`model.export(path)`, the SavedModel Keras 3 writes for serving:
`serve` and `serving_default` signatures) served by a real tfgate: its REST and gRPC
answers are what Keras computes in this process, and its metadata lists both signatures."""
import json
import os

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from test_op_libraries import Server
from test_official_client import rest


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((3,), name="x"),
                              keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    model.export(os.path.join(d, "keras", "1"), verbose=False)
    s = Server(str(d), ["keras"])
    s.wait("keras")
    yield s, model
    s.stop()


X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], np.float32)


def test_keras_export_answers_what_keras_answers_over_rest(served):
    s, model = served
    want = model.predict(X, verbose=0)
    code, body = rest(s.rest_port, "POST", "/v1/models/keras:predict",
                      json.dumps({"instances": X.tolist()}))
    assert code == 200, body
    np.testing.assert_allclose(np.array(body["predictions"]), want, rtol=1e-6)


def test_keras_export_answers_what_keras_answers_over_grpc(served):
    s, model = served
    want = model.predict(X, verbose=0)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}"))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "keras"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    outputs = stub.Predict(req, 60).outputs
    assert len(outputs) == 1, outputs
    np.testing.assert_allclose(tf.make_ndarray(next(iter(outputs.values()))), want, rtol=1e-6)


def test_keras_export_metadata_lists_its_signatures(served):
    s, _ = served
    code, body = rest(s.rest_port, "GET", "/v1/models/keras/metadata")
    assert code == 200, body
    assert {"serve", "serving_default"} <= set(body["metadata"]["signature_def"]["signature_def"])
