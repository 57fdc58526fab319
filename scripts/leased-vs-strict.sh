#!/usr/bin/env bash
# leased-vs-strict.sh — does leased counting change routing? The routing-policy
# comparison of docs/benchmarks.md (the Azure code trace, the regional-shortage
# scenario, callers in us-east-1, 10 s of simulated patience per call), run with
# TWO router replicas sharing one Redis, once with strict counting (one
# reservation per call) and once with leased counting (blocks), in both orders.
#
# Starts on free loopback ports: one switchyard-sim process serving the demo
# fleet's eight pools over gRPC (so both replicas route to the same simulated
# accelerators), a redis-server, and per run two switchyard replicas with the
# counting under test. Two switchyard-load processes replay the trace at half
# scale each, one per replica (a load balancer's even split), with the same
# scenario. Prints each run's combined success ratio and TTFT percentiles.
#
#   ./scripts/leased-vs-strict.sh                     # DURATION=8m of trace, ROUNDS=2 (both orders)
#   DURATION=57m ROUNDS=1 ./scripts/leased-vs-strict.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8m}
ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-12}
TRACE=${TRACE:-../shared/traces/AzureLLMInferenceTrace_code.csv}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
waitport() { for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "leased-vs-strict: $2 did not start" >&2; exit 1; }

mkdir -p "$WORK/bin"
go build -o "$WORK/bin/" ./cmd/switchyard ./cmd/switchyard-sim ./cmd/switchyard-load

# The demo fleet with each simulated pool on its own port of switchyard-sim.
python3 - "$WORK/fleet.yaml" <<'EOF'
import re, socket, sys
src = open("router/config/demo.yaml").read()
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
out = re.sub(r"endpoints: \[sim\]", lambda m: 'endpoints: ["127.0.0.1:%d"]' % port(), src)
open(sys.argv[1], "w").write(out)
EOF
SIMCTL=$(freeport)
"$WORK/bin/switchyard-sim" --config "$WORK/fleet.yaml" --time-scale 10 --control-listen "127.0.0.1:$SIMCTL" --log-level warn >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
waitport "$SIMCTL" switchyard-sim
REDIS=$(freeport)
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
waitport "$REDIS" redis-server
echo -n bench >"$WORK/token"

run() { # run MODE ROUND
	local mode=$1 r=$2 a b pa pb
	redis-cli -p "$REDIS" flushall >/dev/null
	redis-cli -p "$REDIS" set sy:epoch 0 >/dev/null # a store up for longer than a lease
	a=$(freeport)
	b=$(freeport)
	for port in $a $b; do
		SWITCHYARD_ADMIN_TOKEN=bench "$WORK/bin/switchyard" --config "$WORK/fleet.yaml" --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$REDIS/0" \
			--capacity-mode "$mode" --replica "$mode-$port" --metrics-listen off --console-listen off --http-listen off --watch-config 0 --log-level error \
			>"$WORK/router-$port.log" 2>&1 &
		PIDS+=($!)
		waitport "$port" "switchyard ($mode)"
	done
	for port in $a $b; do
		"$WORK/bin/switchyard-load" --trace "$TRACE" --duration "$DURATION" --speedup 10 --scale "$(python3 -c "print($SCALE/2)")" --timeout 1s \
			--caller-region us-east-1 --max-concurrency 5000 --scenario loadtest/scenarios/region-capacity-loss.yaml \
			--admin-token-file "$WORK/token" --sim-control "127.0.0.1:$SIMCTL" --target "127.0.0.1:$port" --no-progress \
			--report-json "$WORK/$mode-$r-$port.json" >"$WORK/load-$mode-$r-$port.log" 2>&1 &
		PIDS+=($!)
	done
	wait "${PIDS[-1]}" "${PIDS[-2]}" || true
	for port in $a $b; do pkill -f -- "--listen 127.0.0.1:$port" || true; done
	sleep 1 # the routers' blocks and the sim's running calls drain
}

for r in $(seq 1 "$ROUNDS"); do
	if [ $((r % 2)) = 1 ]; then order="strict leased"; else order="leased strict"; fi
	for mode in $order; do
		echo "leased-vs-strict: round $r: $mode: two replicas, $DURATION of trace" >&2
		run "$mode" "$r"
	done
done

python3 - "$WORK" "$ROUNDS" <<'EOF'
import glob, json, sys
work, rounds = sys.argv[1], int(sys.argv[2])
print("| round | counting | calls | ok | success | TTFT p50 / p99 ms (replica A; B) |")
print("|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    for mode in ("strict", "leased"):
        files = sorted(glob.glob(f"{work}/{mode}-{r}-*.json"))
        sent = ok = 0
        ttft = []
        for f in files:
            run = json.load(open(f))["runs"][0]
            sent += run["requests"]["sent"]; ok += run["requests"]["ok"]
            t = run["latency_ms"].get("ttft", {})
            ttft.append(f'{t.get("p50", 0):.1f} / {t.get("p99", 0):.1f}')
        print(f"| {r} | {mode} | {sent} | {ok} | {100 * ok / max(sent, 1):.2f} % | {'; '.join(ttft)} |")
EOF
