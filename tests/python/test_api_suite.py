"""Every dtype, every endpoint and the main errors of TF Serving's APIs, end to end: a real
tfgate against the `dtypes` and `half_plus_two` SavedModels of scripts/make_models.py, over
REST (both JSON formats) and gRPC (the official tensorflow-serving-api stubs and TensorFlow's
tensor helpers).

Expected answers come from TF Serving's source (paths under tensorflow_serving/) and from
TensorFlow itself, never from tfgate:
- util/json_tensor.cc: the REST codec (value conversion, WriteDecimal's float text, b64,
  JsonValueToDebugString's rapidjson PrettyWriter text inside error messages, the row-format
  "Failed to process element" wrapping with the inner status' `CODE: ` prefix);
- model_servers/http_rest_api_handler.cc, http_rest_api_util.cc, http_server.cc: routing,
  status and metadata JSON, status code -> HTTP code;
- servables/tensorflow/{predict_util,get_model_metadata_impl,classifier,regressor,util}.cc,
  model_servers/{get_model_status_impl,model_service_impl,server_core}.cc,
  TensorFlow's cc/saved_model/util.cc (GetInputValues): the gRPC messages.

The models come from $TFGATE_MODELS (default: the repository's models/)."""
import base64
import json
import math
import os
import subprocess
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import any_pb2, json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from test_official_client import BIN, ROOT, free_port, rest

MODELS = os.path.abspath(os.environ.get("TFGATE_MODELS", os.path.join(ROOT, "models")))

NAN, INF = float("nan"), float("inf")
# Signature name (numpy-style dtype name) -> TF's DataTypeString, as TF Serving's messages say it.
TF_NAME = {"float32": "float", "float64": "double", "int8": "int8", "int16": "int16",
           "int32": "int32", "int64": "int64", "uint8": "uint8", "uint32": "uint32",
           "uint64": "uint64", "bool": "bool", "string": "string", "half": "half",
           "bfloat16": "bfloat16", "uint16": "uint16"}
JSON_DTYPES = ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32",
               "uint64", "bool", "string"]
REFUSED_DTYPES = ["half", "bfloat16", "uint16"]
# Values at the edges of each dtype; an even count of each (they are also sent as [n/2, 2]).
VALUES = {
    "float32": [0.1, -2.5, 3.0, 1e-05, 9e6, 1 / 3, float(np.finfo(np.float32).max), -0.0,
                NAN, INF, -INF, 16777217.0],
    "float64": [0.1, 1 / 3, 1e300, 5e-324, 123456789.0, -2.5, NAN, INF, -INF, 1e-07, -0.0,
                2.0 ** 53],
    "int8": [-128, 127, 0, -1],
    "int16": [-32768, 32767, 0, 1],
    "int32": [-2 ** 31, 2 ** 31 - 1, 0, 42],
    "int64": [-2 ** 63, 2 ** 63 - 1, 0, 2 ** 40],
    "uint8": [0, 255, 1, 128],
    "uint32": [0, 2 ** 32 - 1, 2 ** 31, 7],
    "uint64": [0, 2 ** 64 - 1, 2 ** 63, 7],
    "bool": [True, False, False, True],
    "string": ["hello", "ünïcødé ☃ 😀", "", 'quote " backslash \\ tab\t newline\n'],
    "half": [1.5, -2.0, 65504.0, 6e-08, INF, NAN],
    "bfloat16": [1.5, -2.0, 3.0e38, 1e-30, -INF, NAN],
    "uint16": [0, 65535, 1, 32768],
}
# The TensorProto field TF's Tensor::AsProtoField fills (TF Serving's default for outputs).
TYPED_FIELD = {"float32": "float_val", "float64": "double_val", "int8": "int_val",
               "int16": "int_val", "int32": "int_val", "uint8": "int_val", "uint16": "int_val",
               "int64": "int64_val", "uint32": "uint32_val", "uint64": "uint64_val",
               "bool": "bool_val", "string": "string_val", "half": "half_val",
               "bfloat16": "half_val"}
ROW = "Failed to process element: {} of 'instances' list. Error: {}"


# ------------------------------------------------------------------------------------------
# Expected values and strict JSON comparison


def np_dtype(name):
    return tf.as_dtype(name).as_numpy_dtype


def as_array(name, values):
    if name == "string":
        return np.array([v.encode() for v in values], dtype=object)
    return np.array(values, dtype=np_dtype(name))


def tfs_decimal(value, name):
    """The number TF Serving's WriteDecimal writes for a float/double: StrCat's %g (six
    digits) if it reads back to the same value, else %.9g / %.17g; `.0` appended to text with
    neither '.' nor 'e'; NaN/Infinity/-Infinity tokens. Returned as json.loads reads it."""
    kind = np_dtype(name)
    v = kind(value)
    if np.isnan(v):
        return NAN
    if np.isinf(v):
        return INF if v > 0 else -INF
    text = "%g" % float(v)
    if kind(float(text)) != v:
        text = "%.*g" % (9 if kind == np.float32 else 17, float(v))
    if "." not in text and "e" not in text:
        text += ".0"
    return json.loads(text)


def json_value(name, v):
    if name in ("float32", "float64"):
        return tfs_decimal(v, name)
    if name == "bool":
        return bool(v)
    if name == "string":
        return v
    return int(v)


def b64(s):
    return {"b64": base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()}


