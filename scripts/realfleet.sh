#!/usr/bin/env bash
# make realfleet: three llama.cpp llama-server processes as pools on AWS (us-east-1), Google Cloud (us-central1)
# and Azure (westeurope), and a switchyard in front of them on 127.0.0.1:50051 (deploy/realfleet/fleet.yaml).
# Ctrl-C stops the router and the servers. Extra arguments go to switchyard (e.g. --log-format text).
#   PORTS="8081 8082 8083"   llama-server ports, in the order of the fleet file's pools (make realfleet PORTS="9001 9002 9003";
#                            REALFLEET_PORTS also works)
#   SLOTS=4                  parallel slots per server (-np), 2048 tokens of context each (or REALFLEET_SLOTS)
#   LISTEN=127.0.0.1:50051   the router's gRPC address (or REALFLEET_LISTEN)
#   REALFLEET_LLAMA_ARGS=""  extra llama-server flags (e.g. "--cache-ram 0": no host-memory prompt cache)
# A killed server (kill <pid>) is restarted with the command this script prints for it; the router's health checks
# bring its pool back within a few seconds (docs/backends.md, "Restarting a killed server").
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-llama-server.sh
BIN=${SWITCHYARD_LLAMA_SERVER:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/llama.cpp/llama-server}
MODEL=$(pwd)/backends/openai/testdata/llama-2-tiny-random.gguf
PORT_LIST=${PORTS:-${REALFLEET_PORTS:-8081 8082 8083}}
read -r -a PORTS <<<"$PORT_LIST"
SLOTS=${SLOTS:-${REALFLEET_SLOTS:-4}}
LISTEN=${LISTEN:-${REALFLEET_LISTEN:-127.0.0.1:50051}}
[ "${#PORTS[@]}" -eq 3 ] || { echo "realfleet: PORTS needs three ports, got \"$PORT_LIST\"" >&2; exit 2; }

DIR=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sed -e "s#127.0.0.1:8081#127.0.0.1:${PORTS[0]}#" -e "s#127.0.0.1:8082#127.0.0.1:${PORTS[1]}#" \
	-e "s#127.0.0.1:8083#127.0.0.1:${PORTS[2]}#" deploy/realfleet/fleet.yaml >"$DIR/fleet.yaml"
for port in "${PORTS[@]}"; do
	# -t 1: one thread per server (more spin at barriers on a small machine).
	# shellcheck disable=SC2086 # REALFLEET_LLAMA_ARGS is a list of flags
	"$BIN" -m "$MODEL" --host 127.0.0.1 --port "$port" -c $((2048 * SLOTS)) -np "$SLOTS" -t 1 \
		-a tiny-llama --metrics --no-webui ${REALFLEET_LLAMA_ARGS:-} >"$DIR/llama-$port.log" 2>&1 &
	PIDS+=($!)
	echo "realfleet: llama-server on 127.0.0.1:$port (pid $!, log $DIR/llama-$port.log)"
	echo "realfleet:   restart it after a kill with: $BIN -m $MODEL --host 127.0.0.1 --port $port -c $((2048 * SLOTS)) -np $SLOTS -t 1 -a tiny-llama --metrics --no-webui &"
done
echo "realfleet: kill one (kill <pid>) to watch switchyard continue its streams on another pool; restart it with the line above"
go run ./cmd/switchyard --config "$DIR/fleet.yaml" --listen "$LISTEN" --watch-config 0 "$@"
