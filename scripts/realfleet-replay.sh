#!/usr/bin/env bash
# Replays the Azure LLM inference trace (code, 2023), scaled down to what three llama.cpp servers on a small
# machine can serve, against `make realfleet`'s fleet (three real llama-server pools behind one switchyard), and
# SIGKILLs one pool's server part-way through. Reports: $REPLAY_OUT.json / .html; the summary on stdout.
#   REPLAY_SPEEDUP=6       trace clock divided by this
#   REPLAY_DURATION=10m    how much of the trace (trace time)
#   REPLAY_SCALE=1         requests per trace request
#   REPLAY_KILL_AFTER=40   seconds (wall) after the start when aws-use1-llama's server is killed (0: never)
#   REPLAY_OUT=reports/realfleet
# Needs free ports 18081-18083 and 50151 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEEDUP=${REPLAY_SPEEDUP:-6}
DURATION=${REPLAY_DURATION:-10m}
SCALE=${REPLAY_SCALE:-1}
KILL_AFTER=${REPLAY_KILL_AFTER:-40}
OUT=${REPLAY_OUT:-reports/realfleet}
mkdir -p "$(dirname "$OUT")"
LOG=$(mktemp)
go build -o "$LOG.load" ./cmd/switchyard-load

REALFLEET_PORTS="18081 18082 18083" REALFLEET_LISTEN=127.0.0.1:50151 \
	setsid ./scripts/realfleet.sh --metrics-listen off --console-listen off --log-format text >"$LOG" 2>&1 &
FLEET=$!
stop() {
	kill -INT -- "-$FLEET" 2>/dev/null || true
	wait "$FLEET" 2>/dev/null || true
	rm -f "$LOG" "$LOG.load"
}
trap stop EXIT
for _ in $(seq 1 240); do
	grep -q "listening on" "$LOG" && break
	sleep 0.5
done
grep -q "listening on" "$LOG" || { cat "$LOG" >&2; echo "realfleet-replay: the fleet did not start" >&2; exit 1; }
VICTIM=$(sed -n 's/^realfleet: llama-server on 127.0.0.1:18081 (pid \([0-9]*\).*/\1/p' "$LOG")
sleep 2 # first health checks and load reports

"$LOG.load" --target 127.0.0.1:50151 --trace loadtest/testdata/AzureLLMInferenceTrace_code.csv --format azure \
	--speedup "$SPEEDUP" --duration "$DURATION" --scale "$SCALE" --caller-region us-east-1 --no-progress \
	--report-json "$OUT.json" --report-html "$OUT.html" &
LOAD=$!
if [ "$KILL_AFTER" != 0 ]; then
	sleep "$KILL_AFTER"
	echo "realfleet-replay: SIGKILL aws-use1-llama's llama-server (pid $VICTIM) at ${KILL_AFTER}s"
	kill -KILL "$VICTIM"
fi
wait "$LOAD"
echo "realfleet-replay: router log lines about the kill:"
grep -E "continu|attempt failed|health" "$LOG" | cut -c1-240 | head -5 || true