def same(a, b):
    """JSON equality that tells 1 from 1.0 from True, NaN equal to NaN, -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def assert_json(got, want):
    assert same(got, want), f"\n got: {got!r}\nwant: {want!r}"


def pairs(values):
    return [values[i:i + 2] for i in range(0, len(values), 2)]


def debug(obj):
    """JsonValueToDebugString (json_tensor.cc) for a one-level JSON object: rapidjson's
    PrettyWriter (4-space indent, `"key": value`) with single-line arrays."""
    if not obj:
        return "{}"
    members = ",\n".join(f"    {json.dumps(k)}: {v}" for k, v in obj.items())
    return "{\n" + members + "\n}"


# ------------------------------------------------------------------------------------------
# Servers


def wait_ready(proc, rest_port, models, what="tfgate"):
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if all(rest(rest_port, "GET", f"/v1/models/{m}")[0] == 200 for m in models):
                return True
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{what} did not start within 90 s")


def config_text(*models):
    """A text-format ModelServerConfig; each model is (name, extra config lines)."""
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{MODELS}/{name}" model_platform: "tensorflow"'
        f" {extra} }}\n" for name, extra in models)
    return "model_config_list {\n" + entries + "}\n"


def start(tmp_dir, config, ready, *flags):
    path = os.path.join(tmp_dir, "models.config")
    with open(path, "w") as f:
        f.write(config)
    for _ in range(3):
        grpc_port, rest_port = free_port(), free_port()
        proc = subprocess.Popen([BIN, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                                 f"--model_config_file={path}", *flags],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_ready(proc, rest_port, ready):
            return proc, grpc_port, rest_port
    pytest.fail("tfgate exited at startup three times")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Server:
    def __init__(self, grpc_port, rest_port):
        self.rest_port = rest_port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def rest(self, method, path, body=None):
        return rest(self.rest_port, method, path, body)

    def predict(self, model, body):
        if not isinstance(body, str):
            body = json.dumps(body)
        return self.rest("POST", f"/v1/models/{model}:predict", body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """half_plus_two with both versions (labels stable -> 1, canary -> 2) and dtypes/1."""
    config = config_text(
        ("half_plus_two", "model_version_policy { all {} } "
                          'version_labels { key: "stable" value: 1 } '
                          'version_labels { key: "canary" value: 2 }'),
        ("dtypes", ""))
    proc, grpc_port, rest_port = start(str(tmp_path_factory.mktemp("suite")), config,
                                       ["half_plus_two", "dtypes"],
                                       "--allow_version_labels_for_unavailable_models")
    s = Server(grpc_port, rest_port)
    yield s
    s.channel.close()
    stop(proc)


def grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as e:
        call(request, 10.0)
    return e.value.code(), e.value.details()


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def signature_defs(model, version):
    """The SignatureDefs as TensorFlow wrote them in the SavedModel."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(MODELS, model, str(version), "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    (graph,) = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
    return get_model_metadata_pb2.SignatureDefMap(signature_def=graph.signature_def)


# ------------------------------------------------------------------------------------------
# REST: every dtype, both formats


@pytest.mark.parametrize("name", JSON_DTYPES)
def test_rest_row_format_every_dtype(server, name):
    values = VALUES[name]
    status, body = server.predict("dtypes", json.dumps(
        {"signature_name": name, "instances": pairs(values)}))
    assert status == 200, body
    assert_json(body, {"predictions": [[json_value(name, v) for v in p] for p in pairs(values)]})
    # Scalar instances: one value per instance.
    status, body = server.predict("dtypes", {"signature_name": name, "instances": values})
    assert status == 200, body
    assert_json(body, {"predictions": [json_value(name, v) for v in values]})


@pytest.mark.parametrize("name", JSON_DTYPES)
def test_rest_columnar_format_every_dtype(server, name):
    values = VALUES[name]
    status, body = server.predict("dtypes", {"signature_name": name, "inputs": values})
    assert status == 200, body
    assert_json(body, {"outputs": [json_value(name, v) for v in values]})
    status, body = server.predict("dtypes", {"signature_name": name, "inputs": {"x": pairs(values)}})
    assert status == 200, body
    assert_json(body, {"outputs": [[json_value(name, v) for v in p] for p in pairs(values)]})
    # A scalar tensor travels as a bare value.
    status, body = server.predict("dtypes", {"signature_name": name, "inputs": values[1]})
    assert status == 200, body
    assert_json(body, {"outputs": json_value(name, values[1])})


@pytest.mark.parametrize("name", [d for d in JSON_DTYPES if d not in ("bool", "string")])
def test_rest_signature_name_after_the_numbers(server, name):
    """A body of numbers whose signature_name follows them: the gateway reads the numbers
    before it knows the signature (as float: serving_default has many inputs), then again
    with the named signature's dtype; every value of that dtype comes back exactly."""
    values = VALUES[name]
    want = [[json_value(name, v) for v in p] for p in pairs(values)]
    status, body = server.predict("dtypes", {"instances": pairs(values), "signature_name": name})
    assert status == 200, body
    assert_json(body, {"predictions": want})
    status, body = server.predict("dtypes", {"inputs": pairs(values), "signature_name": name})
    assert status == 200, body
    assert_json(body, {"outputs": want})


def expected_outputs(n_by_dtype):
    out = {d: [json_value(d, v) for v in VALUES[d][:n_by_dtype[d]]] for d in JSON_DTYPES}
    out["string_bytes"] = [b64(s) for s in VALUES["string"][:n_by_dtype["string"]]]
    return out


def test_rest_every_dtype_in_one_signature(server):
    """serving_default: one input per dtype; outputs named after them plus string_bytes."""
    # Row: every instance is an object with every input; predictions are objects.
    instances = [{d: VALUES[d][i] for d in JSON_DTYPES} for i in range(4)]
    status, body = server.predict("dtypes", json.dumps({"instances": instances},
                                                       ensure_ascii=False))
    assert status == 200, body
    columns = expected_outputs({d: 4 for d in JSON_DTYPES})
    assert_json(body, {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(4)]})
    # Columnar: the inputs' batch sizes need not match; outputs keep their own lengths.
    status, body = server.predict("dtypes", json.dumps({"inputs": VALUES}, ensure_ascii=False))
    assert status == 200, body
    assert_json(body, {"outputs": expected_outputs({d: len(VALUES[d]) for d in JSON_DTYPES})})


