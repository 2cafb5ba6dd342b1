#!/usr/bin/env bash
# The deployment test: docker-compose.yml brought up for real (a gateway container and
# worker containers attached over a shared socket volume), then
#   1. REST and gRPC predictions answer correctly; the worker loaded TensorFlow Text's op
#      libraries from where the image carries them;
#   2. under load, a worker's process is killed with SIGKILL from the host: every request
#      still succeeds, Docker restarts the container and the gateway takes it back in;
#   3. under load, scaled to 2 workers and back to 1: every request succeeds, the worker
#      scaled away leaves without a failed request and its slot is closed;
#   4. the gateway restarted: the workers attach to the new one;
#   5. `down -v` leaves no container or volume, and no process holds any of the
#      shared-memory segments (memfds) the gateway and workers held.
#   6. models from a bucket (deploy/compose/s3.yml): moto's S3 server on the host, version 1
#      of half_plus_two uploaded into a bucket; the gateway, given the bucket and keys,
#      mirrors it into the model-cache volume and the worker (no keys, the volume
#      read-only) serves it from there.
# Skipped, with the reason printed, where Docker is not installed. Where it is (the
# `docker` command exists), a test that cannot run fails instead: no engine reachable, no
# compose tool. TFGATE_COMPOSE_TEST=skip skips it on purpose.
# Needs the release binaries (cargo build --release --bins) and scripts/setup.sh's venv
# and models, and root: the segment checks read /proc/PID/fd of the containers'
# processes (another user's). Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[compose-test] $(date +%T) $*" >&2; }
# cannot_run REASON: a skip where Docker is not installed, a failure where it is.
cannot_run() {
  if command -v docker >/dev/null; then
    log "FAILED: Docker is installed but the test cannot run: $1"
    log "(TFGATE_COMPOSE_TEST=skip skips it on purpose)"
    exit 1
  fi
  log "SKIPPED: $1"; exit 0
}

if [ "${TFGATE_COMPOSE_TEST:-}" = skip ]; then
  log "SKIPPED: TFGATE_COMPOSE_TEST=skip"; exit 0
fi
command -v docker >/dev/null || cannot_run "Docker is not installed"
docker info >/dev/null 2>&1 || cannot_run "no Docker engine is reachable (docker info: $(docker info 2>&1 | tail -n1))"
if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
else cannot_run "neither docker-compose nor docker compose is installed"; fi

PROJECT=tfgate-compose-test
export TFGATE_GRPC_PORT=${TFGATE_GRPC_PORT:-18600} TFGATE_REST_PORT=${TFGATE_REST_PORT:-18601}
export TFGATE_IMAGE=tfgate:compose-test
REST=http://127.0.0.1:$TFGATE_REST_PORT
GRPC=127.0.0.1:$TFGATE_GRPC_PORT
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2   # the Python client's TensorFlow: no startup chatter
dc() { "${COMPOSE[@]}" -p "$PROJECT" "$@"; }
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    log "FAILED; the gateway's and workers' last logs:"
    dc logs --tail=40 >&2 || true
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  [ -z "${MOTO:-}" ] || kill "$MOTO" 2>/dev/null || true
  # The image is rebuilt on every run; leave no untagged copies behind.
  docker rmi -f "$TFGATE_IMAGE" >/dev/null 2>&1 || true
  exit $rc
}
trap cleanup EXIT

# Image: host binaries on a local Debian base (no registry is needed).
t0=$SECONDS
IMAGE=$TFGATE_IMAGE bash scripts/docker-image.sh
log "image $TFGATE_IMAGE built in $((SECONDS - t0)) s"

