"""KServe V2 (the Open Inference Protocol) end to end, with Triton's own client
(`tritonclient.http` and `tritonclient.grpc`) against a real tfgate serving the same models
through TF Serving's API at the same time.

Expected answers come from the models' definitions (half_plus_two: y = x/2 + 2 for version
1, + 3 for version 2; dtypes: identities), from TF Serving's own metadata endpoint on the
same server, and from the V2 protocol's rules; never from tfgate's V2 code."""
import json
import math
import os
import struct
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from test_api_suite import VALUES, config_text, start, stop

# The dtypes model's signature names (numpy-style) and V2's datatype for each.
V2_TYPE = {"float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
           "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16",
           "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL", "string": "BYTES",
           "half": "FP16", "bfloat16": "BF16"}
NUMPY = {"half": np.float16, "bfloat16": np.float32, "string": np.object_}
# The main server takes shared-memory keys under this prefix only.
KEY_PREFIX = "/tfgate-test-"
# Travel only as binary over HTTP (V2's binary tensor extension).
BINARY_ONLY = {"half", "bfloat16"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """half_plus_two (versions 1 and 2, label stable -> 1), dtypes and mixed_types."""
    config = config_text(
        ("half_plus_two", "model_version_policy { all {} } "
                          'version_labels { key: "stable" value: 1 }'),
        ("dtypes", ""), ("mixed_types", ""), ("slow", ""))
    proc, grpc_port, rest_port = start(str(tmp_path_factory.mktemp("v2")), config,
                                       ["half_plus_two", "dtypes", "mixed_types", "slow"],
                                       "--allow_version_labels_for_unavailable_models",
                                       "--enable_v2_system_shared_memory",
                                       f"--v2_shared_memory_key_prefix={KEY_PREFIX}")
    PIDS["server"] = proc.pid
    yield grpc_port, rest_port
    stop(proc)


# The module's servers' process ids, for the tests that read their memory.
PIDS = {}


def clients(server):
    grpc_port, rest_port = server
    return [th.InferenceServerClient(f"127.0.0.1:{rest_port}"),
            tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")]


def http(port, method, path, body=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def as_json(c, method, *args):
    """A metadata or config answer as JSON from either client."""
    if isinstance(c, tg.InferenceServerClient):
        return getattr(c, method)(*args, as_json=True)
    return getattr(c, method)(*args)


def infer_input(mod, name, array, datatype, binary=True):
    i = mod.InferInput(name, list(array.shape), datatype)
    if mod is th:
        i.set_data_from_numpy(array, binary_data=binary)
    else:
        i.set_data_from_numpy(array)
    return i


def requested(mod, name, binary=True):
    if mod is th:
        return mod.InferRequestedOutput(name, binary_data=binary)
    return mod.InferRequestedOutput(name)


def test_health_and_server_metadata(server):
    for c in clients(server):
        assert c.is_server_live()
        assert c.is_server_ready()
        assert c.is_model_ready("half_plus_two")
        assert c.is_model_ready("half_plus_two", "2")
        assert c.is_model_ready("half_plus_two", "stable")
        assert not c.is_model_ready("half_plus_two", "3")
        assert not c.is_model_ready("no_such_model")
        meta = c.get_server_metadata()
        if c.__class__ is tg.InferenceServerClient:
            meta = {"name": meta.name, "extensions": list(meta.extensions)}
        assert meta["name"] == "tfgate"
        assert "binary_tensor_data" in meta["extensions"]
        assert "model_configuration" in meta["extensions"]
        # Only what is served: no CUDA shared memory.
        assert "cuda_shared_memory" not in meta["extensions"]


def test_model_metadata_matches_the_signature(server):
    _, rest_port = server
    status, _, body = http(rest_port, "GET", "/v1/models/half_plus_two/metadata")
    assert status == 200
    sig = json.loads(body)["metadata"]["signature_def"]["signature_def"]["serving_default"]
    shape = sig["inputs"]["x"]["tensor_shape"]
    # V2 cannot say "unknown rank": it says one dimension of unknown size.
    dims = [-1] if shape.get("unknown_rank") else [int(d["size"]) for d in shape["dim"]]
    for c in clients(server):
        meta = as_json(c, "get_model_metadata", "half_plus_two")
        assert meta["name"] == "half_plus_two"
        assert meta["versions"] == ["1", "2"]
        assert meta["platform"] == "tensorflow_savedmodel"
        (x,) = meta["inputs"]
        assert x["name"] == "x" and x["datatype"] == "FP32"
        assert [int(d) for d in x["shape"]] == dims
        assert [o["name"] for o in meta["outputs"]] == sorted(sig["outputs"])


def test_infer_over_json_binary_and_grpc(server):
    x = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
    for c in clients(server):
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        for binary in ([True, False] if mod is th else [True]):
            for version, offset in [("", 3.0), ("1", 2.0), ("2", 3.0), ("stable", 2.0)]:
                r = c.infer("half_plus_two", [infer_input(mod, "x", x, "FP32", binary)],
                            model_version=version, outputs=[requested(mod, "y", binary)],
                            request_id="req-7")
                np.testing.assert_array_equal(r.as_numpy("y"), x / 2 + offset)
                resp = r.get_response(as_json=True) if mod is tg else r.get_response()
                assert resp["id"] == "req-7"
                assert resp["model_version"] == (version if version.isdigit() else
                                                 "2" if version == "" else "1")


def test_v2_and_tf_serving_apis_agree(server):
    """The same server answers both protocols with the same numbers."""
    _, rest_port = server
    x = [[0.25], [7.0]]
    status, _, body = http(rest_port, "POST", "/v1/models/half_plus_two/versions/1:predict",
                           json.dumps({"instances": x}).encode())
    assert status == 200
    v1 = np.array(json.loads(body)["predictions"], dtype=np.float32)
    c = clients(server)[0]
    r = c.infer("half_plus_two", [infer_input(th, "x", np.array(x, np.float32), "FP32")],
                model_version="1")
    np.testing.assert_array_equal(r.as_numpy("y"), v1)


def dtype_array(sig):
    values = VALUES[sig]
    if sig == "string":
        return np.array([v.encode() for v in values], dtype=np.object_).reshape(2, -1)
    return np.array(values, dtype=NUMPY.get(sig, sig)).reshape(2, -1)


@pytest.mark.parametrize("sig", sorted(V2_TYPE))
def test_every_datatype_round_trips(server, sig):
    """V2's datatype table: each dtype's identity signature (named by the request parameter
    signature_name) gives back what it was sent, as binary, JSON and gRPC."""
    array = dtype_array(sig)
    datatype = V2_TYPE[sig]
    for c in clients(server):
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        modes = [True] if mod is tg or sig in BINARY_ONLY else [True, False]
        for binary in modes:
            sent = array
            if not binary and sig in ("float32", "float64"):
                # JSON has no NaN or infinity.
                sent = np.array([v for v in array.ravel() if math.isfinite(v)][:4],
                                dtype=array.dtype).reshape(2, -1)
            r = c.infer("dtypes", [infer_input(mod, "x", sent, datatype, binary)],
                        outputs=[requested(mod, "y", binary)], parameters={"signature_name": sig})
            out = r.get_output("y")
            got_type = out["datatype"] if mod is th else out.datatype
            assert got_type == datatype
            got = r.as_numpy("y")
            assert got.shape == sent.shape
            if sig == "bfloat16":
                # bfloat16 keeps the top 16 bits of a float32.
                expect = (sent.view(np.uint32) & 0xFFFF0000).view(np.float32)
                np.testing.assert_array_equal(got, expect)
            elif sig == "string" and mod is th and not binary:
                assert [g.encode() if isinstance(g, str) else g for g in got.ravel()] == \
                    list(sent.ravel())
            else:
                np.testing.assert_array_equal(got, sent)


def test_outputs_are_filtered_and_ordered(server):
    a = np.array([1, 2], dtype=np.int64)
    b = np.array([0.5, 0.25], dtype=np.float32)
    s = np.array([b"ab", b"xyz"], dtype=np.object_)
    for c in clients(server):
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        inputs = [infer_input(mod, "a", a, "INT64"), infer_input(mod, "b", b, "FP32"),
                  infer_input(mod, "s", s, "BYTES")]
        r = c.infer("mixed_types", inputs,
                    outputs=[requested(mod, "s_length"), requested(mod, "sum")])
        resp = r.get_response(as_json=True) if mod is tg else r.get_response()
        assert [o["name"] for o in resp["outputs"]] == ["s_length", "sum"]
        np.testing.assert_array_equal(r.as_numpy("s_length"), np.array([2, 3], np.int32))
        np.testing.assert_array_equal(r.as_numpy("sum"), a.astype(np.float32) + b)


def v2_error(call):
    with pytest.raises(InferenceServerException) as e:
        call()
    return e.value.status(), e.value.message()


def test_errors_name_what_is_wrong(server):
    http_c, grpc_c = clients(server)
    x = np.array([[1.0]], dtype=np.float32)
    message = "Servable not found for request: Latest(no_such_model)"
    st, msg = v2_error(lambda: http_c.infer("no_such_model", [infer_input(th, "x", x, "FP32")]))
    assert (st, msg) == ("404", message)
    st, msg = v2_error(lambda: grpc_c.infer("no_such_model", [infer_input(tg, "x", x, "FP32")]))
    assert (st, msg) == ("StatusCode.NOT_FOUND", message)

    wrong = [
        ("half_plus_two", "x", x.astype(np.float64), "FP64",
         "input 'x' has datatype FP64, the model expects FP32"),
        ("mixed_types", "a", np.zeros((1, 1), np.int64), "INT64",
         "input 'a' has shape [1,1], the model expects [-1]"),
        ("half_plus_two", "nope", x, "FP32",
         "Signature input alias: x(feed name: x:0) not found in request"),
    ]
    for model, name, array, datatype, message in wrong:
        for c, mod, code in [(http_c, th, "400"), (grpc_c, tg, "StatusCode.INVALID_ARGUMENT")]:
            i = infer_input(mod, name, array, datatype)
            st, msg = v2_error(lambda: c.infer(model, [i]))
            assert st == code and message in msg, (st, msg)

    # Malformed bodies, over plain HTTP.
    _, rest_port = server
    bad = [
        (b'{"inputs": [{"name": "x", "datatype": "FP16", "shape": [1, 1], "data": [1.0]}]}',
         {}, "input 'x' is FP16, which travels only as binary data"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0],'
         b' "parameters": {"binary_data_size": 4}}]}\x00\x00\x80\x3f',
         {"Inference-Header-Content-Length": "95"},
         "input 'x' has both 'data' and binary_data_size"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1],'
         b' "parameters": {"binary_data_size": 8}}]}\x00\x00\x80\x3f',
         {"Inference-Header-Content-Length": "87"},
         "input 'x' claims 8 bytes of binary data, only 4 remain"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1.0]}]}',
         {}, "input 'x' has 1 values, its shape needs 2"),
        (b'{"inputs": 5}', {}, "the request has no 'inputs' array"),
        (b'not json', {}, "failed to parse the request JSON"),
    ]
    for body, headers, message in bad:
        if "Inference-Header-Content-Length" in headers:
            headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
        st, _, resp = http(rest_port, "POST", "/v2/models/half_plus_two/infer", body, headers)
        assert st == 400, (st, resp)
        assert message in json.loads(resp)["error"], resp
    st, _, resp = http(rest_port, "GET", "/v2/models/half_plus_two/infer")
    assert st == 404 and "error" in json.loads(resp)