def test_rest_b64(server):
    binary = [b"\xff\x00\xfe", b"\x80abc\x00", b"", bytes(range(256))]
    # Binary inputs as {"b64": ...}; an output alias ending in _bytes comes back as b64.
    for key, reply in (("instances", "predictions"), ("inputs", "outputs")):
        status, body = server.predict("dtypes", {"signature_name": "bytes",
                                                 key: [b64(s) for s in binary]})
        assert status == 200, body
        assert_json(body, {reply: [b64(s) for s in binary]})
    # b64 and plain strings mix; an output not named *_bytes is written raw.
    status, body = server.predict("dtypes", {"signature_name": "string",
                                             "instances": ["plain", b64("décodé"), "x"]})
    assert status == 200, body
    assert_json(body, {"predictions": ["plain", "décodé", "x"]})
    status, body = server.predict("dtypes", {"signature_name": "string",
                                             "inputs": [[b64("a"), "b"], [b64(""), b64("ü")]]})
    assert status == 200, body
    assert_json(body, {"outputs": [["a", "b"], ["", "ü"]]})
    # A lone b64 object is a scalar tensor, not a named-input object.
    status, body = server.predict("dtypes", {"signature_name": "bytes", "inputs": b64(b"\xff")})
    assert status == 200, body
    assert_json(body, {"outputs": b64(b"\xff")})
    # Errors: undecodable base64, a b64 object with another key, b64 for a number.
    assert server.predict("dtypes", {"signature_name": "bytes", "inputs": [{"b64": "!!!!"}]}) == (
        400, {"error": "Unable to base64 decode"})
    assert server.predict("dtypes", {"signature_name": "bytes", "instances": [{"b64": "!!!!"}]}) == (
        400, {"error": ROW.format(0, "INVALID_ARGUMENT: Unable to base64 decode")})
    bad = {"b64": "aGk=", "x": 1}
    assert server.predict("dtypes", {"signature_name": "bytes", "inputs": [bad]}) == (
        400, {"error": "JSON Value: " + debug({"b64": '"aGk="', "x": "1"})
                       + " not formatted correctly for base64 data"})
    msg = ("JSON Value: " + debug({"b64": '"AAAA"'})
           + " Type: Object is not of expected type: float")
    assert server.predict("dtypes", {"signature_name": "float32", "inputs": [{"b64": "AAAA"}]}) == (
        400, {"error": msg})
    assert server.predict("dtypes", {"signature_name": "float32", "instances": [{"b64": "AAAA"}]}) == (
        400, {"error": ROW.format(0, "INVALID_ARGUMENT: " + msg)})


@pytest.mark.parametrize("name", REFUSED_DTYPES)
def test_rest_refuses_half_bfloat16_uint16(server, name):
    """json_tensor.cc: AddValueToTensor's default case is Unimplemented (HTTP 501), but the
    row format wraps every element's error in an InvalidArgument (HTTP 400) quoting it;
    AddSingleValueAndAdvance's default case is InvalidArgument."""
    conversion = f"Conversion of JSON Value: 1.5 to type: {TF_NAME[name]}"
    assert server.predict("dtypes", {"signature_name": name, "inputs": [1.5]}) == (
        501, {"error": conversion})
    assert server.predict("dtypes", {"signature_name": name, "instances": [1.5]}) == (
        400, {"error": ROW.format(0, "UNIMPLEMENTED: " + conversion)})
    written = {"error": f"Failed to write JSON value for tensor type: {TF_NAME[name]}"}
    assert server.predict("dtypes", {"signature_name": f"to_{name}", "inputs": [1.5]}) == (400, written)
    assert server.predict("dtypes", {"signature_name": f"to_{name}", "instances": [1.5]}) == (400, written)


# ------------------------------------------------------------------------------------------
# gRPC: every dtype


def check_output(out, name, expected):
    assert out.dtype == tf.as_dtype(name).as_datatype_enum
    assert [d.size for d in out.tensor_shape.dim] == list(expected.shape)
    # TF Serving writes outputs with Tensor::AsProtoField: the typed field, no tensor_content.
    assert out.tensor_content == b""
    assert len(getattr(out, TYPED_FIELD[name])) == expected.size
    got = tf.make_ndarray(out)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if name == "string":
        assert got.tolist() == expected.tolist()
    else:  # bit patterns: NaN, -0.0 and subnormals included
        bits = np.dtype(f"uint{expected.dtype.itemsize * 8}")
        np.testing.assert_array_equal(got.view(bits), expected.view(bits))


