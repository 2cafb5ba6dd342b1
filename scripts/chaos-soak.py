"""A bounded chaos soak (loopback only): tfgate with two workers and batching serves mixed
REST and gRPC load while a driver SIGKILLs and SIGSTOPs workers, adds and removes a version
on disk, moves a label and reloads the model config. At the end it prints the counts and
checks that nothing failed but requests whose deadline was shorter than a replacement, that
the gateway's RSS stayed within 5 % after warm-up, and that the gateway holds as many file
descriptors, shared-memory segments (memfds) and threads as before the chaos.

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

    def rest_client(i):
        targets = ["/v1/models/hpt:predict", "/v1/models/hpt/labels/stable:predict",
                   "/v1/models/hpt/versions/1:predict"]
        while not stop.is_set():
            path = targets[i % len(targets)]
            req = urllib.request.Request(url + path, method="POST",
                                         data=b'{"instances": [[1.0], [2.0]]}')
            try:
                with urllib.request.urlopen(req, timeout=DEADLINE_S) as r:
                    body = json.loads(r.read())
                    record(len(body["predictions"]) == 2, "REST: wrong answer")
            except urllib.error.HTTPError as e:
                record(False, f"REST {e.code}: {e.read().decode(errors='replace')}")
            except OSError as e:
                record(False, f"REST: {e}")
            i += 1

    def grpc_client(i):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not stop.is_set():
            r = predict_pb2.PredictRequest()
            r.model_spec.name = "hpt"
            if i % 2:
                r.model_spec.version_label = "stable"
            r.inputs["x"].CopyFrom(tf.make_tensor_proto([[3.0]], dtype=tf.float32))
            try:
                out = stub.Predict(r, DEADLINE_S)
                record(len(out.outputs["y"].float_val) == 1, "gRPC: wrong answer")
            except grpc.RpcError as e:
                record(False, f"gRPC {e.code().name}: {e.details()}")
            i += 1

    clients = [threading.Thread(target=rest_client if n % 2 else grpc_client, args=(n,),
                                daemon=True) for n in range(args.clients)]
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
            rss_samples.append(rss_kib(gw.pid))
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
                failures[f"reload {e.code().name}: {e.details()[:120]}"] += 1
        else:
            continue
        actions[action] += 1

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
    if warm_rss:
        low, high = min(rss_samples), max(rss_samples)
        print(f"gateway RSS after warm-up {warm_rss} KiB, then {low}..{high} KiB, at the end "
              f"{end_rss} KiB ({(end_rss - warm_rss) * 100 / warm_rss:+.1f} %)")
    print(f"exit code after SIGTERM: {code}")
    bad = []
    # Only deadlines shorter than a replacement may fail: here every deadline is 10 s, longer
    # than any replacement, so nothing may.
    if results["failed"]:
        bad.append(f"{results['failed']} requests failed")
    if after["memfds"] != before["memfds"] or after["threads"] != before["threads"]:
        bad.append("segments or threads leaked")
    if abs(after["fds"] - before["fds"]) > 2:
        bad.append("file descriptors leaked")
    if warm_rss and abs(end_rss - warm_rss) > warm_rss * 0.05:
        bad.append("gateway RSS moved more than 5 % after warm-up")
    if code != 0:
        bad.append("exit code not 0")
    if bad:
        print("FAILED: " + "; ".join(bad) + f" (tfgate's log: {tmp}/tfgate.log)")
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASSED")


if __name__ == "__main__":
    main()