dc down -v --remove-orphans >/dev/null 2>&1 || true
rm -f /tmp/$PROJECT-*
# Shared-memory segments are memfds (never in /dev/shm): known by inode, they exist as
# long as some process holds an fd to one.
# memfd_inodes PID...: the inodes of the tfgate segments those processes hold, one a line.
memfd_inodes() {
  local pid fd
  for pid in "$@"; do
    for fd in /proc/"$pid"/fd/*; do
      case $(readlink "$fd" 2>/dev/null) in
        /memfd:tfgate-shm*) stat -L -c %i "$fd" 2>/dev/null || true ;;
      esac
    done
  done | sort -u
}
container_pids() { docker top "$1" -o pid | tail -n +2; }
SEEN=/tmp/$PROJECT-segments
: > "$SEEN"
# Checks that the gateway holds one segment per worker container and each worker holds
# one of them; adds them to $SEEN. A /proc that cannot be read fails here rather than
# letting the leak check after `down` pass by seeing nothing.
check_segments() {
  local g w gw workers=0 mine
  g=$(docker ps -q --filter label=com.docker.compose.project=$PROJECT --filter label=com.docker.compose.service=gateway)
  gw=$(memfd_inodes $(container_pids "$g"))
  [ -n "$gw" ] || { log "cannot see the gateway container's segments in /proc/PID/fd (uid $(id -u); the check needs root)"; return 1; }
  for w in $(docker ps -q --filter label=com.docker.compose.project=$PROJECT --filter label=com.docker.compose.service=worker); do
    workers=$((workers + 1))
    mine=$(memfd_inodes $(container_pids "$w"))
    [ "$(echo "$mine" | grep -c .)" = 1 ] || { log "worker ${w:0:12} holds segments [${mine//$'\n'/ }]"; return 1; }
    grep -qx "$mine" <<<"$gw" || { log "worker ${w:0:12}'s segment $mine is not one the gateway holds"; return 1; }
  done
  [ "$(echo "$gw" | grep -c .)" = "$workers" ] || { log "the gateway holds segments [${gw//$'\n'/ }] for $workers worker(s)"; return 1; }
  echo "$gw" >> "$SEEN"
  log "segments: the gateway holds $workers (inodes ${gw//$'\n'/ }), one per worker container, each held by its worker"
}
t0=$SECONDS
dc up -d --scale worker=1 >/dev/null 2>&1
workers_json() { curl -sf "$REST/tfgate/workers"; }
serving() { workers_json | $PY -c 'import json,sys; print(sum(w["state"] == "serving" for w in json.load(sys.stdin)["workers"]))' 2>/dev/null || echo 0; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local until=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $until ] || { log "timed out after ${limit} s waiting for $what"; return 1; }
    sleep 0.5
  done
}
ready() { curl -sf -o /dev/null "$REST/readyz"; }
wait_for 120 "the gateway to be ready" ready
wait_for 60 "docker's healthcheck to say healthy" \
  sh -c "[ \"\$(docker inspect -f '{{.State.Health.Status}}' ${PROJECT}_gateway_1 2>/dev/null || docker inspect -f '{{.State.Health.Status}}' ${PROJECT}-gateway-1)\" = healthy ]"
log "up and ready in $((SECONDS - t0)) s: $(docker ps --filter label=com.docker.compose.project=$PROJECT --format '{{.Names}} ({{.Status}})' | sort | tr '\n' ' ')"
# Ready on the first start: a container that failed and was restarted (a gateway that
# refused its socket directory, say) is a failure, not a slow start.
for c in $(docker ps -aq --filter label=com.docker.compose.project=$PROJECT); do
  [ "$(docker inspect -f '{{.RestartCount}}' "$c")" = 0 ] \
    || { log "$(docker inspect -f '{{.Name}}' "$c") was restarted $(docker inspect -f '{{.RestartCount}}' "$c") time(s) before the deployment was ready"; exit 1; }
done

# 1. One prediction each way.
out=$(curl -sf -X POST "$REST/v1/models/half_plus_two:predict" -d '{"instances": [1.0, 2.0, 5.0]}' | tr -d ' \n')
[ "$out" = '{"predictions":[3.5,4.0,5.5]}' ] || { log "REST predict answered $out"; exit 1; }
$PY - "$GRPC" 2>/tmp/$PROJECT-grpc.err <<'PYEOF' || { cat /tmp/$PROJECT-grpc.err >&2; exit 1; }
import sys, grpc, tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(sys.argv[1]))
req = predict_pb2.PredictRequest()
req.model_spec.name = "half_plus_two"
req.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0, 5.0], dtype=tf.float32))
got = list(stub.Predict(req, 30.0).outputs["y"].float_val)
assert got == [3.5, 4.0, 5.5], got
PYEOF
log "REST and gRPC predictions answer [3.5, 4.0, 5.5]"
text_ops="op libraries loaded: TensorFlow Text $(.venv/bin/pip show tensorflow-text | sed -n 's/^Version: //p') (22 libraries in /usr/local/lib/tfgate/ops/tensorflow_text)"
dc logs worker 2>&1 | grep -cF "$text_ops" >/dev/null \
  || { log "the worker did not log \"$text_ops\""; exit 1; }
log "the worker loaded TensorFlow Text's 22 op libraries from the image"
wait_for 10 "one segment per worker" check_segments

worker_container() { docker ps -q --filter label=com.docker.compose.project=$PROJECT --filter label=com.docker.compose.service=worker | head -n1; }
# (TensorFlow's C++ start-up lines go to a file, shown only if the load fails.)
load() { $PY tests/compose/load.py --grpc "$GRPC" --rest "$REST" --seconds "$1" --threads 8 2>>/tmp/$PROJECT-load.err; }

# 2. SIGKILL a worker under load.
C=$(worker_container)
restarts_before=$(docker inspect -f '{{.RestartCount}}' "$C")
init_pid=$(docker inspect -f '{{.State.Pid}}' "$C")
worker_pid=$(pgrep -P "$init_pid" | head -n1)
[ -n "$worker_pid" ] || { log "no worker process under the container's init ($init_pid)"; exit 1; }
load 14 > /tmp/$PROJECT-kill.json & LOAD=$!
sleep 4
kill -9 "$worker_pid"
log "killed tfgate-worker (host pid $worker_pid) in container ${C:0:12} with SIGKILL, under load"
wait_for 30 "Docker to restart the worker container" \
  sh -c "[ \$(docker inspect -f '{{.RestartCount}}' $C) -gt $restarts_before ] && [ \$(docker inspect -f '{{.State.Running}}' $C) = true ]"
t_restart=$SECONDS
wait_for 60 "the restarted worker to serve" sh -c "[ \$(curl -sf $REST/tfgate/workers | $PY -c 'import json,sys; print(sum(w[\"state\"] == \"serving\" for w in json.load(sys.stdin)[\"workers\"]))') -ge 1 ]"
log "worker container restarted by Docker (RestartCount $(docker inspect -f '{{.RestartCount}}' "$C")) and serving again within $((SECONDS - t_restart)) s of its restart"
wait $LOAD || { log "requests failed across the SIGKILL: $(cat /tmp/$PROJECT-kill.json /tmp/$PROJECT-load.err)"; exit 1; }
log "load across the SIGKILL: $(cat /tmp/$PROJECT-kill.json)"
CHECK_RESTARTED=$(cat <<'PYEOF'
import json, sys
ws = json.load(sys.stdin)["workers"]
assert sum(w["restarts"] for w in ws) >= 1, ws
assert any(w["state"] == "serving" for w in ws), ws
slots = ["slot %s %s (host %s), restarts %s, last exit: %s" % (w["id"], w["state"], w["host"], w["restarts"], w["last_exit"]) for w in ws]
print("[compose-test] /tfgate/workers: " + "; ".join(slots), file=sys.stderr)
PYEOF
)
workers_json | $PY -c "$CHECK_RESTARTED"
recovery=$(curl -sf "$REST/monitoring/prometheus/metrics" | awk '/^:tfgate:worker:recovery_latency_sum/ {s=$2} /^:tfgate:worker:recovery_latency_count/ {c=$2} END {if (c > 0) printf "%.0f ms", s / c / 1000}')
log "the gateway's :tfgate:worker:recovery_latency (death to serving again): ${recovery:-none}"
# The slot names its worker's container, and the worker's own resident set (a TensorFlow
# process: well over 100 MB; the gateway cannot read /proc of another container's pid).
host=$(workers_json | $PY -c 'import json,sys; print([w["host"] for w in json.load(sys.stdin)["workers"] if w["state"] == "serving"][0])')
[ "$host" = "${C:0:12}" ] || { log "slot host $host is not the worker container ${C:0:12}"; exit 1; }
rss=$(curl -sf "$REST/monitoring/prometheus/metrics" | awk '/^:tfgate:worker:resident_bytes\{worker="0"\}/ {printf "%d", $2 / 1e6}')
[ "${rss:-0}" -gt 100 ] || { log "worker resident set ${rss:-?} MB"; exit 1; }
log "slot 0 holds container $host; worker resident set $rss MB (reported by the worker)"

# 3. Scale to 2 workers and back to 1, under load.
load 30 > /tmp/$PROJECT-scale.json & LOAD=$!
sleep 2
dc up -d --no-recreate --scale worker=2 >/dev/null 2>&1
wait_for 60 "two workers serving" sh -c "[ \$(curl -sf $REST/tfgate/workers | $PY -c 'import json,sys; print(sum(w[\"state\"] == \"serving\" for w in json.load(sys.stdin)[\"workers\"]))') -eq 2 ]"
log "scaled to 2 workers: $(serving) serving"
wait_for 10 "one segment per worker, two workers" check_segments
sleep 3
dc up -d --no-recreate --scale worker=1 >/dev/null 2>&1
wait_for 60 "one worker serving" sh -c "[ \$(curl -sf $REST/tfgate/workers | $PY -c 'import json,sys; print(sum(w[\"state\"] == \"serving\" for w in json.load(sys.stdin)[\"workers\"]))') -eq 1 ]"
# The slot of the worker scaled away is closed (--num_workers=1 is the floor).
slots() { workers_json | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["workers"]))' 2>/dev/null || echo 0; }
one_slot() { [ "$(slots)" = 1 ]; }
wait_for 10 "the scaled-away worker's slot to close" one_slot
log "scaled back to 1 worker: $(serving) serving, $(slots) slot, $(docker ps -q --filter label=com.docker.compose.project=$PROJECT --filter label=com.docker.compose.service=worker | wc -l) worker container(s)"
wait $LOAD || { log "requests failed while scaling: $(cat /tmp/$PROJECT-scale.json /tmp/$PROJECT-load.err)"; exit 1; }
log "load while scaling up and down: $(cat /tmp/$PROJECT-scale.json)"
docker logs "$(docker ps -aq --filter label=com.docker.compose.project=$PROJECT --filter label=com.docker.compose.service=gateway)" 2>&1 \
  | grep -E 'worker asked to stop|worker left|slot closed' | sed 's/^/[compose-test] gateway: /' >&2 || true

# 4. The gateway restarted: its workers see their socket close, exit, are restarted by
# Docker and attach to the new gateway (no namespace ties them to the old one).
G=$(docker ps -q --filter label=com.docker.compose.project=$PROJECT --filter label=com.docker.compose.service=gateway)
t0=$SECONDS
docker restart -t 25 "$G" >/dev/null
wait_for 120 "the restarted gateway to be ready" ready
out=$(curl -sf -X POST "$REST/v1/models/half_plus_two:predict" -d '{"instances": [4.0]}' | tr -d ' \n')
[ "$out" = '{"predictions":[5.0]}' ] || { log "REST predict after the gateway restart answered $out"; exit 1; }
log "gateway restarted; ready again with $(serving) worker serving after $((SECONDS - t0)) s"
wait_for 10 "one segment per worker after the gateway restart" check_segments

# 5. Down: nothing left behind; no process on the host holds a segment seen above.
t0=$SECONDS
dc down -v --remove-orphans >/dev/null 2>&1
left_c=$(docker ps -aq --filter label=com.docker.compose.project=$PROJECT | wc -l)
left_v=$(docker volume ls -q --filter label=com.docker.compose.project=$PROJECT | wc -l)
seen=$(sort -u "$SEEN" | grep -c .)
held=$( { find /proc/[0-9]*/fd -lname '/memfd:tfgate-shm*' -exec stat -L -c %i {} + 2>/dev/null || true; } \
  | sort -u | comm -12 - <(sort -u "$SEEN") | grep -c . || true)
