"""Writes tfgate's demo and test SavedModels with Python TensorFlow; nothing is downloaded.

Usage: python make_models.py OUT_DIR

  half_plus_two/{1,2}  TF1-style graph: y = 0.5*x + 2 (v1) or + 3 (v2); besides serving_default
                       (x -> y) it has classify/regress signatures over serialized tf.Examples,
                       shaped like TF Serving's own half_plus_two test model.
  mixed_types/1        int64 `a`, float32 `b`, string `s` inputs; outputs of several dtypes.
  mlp/1                64 -> 512 -> 512 -> 16 float32 MLP with fixed weights, for benchmarks.
  slow/1               TF1 graph that counts to its input `n` (int64 [1]) in a while loop: a
                       model whose run time the caller picks, for deadline tests.
  big/{1,2}            y = x + sum of w_i[0] over 256 variables of 256 KiB (64 MiB in all; random,
                       seeded, differing by version): a model whose unload leaves memory behind
                       in the worker's heap, as real models with many variables do (one 64 MiB
                       variable is mmapped and given back on some machines).
  counter/1            TF1 graph that counts its own runs in a variable (predict: x -> calls;
                       regress over tf.Examples: outputs = calls), with three warmup records in
                       assets.extra/tf_serving_warmup_requests (two predict, one regress): the
                       first request after a load sees how many warmup runs happened.
  dtypes/1             TF1 graph of identities, one placeholder per dtype (unknown shape): a signature
                       per dtype named after it (x -> y; `string` x -> y raw, `bytes` x -> y_bytes),
                       serving_default with every REST-codec dtype as an input and output named after
                       its dtype (plus string_bytes), to_half/to_bfloat16/to_uint16 (float32 x -> y
                       cast), scalar (x -> y = sum(x), rank 0) and ragged (x -> a = x, b = [x, x]).
  image/1              float32 `image` [N, 224, 224, 3] -> `logits` [N, 1000]: a small conv net with
                       fixed weights (two stride-2 3x3 convolutions, global average pool, dense), for
                       benchmarks with an image model's bytes (602 KB in, 4 KB out) and little compute.
  sequence/1           int32 `tokens` [N, 128] (ids < 1000) -> `hidden` float32 [N, 128, 768]: an embedding
                       lookup and a layer norm, for benchmarks with a sequence model's bytes (512 B in,
                       384 KiB out).
  identity/1           float32 `x` [N, M] -> `y` = x, for benchmarks of the transport alone.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1


def half_plus_two(path: str, offset: float) -> None:
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = {
            "x": v1.FixedLenFeature([1], dtype=tf.float32),
            "x2": v1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
        }
        parsed = v1.parse_example(serialized, features)
        # Identity ops, not placeholders: callers may feed any shape, as with TF Serving's model.
        x = tf.identity(parsed["x"], name="x")
        x2 = tf.identity(parsed["x2"], name="x2")
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(offset, name="b")
        c = v1.Variable(3.0, name="c")
        y = tf.add(tf.multiply(a, x), b, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        y3 = tf.add(tf.multiply(a, x2), c, name="y3")

        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def
        consts = v1.saved_model.signature_constants
        predict = sig({"x": info(x)}, {"y": info(y)}, consts.PREDICT_METHOD_NAME)
        classify = sig({consts.CLASSIFY_INPUTS: info(serialized)},
                       {consts.CLASSIFY_OUTPUT_SCORES: info(y)}, consts.CLASSIFY_METHOD_NAME)

        def regress(out):
            return sig({consts.REGRESS_INPUTS: info(serialized)},
                       {consts.REGRESS_OUTPUTS: info(out)}, consts.REGRESS_METHOD_NAME)

        regress_x2 = sig({consts.REGRESS_INPUTS: info(x2)},
                         {consts.REGRESS_OUTPUTS: info(y3)}, consts.REGRESS_METHOD_NAME)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.builder.SavedModelBuilder(path)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY: predict,
                    "classify_x_to_y": classify,
                    "regress_x_to_y": regress(y),
                    "regress_x_to_y2": regress(y2),
                    "regress_x2_to_y3": regress_x2,
                },
                main_op=v1.tables_initializer(),
                strip_default_attrs=True)
            builder.save()


def slow(path: str) -> None:
    graph = tf.Graph()
    with graph.as_default():
        n = v1.placeholder(tf.int64, shape=[None], name="n")
        count = v1.while_loop(lambda i: i < n[0], lambda i: i + 1, [tf.constant(0, tf.int64)])
        y = tf.reshape(count, [1], name="count")
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def(
            {"n": info(n)}, {"count": info(y)}, v1.saved_model.signature_constants.PREDICT_METHOD_NAME)
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.builder.SavedModelBuilder(path)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": sig}, strip_default_attrs=True)
            builder.save()


def big(path: str, seed: int) -> None:
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None], name="x")
        pieces = 256
        ws = [v1.get_variable(f"w{i}", shape=[16 * 1024 * 1024 // pieces], dtype=tf.float32,
                              initializer=v1.random_uniform_initializer(seed=seed * 1000 + i),
                              use_resource=False)
              for i in range(pieces)]
        y = tf.identity(x + tf.add_n([w[0] for w in ws]), name="y")
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def(
            {"x": info(x)}, {"y": info(y)}, v1.saved_model.signature_constants.PREDICT_METHOD_NAME)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.builder.SavedModelBuilder(path)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": sig}, strip_default_attrs=True)
            builder.save()


def counter(path: str) -> None:
    from tensorflow_serving.apis import (model_pb2, predict_pb2, prediction_log_pb2,
                                         regression_pb2)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None], name="x")
        serialized = v1.placeholder(tf.string, shape=[None], name="examples")
        runs = v1.get_variable("runs", initializer=tf.constant(0, tf.int64), use_resource=False)
        calls = tf.reshape(v1.assign_add(runs, 1), [1], name="calls")
        outputs = tf.fill(tf.shape(serialized), tf.cast(v1.assign_add(runs, 1), tf.float32))
        # x is fed but unused beyond its shape
        calls = tf.identity(calls + 0 * tf.cast(tf.size(x), tf.int64), name="calls_out")
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def
        consts = v1.saved_model.signature_constants
        predict = sig({"x": info(x)}, {"calls": info(calls)}, consts.PREDICT_METHOD_NAME)
        regress = sig({consts.REGRESS_INPUTS: info(serialized)},
                      {consts.REGRESS_OUTPUTS: info(tf.identity(outputs, name="outputs"))},
                      consts.REGRESS_METHOD_NAME)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.builder.SavedModelBuilder(path)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": predict, "regress": regress},
                strip_default_attrs=True)
            builder.save()
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(extra, "tf_serving_warmup_requests")) as w:
        for _ in range(2):
            req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="counter"))
            req.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
            w.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req)).SerializeToString())
        reg = regression_pb2.RegressionRequest(
            model_spec=model_pb2.ModelSpec(name="counter", signature_name="regress"))
        reg.input.example_list.examples.add()
        w.write(prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=reg)).SerializeToString())


# Every dtype TF Serving's REST codec (util/json_tensor.cc) converts, and three it refuses.
JSON_DTYPES = ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32",
               "uint64", "bool", "string"]
REFUSED_DTYPES = ["half", "bfloat16", "uint16"]


def dtypes(path: str) -> None:
    graph = tf.Graph()
    with graph.as_default():
        x = {d: v1.placeholder(tf.as_dtype(d), shape=None, name=d)
             for d in JSON_DTYPES + REFUSED_DTYPES}
        y = {d: tf.identity(t, name=f"{d}_y") for d, t in x.items()}
        string_bytes = tf.identity(x["string"], name="string_bytes")
        info = v1.saved_model.utils.build_tensor_info
        consts = v1.saved_model.signature_constants

        def sig(inputs, outputs):
            return v1.saved_model.signature_def_utils.build_signature_def(
                {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()},
                consts.PREDICT_METHOD_NAME)

        signatures = {d: sig({"x": x[d]}, {"y": y[d]}) for d in x}
        signatures["bytes"] = sig({"x": x["string"]}, {"y_bytes": string_bytes})
        signatures[consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY] = sig(
            {d: x[d] for d in JSON_DTYPES},
            {**{d: y[d] for d in JSON_DTYPES}, "string_bytes": string_bytes})
        for d in REFUSED_DTYPES:
            signatures[f"to_{d}"] = sig({"x": x["float32"]},
                                        {"y": tf.cast(x["float32"], d, name=f"to_{d}")})
        signatures["scalar"] = sig({"x": x["float32"]},
                                   {"y": tf.reduce_sum(x["float32"], name="sum")})
        signatures["ragged"] = sig({"x": x["float32"]},
                                   {"a": y["float32"],
                                    "b": tf.concat([x["float32"]] * 2, 0, name="twice")})
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.builder.SavedModelBuilder(path)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map=signatures, strip_default_attrs=True)
            builder.save()


class MixedTypes(tf.Module):
    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.int64, name="a"),
        tf.TensorSpec([None], tf.float32, name="b"),
        tf.TensorSpec([None], tf.string, name="s"),
    ])
    def serve(self, a, b, s):
        return {
            "sum": tf.cast(a, tf.float32) + b,          # float32
            "a_times_2": a * 2,                           # int64
            "s_length": tf.strings.length(s),             # int32
            "s_upper": tf.strings.upper(s),               # string, written raw
            "s_bytes": s,                                 # string, written as {"b64": ...}
        }


class Mlp(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(42)
        dims = [64, 512, 512, 16]
        self.w = [tf.Variable((rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32))
                  for i, o in zip(dims, dims[1:])]
        self.b = [tf.Variable(np.full((o,), 0.01, np.float32)) for o in dims[1:]]

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def serve(self, x):
        h = x
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            h = tf.matmul(h, w) + b
            if i < len(self.w) - 1:
                h = tf.nn.relu(h)
        return {"y": h}


class Image(tf.Module):
    """An image model's shapes with little compute: the point is the bytes it takes in."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(224)

        def weights(*shape):
            fan_in = int(np.prod(shape[:-1]))
            return tf.Variable((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

        self.conv1, self.bias1 = weights(3, 3, 3, 16), tf.Variable(np.zeros(16, np.float32))
        self.conv2, self.bias2 = weights(3, 3, 16, 32), tf.Variable(np.zeros(32, np.float32))
        self.dense, self.bias3 = weights(32, 1000), tf.Variable(np.zeros(1000, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="image")])
    def serve(self, image):
        h = tf.nn.relu(tf.nn.conv2d(image, self.conv1, 2, "SAME") + self.bias1)
        h = tf.nn.relu(tf.nn.conv2d(h, self.conv2, 2, "SAME") + self.bias2)
        h = tf.reduce_mean(h, axis=[1, 2])
        return {"logits": tf.matmul(h, self.dense) + self.bias3}


class Sequence(tf.Module):
    """A sequence model's shapes with little compute: the point is the bytes it answers."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(128)
        self.embedding = tf.Variable((rng.standard_normal((1000, 768)) * 0.02).astype(np.float32))
        self.gamma = tf.Variable(np.ones(768, np.float32))
        self.beta = tf.Variable(np.zeros(768, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 128], tf.int32, name="tokens")])
    def serve(self, tokens):
        h = tf.gather(self.embedding, tokens)
        mean, variance = tf.nn.moments(h, axes=[-1], keepdims=True)
        return {"hidden": (h - mean) * tf.math.rsqrt(variance + 1e-6) * self.gamma + self.beta}


class Identity(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.identity(x)}


def main() -> None:
    out = sys.argv[1]
    half_plus_two(os.path.join(out, "half_plus_two", "1"), 2.0)
    half_plus_two(os.path.join(out, "half_plus_two", "2"), 3.0)
    m = MixedTypes()
    tf.saved_model.save(m, os.path.join(out, "mixed_types", "1"), signatures={"serving_default": m.serve})
    slow(os.path.join(out, "slow", "1"))
    counter(os.path.join(out, "counter", "1"))
    big(os.path.join(out, "big", "1"), 1)
    big(os.path.join(out, "big", "2"), 2)
    dtypes(os.path.join(out, "dtypes", "1"))
    mlp = Mlp()
    tf.saved_model.save(mlp, os.path.join(out, "mlp", "1"), signatures={"serving_default": mlp.serve})
    for name, module in [("image", Image()), ("sequence", Sequence()), ("identity", Identity())]:
        tf.saved_model.save(module, os.path.join(out, name, "1"),
                            signatures={"serving_default": module.serve})
    print(f"wrote models under {out}")


if __name__ == "__main__":
    main()
