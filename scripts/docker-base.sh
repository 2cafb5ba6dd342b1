#!/usr/bin/env bash
# Builds a local Debian bookworm base image, tfgate-base:bookworm, with debootstrap and
# `docker import`: on machines that reach no container registry, `debian:bookworm-slim`
# cannot be pulled. Idempotent: does nothing when the image exists.
# Usage: bash scripts/docker-base.sh [IMAGE]   (default tfgate-base:bookworm)
set -euo pipefail
IMAGE=${1:-tfgate-base:bookworm}
log() { echo "[docker-base] $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE exists"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
# The Debian mirror this machine's apt uses (deb822 or one-line sources).
MIRROR=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
if [ -z "$MIRROR" ]; then
  MIRROR=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/tfgate-rootfs.XXXXXX)
trap '$SUDO rm -rf "$ROOTFS"' EXIT
log "debootstrap --variant=minbase bookworm from $MIRROR"
$SUDO debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/dev/null
# Trim what a server image never uses.
$SUDO rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*
$SUDO tar -C "$ROOTFS" -c . | docker import - "$IMAGE" >/dev/null
log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
