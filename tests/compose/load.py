"""Closed-loop load for the compose test: threads alternate REST and gRPC Predict calls
(official client) on half_plus_two with distinct inputs, check every answer against
0.5 * x + 3 (the newest version), and report each failure. Prints one JSON line; exits 1
if any request failed or none succeeded."""

import argparse
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", required=True, help="host:port")
    ap.add_argument("--rest", required=True, help="http://host:port")
    ap.add_argument("--model", default="half_plus_two")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.grpc))
    url = f"{args.rest}/v1/models/{args.model}:predict"
    lock = threading.Lock()
    counts = {"ok": 0, "rest": 0, "grpc": 0}
    failures = []
    stop_at = time.monotonic() + args.seconds

    def check(kind, xs, ys):
        want = [0.5 * x + 3.0 for x in xs]
        if len(ys) != len(want) or any(abs(a - b) > 1e-4 for a, b in zip(ys, want)):
            raise ValueError(f"{kind}: {xs} gave {ys}, want {want}")

    def one(i, rng):
        xs = [round(rng.uniform(-100, 100), 3) for _ in range(rng.randint(1, 4))]
        if i % 2:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = args.model
            req.inputs["x"].CopyFrom(tf.make_tensor_proto(xs, dtype=tf.float32))
            out = stub.Predict(req, 30.0).outputs["y"].float_val
            check("grpc", xs, list(out))
            return "grpc"
        body = json.dumps({"instances": xs}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            preds = json.load(r)["predictions"]
        check("rest", xs, preds)
        return "rest"

    def run(seed):
        rng = random.Random(seed)
        i = seed
        while time.monotonic() < stop_at:
            i += 1
            try:
                kind = one(i, rng)
                with lock:
                    counts["ok"] += 1
                    counts[kind] += 1
            except urllib.error.HTTPError as e:
                with lock:
                    failures.append(f"rest HTTP {e.code}: {e.read().decode(errors='replace')[:200]}")
            except grpc.RpcError as e:
                with lock:
                    failures.append(f"grpc {e.code().name}: {e.details()}")
            except Exception as e:  # noqa: BLE001 — every failure is reported
                with lock:
                    failures.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"succeeded": counts["ok"], "rest": counts["rest"], "grpc": counts["grpc"],
                      "failed": len(failures), "failures": failures[:10]}))
    sys.exit(1 if failures or counts["ok"] == 0 else 0)


if __name__ == "__main__":
    main()
