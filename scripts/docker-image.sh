#!/usr/bin/env bash
# Builds the tfgate image: the two binaries built on this machine (set up and built here
# first), the wheel's libtensorflow and TensorFlow Text's op libraries (from the venv:
# the image build reaches no registry), copied onto BASE_IMAGE (default
# debian:bookworm-slim; where that cannot be pulled, tfgate-base:bookworm, which
# scripts/docker-base.sh builds with debootstrap).
# Usage: [BASE_IMAGE=...] [IMAGE=tfgate:latest] bash scripts/docker-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-tfgate:latest}
log() { echo "[docker-image] $*" >&2; }

if [ -z "${BASE_IMAGE:-}" ]; then
  if docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
     || timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    BASE_IMAGE=debian:bookworm-slim
  else
    log "debian:bookworm-slim cannot be pulled; using a local debootstrap base"
    BASE_IMAGE=tfgate-base:bookworm
  fi
fi
if [ "$BASE_IMAGE" = tfgate-base:bookworm ]; then
  bash scripts/docker-base.sh "$BASE_IMAGE"
fi

# The host build: set up (idempotent) and bring the release binaries up to date.
bash scripts/setup.sh
cargo build --release -p tfgate -p tfgate-worker --bins

# The build context holds only what the image gets (see .dockerignore).
CONTEXT=target/docker
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin" "$CONTEXT/lib"
BUILT=${CARGO_TARGET_DIR:-target}/release
cp "$BUILT/tfgate" "$BUILT/tfgate-worker" "$CONTEXT/bin/"
strip "$CONTEXT/bin/"* 2>/dev/null || true
cp -L .libtensorflow/lib/libtensorflow_cc.so.2 .libtensorflow/lib/libtensorflow_framework.so.2 "$CONTEXT/lib/"
# The workers look for them in /usr/local/lib/tfgate/ops/tensorflow_text (worker/src/op_libraries.rs).
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$CONTEXT/ops/tensorflow_text"
cp -L "$SITE"/tensorflow_text/python/ops/_*.so "$CONTEXT/ops/tensorflow_text/"
# Their version, which the workers check against TensorFlow's major.minor.
.venv/bin/pip show tensorflow-text 2>/dev/null | sed -n 's/^Version: //p' > "$CONTEXT/ops/tensorflow_text/VERSION"
# CA certificates, so HTTPS model stores (gs://, s3://) verify from the image: the host's
# bundle, since the image build installs no packages.
mkdir -p "$CONTEXT/certs"
cp -L /etc/ssl/certs/ca-certificates.crt "$CONTEXT/certs/"
log "building $IMAGE on $BASE_IMAGE"
docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" -f Dockerfile . >/dev/null
log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
