#!/usr/bin/env bash
# Sets up, builds and serves the demo model (half_plus_two) in the foreground:
# gRPC on :8500, REST on :8501.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins
exec target/release/tfgate --port=8500 --rest_api_port=8501 \
  --model_name=half_plus_two --model_base_path="$PWD/models/half_plus_two" "$@"
