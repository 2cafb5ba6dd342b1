#!/usr/bin/env bash
# Builds the tfgate image: the two binaries built on this machine and the wheel's
# libtensorflow, copied onto BASE_IMAGE (default debian:bookworm-slim; where no registry
# is reachable, set BASE_IMAGE=tfgate-base:bookworm and it is built by docker-base.sh).
# Usage: [BASE_IMAGE=...] [IMAGE=tfgate:latest] bash scripts/docker-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
IMAGE=${IMAGE:-tfgate:latest}
log() { echo "[docker-image] $*" >&2; }

[ -x target/release/tfgate ] && [ -x target/release/tfgate-worker ] || {
  log "build first: cargo build --release --bins (scripts/setup.sh sets up the build)"; exit 1; }
if [ "$BASE_IMAGE" = tfgate-base:bookworm ]; then
  bash scripts/docker-base.sh "$BASE_IMAGE"
fi
# The build context holds only what the image gets (see .dockerignore).
CONTEXT=target/docker
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin" "$CONTEXT/lib"
cp target/release/tfgate target/release/tfgate-worker "$CONTEXT/bin/"
strip "$CONTEXT/bin/"* 2>/dev/null || true
cp -L .libtensorflow/lib/libtensorflow_cc.so.2 .libtensorflow/lib/libtensorflow_framework.so.2 "$CONTEXT/lib/"
log "building $IMAGE on $BASE_IMAGE"
docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f Dockerfile . >/dev/null
log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
