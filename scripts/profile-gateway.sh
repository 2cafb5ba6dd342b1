#!/usr/bin/env bash
# Where the gateway's time goes under load: starts tfgate on the MLP, loads it with
# tfgate-bench, and prints (1) each request's latency split into its phases (tfgate's own
# :tfgate:request:phase_latency series: queue, batch_formation, transfer — both
# shared-memory hops with their wake-ups —, worker, session_run, response_encoding) and
# (2) the gateway's CPU by category and its top functions, from `perf record`. Needs
# Linux perf for (2) (Debian: apt-get install linux-perf).
#
#   bash scripts/profile-gateway.sh [rest|grpc] [CONNECTIONS] [tfgate flags...]
#   bash scripts/profile-gateway.sh rest 32 --enable_batching
#   TFGATE_BIN_DIR=/other/target/release bash scripts/profile-gateway.sh rest 1   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
proto=${1:-rest}; conns=${2:-32}; shift 2 || true
source scripts/lib/mlp-server.sh
data=$(mktemp /tmp/tfgate-perf-XXXXXX.data)
monitoring=$(mktemp /tmp/tfgate-monitoring-XXXXXX.config)
cleanup=("$data" "$data.load" "$data.trace" "$monitoring")
echo 'prometheus_config { enable: true, path: "/metrics" }' > "$monitoring"
start_mlp_server --monitoring_config_file="$monitoring" "$@"
phases() {
  curl -s "localhost:$rest/metrics" | grep '^:tfgate:request:phase_latency_\(sum\|count\)' \
    | sed 's/^:tfgate:request:phase_latency_\([a-z]*\){.*phase="\([a-z_]*\)"} \(.*\)/\2 \1 \3/' \
    || true  # none yet before the first request
}
before=$(phases)
target/release/tfgate-bench --attach="$rest" --attach_grpc="$grpc" --protocols="$proto" \
  --concurrency="$conns" --seconds=8 --warmup=0.5 | tee "$data.load" &
load=$!
if command -v perf >/dev/null; then
  sleep 1.5
  perf record -q -F 4999 -g -p "$gw" -o "$data" -- sleep 3 >/dev/null 2>&1
  # What each system call costs its caller (a wake-up's share included), gateway and
  # worker, over 2 s of the same load.
  sleep 0.3
  timeout -s INT 2 perf trace -s -p "$gw,$(pgrep -d, -P "$gw")" -o "$data.trace" \
    >/dev/null 2>&1 || true
else
  echo "(perf not found: apt-get install linux-perf for the CPU profile)"
fi
wait "$load"
after=$(phases)
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "latency split, mean µs per request ($proto, $conns connections, flags: ${*:-(defaults)}):"
{ echo "$before" | sed 's/^/b /'; echo "$after" | sed 's/^/a /'; } | awk '
  { key = $2 " " $3; if ($1 == "b") b[key] = $4; else a[key] = $4; phases[$2] = 1 }
  END { for (p in phases) { n = a[p " count"] - b[p " count"];
          if (n > 0) printf "  %-18s %8.1f\n", p, (a[p " sum"] - b[p " sum"]) / n } }' | sort
[ -s "$data" ] || exit 0
echo "gateway CPU by category:"
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
# (`head` closes the pipe early: not a failure.)
{ perf report -i "$data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | awk '/%/ && !/^#/ { $2=""; print }' | head -15 | cut -c1-110; } || true
[ -s "$data.trace" ] || exit 0
# Tracing slows the load, so calls are counted against the gateway's own writes of
# answers (one `writev` per answer at concurrency 1) rather than the load's rate.
echo "system calls over 2 s of the load (perf trace): calls per gateway writev, µs each"
awk '
  /^ [^ ].*events/ { thread = $1 }
  $1 ~ /^(futex|write|writev|read|recvfrom|sendto|epoll_wait|sched_yield)$/ {
    n++; t[n] = thread; c[n] = $1; calls[n] = $2; avg[n] = $6 * 1000
    if (thread == "tokio-rt-worker" && $1 == "writev") w += $2 }
  END { for (i = 1; i <= n; i++) if (w > 0 && calls[i] >= 0.05 * w)
    printf "  %-16s %-12s %5.2f per writev  %7.1f µs avg\n", t[i], c[i], calls[i] / w, avg[i] }' "$data.trace"
