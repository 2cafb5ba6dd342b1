# Sourced by the scripts that load a running tfgate (profile-gateway.sh,
# cpu-under-load.sh), from the repository root. `start_mlp_server FLAGS...` starts tfgate
# ($TFGATE_BIN_DIR, default target/release) on the MLP on two free ports with FLAGS, and
# returns once it serves; it sets `gw` (the pid), `rest` and `grpc` (the ports). On exit
# the server is killed and the files listed in `cleanup` are removed.
bin=${TFGATE_BIN_DIR:-target/release}
[ -x "$bin/tfgate" ] && [ -x target/release/tfgate-bench ] \
  || { echo "build first: cargo build --release" >&2; exit 2; }
cleanup=()
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_mlp_server() {
  grpc=$(port); rest=$(port)
  "$bin/tfgate" --port="$grpc" --rest_api_port="$rest" --model_name=mlp \
    --model_base_path="$PWD/models/mlp" "$@" 2>/dev/null &
  gw=$!
  trap 'kill -9 $gw 2>/dev/null || true; wait $gw 2>/dev/null || true; rm -f "${cleanup[@]}"' EXIT
  for _ in $(seq 100); do
    curl -sf "localhost:$rest/v1/models/mlp" | grep -q AVAILABLE && break; sleep 0.2
  done
}
