"""Models on gs:// and s3:// (issue 29 item 4), end to end: a real tfgate against real
object-store servers on loopback (moto's S3 server, with IAM checks on where credentials
matter, and fake-gcs-server; see store_fixtures.py for what they do and how they differ
from the real services).

The gateway mirrors each remote base path into `--model_cache_dir` (one per test here),
fetching a version into a temporary name and renaming it into place once whole; the
workers load from the mirror as from a local base path. What these tests check is what a
user sees: predictions (version 1 answers 0.5*x + 2, version 2 answers 0.5*x + 3),
`GET /v1/models/NAME`, the server's log, and the cache directory.

Lines marked `# CONTRACT:` assert an exact wording or layout the tests had to assume.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

import store_fixtures as sf
from test_official_client import BIN, ROOT, free_port, rest

BUCKET = "models"
XS = [1.0, 2.0]
OFFSET = {1: 2.0, 2: 3.0}  # version -> b in y = 0.5 * x + b


def answer(version):
    return [[0.5 * x + OFFSET[version]] for x in XS]


def version_of(body):
    """Which version computed a predict answer, from its values; None if neither."""
    for v in OFFSET:
        if body == {"predictions": answer(v)}:
            return v
    return None


# ------------------------------------------------------------------------------------------
# Fixtures: the models, the stores, tfgate


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("model_store")


@pytest.fixture(scope="module")
def models(work):
    """half_plus_two versions 1 and 2, written here by scripts/make_models.py's writer:
    {version: directory}, and `files`: {version: {relative path: size}}."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_models
    finally:
        sys.path.pop(0)
    out = {}
    for v, offset in OFFSET.items():
        path = str(work / "half_plus_two" / str(v))
        make_models.half_plus_two(path, offset)
        out[v] = path
    out["files"] = {v: sf.tree_files(out[v]) for v in OFFSET}
    return out


@pytest.fixture(scope="module")
def s3(work):
    """moto without IAM checks: any key signs."""
    store = sf.S3(str(work))
    store.create_bucket(BUCKET)
    yield store
    store.stop()


@pytest.fixture(scope="module")
def s3_iam(work):
    """moto with IAM checks: only `key_id`/`secret` (a user allowed s3:*) sign."""
    store = sf.S3(str(work), iam=True)
    store.create_bucket(BUCKET)
    yield store
    store.stop()


@pytest.fixture(scope="module")
def gcs(work):
    store = sf.GCS(str(work))
    store.create_bucket(BUCKET)
    yield store
    store.stop()