def test_binary_response_layout(server):
    """The binary extension's response: JSON, then the raw output, with the JSON's length
    in Inference-Header-Content-Length (checked without the client library)."""
    _, rest_port = server
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1],
                                     "parameters": {"binary_data_size": 8}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    body = header.encode() + struct.pack("<2f", 4.0, -1.0)
    st, headers, resp = http(rest_port, "POST", "/v2/models/half_plus_two/versions/1/infer",
                             body, {"Inference-Header-Content-Length": str(len(header))})
    assert st == 200
    n = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(resp[:n])
    (y,) = doc["outputs"]
    assert y["parameters"]["binary_data_size"] == 8 and "data" not in y
    assert struct.unpack("<2f", resp[n:]) == (4.0, 1.5)


def test_cuda_shared_memory_is_refused_clearly(server):
    grpc_c = clients(server)[1]
    st, msg = v2_error(lambda: grpc_c.get_cuda_shared_memory_status())
    assert st == "StatusCode.UNIMPLEMENTED"
    assert "CUDA shared memory is not supported" in msg


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v2batch")
    params = tmp / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 300 }\n"
                      "allowed_batch_sizes: 4\nallowed_batch_sizes: 8\n")
    proc, grpc_port, rest_port = start(str(tmp), config_text(("mlp", "")), ["mlp"],
                                       "--enable_batching", f"--batching_parameters_file={params}",
                                       "--enable_v2_system_shared_memory",
                                       f"--v2_shared_memory_key_prefix={KEY_PREFIX}")
    yield grpc_port, rest_port
    stop(proc)