log "down -v in $((SECONDS - t0)) s: $left_c containers, $left_v volumes; $held of the $seen segments seen still held by a process"
[ "$left_c" = 0 ] && [ "$left_v" = 0 ] && [ "$seen" -ge 2 ] && [ "$held" = 0 ] || exit 1

# 6. Models from an S3-compatible bucket: the override file, moto's S3 server on the host
# (bound to the address the containers reach as host.docker.internal, Docker's
# host-gateway), only version 1 (0.5 * x + 2) in the bucket, so that 2.5 for 1.0 can only
# come from it.
t6=$SECONDS
S3_IP=$(docker run --rm --add-host host.docker.internal:host-gateway --entrypoint getent "$TFGATE_IMAGE" hosts host.docker.internal | awk '{print $1}')
[ -n "$S3_IP" ] || { log "cannot resolve Docker's host-gateway address"; exit 1; }
S3_PORT=${TFGATE_S3_PORT:-18602}
S3_BUCKET=tfgate-compose-test
export AWS_ACCESS_KEY_ID=tfgate-compose-test AWS_SECRET_ACCESS_KEY=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') AWS_REGION=us-east-1
.venv/bin/moto_server -H "$S3_IP" -p "$S3_PORT" >/tmp/$PROJECT-moto.log 2>&1 & MOTO=$!
moto_up() { curl -s -o /dev/null "http://$S3_IP:$S3_PORT/"; }
wait_for 30 "moto's S3 server on $S3_IP:$S3_PORT" moto_up || { tail -n 20 /tmp/$PROJECT-moto.log >&2; exit 1; }
AWS_ENDPOINT_URL=http://$S3_IP:$S3_PORT $PY tests/compose/s3_upload.py --version 1 \
  models/half_plus_two "s3://$S3_BUCKET/models/half_plus_two" 2>&1 | sed "s/^/[compose-test] /" >&2