@pytest.mark.parametrize("name", JSON_DTYPES + REFUSED_DTYPES)
def test_grpc_predict_every_dtype(server, name):
    expected = as_array(name, VALUES[name])
    # tf.make_tensor_proto: tensor_content for numbers, string_val for strings.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dtypes"
    request.model_spec.signature_name = name
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(expected.reshape(2, -1)))
    response = server.predict_stub.Predict(request, 10.0)
    check_output(response.outputs["y"], name, expected.reshape(2, -1))
    assert list(response.outputs) == ["y"]
    assert (response.model_spec.name, response.model_spec.signature_name,
            response.model_spec.version.value) == ("dtypes", name, 1)
    # The same values in the typed field (half_val holds half/bfloat16 bit patterns).
    tensor = request.inputs["x"]
    tensor.Clear()
    tensor.dtype = tf.as_dtype(name).as_datatype_enum
    for n in (len(expected) // 2, 2):
        tensor.tensor_shape.dim.add().size = n
    field = getattr(tensor, TYPED_FIELD[name])
    field.extend(expected.view(np.uint16).tolist() if name in ("half", "bfloat16")
                 else expected.tolist())
    response = server.predict_stub.Predict(request, 10.0)
    check_output(response.outputs["y"], name, expected.reshape(-1, 2))


def test_grpc_every_dtype_in_one_signature_and_scalar_broadcast(server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dtypes"
    for name in JSON_DTYPES:
        request.inputs[name].CopyFrom(tf.make_tensor_proto(as_array(name, VALUES[name])))
    response = server.predict_stub.Predict(request, 10.0)
    assert sorted(response.outputs) == sorted(JSON_DTYPES + ["string_bytes"])
    for name in JSON_DTYPES:
        check_output(response.outputs[name], name, as_array(name, VALUES[name]))
    check_output(response.outputs["string_bytes"], "string", as_array("string", VALUES["string"]))
    assert response.model_spec.signature_name == "serving_default"
    # output_filter picks outputs.
    request.output_filter.extend(["int8", "string_bytes"])
    assert sorted(server.predict_stub.Predict(request, 10.0).outputs) == ["int8", "string_bytes"]
    # One value and a larger shape: TensorFlow fills the tensor with it.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dtypes"
    request.model_spec.signature_name = "float32"
    request.inputs["x"].dtype = tf.float32.as_datatype_enum
    request.inputs["x"].tensor_shape.dim.add().size = 3
    request.inputs["x"].float_val.append(7.0)
    check_output(server.predict_stub.Predict(request, 10.0).outputs["y"], "float32",
                 np.array([7.0, 7.0, 7.0], np.float32))


# ------------------------------------------------------------------------------------------
# REST predict errors


TYPE_ERRORS = [  # signature, JSON value, its debug string, its JSON type
    ("float32", "a", '"a"', "String"),
    ("float64", True, "true", "True"),
    ("int8", 1.0, "1.0", "Number"),
    ("int16", "1", '"1"', "String"),
    ("int32", 2 ** 31, "2147483648", "Number"),
    ("int64", 2 ** 63, "9223372036854775808", "Number"),
    ("uint8", None, "null", "Null"),
    ("uint32", -1, "-1", "Number"),
    ("uint64", 1.5, "1.5", "Number"),
    ("bool", 1, "1", "Number"),
    ("string", 1, "1", "Number"),
]


@pytest.mark.parametrize("name,value,text,kind", TYPE_ERRORS)
def test_rest_json_type_errors(server, name, value, text, kind):
    msg = f"JSON Value: {text} Type: {kind} is not of expected type: {TF_NAME[name]}"
    assert server.predict("dtypes", {"signature_name": name, "inputs": [value]}) == (
        400, {"error": msg})
    assert server.predict("dtypes", {"signature_name": name, "instances": [value]}) == (
        400, {"error": ROW.format(0, "INVALID_ARGUMENT: " + msg)})
    assert server.predict("dtypes", {"signature_name": name,
                                     "instances": [VALUES[name][0], value]}) == (
        400, {"error": ROW.format(1, "INVALID_ARGUMENT: " + msg)})
    # The name after the value: a body of numbers is read before its signature is known,
    # then again with the named signature's dtype, which refuses it as above.
    assert server.predict("dtypes", {"inputs": [value], "signature_name": name}) == (
        400, {"error": msg})


def test_rest_predict_request_errors(server):
    p = server.predict
    err = lambda code, msg: (code, {"error": msg})  # noqa: E731
    # Body and top level (ParseJson: rapidjson's iterative parser, kParseStopWhenDoneFlag).
    assert p("dtypes", "") == err(400, "JSON Parse error: The document is empty")
    assert p("dtypes", "   ") == err(400, "JSON Parse error: The document is empty. at offset: 3")
    assert p("dtypes", "not json") == err(400, "JSON Parse error: Invalid value. at offset: 1")
    body = '{"instances": [1.0,]}'
    assert p("dtypes", body) == err(400, f"JSON Parse error: Invalid value. at offset: {body.index(']')}")
    body = '{"instances": [1.0]'
    assert p("dtypes", body) == err(
        400, f"JSON Parse error: Missing a comma or '}}' after an object member. at offset: {len(body)}")
    assert p("dtypes", "[1.0]") == err(400, "JSON Value: [1.0] Is not object")
    # What follows a complete document is not read.
    status, body = p("dtypes", '{"signature_name": "int8", "instances": [1]} trailing')
    assert (status, body) == (200, {"predictions": [1]})
    # Keys.
    assert p("dtypes", {"signature_name": "float32"}) == err(400, "Missing 'inputs' or 'instances' key")
    assert p("dtypes", {"signature_name": 1, "instances": [1.0]}) == err(
        400, f"JSON Value: {debug({'signature_name': '1', 'instances': '[1.0]'})} not formatted "
             "correctly. 'signature_name' key must be a string value.")
    assert p("dtypes", '{"instances": [1.0], "inputs": [1.0]}') == err(
        400, f"JSON Value: {debug({'instances': '[1.0]', 'inputs': '[1.0]'})} Not formatted "
             "correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    assert p("dtypes", {"instances": 1.0}) == err(
        400, f"JSON Value: {debug({'instances': '1.0'})} Expecting 'instances' to be an list/array")
    assert p("dtypes", {"instances": []}) == err(
        400, f"JSON Value: {debug({'instances': '[]'})} No values in 'instances' array")
    # Model, version, label, signature. The servable is looked up once the JSON is parsed,
    # before the instances/inputs are read.
    assert p("nope", {"instances": [1.0]}) == err(404, "Servable not found for request: Latest(nope)")
    assert p("nope", {"signature_name": "x"}) == err(404, "Servable not found for request: Latest(nope)")
    assert p("nope", "{") == err(400, "JSON Parse error: Missing a name for object member. at offset: 1")
    assert server.rest("POST", "/v1/models/half_plus_two/versions/7:predict", '{"instances": [1.0]}') == err(
        404, "Servable not found for request: Specific(half_plus_two, 7)")
    assert server.rest("POST", "/v1/models/half_plus_two/labels/nope:predict", '{"instances": [1.0]}') == err(
        400, "Unrecognized servable version label: nope")
    assert p("dtypes", {"signature_name": "nope", "instances": [1.0]}) == err(
        400, 'Serving signature name: "nope" not found in signature def')
    # Named inputs.
    assert p("dtypes", {"signature_name": "float32", "instances": [{"x": 1.0}, {"x": 2.0}]}) == (
        200, {"predictions": [1.0, 2.0]})
    assert p("dtypes", {"signature_name": "float32", "instances": [{"z": 1.0}]}) == err(
        400, "Failed to process element: 0 key: z of 'instances' list. Error: "
             "INVALID_ARGUMENT: JSON object: does not have named input: z")
    assert p("dtypes", {"signature_name": "float32", "instances": [{"x": 1.0}, 2.0]}) == err(
        400, "Expecting object but got list at item 1 of input list")
    assert p("dtypes", {"signature_name": "float32", "instances": [1.0, {"x": 2.0}]}) == err(
        400, "Expecting value/list but got object at item 1 of input list")
    assert p("dtypes", {"signature_name": "float32", "inputs": {"z": [1.0]}}) == err(
        400, "Missing named input: x in 'inputs' object.")
    assert p("dtypes", {"signature_name": "float32", "inputs": {"x": [1.0], "z": "ignored"}}) == (
        200, {"outputs": [1.0]})
    # Several inputs (serving_default).
    keys = ",".join(sorted(JSON_DTYPES))
    assert p("dtypes", {"instances": [{"float32": 1.0}]}) == err(
        400, f"Failed to process element: 0 of 'instances' list. JSON object: "
             f"{debug({'float32': '1.0'})} keys must be equal to: {keys}")
    assert p("dtypes", {"instances": [1.0]}) == err(
        400, "instances is a plain list, but expecting list of objects as multiple input "
             "tensors required as per tensorinfo_map")
    assert p("dtypes", {"inputs": [1.0]}) == err(
        400, "inputs is a plain value/list, but expecting an object as multiple input tensors "
             "required as per tensorinfo_map")
    assert p("dtypes", {"inputs": {d: VALUES[d] for d in JSON_DTYPES if d != "uint8"}}) == err(
        400, "Missing named input: uint8 in 'inputs' object.")
    # Shapes: instances of different sizes or shapes, ragged lists, values at the wrong depth.
    f32 = {"signature_name": "float32"}
    assert p("dtypes", {**f32, "instances": [[1.0, 2.0], [3.0]]}) == err(
        400, ROW.format(1, "INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"))
    assert p("dtypes", {**f32, "instances": [{"x": [1.0, 2.0]}, {"x": [3.0]}]}) == err(
        400, "Failed to process element: 1 key: x of 'instances' list. Error: "
             "INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1")
    assert p("dtypes", {**f32, "instances": [[[1.0, 2.0]], [[1.0], [2.0]]]}) == err(
        400, ROW.format(1, "INVALID_ARGUMENT: Expecting shape [1,2] but got: [2,1]"))
    assert p("dtypes", {**f32, "instances": [[[1.0, 2.0], [3.0]]]}) == err(
        400, ROW.format(0, "INVALID_ARGUMENT: Encountered list at unexpected size: 1 at level: 1 "
                           "expected size: 2"))
    assert p("dtypes", {**f32, "inputs": [[1.0, 2.0], [3.0]]}) == err(
        400, "Encountered list at unexpected size: 1 at level: 1 expected size: 2")
    assert p("dtypes", {**f32, "inputs": [[1.0], 2.0]}) == err(
        400, "JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2")
    assert p("dtypes", {**f32, "inputs": [1.0, [2.0]]}) == err(
        400, "Encountered list at unexpected level: 1 expected < 1")
    # Outputs the row format cannot write.
    assert p("dtypes", {"signature_name": "scalar", "instances": [1.0, 2.0]}) == err(
        400, "Tensor name: y has no shape information ")
    assert p("dtypes", {"signature_name": "scalar", "inputs": [1.0, 2.0]}) == (200, {"outputs": 3.0})
    # Two outputs with different dim 0; which is named depends on the map's order.
    status, body = p("dtypes", {"signature_name": "ragged", "instances": [1.0, 2.0]})
    assert status == 400 and body["error"] in (
        "Tensor name: b has inconsistent batch size: 4 expecting: 2",
        "Tensor name: a has inconsistent batch size: 2 expecting: 4"), body
    assert p("dtypes", {"signature_name": "ragged", "inputs": [1.0, 2.0]}) == (
        200, {"outputs": {"a": [1.0, 2.0], "b": [1.0, 2.0, 1.0, 2.0]}})
    # Routing.
    assert server.rest("GET", "/v1/models/dtypes:predict") == err(
        400, "Malformed request: GET /v1/models/dtypes:predict")
    assert server.rest("POST", "/v1/models/dtypes", "{}") == err(
        400, "Malformed request: POST /v1/models/dtypes")


# ------------------------------------------------------------------------------------------
# REST status, metadata, versions and labels


def version_status(version):
    return {"version": str(version), "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}


def test_rest_model_status(server):
    r = server.rest
    # Every version, highest first (ServableStateMonitor::VersionMap is std::greater).
    both = (200, {"model_version_status": [version_status(2), version_status(1)]})
    assert r("GET", "/v1/models/half_plus_two") == both
    assert r("GET", "/v1/models/half_plus_two/versions/1") == (
        200, {"model_version_status": [version_status(1)]})
    assert r("GET", "/v1/models/dtypes") == (200, {"model_version_status": [version_status(1)]})
    # GetModelStatusImpl looks at the version only: a label, even an unknown one, is ignored.
    assert r("GET", "/v1/models/half_plus_two/labels/nope") == both
    assert r("GET", "/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})
    assert r("GET", "/v1/models/half_plus_two/versions/7") == (
        404, {"error": "Could not find version 7 of model half_plus_two"})
    assert r("GET", "/v1/models") == (400, {"error": "Missing model name in request."})


def rest_metadata(name, version):
    opts = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_defs(name, version), **opts)}}


def test_rest_model_metadata(server):
    r = server.rest
    assert r("GET", "/v1/models/dtypes/metadata") == (200, rest_metadata("dtypes", 1))
    assert r("GET", "/v1/models/half_plus_two/metadata") == (200, rest_metadata("half_plus_two", 2))
    assert r("GET", "/v1/models/half_plus_two/versions/1/metadata") == (
        200, rest_metadata("half_plus_two", 1))
    assert r("GET", "/v1/models/half_plus_two/labels/stable/metadata") == (
        200, rest_metadata("half_plus_two", 1))
    assert r("GET", "/v1/models/nope/metadata") == (
        404, {"error": "Servable not found for request: Latest(nope)"})
    assert r("GET", "/v1/models/half_plus_two/versions/7/metadata") == (
        404, {"error": "Servable not found for request: Specific(half_plus_two, 7)"})
    assert r("GET", "/v1/models/half_plus_two/labels/nope/metadata") == (
        400, {"error": "Unrecognized servable version label: nope"})


def test_rest_predict_versions_and_labels(server):
    x = [[1.0], [4.0]]
    v1 = [[0.5 * a + 2.0] for (a,) in x]  # half_plus_two/1: y = 0.5 x + 2; /2: + 3
    v2 = [[0.5 * a + 3.0] for (a,) in x]
    body = json.dumps({"instances": x})
    for path, want in (("", v2), ("/versions/1", v1), ("/versions/2", v2),
                       ("/labels/stable", v1), ("/labels/canary", v2)):
        assert server.rest("POST", f"/v1/models/half_plus_two{path}:predict", body) == (
            200, {"predictions": want}), path


# ------------------------------------------------------------------------------------------
# REST classify and regress


def test_rest_classify_and_regress(server):
    r = lambda verb, body, model="half_plus_two": server.rest(  # noqa: E731
        "POST", f"/v1/models/{model}:{verb}", body if isinstance(body, str) else json.dumps(body))
    y = lambda x, b=3.0: 0.5 * x + b  # noqa: E731
    assert r("classify", {"signature_name": "classify_x_to_y",
                          "examples": [{"x": 2.0}, {"x": [6.0]}]}) == (
        200, {"results": [[["", y(2.0)]], [["", y(6.0)]]]})
    # `context` features join every example; an example's own features win.
    assert r("regress", {"signature_name": "regress_x_to_y", "context": {"x": 10.0},
                         "examples": [{"x": 2.0}, {}]}) == (200, {"results": [y(2.0), y(10.0)]})
    assert server.rest("POST", "/v1/models/half_plus_two/versions/1:regress", json.dumps(
        {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})) == (
        200, {"results": [y(2.0, 2.0)]})
    assert server.rest("POST", "/v1/models/half_plus_two/labels/stable:classify", json.dumps(
        {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})) == (
        200, {"results": [[["", y(2.0, 2.0)]]]})

    err = lambda code, msg: (code, {"error": msg})  # noqa: E731
    for verb in ("classify", "regress"):
        # The request is read before the servable is looked up.
        assert r(verb, {"signature_name": "regress_x_to_y"}, "nope") == err(
            400, "JSON Value: " + debug({"signature_name": '"regress_x_to_y"'})
                 + " When method is classify, key 'examples' is expected and was not found")
        assert r(verb, {"examples": [{"x": 1.0}]}, "nope") == err(
            404, "Servable not found for request: Latest(nope)")
        assert r(verb, "") == err(400, "JSON Parse error: The document is empty")
        assert r(verb, {"examples": {}}) == err(
            400, f"JSON Value: {debug({'examples': '{}'})} Expecting 'examples' value to be an list/array")
        assert r(verb, {"examples": []}) == err(
            400, f"JSON Value: {debug({'examples': '[]'})} 'examples' value is an empty array")
        assert r(verb, {"examples": [1]}) == err(400, "Example must be JSON object but got JSON Number")
        assert r(verb, {"context": [], "examples": [{}]}) == err(
            400, "Example must be JSON object but got JSON Array")
        assert r(verb, {"examples": [{"x": [1.0, "a"]}]}) == err(
            400, "Unexpected element type in feature: x expecting type: float")
        assert r(verb, {"examples": [{"x": ["a", 1]}]}) == err(
            400, "Unexpected element type in feature: x expecting type: bytes")
        assert r(verb, {"examples": [{"x": None}]}) == err(
            400, "Feature: x has element with unexpected JSON type: Null")
        assert r(verb, {"examples": [{"x": [[1.0]]}]}) == err(
            400, "Feature: x has element with unexpected JSON type: Array")
        assert r(verb, {"examples": [{"x": 2 ** 64 - 1}]}) == err(
            400, "Feature: x has uint64_t element. Only int64_t is supported.")
        assert r(verb, {"signature_name": "nope", "examples": [{"x": 1.0}]}) == err(
            400, "No signature was found with the name: nope")
        assert server.rest("POST", f"/v1/models/half_plus_two/versions/7:{verb}",
                           '{"examples": [{"x": 1.0}]}') == err(
            404, "Servable not found for request: Specific(half_plus_two, 7)")
    # serving_default predicts from `x`: no `inputs` for examples. The message quotes the
    # SignatureDef's DebugString after the reason.
    for verb, what in (("classify", "classification"), ("regress", "regression")):
        status, body = r(verb, {"examples": [{"x": 1.0}]})
        assert status == 400 and body["error"].startswith(
            f"No {what} inputs found in SignatureDef: inputs {{"), body
    status, body = r("regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]})
    assert status == 400 and body["error"].startswith(
        "No regression outputs found in SignatureDef: inputs {"), body


# ------------------------------------------------------------------------------------------
# gRPC errors, metadata and status


def predict_request(model="dtypes", signature="float32", inputs=("x",), **spec):
    request = predict_pb2.PredictRequest()
    if model is not None:
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        for k, v in spec.items():
            if k == "version":
                request.model_spec.version.value = v
            else:
                setattr(request.model_spec, k, v)
    for name in inputs:
        request.inputs[name].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    return request


def test_grpc_predict_errors(server):
    call = server.predict_stub.Predict
    assert grpc_error(call, predict_request(model=None)) == (INVALID, "Missing ModelSpec")
    assert grpc_error(call, predict_request(model="")) == (INVALID, "ModelSpec has no name specified.")
    assert grpc_error(call, predict_request(model="nope")) == (
        NOT_FOUND, "Servable not found for request: Latest(nope)")
    assert grpc_error(call, predict_request("half_plus_two", "", version=7)) == (
        NOT_FOUND, "Servable not found for request: Specific(half_plus_two, 7)")
    assert grpc_error(call, predict_request("half_plus_two", "", version_label="nope")) == (
        INVALID, "Unrecognized servable version label: nope")
    assert grpc_error(call, predict_request(signature="nope")) == (
        grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    assert grpc_error(call, predict_request(inputs=("z",))) == (
        INVALID, "Signature input alias: x(feed name: float32:0) not found in request and no "
                 "default value provided. Inputs expected to be in the request {z}, or default "
                 "input alias set: ")
    assert grpc_error(call, predict_request(inputs=("x", "z"))) == (
        INVALID, "input size does not match signature: 2!=1 len({x,z}) != len({x}). "
                 "Sent extra: {z}. Missing but required: {}.")
    assert grpc_error(call, predict_request(inputs=())) == (
        INVALID, "input size does not match signature: 0!=1 len({}) != len({x}). "
                 "Sent extra: {}. Missing but required: {x}.")
    request = predict_request()
    request.output_filter.append("nope")
    assert grpc_error(call, request) == (
        INVALID, "output tensor alias not found in signature: nope Outputs expected to be in the set {y}.")
    request = predict_request(signature="")
    request.inputs.clear()
    for name in JSON_DTYPES:
        request.inputs[name].CopyFrom(tf.make_tensor_proto(as_array(name, VALUES[name][:1])))
    request.output_filter.append("nope")
    outputs = ",".join(sorted(JSON_DTYPES + ["string_bytes"]))
    assert grpc_error(call, request) == (
        INVALID, f"output tensor alias not found in signature: nope Outputs expected to be in "
                 f"the set {{{outputs}}}.")
    request = predict_request()
    request.output_filter.extend(["y", "y"])
    assert grpc_error(call, request) == (INVALID, "duplicate output tensor alias: y")
    # A tensor of another dtype than the signature's: TensorFlow refuses it when it runs.
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1], dtype=tf.int32))
    code, details = grpc_error(call, request)
    assert code == INVALID and "int32" in details and "float" in details, details
    # Versions and labels.
    for spec, offset, version in (({}, 3.0, 2), ({"version": 1}, 2.0, 1),
                                  ({"version_label": "stable"}, 2.0, 1),
                                  ({"version_label": "canary"}, 3.0, 2)):
        response = call(predict_request("half_plus_two", "", **spec), 10.0)
        assert list(response.outputs["y"].float_val) == [0.5 + offset], spec
        assert response.model_spec.version.value == version, spec