def test_shared_memory_inputs_join_batches(batching_server, regions):
    """With batching, a region's rows are read into the batch (padded from: 3 rows run as
    4) and its outputs split back into the output region: the answer equals the same rows
    carried in the request."""
    x3 = np.random.default_rng(3).random((3, 64), dtype=np.float32)
    in_key, in_handle = regions("batch-in", x3.nbytes)
    out_key, out_handle = regions("batch-out", 3 * 16 * 4)
    shm.set_shared_memory_region(in_handle, [x3])
    for c in clients(batching_server):
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        expect = c.infer("mlp", [infer_input(mod, "x", x3, "FP32")]).as_numpy("y")
        c.unregister_system_shared_memory()
        c.register_system_shared_memory("batch-in", in_key, x3.nbytes)
        c.register_system_shared_memory("batch-out", out_key, 3 * 16 * 4)
        i = mod.InferInput("x", [3, 64], "FP32")
        i.set_shared_memory("batch-in", x3.nbytes)
        o = mod.InferRequestedOutput("y")
        o.set_shared_memory("batch-out", 3 * 16 * 4)
        c.infer("mlp", [i], outputs=[o])
        c.unregister_system_shared_memory()
        got = shm.get_contents_as_numpy(out_handle, np.float32, [3, 16])
        np.testing.assert_array_equal(got, expect)
        shm.set_shared_memory_region(out_handle, [np.zeros((3, 16), np.float32)])


