#!/usr/bin/env bash
# Where the gateway's CPU goes under load: starts tfgate on the MLP, loads it with
# tfgate-bench, samples the gateway with `perf record` and prints its CPU by category and
# its top functions. Needs Linux perf (Debian: apt-get install linux-perf).
#
#   bash scripts/profile-gateway.sh [rest|grpc] [CONNECTIONS] [tfgate flags...]
#   bash scripts/profile-gateway.sh rest 32 --enable_batching
set -euo pipefail
cd "$(dirname "$0")/.."
proto=${1:-rest}; conns=${2:-32}; shift 2 || true
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 2; }
[ -x target/release/tfgate ] && [ -x target/release/tfgate-bench ] \
  || { echo "build first: cargo build --release" >&2; exit 2; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(port); rest=$(port); data=$(mktemp /tmp/tfgate-perf-XXXXXX.data)
target/release/tfgate --port="$grpc" --rest_api_port="$rest" --model_name=mlp \
  --model_base_path="$PWD/models/mlp" "$@" 2>/dev/null &
gw=$!
trap 'kill -9 $gw 2>/dev/null || true; rm -f "$data"' EXIT
for _ in $(seq 100); do
  curl -sf "localhost:$rest/v1/models/mlp" | grep -q AVAILABLE && break; sleep 0.2
done
target/release/tfgate-bench --attach="$rest" --attach_grpc="$grpc" --protocols="$proto" \
  --concurrency="$conns" --seconds=6 --warmup=0.5 &
load=$!
sleep 1.5
perf record -q -F 4999 -g -p "$gw" -o "$data" -- sleep 3 >/dev/null 2>&1
wait "$load"
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "gateway CPU by category ($proto, $conns connections, flags: ${*:-(defaults)}):"
perf report -i "$data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | awk '/%/ && !/^#/ {
      p = $1; sub("%", "", p); s = $0;
      if (s ~ /finish_task_switch|_raw_spin_unlock|try_to_wake_up|schedule|futex|epoll|__x64_sys|syscall|exit_to_user/) c = "kernel: scheduling, wake-ups, syscalls";
      else if (s ~ /tcp_|sock_|skb|ipt_|nf_|inet_|ip_|__dev_|net_rx|copy_to_iter|copy_from_iter|_copy_/) c = "kernel: TCP and loopback";
      else if (s ~ /\[k\]/) c = "kernel: other";
      else if (s ~ /mi_|malloc|free|realloc|alloc::/) c = "allocator";
      else if (s ~ /json|flt2dec|float|dtoa|fmt::/) c = "JSON and number text";
      else if (s ~ /metrics|monitoring|histogram|quanta|crossbeam/) c = "metrics";
      else if (s ~ /hyper|h2::|http::|tonic|httparse|prost|hpack|axum|matchit|tower/) c = "HTTP, gRPC and protobuf stacks";
      else if (s ~ /tokio|mio|waker|notify/) c = "tokio runtime";
      else if (s ~ /shm_protocol|memmove|memcpy|memcmp/) c = "shared memory and copies";
      else if (s ~ /tfgate/) c = "tfgate: routing, validation, batching, frames";
      else c = "other";
      sum[c] += p } END { for (c in sum) printf "  %5.1f %%  %s\n", sum[c], c }' | sort -rn
echo "top functions:"
perf report -i "$data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | awk '/%/ && !/^#/ { $2=""; print }' | head -25 | cut -c1-110