def classify_request(model="half_plus_two", signature="classify_x_to_y", xs=(2.0,), cls=None,
                     **spec):
    request = (cls or classification_pb2.ClassificationRequest)()
    if model is not None:
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        for k, v in spec.items():
            if k == "version":
                request.model_spec.version.value = v
            else:
                setattr(request.model_spec, k, v)
    for x in xs:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request


def test_grpc_classify_and_regress_errors(server):
    stub = server.predict_stub
    for call, cls, sig in ((stub.Classify, classification_pb2.ClassificationRequest, "classify_x_to_y"),
                           (stub.Regress, regression_pb2.RegressionRequest, "regress_x_to_y")):
        req = lambda **kw: classify_request(cls=cls, signature=kw.pop("signature", sig), **kw)  # noqa: E731
        assert grpc_error(call, req(model=None)) == (INVALID, "Missing ModelSpec")
        assert grpc_error(call, req(model="")) == (INVALID, "ModelSpec has no name specified.")
        assert grpc_error(call, req(model="nope")) == (
            NOT_FOUND, "Servable not found for request: Latest(nope)")
        assert grpc_error(call, req(version=7)) == (
            NOT_FOUND, "Servable not found for request: Specific(half_plus_two, 7)")
        assert grpc_error(call, req(version_label="nope")) == (
            INVALID, "Unrecognized servable version label: nope")
        assert grpc_error(call, req(signature="nope")) == (
            INVALID, "No signature was found with the name: nope")
        assert grpc_error(call, req(xs=())) == (INVALID, "Input is empty.")
        # Version 1 through its label: y = 0.5 x + 2.
        result = call(req(version_label="stable"), 10.0)
        assert result.model_spec.version.value == 1
        if cls is regression_pb2.RegressionRequest:
            assert [r.value for r in result.result.regressions] == [3.0]
        else:
            assert [[c.score for c in cl.classes] for cl in result.result.classifications] == [[3.0]]
    code, details = grpc_error(stub.Regress, classify_request(cls=regression_pb2.RegressionRequest))
    assert code == INVALID and details.startswith(
        "No regression outputs found in SignatureDef: inputs {"), details
    # MultiInference resolves the version like the others.
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = "half_plus_two"
    task.model_spec.signature_name = "regress_x_to_y"
    task.model_spec.version.value = 7
    task.method_name = "tensorflow/serving/regress"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    assert grpc_error(stub.MultiInference, request) == (
        NOT_FOUND, "Servable not found for request: Specific(half_plus_two, 7)")
    task.model_spec.version_label = "stable"
    result = stub.MultiInference(request, 10.0)
    assert [r.value for r in result.results[0].regression_result.regressions] == [2.5]
    assert result.results[0].model_spec.version.value == 1