def test_model_config_follows_batching(server, batching_server):
    for c in clients(server):
        cfg = as_json(c, "get_model_config", "half_plus_two")
        cfg = cfg.get("config", cfg)
        assert cfg["name"] == "half_plus_two"
        assert cfg["platform"] == "tensorflow_savedmodel"
        assert int(cfg.get("max_batch_size", 0)) == 0
        assert "dynamic_batching" not in cfg
    for c in clients(batching_server):
        cfg = as_json(c, "get_model_config", "mlp")
        cfg = cfg.get("config", cfg)
        assert int(cfg["max_batch_size"]) == 8
        (x,) = cfg["input"]
        assert x["name"] == "x" and x["data_type"] == "TYPE_FP32"
        assert [int(d) for d in x["dims"]] == [64], "the batch dimension is left out"
        (y,) = cfg["output"]
        assert [int(d) for d in y["dims"]] == [16]
        batching = cfg["dynamic_batching"]
        assert int(batching["max_queue_delay_microseconds"]) == 300
        assert [int(s) for s in batching["preferred_batch_size"]] == [4, 8]
        # And requests still batch through V2: rows of any count up to the maximum.
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        x3 = np.ones((3, 64), np.float32)
        r = c.infer("mlp", [infer_input(mod, "x", x3, "FP32")])
        assert r.as_numpy("y").shape == (3, 16)


@pytest.fixture
def regions():
    """System shared-memory objects made with Triton's helper, destroyed after the test."""
    made = []

    def make(name, size):
        key = f"/tfgate-test-{os.getpid()}-{name}"
        handle = shm.create_shared_memory_region(name, key, size)
        made.append(handle)
        return key, handle

    yield make
    for h in made:
        shm.destroy_shared_memory_region(h)


def test_system_shared_memory_carries_inputs_and_outputs(server, regions):
    x = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
    in_key, in_handle = regions("in", x.nbytes)
    out_key, out_handle = regions("out", 64)
    shm.set_shared_memory_region(in_handle, [x])
    for c in clients(server):
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        c.unregister_system_shared_memory()
        c.register_system_shared_memory("in", in_key, x.nbytes)
        c.register_system_shared_memory("out", out_key, 64)
        status = c.get_system_shared_memory_status()
        if mod is tg:
            status = [{"name": r.name, "key": r.key, "byte_size": r.byte_size}
                      for r in status.regions.values()]
        assert sorted((r["name"], r["key"], int(r["byte_size"])) for r in status) == \
            [("in", in_key, x.nbytes), ("out", out_key, 64)]

        i = mod.InferInput("x", list(x.shape), "FP32")
        i.set_shared_memory("in", x.nbytes)
        o = mod.InferRequestedOutput("y")
        o.set_shared_memory("out", 60, offset=4)
        r = c.infer("half_plus_two", [i], outputs=[o], model_version="1")
        out = r.get_output("y")
        if mod is th:
            # Over HTTP an output written to shared memory carries nothing more (Triton's
            # HTTP clients take any output `parameters` for binary data).
            assert "data" not in out and "parameters" not in out
        else:
            params = {k: (v.string_param or v.int64_param) for k, v in out.parameters.items()}
            assert params["shared_memory_region"] == "out"
            assert int(params["shared_memory_byte_size"]) == x.nbytes
        y = shm.get_contents_as_numpy(out_handle, np.float32, [3, 1], offset=4)
        np.testing.assert_array_equal(y, x / 2 + 2)
        shm.set_shared_memory_region(out_handle, [np.zeros(16, np.float32)])

        c.unregister_system_shared_memory("in")
        st, msg = v2_error(lambda: c.infer("half_plus_two", [i], outputs=[o]))
        assert st in ("400", "StatusCode.INVALID_ARGUMENT")
        assert msg == "shared memory region 'in' is not registered"
        c.unregister_system_shared_memory()
        status = c.get_system_shared_memory_status()
        assert len(status if mod is th else status.regions) == 0


