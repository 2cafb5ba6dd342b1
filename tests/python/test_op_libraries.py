"""Op libraries end to end: TensorFlow Text's ops, built into every worker as TF Serving
links them into its binary, and `--op_libraries` (a tfgate extension) for ops of one's own.

- A TF Text model (normalize + case fold, whitespace tokenizer, FastWordpiece,
  BertTokenizer, SentencePiece with a model trained here) is exported here, served by a real
  tfgate, and its answers over REST, TF Serving's gRPC and KServe V2 (Triton's clients) are
  compared with what TensorFlow computes in this process with the same model.
- TensorFlow's `ZeroOut` example op (op_fixtures/zero_out.cc) is compiled here against the
  installed TensorFlow's headers, a model using it is served with `--op_libraries`, and its
  REST answer compared with the op run in this process.
- A model whose op no library registers (as a TF Decision Forests model's, whose library
  cannot load into this TensorFlow) fails to load with the op named and the flag pointed at,
  in the model's status and the log.
- Startup refuses a library that does not exist, one that fails to load (op_fixtures/
  undefined_symbol.c needs a symbol nothing defines), and a second copy of a TF Text library
  (its kernels would be registered twice), with the path and the reason, spawned or attached.
"""
import io
import json
import os
import shutil
import subprocess
import time

import grpc
import numpy as np
import pytest
import sentencepiece
import tensorflow as tf
import tensorflow_text as text
import tritonclient.grpc as tg
import tritonclient.http as th
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from test_official_client import BIN, ROOT, free_port, rest

WORKER = os.path.join(os.path.dirname(BIN), "tfgate-worker")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_fixtures")
TEXT_OPS = os.path.realpath(os.path.join(os.path.dirname(text.__file__), "python", "ops"))

SENTENCES = ["The Quick brown FOX jumps", "ＡＢＣ Ｃａｆé unaffable runner", "hello  world",
             "Straße über the lazy dog"]
VOCAB = ["[PAD]", "[UNK]", "the", "quick", "brown", "fox", "jump", "##s", "un", "##aff",
         "##able", "run", "##ner", "hello", "world", "abc", "cafe", "lazy", "dog", "over",
         "strasse", "uber", "##e"]
# SentencePiece's trainer needs enough text for its vocabulary.
CORPUS = SENTENCES * 3 + ["the lazy dog sleeps", "a quick fox runs over the hill",
                          "brown bread and butter", "hello again world", "jumps and runs"]


class TextModel(tf.Module):
    """Every TF Text op family the issue names, in one serving signature over `text`."""

    def __init__(self, spm_model):
        super().__init__()
        self.whitespace = text.WhitespaceTokenizer()
        self.fast_wordpiece = text.FastWordpieceTokenizer(VOCAB, token_out_type=tf.int64)
        table = tf.lookup.StaticVocabularyTable(
            tf.lookup.KeyValueTensorInitializer(VOCAB, tf.range(len(VOCAB), dtype=tf.int64)),
            num_oov_buckets=1)
        self.bert = text.BertTokenizer(table, lower_case=True, token_out_type=tf.int64)
        self.sentencepiece = text.SentencepieceTokenizer(model=spm_model, out_type=tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, sentences):
        folded = text.case_fold_utf8(text.normalize_utf8(sentences, "NFKC"))
        return {
            "normalized": folded,
            "whitespace": self.whitespace.tokenize(folded).to_tensor(default_value=""),
            "wordpiece": self.fast_wordpiece.tokenize(
                self.whitespace.tokenize(folded)).merge_dims(-2, -1).to_tensor(-1),
            "bert": self.bert.tokenize(sentences).merge_dims(-2, -1).to_tensor(-1),
            "sentencepiece": self.sentencepiece.tokenize(sentences).to_tensor(-1),
        }


class ZeroOutModel(tf.Module):
    def __init__(self, zero_out):
        super().__init__()
        self.zero_out = zero_out

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="x")])
    def serve(self, x):
        return {"y": self.zero_out(x)}


def spm_model():
    """A tiny SentencePiece model, trained here."""
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=out, vocab_size=80,
        model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    return out.getvalue()


def compile_library(src, out, *flags):
    """Compiles an op fixture into a shared library at `out`."""
    compiler = "g++" if src.endswith(".cc") else "gcc"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-w", os.path.join(FIXTURES, src),
                    "-o", out, *flags], check=True)
    return out