export COMPOSE_FILE=docker-compose.yml:deploy/compose/s3.yml
export TFGATE_MODEL_BASE_PATH=s3://$S3_BUCKET/models/half_plus_two AWS_ENDPOINT_URL=http://host.docker.internal:$S3_PORT
dc up -d --scale worker=1 >/dev/null 2>&1
wait_for 120 "the gateway on the bucket to be ready" ready
out=$(curl -sf -X POST "$REST/v1/models/half_plus_two:predict" -d '{"instances": [1.0]}' | tr -d ' \n')
[ "$out" = '{"predictions":[2.5]}' ] || { log "REST predict from the bucket answered $out"; exit 1; }
log "served from s3://$S3_BUCKET (moto on the host) within $((SECONDS - t6)) s of starting moto: predict [1.0] -> [2.5], version 1"
G=$(docker ps -q --filter label=com.docker.compose.project=$PROJECT --filter label=com.docker.compose.service=gateway)
W=$(worker_container)
mount_rw() { docker inspect -f '{{range .Mounts}}{{if eq .Destination "/var/cache/tfgate"}}{{.Type}}:{{.RW}}{{end}}{{end}}' "$1"; }
[ "$(mount_rw "$G")" = volume:true ] && [ "$(mount_rw "$W")" = volume:false ] \
  || { log "the model cache is mounted $(mount_rw "$G") in the gateway, $(mount_rw "$W") in the worker"; exit 1; }