def memory_kib(pid, field):
    """A line of /proc/PID/status in KiB: VmRSS (resident now), VmHWM (its peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def mapped_kib(pid, paths):
    """Resident KiB of PID's mappings of these files (/proc/PID/smaps)."""
    total, ours = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                # A mapping's first line: range, perms, offset, device, inode, path.
                ours = len(fields) >= 6 and fields[5] in paths
            elif ours and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_shared_memory_tensors_are_copied_once_each_way(server, regions):
    """48 MiB of float32 through system shared memory, in and out (the dtypes model's
    float32 identity): the gateway's peak resident memory grows by its two arena blocks
    (the one copy in: region -> request arena, TensorFlow reads it there; the one copy
    out: response arena -> region), about 96 MiB, not by a copy of the tensor in its
    heap each way as well (about 192 MiB). The client's pages the gateway maps are its
    own memory, counted apart. The values come back exact."""
    n = 12 << 20
    x = np.random.default_rng(32).random((1, n), dtype=np.float32)
    in_key, in_handle = regions("big-in", x.nbytes)
    out_key, out_handle = regions("big-out", x.nbytes)
    shm.set_shared_memory_region(in_handle, [x])
    c = clients(server)[0]
    c.unregister_system_shared_memory()
    c.register_system_shared_memory("big-in", in_key, x.nbytes)
    c.register_system_shared_memory("big-out", out_key, x.nbytes)
    i = th.InferInput("x", list(x.shape), "FP32")
    i.set_shared_memory("big-in", x.nbytes)
    o = th.InferRequestedOutput("y")
    o.set_shared_memory("big-out", x.nbytes)
    pid = PIDS["server"]
    before = memory_kib(pid, "VmRSS")
    c.infer("dtypes", [i], outputs=[o], parameters={"signature_name": "float32"})
    # The client's own pages, mapped by the gateway, are not copies: left out.
    clients_pages = mapped_kib(pid, {f"/dev/shm{in_key}", f"/dev/shm{out_key}"})
    grown_mib = (memory_kib(pid, "VmHWM") - before - clients_pages) / 1024
    c.unregister_system_shared_memory()
    assert clients_pages > 0, "the gateway maps the client's regions"
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(out_handle, np.float32, list(x.shape)), x)
    assert grown_mib < 2.5 * x.nbytes / 2**20, \
        f"the gateway's peak resident memory grew by {grown_mib:.0f} MiB for a " \
        f"{x.nbytes >> 20} MiB tensor each way"