def metadata_request(model="dtypes", fields=("signature_def",), **spec):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    if model is not None:
        request.model_spec.name = model
        for k, v in spec.items():
            if k == "version":
                request.model_spec.version.value = v
            else:
                setattr(request.model_spec, k, v)
    request.metadata_field.extend(fields)
    return request


def test_grpc_get_model_metadata(server):
    call = server.predict_stub.GetModelMetadata
    for request, name, version in ((metadata_request(), "dtypes", 1),
                                   (metadata_request("half_plus_two"), "half_plus_two", 2),
                                   (metadata_request("half_plus_two", version=1), "half_plus_two", 1),
                                   (metadata_request("half_plus_two", version_label="canary"),
                                    "half_plus_two", 2)):
        response = call(request, 10.0)
        assert (response.model_spec.name, response.model_spec.version.value,
                response.model_spec.signature_name) == (name, version, "")
        assert list(response.metadata) == ["signature_def"]
        packed = response.metadata["signature_def"]
        assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
        got = get_model_metadata_pb2.SignatureDefMap()
        assert packed.Unpack(got)
        assert got == signature_defs(name, version)
    assert grpc_error(call, metadata_request(fields=())) == (
        INVALID, "GetModelMetadataRequest must specify at least one metadata_field")
    # The fields are checked before the model is looked up.
    assert grpc_error(call, metadata_request("nope", fields=())) == (
        INVALID, "GetModelMetadataRequest must specify at least one metadata_field")
    assert grpc_error(call, metadata_request(fields=("signature_def", "foo"))) == (
        INVALID, "Metadata field foo is not supported")
    assert grpc_error(call, metadata_request(model=None)) == (INVALID, "Missing ModelSpec")
    assert grpc_error(call, metadata_request("")) == (INVALID, "ModelSpec has no name specified.")
    assert grpc_error(call, metadata_request("nope")) == (
        NOT_FOUND, "Servable not found for request: Latest(nope)")
    assert grpc_error(call, metadata_request("half_plus_two", version=7)) == (
        NOT_FOUND, "Servable not found for request: Specific(half_plus_two, 7)")
    assert grpc_error(call, metadata_request("half_plus_two", version_label="nope")) == (
        INVALID, "Unrecognized servable version label: nope")


