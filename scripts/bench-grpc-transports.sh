#!/usr/bin/env bash
# gRPC Predict latency with the official Python client, one request at a time: TCP, and
# the Unix socket (--grpc_socket_path) with grpc-python's default :authority (the socket
# path, which tfgate's Unix-socket shim rewrites) and with "localhost". Every plaintext
# Unix-socket connection passes through the shim. Prints a table and the machine.
# Usage: bash scripts/bench-grpc-transports.sh   (needs `cargo build --release` and scripts/setup.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
port=$((20000 + RANDOM % 20000))
sock=$(mktemp -u /tmp/tfgate-bench-XXXXXX.sock)
target/release/tfgate --port=$port --grpc_socket_path="$sock" --rest_api_port=$((port + 1)) \
  --model_name=half_plus_two --model_base_path="$PWD/models/half_plus_two" >/dev/null 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null; wait $gw 2>/dev/null || true' EXIT
until curl -sf "localhost:$((port + 1))/v1/models/half_plus_two" | grep -q AVAILABLE; do sleep 0.2; done
.venv/bin/python - "$port" "$sock" <<'PY'
import sys, time
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow.core.framework import types_pb2
port, sock = sys.argv[1], sys.argv[2]
r = predict_pb2.PredictRequest()
r.model_spec.name = "half_plus_two"
x = r.inputs["x"]
x.dtype = types_pb2.DT_FLOAT
x.tensor_shape.dim.add(size=1)
x.float_val.append(1.0)
targets = [("TCP", f"127.0.0.1:{port}", []),
           ("Unix socket, default authority", f"unix:{sock}", []),
           ("Unix socket, localhost", f"unix:{sock}", [("grpc.default_authority", "localhost")])]
print(f"{'half_plus_two Predict, 1 in flight':34s} {'p50 us':>8s} {'p99 us':>8s}")
for round_ in range(2):
    for name, target, options in targets:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target, options=options))
        for _ in range(200):
            stub.Predict(r, 5.0)
        lat = []
        for _ in range(2000):
            t0 = time.perf_counter()
            stub.Predict(r, 5.0)
            lat.append((time.perf_counter() - t0) * 1e6)
        lat.sort()
        print(f"{name:34s} {lat[1000]:8.0f} {lat[1980]:8.0f}")
PY
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