@pytest.mark.parametrize("size", [64, 64 << 10])
def test_a_truncated_region_fails_only_its_request(server, regions, size):
    """The client shrinks its object after registering it: the request that reads past
    the new end is refused (as the object is, not as it was), and the server serves on.
    64 bytes: the end moves inside the mapping's one page; 64 KiB: pages the gateway has
    mapped vanish, and reading them raises SIGBUS in it, which the copy's guard turns
    into this request's error."""
    key, handle = regions(f"shrinks-{size}", size)
    shm.set_shared_memory_region(handle, [np.arange(size // 4, dtype=np.float32)])
    c = clients(server)[0]
    c.unregister_system_shared_memory()
    c.register_system_shared_memory("shrinks", key, size)
    os.truncate(f"/dev/shm{key}", 16)
    i = th.InferInput("x", [size // 4], "FP32")
    i.set_shared_memory("shrinks", size)
    st, msg = v2_error(lambda: c.infer("dtypes", [i], outputs=[th.InferRequestedOutput("y")],
                                       parameters={"signature_name": "float32"}))
    c.unregister_system_shared_memory()
    assert (st, msg) == ("400", f"cannot read shared memory region 'shrinks' (key '{key}'): "
                                f"the file ends 16 bytes into a range of {size}")
    r = c.infer("half_plus_two", [infer_input(th, "x", np.array([[2.0]], np.float32), "FP32")],
                model_version="1")
    np.testing.assert_array_equal(r.as_numpy("y"), [[3.0]])


def test_shared_memory_mistakes_are_refused(server, regions):
    key, _ = regions("small", 16)
    for c in clients(server):
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        invalid = "400" if mod is th else "StatusCode.INVALID_ARGUMENT"
        c.unregister_system_shared_memory()
        missing = f"{KEY_PREFIX}no-such"
        st, msg = v2_error(lambda: c.register_system_shared_memory("r", missing, 16))
        assert st == invalid and f"unable to open shared memory object '{missing}'" in msg
        st, msg = v2_error(lambda: c.register_system_shared_memory("r", "/../etc/passwd", 16))
        assert st == invalid and "is not a shared memory key" in msg
        st, msg = v2_error(lambda: c.register_system_shared_memory("r", key, 16, offset=8))
        assert st == invalid and "offset 8 + byte size 16 is past the end" in msg
        c.register_system_shared_memory("r", key, 16)
        st, msg = v2_error(lambda: c.register_system_shared_memory("r", key, 16))
        assert st == invalid and msg == "shared memory region 'r' is already registered"
        i = mod.InferInput("x", [1, 1], "FP32")
        i.set_shared_memory("r", 4, offset=14)
        st, msg = v2_error(lambda: c.infer("half_plus_two", [i]))
        assert st == invalid
        assert msg == "shared memory region 'r': offset 14 + byte size 4 is past its end (16 bytes)"
        c.unregister_system_shared_memory()
    # Data beside a region reference (the client library cannot send this).
    _, rest_port = server
    http(rest_port, "POST", "/v2/systemsharedmemory/region/r/register",
         json.dumps({"key": key, "offset": 0, "byte_size": 16}).encode())
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1],
                                   "data": [1.0], "parameters": {
                                       "shared_memory_region": "r",
                                       "shared_memory_byte_size": 4}}]}).encode()
    st, _, resp = http(rest_port, "POST", "/v2/models/half_plus_two/infer", body)
    assert st == 400
    assert json.loads(resp)["error"] == \
        "input 'x' names a shared memory region and carries data as well"
    st, _, resp = http(rest_port, "GET", "/v2/cudasharedmemory/status")
    assert st == 501 and "CUDA shared memory is not supported" in json.loads(resp)["error"]
    http(rest_port, "POST", "/v2/systemsharedmemory/unregister")


def wait_in_flight(rest_port, n, limit=30):
    """Waits until the server's workers hold at least n requests (GET /tfgate/workers)."""
    deadline = time.time() + limit
    while True:
        _, _, body = http(rest_port, "GET", "/tfgate/workers")
        if sum(w["in_flight"] for w in json.loads(body)["workers"]) >= n:
            return
        assert time.time() < deadline, f"never {n} requests in flight: {body}"
        time.sleep(0.01)


def slow_count_taking(rest_port, seconds):
    """A count the slow model takes about `seconds` to reach on this machine (probed)."""
    probe = 300_000
    started = time.time()
    st, _, body = http(rest_port, "POST", "/v1/models/slow:predict",
                       json.dumps({"instances": [probe]}).encode())
    assert st == 200, body
    return int(probe / (time.time() - started) * seconds)


def test_a_region_unregistered_mid_request_serves_that_request(server, regions):
    """slow counts to its input n: the request is still running when its regions are
    unregistered, and it is answered in full from and into them."""
    n = np.array([slow_count_taking(server[1], 1.5)], dtype=np.int64)
    in_key, in_handle = regions("n", 8)
    out_key, out_handle = regions("count", 8)
    shm.set_shared_memory_region(in_handle, [n])
    c = clients(server)[0]
    c.unregister_system_shared_memory()
    c.register_system_shared_memory("n", in_key, 8)
    c.register_system_shared_memory("count", out_key, 8)
    i = th.InferInput("n", [1], "INT64")
    i.set_shared_memory("n", 8)
    o = th.InferRequestedOutput("count")
    o.set_shared_memory("count", 8)
    answers = []
    # tritonclient.http runs on gevent: one client per thread.
    url = f"127.0.0.1:{server[1]}"
    t = threading.Thread(target=lambda: answers.append(
        th.InferenceServerClient(url).infer("slow", [i], outputs=[o])))
    t.start()
    # Unregistered once the request runs at its worker (its input already read).
    wait_in_flight(server[1], 1)
    c.unregister_system_shared_memory()
    unregistered = time.time()
    t.join(60)
    assert answers, "the request was answered"
    assert time.time() - unregistered > 0.1, "it was still running when the regions went"
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int64, [1]), n)


# --- Who shared memory reaches --------------------------------------------------------

def shm_clients(grpc_port, rest_port):
    return clients((grpc_port, rest_port))