class Gate:
    """A tfgate with a clean environment (PATH, a HOME of its own, and `env`), its own
    cache directory, and its stdout and stderr in one log file."""

    def __init__(self, d, args, env):
        os.makedirs(d, exist_ok=True)
        self.dir = str(d)
        self.cache = os.path.join(self.dir, "cache")
        home = os.path.join(self.dir, "home")  # no ~/.aws of the machine's is read
        os.makedirs(home, exist_ok=True)
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log_path = os.path.join(self.dir, f"tfgate-{self.rest_port}.log")
        self._log = open(self.log_path, "w")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
                    "LANG": "C.UTF-8", **env}
        self.proc = subprocess.Popen(
            [BIN, f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
             f"--model_cache_dir={self.cache}", "--file_system_poll_wait_seconds=1", *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)

    def logs(self):
        return sf.read(self.log_path)

    def fail(self, why):
        pytest.fail(f"{why}\n--- tfgate log (last 6000 chars) ---\n{self.logs()[-6000:]}")

    def alive(self):
        if self.proc.poll() is not None:
            self.fail(f"tfgate exited with {self.proc.returncode}")

    def status(self, model):
        """(HTTP status, body) of GET /v1/models/MODEL; (None, reason) before it listens."""
        try:
            return rest(self.rest_port, "GET", f"/v1/models/{model}")
        except (OSError, ValueError) as e:
            return None, str(e)

    def versions(self, model):
        """{version: (state, error_code, error_message)} from the REST status."""
        code, body = self.status(model)
        if code != 200:
            return {}
        return {int(v["version"]): (v["state"], v["status"]["error_code"],
                                    v["status"]["error_message"])
                for v in body["model_version_status"]}

    def wait_state(self, model, version, state, timeout=90):
        """Waits for the version's state; waiting for AVAILABLE stops at an END with an
        error (a failed load or fetch, not retried while the version stays as it is)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            got = self.versions(model).get(version)
            if got and got[0] == state:
                return got
            if got and state == "AVAILABLE" and got[0] == "END" and got[1] != "OK":
                self.fail(f"{model} version {version} failed: {got}")
            time.sleep(0.1)
        self.fail(f"{model} version {version} not {state} within {timeout} s "
                  f"(status: {self.status(model)})")

    def predict(self, model, version=None):
        path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
        try:
            return rest(self.rest_port, "POST", path, json.dumps({"instances": [[x] for x in XS]}))
        except (OSError, ValueError) as e:
            return None, str(e)

    def records(self):
        """The gateway's log records: a line that starts with a timestamp, with the lines
        that follow it up to the next such line (a store's message may hold newlines:
        S3's XML error bodies do)."""
        out = []
        for line in self.logs().splitlines():
            if re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d", line) or not out:
                out.append(line)
            else:
                out[-1] += "\n" + line
        return out

    def wait_log(self, predicate, what, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records() if predicate(r)]
            if found:
                return found
            time.sleep(0.1)
        self.fail(f"no log record {what} within {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def error_record_with(*words):
    """A predicate for an ERROR-level log record holding every one of `words`."""
    return lambda record: (re.match(r"\S+\s+ERROR\s", record) is not None
                           and all(w in record for w in words))


@pytest.fixture
def launch(tmp_path):
    """launch(args, env, name="tfgate") starts a Gate in this test's own directory; every
    one is stopped at the end of the test."""
    gates = []

    def start(args, env, name="tfgate"):
        g = Gate(tmp_path / name, args, env)
        gates.append(g)
        return g

    yield start
    for g in gates:
        g.stop()


def config_text(*entries):
    """A ModelServerConfig: entries are (name, base_path) or (name, base_path, policy)."""
    out = "model_config_list {\n"
    for name, base_path, *policy in entries:
        extra = f" model_version_policy {{ {policy[0]} }}" if policy else ""
        out += (f'  config {{ name: "{name}" base_path: "{base_path}" '
                f'model_platform: "tensorflow"{extra} }}\n')
    return out + "}\n"


def write_config(path, text):
    """Replaces a local config file whole (the poller never reads half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return str(path)


def local_base_path(models, d, versions=(1,)):
    """A local base path holding copies of `versions`."""
    base = os.path.join(str(d), "local_half")
    for v in versions:
        if not os.path.isdir(os.path.join(base, str(v))):
            shutil.copytree(models[v], os.path.join(base, str(v)))
    return base


def version_dirs(cache):
    """Every directory under `cache` named by a number, [(path, version)]: the versions
    the workers can see. Directories whose name starts with a dot (the mirror's place
    for partial fetches, which no base path points into) are not looked into."""
    out = []
    for root, dirs, _ in os.walk(cache):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [(os.path.join(root, d), int(d)) for d in dirs if d.isdigit()]
    return out


def cache_bytes(cache):
    """Bytes of every file under `cache`, dot-directories included."""
    return sum(sf.tree_files(cache).values())


def incomplete(cache, files):
    """Problems with the numbered directories under `cache`: each must hold every file
    of its version (`files`: {version: {relative path: size}}) at its full size."""
    problems = []
    for path, v in version_dirs(cache):
        want = files.get(v)
        if want is None:
            problems.append(f"{path}: no such version was uploaded")
            continue
        for rel, size in want.items():
            try:
                got = os.path.getsize(os.path.join(path, rel))
            except OSError:
                got = None
            if got != size and os.path.isdir(path):  # not just renamed away meanwhile
                problems.append(f"{path}/{rel}: {got} bytes, the version's file has {size}")
    return problems


class CacheWatcher:
    """Samples the cache directory every few milliseconds while running; `problems` are
    numbered directories seen incomplete, `seen` the versions seen."""

    def __init__(self, cache, files):
        self.cache, self.files = cache, files
        self.problems, self.seen, self.samples = [], set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.seen.update(v for _, v in version_dirs(self.cache))
            self.problems += incomplete(self.cache, self.files)
            self.samples += 1
            time.sleep(0.003)

    def stop(self):
        self._stop.set()
        self._thread.join()


class ClosedLoop:
    """`threads` clients, each sending the next REST predict as soon as the last one is
    answered, on a kept-alive connection; every answer must be one version's values."""

    def __init__(self, port, model, threads=4):
        self.port, self.model = port, model
        self.failures, self.answers = [], [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, i):
        body = json.dumps({"instances": [[x] for x in XS]})
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", f"/v1/models/{self.model}:predict", body)
                r = conn.getresponse()
                got = json.loads(r.read())
                v = version_of(got) if r.status == 200 else None
                if v is None:
                    self.failures.append((r.status, got))
                else:
                    self.answers[i].append(v)
            except (OSError, ValueError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def total(self):
        return sum(len(a) for a in self.answers)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()


def assert_no_secret(gate, *secrets):
    logs = gate.logs()
    for s in secrets:
        assert s not in logs, f"a secret is in the log:\n{logs[-4000:]}"


# ------------------------------------------------------------------------------------------
# (a), (g): one server reading four remote base paths, two with directory markers

MARKER_MODELS = ("s3_markers", "gs_markers")


@pytest.fixture(scope="module")
def static_gate(tmp_path_factory, models, s3, gcs):
    """One tfgate serving half_plus_two version 1 from S3 and from GCS, plain and with
    zero-byte directory markers (`PREFIX/`, `PREFIX/1/`, `PREFIX/1/variables/`, an empty
    `PREFIX/1/assets/` as `tf.saved_model.save` leaves, and `PREFIX/1/variables`: a
    zero-byte key that is also a prefix)."""
    d = tmp_path_factory.mktemp("static")
    entries = []
    for store in (s3, gcs):
        plain, marked = f"a-{store.scheme}/half", f"g-{store.scheme}/half"
        store.upload_tree(BUCKET, f"{plain}/1", models[1])
        store.put_dir_markers(BUCKET, f"{marked}/", f"{marked}/1/", f"{marked}/1/variables/")
        store.upload_tree(BUCKET, f"{marked}/1", models[1])
        store.put_dir_markers(BUCKET, f"{marked}/1/variables", f"{marked}/1/assets/")
        entries += [(f"{store.scheme}_half", store.uri(BUCKET, plain)),
                    (f"{store.scheme}_markers", store.uri(BUCKET, marked))]
    config = write_config(d / "models.config", config_text(*entries))
    # Partial startup: a model that cannot be fetched fails its own tests, not all four.
    gate = Gate(d / "tfgate", [f"--model_config_file={config}", "--allow_partial_startup=true",
                               "--load_retry_interval_micros=500000"],
                {**s3.env(), **gcs.env()})
    yield gate
    gate.stop()


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_serves_a_model_from_the_bucket(static_gate, models, scheme):
    model = f"{scheme}_half"
    static_gate.wait_state(model, 1, "AVAILABLE")
    assert static_gate.status(model) == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]})
    assert static_gate.predict(model) == (200, {"predictions": answer(1)})
    assert static_gate.predict(model, version=1) == (200, {"predictions": answer(1)})
    # The base paths' versions 1 are in the cache, whole.
    assert [v for _, v in version_dirs(static_gate.cache)].count(1) >= 1
    assert incomplete(static_gate.cache, models["files"]) == []


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_directory_markers_and_a_key_that_is_also_a_prefix(static_gate, models, scheme):
    model = f"{scheme}_markers"
    static_gate.wait_state(model, 1, "AVAILABLE")
    assert static_gate.predict(model) == (200, {"predictions": answer(1)})
    problems = incomplete(static_gate.cache, models["files"])
    assert problems == []
    for path, v in version_dirs(static_gate.cache):
        # CONTRACT: a zero-byte `dir/` marker (or a zero-byte key that is also a prefix)
        # is a directory in the mirror, as TensorFlow's gs:// reads it, never a file:
        # `variables` holds the variables, an empty `assets/` marker is an empty
        # directory (or absent).
        assert os.path.isdir(os.path.join(path, "variables")), path
        assets = os.path.join(path, "assets")
        assert not os.path.exists(assets) or os.path.isdir(assets), \
            f"{assets}: the empty assets/ marker became a file"


# ------------------------------------------------------------------------------------------
# (b): version 2 put into the bucket while clients run


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_version_2_put_while_serving(launch, request, models, scheme):
    """A closed loop of 4 clients runs while version 2 is uploaded: no request fails,
    version 2 answers once loaded (and no client goes back to version 1), and no
    numbered directory in the cache is ever short of a file. On S3, version 2's
    variables come through a proxy that pauses each body half-way for 1 s, so the
    fetch is in progress long enough for the cache to be sampled meanwhile."""
    store = request.getfixturevalue("s3" if scheme == "s3" else "gcs")
    prefix = f"b-{scheme}/half"
    store.upload_tree(BUCKET, f"{prefix}/1", models[1])
    proxy = None
    env = store.env()
    if scheme == "s3":
        proxy = sf.CutProxy(store.port, sf.under(f"/{BUCKET}/{prefix}/2/variables/"))
        env = store.env(endpoint=proxy.endpoint)
    try:
        gate = launch(["--model_name=half", f"--model_base_path={store.uri(BUCKET, prefix)}"],
                      env)
        gate.wait_state("half", 1, "AVAILABLE")
        watcher = CacheWatcher(gate.cache, models["files"])
        loop = ClosedLoop(gate.rest_port, "half")
        try:
            time.sleep(1)
            if proxy:
                proxy.slow = 1.0
            # Variables first, saved_model.pb last: the order that never shows a
            # SavedModel without its variables (the slow-upload test below shows one).
            store.upload_tree(BUCKET, f"{prefix}/2", models[2], last=("saved_model.pb",))
            gate.wait_state("half", 2, "AVAILABLE", timeout=60)
            deadline = time.monotonic() + 30
            while not all(a and a[-1] == 2 for a in loop.answers):
                if time.monotonic() > deadline:
                    gate.fail(f"clients still not on version 2: "
                              f"{[a[-5:] for a in loop.answers]}")
                time.sleep(0.05)
            time.sleep(1)
        finally:
            loop.stop()
            watcher.stop()
        assert loop.failures == [], loop.failures[:10]
        assert loop.total() > 40, loop.total()
        for answers in loop.answers:
            assert answers[0] == 1 and answers[-1] == 2
            first_2 = answers.index(2)
            assert 1 not in answers[first_2:], "a client went back to version 1"
        assert watcher.problems == [], watcher.problems[:10]
        assert 2 in watcher.seen and watcher.samples > 100
        if proxy:
            assert proxy.slowed >= 1, "version 2's variables did not come through the proxy"
        assert gate.predict("half") == (200, {"predictions": answer(2)})
        assert gate.versions("half")[2][0] == "AVAILABLE"
    finally:
        if proxy:
            proxy.stop()


def test_a_version_uploaded_slowly_is_served_once_whole(launch, s3, models):
    """Object stores have no rename: a version appears file by file. Here version 2's
    saved_model.pb is in the bucket for 2.5 s (two polls and more) before its variables
    arrive, as with a slow `aws s3 cp --recursive`. Version 2 must still end up served
    with its own values, from a whole copy."""
    prefix = "b2/half"
    s3.upload_tree(BUCKET, f"{prefix}/1", models[1])
    gate = launch(["--model_name=half", f"--model_base_path={s3.uri(BUCKET, prefix)}",
                   "--max_num_load_retries=3", "--load_retry_interval_micros=500000"],
                  s3.env())
    gate.wait_state("half", 1, "AVAILABLE")
    s3.upload_tree(BUCKET, f"{prefix}/2", models[2], first=("saved_model.pb",),
                   pause_before_last=2.5, last=("variables/",))
    # CONTRACT: a version fetched while incomplete (its listing changed since, or it
    # failed to load) is fetched again once the bucket holds more of it, as a local
    # version directory that failed and then changed is tried again; or it is not
    # fetched until its listing stops changing. Either way it is served once whole.
    deadline = time.monotonic() + 30
    while gate.predict("half") != (200, {"predictions": answer(2)}):
        gate.alive()
        if time.monotonic() > deadline:
            gate.fail(f"version 2 not served 30 s after its upload finished "
                      f"(status: {gate.status('half')})")
        time.sleep(0.2)
    assert incomplete(gate.cache, models["files"]) == []


# ------------------------------------------------------------------------------------------
# (c): a version removed from the bucket


def test_version_removed_from_the_bucket_leaves(launch, tmp_path, s3, models):
    prefix = "c/half"
    for v in (1, 2):
        s3.upload_tree(BUCKET, f"{prefix}/{v}", models[v])
    config = write_config(tmp_path / "models.config", config_text(
        ("half", s3.uri(BUCKET, prefix), "all {}")))
    gate = launch([f"--model_config_file={config}"], s3.env())
    gate.wait_state("half", 1, "AVAILABLE")
    gate.wait_state("half", 2, "AVAILABLE")
    assert sorted(v for _, v in version_dirs(gate.cache)) == [1, 2]
    assert gate.predict("half", version=1) == (200, {"predictions": answer(1)})

    removed = s3.delete_prefix(BUCKET, f"{prefix}/1")
    assert removed, "nothing was deleted"
    gate.wait_state("half", 1, "END", timeout=30)
    deadline = time.monotonic() + 15
    while any(v == 1 for _, v in version_dirs(gate.cache)):
        if time.monotonic() > deadline:
            gate.fail(f"version 1's files still in the cache: {version_dirs(gate.cache)}")
        time.sleep(0.1)
    assert [v for _, v in version_dirs(gate.cache)] == [2]
    # Its bytes left too (not just moved aside).
    both = sum(models["files"][1].values()) + sum(models["files"][2].values())
    deadline = time.monotonic() + 10
    while cache_bytes(gate.cache) >= both:
        if time.monotonic() > deadline:
            gate.fail(f"{cache_bytes(gate.cache)} bytes still in the cache: version 1's "
                      f"files were not deleted ({sf.tree_files(gate.cache)})")
        time.sleep(0.1)
    assert gate.versions("half")[2][0] == "AVAILABLE"
    assert gate.predict("half", version=2) == (200, {"predictions": answer(2)})
    code, body = gate.predict("half", version=1)
    assert code == 404, (code, body)
    assert gate.predict("half") == (200, {"predictions": answer(2)})


# ------------------------------------------------------------------------------------------
# (d): the config file itself in the bucket, edited while serving


def test_config_file_in_the_bucket_edited_while_serving(launch, s3, gcs, models):
    s3.upload_tree(BUCKET, "d/first/1", models[1])
    gcs.upload_tree(BUCKET, "d/second/2", models[2])
    key = "d/models.config"
    s3.put(BUCKET, key, config_text(("first", s3.uri(BUCKET, "d/first"))).encode())
    gate = launch([f"--model_config_file={s3.uri(BUCKET, key)}",
                   "--model_config_file_poll_wait_seconds=1"], {**s3.env(), **gcs.env()})
    gate.wait_state("first", 1, "AVAILABLE")
    code, _ = gate.status("second")
    assert code == 404
    loop = ClosedLoop(gate.rest_port, "first")
    try:
        time.sleep(0.5)
        s3.put(BUCKET, key, config_text(("first", s3.uri(BUCKET, "d/first")),
                                        ("second", gcs.uri(BUCKET, "d/second"))).encode())
        gate.wait_state("second", 2, "AVAILABLE", timeout=60)
        time.sleep(0.5)
    finally:
        loop.stop()
    assert loop.failures == [], loop.failures[:10]
    assert loop.total() > 20 and all(a and set(a) == {1} for a in loop.answers)
    assert gate.predict("second") == (200, {"predictions": answer(2)})
    assert gate.predict("first") == (200, {"predictions": answer(1)})
    assert gate.versions("first") == {1: ("AVAILABLE", "OK", "")}


# ------------------------------------------------------------------------------------------
# (e): wrong credentials, a missing bucket


WRONG_SECRET = "tfgate-test-WRONG-secret-4f9Kq2Lx7Vb0Zr8Tn3Wm"


@pytest.mark.parametrize("case,key_id,code", [
    ("e-key", "AKIATFGATEUNKNOWN000", "InvalidAccessKeyId"),
    ("e-secret", None, "SignatureDoesNotMatch"),  # the user's key id, a wrong secret
], ids=["unknown-key", "wrong-secret"])
def test_wrong_credentials_leave_the_server_up(launch, tmp_path, s3_iam, models, case, key_id,
                                               code):
    """A model whose bucket refuses the credentials, beside a local one, with
    --allow_partial_startup: the server starts and serves the local model, the log says
    why the other is not served (the store's error code, at ERROR level), and the secret
    is nowhere in the log or the status."""
    prefix = f"{case}/half"
    s3_iam.upload_tree(BUCKET, f"{prefix}/1", models[1])  # there: only the key is wrong
    config = write_config(tmp_path / "models.config", config_text(
        ("good", local_base_path(models, tmp_path)), ("bad", s3_iam.uri(BUCKET, prefix))))
    env = s3_iam.env(key_id=key_id or s3_iam.key_id, secret=WRONG_SECRET)
    gate = launch([f"--model_config_file={config}", "--allow_partial_startup=true"], env)
    gate.wait_state("good", 1, "AVAILABLE")
    # CONTRACT: the ERROR record carries the store's error code and names the base path.
    gate.wait_log(error_record_with(code, s3_iam.uri(BUCKET, prefix)),
                  f"at ERROR with {code} and the base path", timeout=30)
    gate.alive()
    assert gate.predict("good") == (200, {"predictions": answer(1)})
    code_, body = gate.status("bad")
    assert code_ != 200 or all(v["state"] != "AVAILABLE" for v in body["model_version_status"])
    assert WRONG_SECRET not in json.dumps(body)
    assert gate.predict("bad")[0] != 200
    assert_no_secret(gate, WRONG_SECRET, s3_iam.secret)


def test_missing_bucket_added_by_reload_leaves_the_server_up(launch, tmp_path, s3, gcs, models):
    """Models on buckets that do not exist (S3 and GCS), added to the config file while a
    good S3 model serves: it keeps serving without a failed request, and the log says at
    ERROR level what the stores answered."""
    s3.upload_tree(BUCKET, "e-bucket/half/1", models[1])
    good = ("good", s3.uri(BUCKET, "e-bucket/half"))
    config = write_config(tmp_path / "models.config", config_text(good))
    gate = launch([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"],
                  {**s3.env(), **gcs.env()})
    gate.wait_state("good", 1, "AVAILABLE")
    loop = ClosedLoop(gate.rest_port, "good")
    try:
        write_config(config, config_text(good, ("nobucket_s3", "s3://no-such-bucket/half"),
                                         ("nobucket_gs", "gs://no-such-bucket/half")))
        # CONTRACT: S3's error code, and for GCS (whose emulator answers a listing of a
        # missing bucket with a 500 "no bucket named ...") the base path, at ERROR.
        gate.wait_log(error_record_with("NoSuchBucket"), "at ERROR with NoSuchBucket")
        gate.wait_log(error_record_with("gs://no-such-bucket"),
                      "at ERROR naming gs://no-such-bucket", timeout=30)
        time.sleep(0.5)
    finally:
        loop.stop()
    gate.alive()
    assert loop.failures == [], loop.failures[:10]
    assert loop.total() > 20
    assert gate.predict("good") == (200, {"predictions": answer(1)})
    for model in ("nobucket_s3", "nobucket_gs"):
        assert gate.predict(model)[0] == 404
    assert_no_secret(gate, s3.secret)


# ------------------------------------------------------------------------------------------
# (f): a fetch cut off half-way


def test_a_fetch_cut_off_half_way_is_never_served(launch, tmp_path, s3, models):
    """While every response carrying a file under `variables/` is cut half-way, version 1
    is never served and no numbered directory appears in the cache; once the cuts stop,
    a retry fetches it whole and it is served."""
    prefix = "f/half"
    s3.upload_tree(BUCKET, f"{prefix}/1", models[1])
    proxy = sf.CutProxy(s3.port, sf.under(f"/{BUCKET}/{prefix}/1/variables/"))
    proxy.cutting.set()
    try:
        config = write_config(tmp_path / "models.config", config_text(
            ("good", local_base_path(models, tmp_path)), ("cut", s3.uri(BUCKET, prefix))))
        gate = launch([f"--model_config_file={config}", "--allow_partial_startup=true",
                       "--max_num_load_retries=100", "--load_retry_interval_micros=300000"],
                      s3.env(endpoint=proxy.endpoint))
        deadline = time.monotonic() + 60
        while proxy.cuts < 3:
            gate.alive()
            if time.monotonic() > deadline:
                gate.fail(f"only {proxy.cuts} fetches of variables/ cut in 60 s")
            assert gate.predict("cut")[0] != 200
            assert version_dirs(gate.cache) == []
            time.sleep(0.05)
        assert gate.predict("cut")[0] != 200
        assert all(s[0] != "AVAILABLE" for s in gate.versions("cut").values())
        assert version_dirs(gate.cache) == []
        proxy.cutting.clear()
        gate.wait_state("cut", 1, "AVAILABLE", timeout=30)
        assert gate.predict("cut") == (200, {"predictions": answer(1)})
        assert incomplete(gate.cache, models["files"]) == []
        assert gate.predict("good") == (200, {"predictions": answer(1)})
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------------------
# (h): the cache bound


def test_a_version_larger_than_the_cache_is_not_loaded(launch, s3, models):
    prefix = "h/half"
    s3.upload_tree(BUCKET, f"{prefix}/1", models[1])
    bound = 4096
    assert sum(models["files"][1].values()) > bound
    gate = launch(["--model_name=half", f"--model_base_path={s3.uri(BUCKET, prefix)}",
                   f"--model_cache_max_bytes={bound}", "--allow_partial_startup=true"],
                  s3.env())
    state, error_code, message = gate.wait_state("half", 1, "END", timeout=60)
    assert error_code != "OK", (error_code, message)
    # CONTRACT: the status message names the flag that bounds the cache.
    assert "model_cache_max_bytes" in message, message
    assert gate.predict("half")[0] == 404
    assert version_dirs(gate.cache) == []
    gate.alive()


# ------------------------------------------------------------------------------------------
# (i), (j): credentials and endpoints as older deployments give them


def test_aws_profile_from_the_shared_credentials_file(launch, tmp_path, s3_iam, models):
    """AWS_PROFILE picks a profile of AWS_SHARED_CREDENTIALS_FILE (the default profile's
    keys are refused by the IAM-checking server), its region from AWS_CONFIG_FILE."""
    prefix = "i/half"
    s3_iam.upload_tree(BUCKET, f"{prefix}/1", models[1])
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIATFGATEDEFAULT000\n"
        f"aws_secret_access_key = {WRONG_SECRET}\n\n"
        f"[tfgate-test]\naws_access_key_id = {s3_iam.key_id}\n"
        f"aws_secret_access_key = {s3_iam.secret}\n")
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(f"[profile tfgate-test]\nregion = {sf.REGION}\n")
    gate = launch(["--model_name=half", f"--model_base_path={s3_iam.uri(BUCKET, prefix)}"], {
        "AWS_PROFILE": "tfgate-test", "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(aws_config), "AWS_ENDPOINT_URL": s3_iam.endpoint})
    gate.wait_state("half", 1, "AVAILABLE")
    assert gate.predict("half") == (200, {"predictions": answer(1)})
    assert_no_secret(gate, s3_iam.secret, WRONG_SECRET)


def test_tensorflow_s3_variables_are_translated(launch, s3_iam, models):
    """TF Serving <= 2.6's S3_ENDPOINT (host:port), S3_USE_HTTPS=0, S3_VERIFY_SSL=0."""
    prefix = "j/half"
    s3_iam.upload_tree(BUCKET, f"{prefix}/1", models[1])
    gate = launch(["--model_name=half", f"--model_base_path={s3_iam.uri(BUCKET, prefix)}"], {
        "S3_ENDPOINT": f"127.0.0.1:{s3_iam.port}", "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0",
        "AWS_ACCESS_KEY_ID": s3_iam.key_id, "AWS_SECRET_ACCESS_KEY": s3_iam.secret,
        "AWS_REGION": sf.REGION})
    gate.wait_state("half", 1, "AVAILABLE")
    assert gate.predict("half") == (200, {"predictions": answer(1)})
    assert_no_secret(gate, s3_iam.secret)


# ------------------------------------------------------------------------------------------
# The fixtures themselves (no tfgate needed)


def test_store_fixtures_behave_as_documented():
    """store_fixtures.self_check(): both servers, moto's IAM recipe and error codes,
    fake-gcs-server's Host rule and the proxy's cut and pause, against real servers."""
    sf.self_check()
