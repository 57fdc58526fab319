#!/usr/bin/env bash
# Same-signal comparison matrix (docs/benchmarks.md, "Same-signal rivals"): every cell runs all five policies in one
# `switchyard-load --compare` against a fresh router on the embedded demo fleet, once per run order (A: the default
# first; B: the reverse), then prints scripts/samesignal-summary.py's table of every run and the medians per cell.
#   CELLS="nofault-10s shortage-10s shortage-60s nofault-60s prefix"   which cells, in this order
#   ORDERS="A B"                                                        which run orders
#   ROUNDS=1                                                            how many times the whole matrix runs (rotated)
#   OUT=reports/samesignal                                              report files: $OUT/<round>-<cell>-<order>.json
#   POLICIES_A, POLICIES_B                                              the --compare lists of the two orders
#   LOG_LEVEL=warn                                                      the router's (debug: a line per call, with its pool and TTFT)
# Needs free ports 50720 (gRPC) and 50721 (sim control) on 127.0.0.1. Runs at nice -5 when allowed, so a build
# elsewhere on the machine disturbs it less; the load tester's lag columns say whether it was disturbed anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
CELLS=${CELLS:-nofault-10s shortage-10s shortage-60s nofault-60s prefix}
ORDERS=${ORDERS:-A B}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-reports/samesignal}
POLICIES_A=${POLICIES_A:-switchyard,gie,envoy_locality,least_request,round_robin}
POLICIES_B=${POLICIES_B:-round_robin,least_request,envoy_locality,gie,switchyard}
mkdir -p "$OUT"
BIN=$(mktemp -d)
trap 'kill "$ROUTER" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$BIN"' EXIT
go build -o "$BIN/" ./cmd/switchyard ./cmd/switchyard-load
echo samesignal >"$BIN/token"
NICE=(nice -n -5)
"${NICE[@]}" true 2>/dev/null || NICE=()
ROUTER=

cell() { # round cell order
	local round=$1 name=$1-$2-$3 policies scale=10 args=()
	policies=$POLICIES_A
	[ "$3" = B ] && policies=$POLICIES_B
	case $2 in
	nofault-10s) args=(--trace ../shared/traces/AzureLLMInferenceTrace_code.csv --scale 12 --duration 4m --timeout 1s) ;;
	nofault-60s) args=(--trace ../shared/traces/AzureLLMInferenceTrace_code.csv --scale 12 --duration 4m --timeout 6s) ;;
	shortage-10s) args=(--trace ../shared/traces/AzureLLMInferenceTrace_code.csv --scale 12 --duration 4m --timeout 1s --scenario loadtest/scenarios/region-capacity-loss.yaml) ;;
	shortage-60s) args=(--trace ../shared/traces/AzureLLMInferenceTrace_code.csv --scale 12 --duration 4m --timeout 6s --scenario loadtest/scenarios/region-capacity-loss.yaml) ;;
	prefix) scale=20 args=(--trace ../shared/traces/mooncake_synthetic_trace.jsonl --format mooncake --timeout 3s) ;;
	*) echo "samesignal: unknown cell $2" >&2; exit 2 ;;
	esac
	SWITCHYARD_ADMIN_TOKEN=samesignal "${NICE[@]}" "$BIN/switchyard" --listen 127.0.0.1:50720 --sim-time-scale "$scale" \
		--sim-control-listen 127.0.0.1:50721 --metrics-listen off --console-listen off --http-listen off \
		--log-level "${LOG_LEVEL:-warn}" >"$OUT/$name.router.log" 2>&1 &
	ROUTER=$!
	for _ in $(seq 1 100); do
		(exec 3<>/dev/tcp/127.0.0.1/50720) 2>/dev/null && break
		sleep 0.1 # the router starting: bounded at 10 s
	done
	local load0 load1
	load0=$(cut -d' ' -f1 /proc/loadavg)
	"${NICE[@]}" "$BIN/switchyard-load" --target 127.0.0.1:50720 --sim-control 127.0.0.1:50721 --admin-token-file "$BIN/token" \
		--caller-region us-east-1 --speedup "$scale" --max-concurrency 5000 --no-progress "${args[@]}" \
		--compare "$policies" --report-json "$OUT/$name.json" --report-html "$OUT/$name.html" >"$OUT/$name.txt" 2>&1 || true
	load1=$(cut -d' ' -f1 /proc/loadavg)
	kill -INT "$ROUTER"; wait "$ROUTER" 2>/dev/null || true
	echo "$load0-$load1" >"$OUT/$name.load"
}

for round in $(seq 1 "$ROUNDS"); do
	for c in $CELLS; do
		for o in $ORDERS; do
			[ $((round % 2)) = 0 ] && o=$( [ "$o" = A ] && echo B || echo A ) # even rounds: the other order first
			echo "samesignal: round $round $c $o ($(date +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))" >&2
			cell "$round" "$c" "$o"
		done
	done
done

python3 scripts/samesignal-summary.py "$OUT"