def refused(c, *args):
    """A registration's refusal (status, message) and how long it took."""
    started = time.time()
    st, msg = v2_error(lambda: c.register_system_shared_memory(*args))
    return st, msg, time.time() - started


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """half_plus_two with default flags: the shared-memory extension off."""
    proc, grpc_port, rest_port = start(str(tmp_path_factory.mktemp("v2-off")),
                                       config_text(("half_plus_two", "")), ["half_plus_two"])
    yield grpc_port, rest_port
    stop(proc)


def test_shared_memory_is_off_unless_turned_on(plain_server, regions):
    key, handle = regions("off", 16)
    shm.set_shared_memory_region(handle, [np.arange(4, dtype=np.float32)])
    off = ("the system shared memory extension is off: start tfgate with "
           "--enable_v2_system_shared_memory to register regions")
    for c in shm_clients(*plain_server):
        meta = c.get_server_metadata()
        extensions = meta["extensions"] if isinstance(meta, dict) else list(meta.extensions)
        assert "system_shared_memory" not in extensions
        st, msg, _ = refused(c, "r", key, 16)
        assert (st, msg) in (("400", off), ("StatusCode.FAILED_PRECONDITION", off))
        status = c.get_system_shared_memory_status()
        assert len(status if isinstance(status, list) else status.regions) == 0
        # An input naming a region cannot reach one either.
        mod = th if isinstance(c, th.InferenceServerClient) else tg
        i = mod.InferInput("x", [1, 1], "FP32")
        i.set_shared_memory("r", 4)
        st, msg = v2_error(lambda: c.infer("half_plus_two", [i]))
        assert msg == off
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [4]),
                                  np.arange(4, dtype=np.float32))


def test_shared_memory_reaches_only_the_servers_objects(server, regions):
    """A FIFO (whose open would block), a link to an allowed object, another user's object
    and a key outside --v2_shared_memory_key_prefix are refused promptly, over REST and
    gRPC, and no byte of them is read or written."""
    pid = os.getpid()
    own_key, own = regions("target", 16)
    payload = np.arange(4, dtype=np.float32)
    shm.set_shared_memory_region(own, [payload])
    fifo = f"{KEY_PREFIX}{pid}-fifo"
    link = f"{KEY_PREFIX}{pid}-link"
    os.mkfifo("/dev/shm" + fifo, 0o600)
    os.symlink("/dev/shm" + own_key, "/dev/shm" + link)
    outside = f"/other-{pid}"
    with open("/dev/shm" + outside, "wb") as f:
        f.write(b"\0" * 16)
    foreign = None
    if os.geteuid() == 0:
        foreign = f"{KEY_PREFIX}{pid}-foreign"
        with open("/dev/shm" + foreign, "wb") as f:
            f.write(b"secret-bytes-16!")
        os.chown("/dev/shm" + foreign, 65534, 65534)
    try:
        for c in clients(server):
            invalid = "400" if isinstance(c, th.InferenceServerClient) \
                else "StatusCode.INVALID_ARGUMENT"
            c.unregister_system_shared_memory()
            st, msg, took = refused(c, "f", fifo, 1)
            assert (st, msg) == (invalid, f"'{fifo}' is not a shared memory object (a FIFO)")
            assert took < 2, f"a FIFO key took {took:.1f} s"
            st, msg, _ = refused(c, "l", link, 16)
            assert (st, msg) == (
                invalid, f"'{link}' is not a shared memory object (a symbolic link)")
            st, msg, _ = refused(c, "o", outside, 16)
            assert (st, msg) == (invalid, f"shared memory key '{outside}' is outside this "
                                          f"server's prefix '{KEY_PREFIX}' "
                                          "(--v2_shared_memory_key_prefix)")
            if foreign:
                st, msg, _ = refused(c, "x", foreign, 16)
                assert (st, msg) == (invalid, f"shared memory object '{foreign}' belongs to "
                                              "uid 65534, not to this server's user or one of "
                                              "--v2_shared_memory_owners")
            status = c.get_system_shared_memory_status()
            assert len(status if isinstance(status, list) else status.regions) == 0
        np.testing.assert_array_equal(shm.get_contents_as_numpy(own, np.float32, [4]), payload)
        if foreign:
            with open("/dev/shm" + foreign, "rb") as f:
                assert f.read() == b"secret-bytes-16!"
    finally:
        for k in (fifo, link, outside, foreign):
            if k:
                os.unlink("/dev/shm" + k)
    if not foreign:
        pytest.skip("another user's object needs root to make (chown); the other cases ran")


def test_unregistering_an_unknown_region_succeeds(server):
    """As in Triton, whose client helpers unregister each name before registering it."""
    for c in clients(server):
        c.unregister_system_shared_memory("never-registered")