def status_request(model="half_plus_two", version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    if model is not None:
        request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    return request


def status_list(response):
    return [(v.version, v.state, v.status.error_code, v.status.error_message)
            for v in response.model_version_status]


def test_grpc_get_model_status(server):
    call = server.model_stub.GetModelStatus
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status_list(call(status_request(), 10.0)) == [(2, available, 0, ""), (1, available, 0, "")]
    assert status_list(call(status_request(version=1), 10.0)) == [(1, available, 0, "")]
    assert status_list(call(status_request("dtypes"), 10.0)) == [(1, available, 0, "")]
    assert grpc_error(call, status_request(model=None)) == (INVALID, "Missing ModelSpec")
    assert grpc_error(call, status_request("nope")) == (
        NOT_FOUND, "Could not find any versions of model nope")
    assert grpc_error(call, status_request("")) == (NOT_FOUND, "Could not find any versions of model ")
    assert grpc_error(call, status_request(version=7)) == (
        NOT_FOUND, "Could not find version 7 of model half_plus_two")


# ------------------------------------------------------------------------------------------
# gRPC HandleReloadConfigRequest (its own server: a reload replaces the whole config)


def test_grpc_handle_reload_config_request(tmp_path):
    proc, grpc_port, rest_port = start(str(tmp_path), config_text(("half_plus_two", "")),
                                       ["half_plus_two"])
    s = Server(grpc_port, rest_port)
    try:
        reload = s.model_stub.HandleReloadConfigRequest
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE

        def request(*models):
            r = model_management_pb2.ReloadConfigRequest()
            for name, base_path in models:
                c = r.config.model_config_list.config.add()
                c.name, c.base_path, c.model_platform = name, base_path, "tensorflow"
            return r

        def still_serving():
            assert status_list(s.model_stub.GetModelStatus(status_request(), 10.0)) == [
                (2, available, 0, "")]
            assert s.predict("half_plus_two", {"instances": [1.0]}) == (200, {"predictions": [3.5]})

        custom = model_management_pb2.ReloadConfigRequest()
        custom.config.custom_model_config.CopyFrom(any_pb2.Any(type_url="type.googleapis.com/x.Y"))
        not_a_list = (INVALID, "ServerModelConfig type not supported by HandleReloadConfigRequest."
                               " Only ModelConfigList is currently supported")
        assert grpc_error(reload, custom) == not_a_list
        assert grpc_error(reload, model_management_pb2.ReloadConfigRequest()) == not_a_list
        path = f"{MODELS}/half_plus_two"
        assert grpc_error(reload, request(("half_plus_two", path), ("half_plus_two", path))) == (
            INVALID, "Illegal to list model half_plus_two multiple times in config list")
        assert grpc_error(reload, request(("half_plus_two", "models/half_plus_two"))) == (
            INVALID, "Expected model half_plus_two to have an absolute path or URI; got "
                     "base_path()=models/half_plus_two")
        still_serving()

        # Adding a model: the answer comes once it is AVAILABLE. Each metric asked for gets
        # its increase across the reload (0 for one that does not exist).
        add = request(("half_plus_two", path), ("dtypes", f"{MODELS}/dtypes"))
        add.metric_names.append("/tensorflow/serving/tfgate_suite/no_such_metric")
        response = reload(add, 60.0)
        assert (response.status.error_code, response.status.error_message) == (0, "")
        assert [(m.name, m.int64_value_increase) for m in response.metric] == [
            ("/tensorflow/serving/tfgate_suite/no_such_metric", 0)]
        assert s.predict("dtypes", {"signature_name": "int8", "instances": [-128]}) == (
            200, {"predictions": [-128]})
        still_serving()

        # Dropping a model unloads it: NOT_FOUND, and its status ends (END, OK).
        response = reload(request(("dtypes", f"{MODELS}/dtypes")), 60.0)
        assert response.status.error_code == 0
        deadline = time.time() + 30
        while s.predict("half_plus_two", {"instances": [1.0]})[0] != 404:
            assert time.time() < deadline, "half_plus_two was not unloaded within 30 s"
            time.sleep(0.1)
        assert s.predict("half_plus_two", {"instances": [1.0]}) == (
            404, {"error": "Servable not found for request: Latest(half_plus_two)"})
        while status_list(s.model_stub.GetModelStatus(status_request(), 10.0))[0][1] != \
                get_model_status_pb2.ModelVersionStatus.END:
            assert time.time() < deadline, "half_plus_two/2 did not reach END within 30 s"
            time.sleep(0.1)
        assert status_list(s.model_stub.GetModelStatus(status_request(), 10.0)) == [
            (2, get_model_status_pb2.ModelVersionStatus.END, 0, "")]
        assert s.predict("dtypes", {"signature_name": "bool", "inputs": [True]}) == (
            200, {"outputs": [True]})
    finally:
        s.channel.close()
        stop(proc)
