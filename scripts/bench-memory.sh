#!/usr/bin/env bash
# Memory left behind by an unload: one worker loads version 1 of models/big (a 64 MiB
# variable), then version 2 arrives and version 1 is unloaded. Prints the worker's
# resident set before and after, without tfgate's replacement (TF Serving's behaviour)
# and with it, then the machine it ran on.
# Usage: bash scripts/bench-memory.sh   (needs `cargo build --release` and scripts/setup.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
rss_mib() { awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }
worker_of() { pgrep -P "$1" -x tfgate-worker | head -1; }
run() {
  local label=$1 excess=$2 base port gw w1 w2 before after
  base=$(mktemp -d)
  cp -r models/big/1 "$base/1"
  port=$((20000 + RANDOM % 20000))
  target/release/tfgate --port=$port --rest_api_port=$((port + 1)) --model_name=big \
    --model_base_path="$base" --file_system_poll_wait_seconds=1 \
    --replace_worker_after_unload_excess_mb="$excess" >/dev/null 2>&1 &
  gw=$!
  until curl -sf "localhost:$((port + 1))/v1/models/big" | grep -q AVAILABLE; do sleep 0.2; done
  w1=$(worker_of $gw); before=$(rss_mib "$w1")
  cp -r models/big/2 "$base/.incoming" && mv "$base/.incoming" "$base/2"
  until curl -sf "localhost:$((port + 1))/v1/models/big" | grep -q '"END"'; do sleep 0.2; done
  sleep 3  # a replacement, if any, loads and takes over
  w2=$(worker_of $gw); after=$(rss_mib "$w2")
  printf '%-34s %12s %12s %10s\n' "$label" "$before" "$after" "$([ "$w1" = "$w2" ] && echo no || echo yes)"
  kill $gw; wait $gw 2>/dev/null || true
  rm -rf "$base"
}
printf '%-34s %12s %12s %10s\n' "worker memory, big v1 -> v2" "v1 MiB" "after MiB" "replaced"
run "kept (TF Serving's behaviour)" 0
run "replaced after the unload" 32
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