def perf_analyzer(rest_port, seconds=1):
    """Triton's perf_analyzer over V2 HTTP with system shared memory, on half_plus_two."""
    import glob
    import subprocess
    import sys
    venv_bin = os.path.dirname(sys.executable)
    site = os.path.dirname(os.path.dirname(np.__file__))
    cudart = glob.glob(os.path.join(site, "nvidia", "cuda_runtime", "lib", "libcudart.so.12"))
    assert cudart, "scripts/setup.sh installs nvidia-cuda-runtime-cu12 for perf_analyzer"
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(cudart[0]))
    return subprocess.run(
        [os.path.join(venv_bin, "perf_analyzer"), "-m", "half_plus_two", "-i", "http",
         "-u", f"127.0.0.1:{rest_port}", "--shape", "x:1,1", "--shared-memory=system",
         "--concurrency-range", "1", "--measurement-interval", str(seconds * 1000),
         # This checks that the requests go through shared memory, not their speed: any
         # window counts as stable (a loaded 2-core machine is never steady).
         "--measurement-mode", "time_windows", "--stability-percentage", "100000",
         "--max-trials", "10"],
        env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """The extension on with no key prefix: perf_analyzer names its regions `/<name>`."""
    proc, grpc_port, rest_port = start(str(tmp_path_factory.mktemp("v2-open")),
                                       config_text(("half_plus_two", "")), ["half_plus_two"],
                                       "--enable_v2_system_shared_memory")
    yield grpc_port, rest_port
    stop(proc)


def test_perf_analyzer_runs_over_system_shared_memory(open_server, plain_server):
    run = perf_analyzer(open_server[1])
    assert run.returncode == 0, run.stdout + run.stderr
    throughput = [line for line in run.stdout.splitlines() if "Throughput:" in line]
    assert throughput and float(throughput[-1].split()[-2]) > 0, run.stdout
    # The same run against a server with the extension off cannot register its regions.
    off = perf_analyzer(plain_server[1])
    assert off.returncode != 0
    assert "system shared memory extension is off" in off.stdout + off.stderr


# --- Binary data extension edge cases -------------------------------------------------

def test_a_raw_binary_request_is_the_single_inputs_data(server):
    """`Inference-Header-Content-Length: 0`: the body is the one input's bytes, its shape
    following from the byte size (slow's n is INT64 [-1]; it counts to n)."""
    _, rest_port = server
    n = np.array([5], dtype=np.int64)
    st, headers, body = http(rest_port, "POST", "/v2/models/slow/infer", n.tobytes(),
                             {"Inference-Header-Content-Length": "0",
                              "Content-Type": "application/octet-stream"})
    assert st == 200, body
    out = json.loads(body)["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"], out["data"]) == \
        ("count", "INT64", [1], [5])
    raw = "a raw binary request (Inference-Header-Content-Length: 0)"
    errors = [
        # Not a whole number of INT64 elements.
        ("slow", b"\0" * 5, f"{raw} of 5 bytes is not a whole number of INT64 elements "
                            "(8 bytes each) for input 'n'"),
        # A model of three inputs cannot take one.
        ("mixed_types", b"\0" * 8,
         f"{raw} needs a model with exactly one input; this signature has 3"),
        # An input of unknown rank has no shape to follow.
        ("half_plus_two", b"\0" * 4, f"{raw} cannot deduce the shape of input 'x', whose "
                                      "rank is unknown; send the JSON header"),
    ]
    for model, data, message in errors:
        st, _, body = http(rest_port, "POST", f"/v2/models/{model}/infer", data,
                           {"Inference-Header-Content-Length": "0"})
        assert (st, json.loads(body)["error"]) == (400, message)


def test_an_outputs_binary_data_false_overrides_binary_data_output(server):
    _, rest_port = server
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1],
                           "data": x.flatten().tolist()}],
               "parameters": {"binary_data_output": True},
               "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}
    st, headers, body = http(rest_port, "POST", "/v2/models/half_plus_two/versions/1/infer",
                             json.dumps(request).encode())
    assert st == 200, body
    assert headers.get("Inference-Header-Content-Length") is None
    out = json.loads(body)["outputs"][0]
    assert out["data"] == (x / 2 + 2).flatten().tolist()
    # Without the override the same request answers binary.
    del request["outputs"][0]["parameters"]
    st, headers, body = http(rest_port, "POST", "/v2/models/half_plus_two/versions/1/infer",
                             json.dumps(request).encode())
    n = int(headers["Inference-Header-Content-Length"])
    np.testing.assert_array_equal(np.frombuffer(body[n:], np.float32), (x / 2 + 2).flatten())
