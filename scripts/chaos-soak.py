"""A bounded chaos soak (loopback only): tfgate with two workers and batching serves mixed
REST and gRPC load while a driver SIGKILLs and SIGSTOPs workers, adds and removes a version
on disk, moves a label and reloads the model config. At the end it prints the counts and
checks that nothing failed: every request answered with the value its version computes
(any exception a client meets counts as a failure), every reload accepted, every client
thread alive and never without an answer for longer than STALL_S; that the gateway's RSS
has no upward trend after warm-up (a least-squares line through every sample, not two
points); and that the gateway holds as many file descriptors, shared-memory segments
(memfds) and threads as before the chaos.

    .venv/bin/python scripts/chaos-soak.py [--minutes 10] [--clients 6]

Needs `cargo build --release` and scripts/setup.sh (the models, the official client)."""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tfgate")
# A request waits at most this long; a replacement takes longer only when the worker
# restarts from scratch after a SIGSTOP (heartbeat timeout 3 s + a load).
DEADLINE_S = 10.0
# A client with no answer for this long has stopped making progress (a deadline plus a
# replacement from scratch).
STALL_S = 30.0
# What each version computes: y = 0.5 x + 2 (version 1) or + 3 (versions 2 and 3, a copy).
V1 = lambda x: 0.5 * x + 2  # noqa: E731
V2 = lambda x: 0.5 * x + 3  # noqa: E731


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_count(pid, what):
    try:
        return len(os.listdir(f"/proc/{pid}/{what}"))
    except OSError:
        return -1


