#!/usr/bin/env bash
# Where the machine's CPU goes under a closed-loop load: starts tfgate on the MLP, loads
# it with tfgate-bench for a few seconds, and prints the throughput, the share of both
# cores left idle (from /proc/stat), and the CPU of the gateway, its worker and the load
# generator (from /proc/PID/stat), over the same 3 s. Idle cores under a closed loop mean
# that the path waits on itself somewhere (a hand-off, a wake-up), not on the CPU.
#
#   bash scripts/cpu-under-load.sh [rest|grpc] [CONNECTIONS] [tfgate flags...]
#   bash scripts/cpu-under-load.sh rest 32 --enable_batching
#   TFGATE_BIN_DIR=/other/target/release bash scripts/cpu-under-load.sh rest 32 --enable_batching
set -euo pipefail
cd "$(dirname "$0")/.."
proto=${1:-rest}; conns=${2:-32}; shift 2 || true
source scripts/lib/mlp-server.sh
out=$(mktemp /tmp/tfgate-load-XXXXXX)
cleanup=("$out")
start_mlp_server "$@"
worker=$(pgrep -P "$gw" | head -1)
target/release/tfgate-bench --attach="$rest" --attach_grpc="$grpc" --protocols="$proto" \
  --concurrency="$conns" --seconds=5 --warmup=0.5 > "$out" &
load=$!
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep 1.5
s1=$(head -1 /proc/stat); g1=$(ticks "$gw"); w1=$(ticks "$worker"); l1=$(ticks "$load")
sleep 3
s2=$(head -1 /proc/stat); g2=$(ticks "$gw"); w2=$(ticks "$worker"); l2=$(ticks "$load")
wait "$load"
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "flags: ${*:-(defaults)}"
tail -1 "$out"
hz=$(getconf CLK_TCK)
rps=$(tail -1 "$out" | sed -n 's/.*: \([0-9.]*\) req\/s.*/\1/p')
python3 - "$s1" "$s2" "$((g2 - g1))" "$((w2 - w1))" "$((l2 - l1))" "$hz" "$(nproc)" "${rps:-0}" <<'PY'
import sys
a = list(map(int, sys.argv[1].split()[1:])); b = list(map(int, sys.argv[2].split()[1:]))
d = [y - x for x, y in zip(a, b)]; total = sum(d[:8]); cores = int(sys.argv[7])
print(f"all {cores} cores over 3 s: idle {100 * (d[3] + d[4]) / total:.1f} %, user {100 * d[0] / total:.1f} %,"
      f" system {100 * d[2] / total:.1f} %, softirq {100 * d[6] / total:.1f} %, steal {100 * d[7] / total:.1f} %")
hz, rps = int(sys.argv[6]), float(sys.argv[8])
for name, t in (("gateway", sys.argv[3]), ("worker", sys.argv[4]), ("load generator", sys.argv[5])):
    share = int(t) / hz / 3
    per = f", {share * 1e6 / rps:5.1f} µs per request" if rps > 0 else ""
    print(f"  {name:<15} {100 * share:5.1f} % of one core{per}")
PY
