"""An image model that takes JPEG bytes, as users export them for REST clients: the
signature takes a batch of encoded images (`tf.string`), decodes and resizes them in the
graph, and runs a small conv net. Served by a real tfgate, its answers over REST (images as
`{"b64": ...}`, TF Serving's binary convention), gRPC (a DT_STRING tensor) and KServe V2
(BYTES) are what TensorFlow computes in this process with the same SavedModel."""
import base64
import io
import json
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.http as th
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from test_op_libraries import Server
from test_official_client import rest

SIZE = 32


class JpegClassifier(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(3)
        self.conv = tf.Variable(rng.normal(0, 0.2, (3, 3, 3, 8)).astype(np.float32))
        self.dense = tf.Variable(rng.normal(0, 0.2, (8, 5)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, images):
        def decode(b):
            img = tf.io.decode_jpeg(b, channels=3)
            return tf.image.resize(tf.cast(img, tf.float32) / 255.0, [SIZE, SIZE])
        x = tf.map_fn(decode, images, fn_output_signature=tf.float32)
        h = tf.nn.relu(tf.nn.conv2d(x, self.conv, 1, "SAME"))
        logits = tf.matmul(tf.reduce_mean(h, axis=[1, 2]), self.dense)
        return {"probabilities": tf.nn.softmax(logits),
                "mean_rgb": tf.reduce_mean(x, axis=[1, 2])}


def jpeg(seed, shape):
    """A JPEG of a smooth random picture (what a camera gives, not noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    img = tf.image.resize(small[None], shape[:2], method="bilinear")[0]
    return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(img, 0, 255), tf.uint8),
                             quality=90).numpy()


IMAGES = [jpeg(1, (48, 64)), jpeg(2, (100, 80)), jpeg(3, (32, 32))]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("jpeg")
    module = JpegClassifier()
    path = os.path.join(d, "jpeg", "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    # What TensorFlow answers in this process, from the saved model itself.
    loaded = tf.saved_model.load(path).signatures["serving_default"]
    want = {k: v.numpy() for k, v in loaded(image_bytes=tf.constant(IMAGES)).items()}
    s = Server(str(d), ["jpeg"])
    s.wait("jpeg")
    yield s, want
    s.stop()


def test_jpeg_bytes_over_rest_as_b64(served):
    s, want = served
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}}
                          for b in IMAGES]}
    code, answer = rest(s.rest_port, "POST", "/v1/models/jpeg:predict", json.dumps(body))
    assert code == 200, answer
    got = answer["predictions"]
    assert len(got) == len(IMAGES)
    for name in ("probabilities", "mean_rgb"):
        np.testing.assert_allclose(np.array([p[name] for p in got]), want[name], rtol=1e-5,
                                   atol=1e-6)


def test_jpeg_bytes_over_grpc(served):
    s, want = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}"))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "jpeg"
    req.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(IMAGES, dtype=tf.string))
    out = stub.Predict(req, 60).outputs
    for name in ("probabilities", "mean_rgb"):
        np.testing.assert_allclose(tf.make_ndarray(out[name]), want[name], rtol=1e-5, atol=1e-6)


def test_jpeg_bytes_over_kserve_v2(served):
    s, want = served
    client = th.InferenceServerClient(f"127.0.0.1:{s.rest_port}")
    inp = th.InferInput("image_bytes", [len(IMAGES)], "BYTES")
    inp.set_data_from_numpy(np.array(IMAGES, dtype=np.object_), binary_data=True)
    result = client.infer("jpeg", [inp])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"],
                               rtol=1e-5, atol=1e-6)


def test_a_truncated_jpeg_is_the_models_own_error(served):
    s, _ = served
    broken = IMAGES[0][: len(IMAGES[0]) // 3]
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(broken).decode()}}]}
    code, answer = rest(s.rest_port, "POST", "/v1/models/jpeg:predict", json.dumps(body))
    assert code == 400, answer
    assert "jpeg" in answer["error"].lower() or "image" in answer["error"].lower(), answer