def memfds(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "memfd:" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                n += 1
        except OSError:
            pass
    return n


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def workers(gw):
    out = subprocess.run(["pgrep", "-P", str(gw), "-x", "tfgate-worker"], capture_output=True,
                         text=True).stdout.split()
    return [int(p) for p in out]


def config_text(base, label_version):
    return ("model_config_list {\n  config { name: \"hpt\" base_path: \"%s\" "
            "model_platform: \"tensorflow\" model_version_policy { all {} } "
            "version_labels { key: \"stable\" value: %d } }\n}\n" % (base, label_version))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=6)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="tfgate-soak-")
    base = os.path.join(tmp, "hpt")
    shutil.copytree(os.path.join(ROOT, "models", "half_plus_two"), base)
    config = os.path.join(tmp, "models.config")
    with open(config, "w") as f:
        f.write(config_text(base, 1))
    batching = os.path.join(tmp, "batching.config")
    with open(batching, "w") as f:
        f.write("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 200 }\n")
    grpc_port, rest_port = free_port(), free_port()
    log = open(os.path.join(tmp, "tfgate.log"), "w")
    gw = subprocess.Popen([BIN, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                           f"--model_config_file={config}", "--num_workers=2",
                           "--enable_batching", f"--batching_parameters_file={batching}",
                           "--allow_version_labels_for_unavailable_models",
                           "--file_system_poll_wait_seconds=1"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{rest_port}"

    def ready():
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    deadline = time.time() + 120
    while not ready():
        if gw.poll() is not None or time.time() > deadline:
            sys.exit(f"tfgate did not start; log in {log.name}")
        time.sleep(0.2)
    while len(workers(gw.pid)) < 2:
        time.sleep(0.2)

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    stop = threading.Event()
    results = Counter()
    failures = Counter()
    lock = threading.Lock()

    def record(ok, what):
        with lock:
            results["ok" if ok else "failed"] += 1
            if not ok:
                failures[what[:160]] += 1

    # Each client's last answer, to tell a stalled or dead client from a busy one.
    last_answer = {}
    stalls = Counter()

    def answered(i):
        now = time.time()
        with lock:
            gap = now - last_answer.get(i, now)
            if gap > STALL_S:
                stalls[i] += 1
            last_answer[i] = now

    def guarded(client):
        """Runs a client; any exception it meets is a failure, and kills no thread."""
        def run(n):
            last_answer[n] = time.time()
            i = n
            while not stop.is_set():
                try:
                    client(i)
                except Exception as e:  # noqa: BLE001: every exception counts
                    record(False, f"{client.__name__}: {type(e).__name__}: {e}")
                answered(n)
                i += 1
        return run

    def rest_client(i):
        # Latest (2 or 3), the label (1 or 2, as it moves), version 1.
        targets = [("/v1/models/hpt:predict", [V2]),
                   ("/v1/models/hpt/labels/stable:predict", [V1, V2]),
                   ("/v1/models/hpt/versions/1:predict", [V1])]
        path, versions = targets[i % len(targets)]
        req = urllib.request.Request(url + path, method="POST",
                                     data=b'{"instances": [[1.0], [2.0]]}')
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE_S) as r:
                got = json.loads(r.read())["predictions"]
                want = [[[v(1.0)], [v(2.0)]] for v in versions]
                record(got in want, f"REST {path}: {got}, expected one of {want}")
        except urllib.error.HTTPError as e:
            record(False, f"REST {e.code}: {e.read().decode(errors='replace')}")

    def grpc_client(i):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        r = predict_pb2.PredictRequest()
        r.model_spec.name = "hpt"
        versions = [V2]
        if i % 2:
            r.model_spec.version_label = "stable"
            versions = [V1, V2]
        r.inputs["x"].CopyFrom(tf.make_tensor_proto([[3.0]], dtype=tf.float32))
        try:
            got = list(stub.Predict(r, DEADLINE_S).outputs["y"].float_val)
            record(got in [[v(3.0)] for v in versions], f"gRPC: {got}")
        except grpc.RpcError as e:
            record(False, f"gRPC {e.code().name}: {e.details()}")

    clients = [threading.Thread(target=guarded(rest_client if n % 2 else grpc_client),
                                args=(n,), daemon=True) for n in range(args.clients)]
    before = {"fds": proc_count(gw.pid, "fd"), "threads": proc_count(gw.pid, "task"),
              "memfds": memfds(gw.pid)}
    for c in clients:
        c.start()

    actions = Counter()
    label = 1
    started = time.time()
    end = started + args.minutes * 60
    warm_rss = None
    rss_samples = []
    # Warm-up: the first fifth of the run, at least a minute.
    warm_up = max(60.0, args.minutes * 60 / 5)
    trace = []  # (minute, gateway RSS, workers' RSS), once a minute
    rng = random.Random(7)
    while time.time() < end:
        time.sleep(rng.uniform(2, 5))
        if warm_rss is None and time.time() - started > warm_up:
            warm_rss = rss_kib(gw.pid)
        minute = int((time.time() - started) // 60)
        if not trace or trace[-1][0] < minute:
            trace.append((minute, rss_kib(gw.pid), sum(rss_kib(p) for p in workers(gw.pid))))
        if warm_rss is not None:
            rss_samples.append((time.time(), rss_kib(gw.pid)))
        # A client without an answer for too long, seen while it waits.
        with lock:
            for i, t in last_answer.items():
                if time.time() - t > STALL_S:
                    stalls[i] += 1
        action = rng.choice(["kill", "kill", "stop", "add_version", "remove_version",
                             "move_label", "reload"])
        pids = workers(gw.pid)
        if action == "kill" and pids:
            os.kill(rng.choice(pids), signal.SIGKILL)
        elif action == "stop" and pids:
            victim = rng.choice(pids)
            os.kill(victim, signal.SIGSTOP)
            time.sleep(4)  # past the 3 s heartbeat timeout: the gateway replaces it
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        elif action == "add_version" and not os.path.exists(os.path.join(base, "3")):
            shutil.copytree(os.path.join(base, "2"), os.path.join(base, "3.tmp"))
            os.rename(os.path.join(base, "3.tmp"), os.path.join(base, "3"))
        elif action == "remove_version" and os.path.exists(os.path.join(base, "3")):
            shutil.rmtree(os.path.join(base, "3"))
        elif action in ("move_label", "reload"):
            if action == "move_label":
                label = 3 - label
            r = model_management_pb2.ReloadConfigRequest()
            c = r.config.model_config_list.config.add()
            c.name, c.base_path, c.model_platform = "hpt", base, "tensorflow"
            c.model_version_policy.all.SetInParent()
            c.version_labels["stable"] = label
            try:
                models.HandleReloadConfigRequest(r, 60)
            except grpc.RpcError as e:
                record(False, f"reload {e.code().name}: {e.details()[:120]}")
        else:
            continue
        actions[action] += 1

    dead = [n for n, c in enumerate(clients) if not c.is_alive()]
    stop.set()
    for c in clients:
        c.join(30)
    # Let the pool settle: both workers serving again, lingering connections closed.
    settle = time.time() + 60
    while (len(workers(gw.pid)) < 2 or not ready()) and time.time() < settle:
        time.sleep(0.5)
    time.sleep(5)
    after = {"fds": proc_count(gw.pid, "fd"), "threads": proc_count(gw.pid, "task"),
             "memfds": memfds(gw.pid)}
    end_rss = rss_kib(gw.pid)
    channel.close()
    gw.send_signal(signal.SIGTERM)
    code = gw.wait(60)
    log.close()

    machine = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0]
    print(f"chaos soak: {args.minutes:g} min, {args.clients} clients (REST and gRPC), 2 workers, "
          f"batching on; machine: {os.cpu_count()} cores,{machine}")
    print("actions: " + ", ".join(f"{k} {v}" for k, v in sorted(actions.items())))
    total = results["ok"] + results["failed"]
    print(f"requests: {total}, ok {results['ok']}, failed {results['failed']}")
    for what, n in failures.most_common(10):
        print(f"  {n} x {what}")
    print(f"gateway fds {before['fds']} -> {after['fds']}, threads {before['threads']} -> "
          f"{after['threads']}, shm segments (memfds) {before['memfds']} -> {after['memfds']}")
    print("RSS by minute (KiB), gateway / workers together: " +
          ", ".join(f"{m}: {g} / {w}" for m, g, w in trace))
    trend = None
    if warm_rss and len(rss_samples) >= 3:
        low = min(r for _, r in rss_samples)
        high = max(r for _, r in rss_samples)
        # Least squares through every sample after warm-up: the growth it predicts over
        # the sampled span, as a share of the warm RSS.
        ts = [t for t, _ in rss_samples]
        rs = [r for _, r in rss_samples]
        mt, mr = sum(ts) / len(ts), sum(rs) / len(rs)
        sxx = max(sum((t - mt) ** 2 for t in ts), 1e-9)
        slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rs)) / sxx
        # The slope's standard error: RSS swings by tens of percent with the load of the
        # moment (mimalloc returns pages), so a trend counts only where it stands clear
        # of that noise: its lower 95 % bound.
        resid = sum((r - (mr + slope * (t - mt))) ** 2 for t, r in zip(ts, rs))
        se = (resid / max(len(rs) - 2, 1) / sxx) ** 0.5
        span = ts[-1] - ts[0]
        trend = (slope - 2 * se) * span / warm_rss
        print(f"gateway RSS after warm-up {warm_rss} KiB, then {low}..{high} KiB, at the end "
              f"{end_rss} KiB; fitted trend {slope * span * 100 / warm_rss:+.2f} % "
              f"± {2 * se * span * 100 / warm_rss:.2f} % (95 %) over {len(rs)} samples, "
              f"{span / 60:.1f} min")
    print(f"clients: {args.clients}, dead before the end: {len(dead)}, "
          f"seen without an answer for over {STALL_S:g} s: {sum(stalls.values())}")
    print(f"exit code after SIGTERM: {code}")
    bad = []
    # Only deadlines shorter than a replacement may fail: here every deadline is 10 s, longer
    # than any replacement, so nothing may.
    if results["failed"]:
        bad.append(f"{results['failed']} requests or reloads failed")
    if dead:
        bad.append(f"client threads {dead} died")
    if stalls:
        bad.append(f"clients {sorted(stalls)} stopped making progress")
    if not results["ok"]:
        bad.append("nothing was answered")
    if after["memfds"] != before["memfds"] or after["threads"] != before["threads"]:
        bad.append("segments or threads leaked")
    if abs(after["fds"] - before["fds"]) > 2:
        bad.append("file descriptors leaked")
    if trend is not None and trend > 0.05:
        bad.append(f"gateway RSS trends up at least {trend * 100:.1f} % after warm-up")
    if code != 0:
        bad.append("exit code not 0")
    if bad:
        print("FAILED: " + "; ".join(bad) + f" (tfgate's log: {tmp}/tfgate.log)")
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASSED")


if __name__ == "__main__":
    main()