def save(module, path):
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def rename_op(export_dir, old, new):
    """Rewrites a SavedModel's graph so that its `old` op nodes are `new` ones."""
    path = os.path.join(export_dir, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        sm.ParseFromString(f.read())
    graph = sm.meta_graphs[0].graph_def
    for node in [*graph.node, *(n for fn in graph.library.function for n in fn.node_def)]:
        if node.op == old:
            node.op = new
    for op in sm.meta_graphs[0].meta_info_def.stripped_op_list.op:
        if op.name == old:
            op.name = new
    with open(path, "wb") as f:
        f.write(sm.SerializeToString())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The models and libraries, made once: TF Text's model and its in-process answers,
    ZeroOut compiled and a model using it, a TF-DF-like model, a library that cannot load."""
    d = tmp_path_factory.mktemp("op_libraries")
    text_model = TextModel(spm_model())
    save(text_model, str(d / "text" / "1"))
    zero_out_so = compile_library("zero_out.cc", str(d / "zero_out.so"),
                                  *tf.sysconfig.get_compile_flags(),
                                  *tf.sysconfig.get_link_flags())
    zero_out = tf.load_op_library(zero_out_so).zero_out
    save(ZeroOutModel(zero_out), str(d / "zero_out" / "1"))
    # TF Decision Forests' inference op, as its models name it: no library registers it.
    save(ZeroOutModel(zero_out), str(d / "forest" / "1"))
    rename_op(str(d / "forest" / "1"), "ZeroOut", "SimpleMLInferenceOpWithHandle")
    broken_so = compile_library("undefined_symbol.c", str(d / "undefined_symbol.so"))
    return {"dir": d, "text": text_model, "zero_out": zero_out, "zero_out_so": zero_out_so,
            "broken_so": broken_so}


def config(d, *names):
    entries = "".join(f'  config {{ name: "{n}" base_path: "{d}/{n}" '
                      f'model_platform: "tensorflow" }}\n' for n in names)
    path = os.path.join(d, "-".join(names) + ".config")
    with open(path, "w") as f:
        f.write("model_config_list {\n" + entries + "}\n")
    return path


class Server:
    """A tfgate whose log goes to a file."""

    def __init__(self, d, names, *flags):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log_path = os.path.join(d, f"tfgate-{self.rest_port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BIN, f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
             f"--model_config_file={config(d, *names)}", *flags],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, model, state="AVAILABLE"):
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.proc.poll() is None, self.logs()
            try:
                code, body = rest(self.rest_port, "GET", f"/v1/models/{model}")
                if code == 200 and body["model_version_status"][0]["state"] == state:
                    return body
            except (OSError, KeyError, IndexError, ValueError):
                pass
            time.sleep(0.2)
        pytest.fail(f"{model} not {state} within 90 s:\n{self.logs()}")

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def served(work):
    """One tfgate: the TF Text model (built in) and the ZeroOut model (--op_libraries)."""
    s = Server(str(work["dir"]), ["text", "zero_out"], f"--op_libraries={work['zero_out_so']}")
    s.wait("text")
    s.wait("zero_out")
    yield s
    s.stop()


def expected(work):
    out = work["text"].serve(tf.constant(SENTENCES))
    return {k: v.numpy() for k, v in out.items()}


def same(name, got, want):
    got = np.asarray(got)
    if want.dtype == object:
        want = np.vectorize(lambda b: b.decode())(want) if want.size else want
        got = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b)(got)
    assert got.shape == want.shape, (name, got, want)
    assert (got == want).all(), (name, got, want)


def test_the_startup_log_names_the_op_libraries(served, work):
    logs = served.logs()
    assert (f"op libraries loaded: TensorFlow Text {text.__version__} "
            f"(22 libraries in {TEXT_OPS})") in logs
    assert f"{work['zero_out_so']} (ops: ZeroOut)" in logs


def test_tf_text_over_rest_answers_what_tensorflow_answers(served, work):
    want = expected(work)
    code, body = rest(served.rest_port, "POST", "/v1/models/text:predict",
                      json.dumps({"inputs": {"text": SENTENCES}}))
    assert code == 200, body
    outputs = body["outputs"]
    assert sorted(outputs) == sorted(want)
    for name, value in want.items():
        same(name, outputs[name], value)


def test_tf_text_over_grpc_answers_what_tensorflow_answers(served, work):
    want = expected(work)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}"))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "text"
    req.inputs["text"].CopyFrom(tf.make_tensor_proto(SENTENCES))
    outputs = stub.Predict(req, 60).outputs
    for name, value in want.items():
        same(name, tf.make_ndarray(outputs[name]), value)


@pytest.mark.parametrize("mod", [th, tg], ids=["v2-http", "v2-grpc"])
def test_tf_text_over_v2_answers_what_tensorflow_answers(served, work, mod):
    want = expected(work)
    port = served.rest_port if mod is th else served.grpc_port
    client = mod.InferenceServerClient(f"127.0.0.1:{port}")
    x = mod.InferInput("text", [len(SENTENCES)], "BYTES")
    x.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=np.object_))
    result = client.infer("text", [x])
    for name, value in want.items():
        same(name, result.as_numpy(name), value)


def test_a_custom_op_from_op_libraries_answers_over_rest(served, work):
    x = [7, 3, 5, 1]
    want = work["zero_out"](tf.constant(x, tf.int32)).numpy().tolist()
    assert want == [7, 0, 0, 0]
    code, body = rest(served.rest_port, "POST", "/v1/models/zero_out:predict",
                      json.dumps({"instances": x}))
    assert code == 200, body
    assert body == {"predictions": want}


def test_an_op_no_library_registers_is_named_with_the_flag(work):
    """A TF Decision Forests model: its op cannot be loaded, so the load error names it and
    points at --op_libraries, in the model's status and in the log (the rest serves)."""
    s = Server(str(work["dir"]), ["forest", "zero_out"], "--allow_partial_startup",
               "--max_num_load_retries=0")
    try:
        status = s.wait("forest", state="END")["model_version_status"][0]["status"]
        assert status["error_code"] == "NOT_FOUND", status
        message = status["error_message"]
        assert "Op type not registered 'SimpleMLInferenceOpWithHandle'" in message, message
        assert ("tfgate: op 'SimpleMLInferenceOpWithHandle' is not registered. It is "
                "TensorFlow Decision Forests' op") in message, message
        assert "with --op_libraries=PATH, a tfgate extension" in message, message
        # ZeroOut's library was not named either: the same error, without TF-DF's words.
        zero = s.wait("zero_out", state="END")["model_version_status"][0]["status"]
        assert ("tfgate: op 'ZeroOut' is not registered. Load the shared library that "
                "registers it with --op_libraries=PATH") in zero["error_message"], zero
        assert "tfgate: op 'SimpleMLInferenceOpWithHandle' is not registered" in s.logs()
    finally:
        s.stop()


def startup_failure(work, *flags):
    """Starts tfgate with `flags` and the TF Text model; returns its exit code and log."""
    d = str(work["dir"])
    proc = subprocess.run(
        [BIN, "--port=0", f"--rest_api_port={free_port()}", f"--grpc_socket_path={d}/g.sock",
         f"--model_config_file={config(d, 'text')}", *flags],
        capture_output=True, text=True, timeout=90)
    return proc.returncode, proc.stderr


def test_a_missing_op_library_stops_startup(work):
    missing = os.path.join(str(work["dir"]), "nowhere", "ops.so")
    code, log = startup_failure(work, f"--op_libraries={missing}")
    assert code == 255, log
    assert (f"Failed to start server. Error: op library {missing} (--op_libraries) "
            "does not exist") in log, log


def test_an_op_library_that_fails_to_load_stops_startup(work):
    so = work["broken_so"]
    code, log = startup_failure(work, f"--op_libraries={so}")
    assert code == 255, log
    assert (f"Failed to start server. Error: cannot load op library {so}: ") in log, log
    assert "undefined symbol: tfgate_symbol_nobody_defines" in log, log


def test_a_second_copy_of_tf_text_is_refused(work):
    """Loaded twice, every run of its ops would fail with "Multiple OpKernel registrations"."""
    copy = os.path.join(str(work["dir"]), "copy_of_whitespace_tokenizer_v2.so")
    shutil.copy(os.path.join(TEXT_OPS, "_whitespace_tokenizer_v2.so"), copy)
    code, log = startup_failure(work, f"--op_libraries={copy}")
    assert code == 255, log
    assert (f"Failed to start server. Error: op library {copy} registers kernels already "
            f"registered by {os.path.join(TEXT_OPS, '_whitespace_tokenizer_v2.so')}: "
            "TFText>WhitespaceTokenizeWithOffsetsV2; loaded twice, every run of those ops "
            'would fail with "Multiple OpKernel registrations" (load each op library once)'
            ) in log, log


def test_the_same_file_named_twice_is_loaded_once(work):
    """TF Text's own library named again is the same file: nothing is registered twice."""
    s = Server(str(work["dir"]), ["text"],
               f"--op_libraries={os.path.join(TEXT_OPS, '_whitespace_tokenizer_v2.so')}")
    try:
        s.wait("text")
        code, body = rest(s.rest_port, "POST", "/v1/models/text:predict",
                          json.dumps({"inputs": {"text": SENTENCES}}))
        assert code == 200, body
        assert "is loaded already" in s.logs()
    finally:
        s.stop()


def test_an_attached_worker_refuses_to_start_and_the_gateway_says_why(work, tmp_path):
    """Attach mode: the worker takes --op_libraries itself; it exits 1 and the gateway logs
    the reason (and keeps waiting for a worker that can serve)."""
    sockets = tmp_path / "sockets"
    sockets.mkdir(mode=0o700)
    socket = str(sockets / "workers.sock")
    missing = os.path.join(str(work["dir"]), "nowhere", "ops.so")
    s = Server(str(work["dir"]), ["text"], f"--worker_socket={socket}")
    try:
        deadline = time.time() + 30
        while not os.path.exists(socket):
            assert time.time() < deadline and s.proc.poll() is None, s.logs()
            time.sleep(0.1)
        worker = subprocess.run([WORKER, f"--gateway_socket={socket}",
                                 f"--op_libraries={missing}"],
                                capture_output=True, text=True, timeout=60)
        assert worker.returncode == 1, worker.stderr
        why = f"op library {missing} (--op_libraries) does not exist"
        assert f"worker failed: {why}" in worker.stderr, worker.stderr
        deadline = time.time() + 10
        while f"worker refused to start: {why}" not in s.logs():
            assert time.time() < deadline, s.logs()
            time.sleep(0.1)
        assert s.proc.poll() is None, s.logs()
    finally:
        s.stop()
