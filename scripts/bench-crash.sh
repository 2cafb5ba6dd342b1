#!/usr/bin/env bash
# Measures how fast the gateway notices a worker's death (SIGKILL) and how long until the
# restarted worker serves again. Prints one row per kill, then the machine it ran on.
# Usage: bash scripts/bench-crash.sh [KILLS]   (needs `cargo build --release` first)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-5}
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
RUST_LOG=info target/release/tfgate --port=$port --rest_api_port=$((port + 1)) \
  --model_name=half_plus_two --model_base_path="$PWD/models/half_plus_two" >"$log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null; rm -f "$log"' EXIT
until grep -q "Exporting HTTP/REST" "$log"; do sleep 0.1; done
ts() { date -d "$1" +%s.%N; }
printf '%-6s %-18s %-22s\n' kill detect_ms restart_to_available_ms
for i in $(seq 1 "$kills"); do
  sleep 11  # let the supervisor's crash backoff reset (it resets after 10 s up)
  worker=$(pgrep -P $gw -x tfgate-worker)
  before=$(grep -c "state=Available" "$log" || true)
  t0=$(date +%s.%N); kill -9 "$worker"
  until [ "$(grep -c "state=Available" "$log")" -gt "$before" ]; do sleep 0.01; done
  line=$(grep -a "worker exited" "$log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')
  avail=$(grep -a "state=Available" "$log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')
  t1=$(ts "$(echo "$line" | awk '{print $1}')"); t2=$(ts "$(echo "$avail" | awk '{print $1}')")
  printf '%-6s %-18.1f %-22.1f\n' "$i" "$(echo "($t1 - $t0) * 1000" | bc)" "$(echo "($t2 - $t0) * 1000" | bc)"
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
