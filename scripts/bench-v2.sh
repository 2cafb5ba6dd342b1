#!/usr/bin/env bash
# KServe V2 measured from outside with Triton's perf_analyzer (the load tool serving
# engineers quote): tfgate on the MLP (one row of 64 floats per request) through V2 over
# HTTP (binary tensors) and gRPC, each also with system shared memory, and through TF
# Serving's gRPC API (perf_analyzer --service-kind=tfserving) for comparison; batching off
# at concurrency 1, batching on at concurrency 32. Prints one table naming the machine.
# Client and server share the machine's cores.
#
#   bash scripts/bench-v2.sh [SECONDS_PER_CASE]
#
# perf_analyzer comes with tritonclient's wheel (scripts/setup.sh installs it); it needs
# libb64-0d (Debian) and libcudart.so.12 (PyPI's nvidia-cuda-runtime-cu12; no GPU is
# used), which this script installs on first use, the latter under target/perf-analyzer.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-4}
[ -x target/release/tfgate ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ -x .venv/bin/perf_analyzer ] || { echo "run scripts/setup.sh first" >&2; exit 2; }
if ! ldconfig -p | grep -q libb64.so.0d; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq libb64-0d >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libb64-0d >/dev/null; }
fi
cuda=target/perf-analyzer
if [ ! -d "$cuda/venv" ]; then
  python3 -m venv "$cuda/venv"
  "$cuda/venv/bin/pip" install -q --disable-pip-version-check nvidia-cuda-runtime-cu12
fi
LD_LIBRARY_PATH=$(dirname "$(find "$PWD/$cuda/venv" -name 'libcudart.so.12' | head -1)")
export LD_LIBRARY_PATH

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw=""
stop() { if [ -n "$gw" ]; then kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; gw=""; fi; }
trap stop EXIT
serve() {
  grpc=$(port); rest=$(port)
  target/release/tfgate --port="$grpc" --rest_api_port="$rest" --model_name=mlp \
    --model_base_path="$PWD/models/mlp" --enable_v2_system_shared_memory "$@" 2>/dev/null &
  gw=$!
  for _ in $(seq 100); do
    curl -sf "localhost:$rest/v2/models/mlp/ready" >/dev/null && return; sleep 0.2
  done
  echo "tfgate did not become ready" >&2; exit 1
}

# One case: prints "req/s p50 p99" (µs) from perf_analyzer's summary.
measure() {
  local out
  out=$(.venv/bin/perf_analyzer -m mlp "$@" --measurement-interval "$((seconds * 1000))" \
    --measurement-mode time_windows --stability-percentage 50 --max-trials 4 2>&1) \
    || { echo "perf_analyzer failed: $out" >&2; echo "- - -"; return; }
  echo "$out" | awk '/Throughput:/ {t=$2} /p50 latency:/ {p50=$3} /p99 latency:/ {p99=$3}
    END {printf "%.0f %s %s\n", t, p50, p99}'
}

printf 'machine: %s cores, %s, kernel %s; perf_analyzer from tritonclient 2.45.0\n' "$(nproc)" \
  "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(uname -r)"
printf '%-44s %6s %10s %9s %9s\n' "case" "conc" "req/s" "p50 µs" "p99 µs"
row() { local name=$1 conc=$2; shift 2; read -r t p50 p99 < <(measure --concurrency-range "$conc" "$@")
  printf '%-44s %6s %10s %9s %9s\n' "$name" "$conc" "$t" "$p50" "$p99"; }
cases() {
  local conc=$1 shape=$2; shift 2
  row "V2 HTTP, binary tensors $*" "$conc" -i http -u "localhost:$rest" --shape "$shape"
  row "V2 HTTP, system shared memory $*" "$conc" -i http -u "localhost:$rest" --shape "$shape" \
    --shared-memory=system
  row "V2 gRPC $*" "$conc" -i grpc -u "localhost:$grpc" --shape "$shape"
  row "V2 gRPC, system shared memory $*" "$conc" -i grpc -u "localhost:$grpc" --shape "$shape" \
    --shared-memory=system
  row "TF Serving gRPC API $*" "$conc" --service-kind=tfserving -i grpc -u "localhost:$grpc" \
    --shape x:1,64
}
serve
cases 1 x:1,64 "(batching off)"
stop
serve --enable_batching
# With batching the model configuration says max_batch_size > 0: shapes leave out the
# batch dimension and perf_analyzer sends batches of one row.
cases 32 x:64 "(batching on)"