# The worker loaded the gateway's mirror (the gateway's own load-attempt series names
# the path each worker loaded), and holds no credential.
loaded=$(curl -sf "$REST/monitoring/prometheus/metrics" | grep -o ':tensorflow:cc:saved_model:load_attempt_count{[^}]*status="success"[^}]*}' | grep -o 'model_path="[^"]*"' | sort -u | tr '\n' ' ')
case $loaded in
  'model_path="/var/cache/tfgate/half_plus_two-'*'/1" ') ;;
  *) log "the worker's successful loads: ${loaded:-none}, not version 1 in /var/cache/tfgate"; exit 1 ;;
esac
docker exec "$W" env | grep -q '^AWS_' && { log "the worker container has AWS_* variables"; exit 1; }
fetched=$(docker logs "$G" 2>&1 | grep -o "version 1 of model half_plus_two fetched from s3://$S3_BUCKET/models/half_plus_two ([^)]*)" | head -n1)
[ -n "$fetched" ] || { log "the gateway did not log the fetch"; exit 1; }
if docker logs "$G" 2>&1 | grep -qF "$AWS_SECRET_ACCESS_KEY"; then log "the secret key is in the gateway's log"; exit 1; fi
log "the worker (no AWS_* variables, the cache read-only) loaded ${loaded% }; gateway: $fetched; no secret in its log"
t0=$SECONDS
dc down -v --remove-orphans >/dev/null 2>&1
kill "$MOTO"; wait "$MOTO" 2>/dev/null || true; MOTO=
left_c=$(docker ps -aq --filter label=com.docker.compose.project=$PROJECT | wc -l)
left_v=$(docker volume ls -q --filter label=com.docker.compose.project=$PROJECT | wc -l)
log "down -v in $((SECONDS - t0)) s: $left_c containers, $left_v volumes (model-cache included); the bucket step took $((SECONDS - t6)) s"
[ "$left_c" = 0 ] && [ "$left_v" = 0 ] || exit 1
log "PASSED"
