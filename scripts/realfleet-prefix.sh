#!/usr/bin/env bash
# Prefix-cache affinity on real model servers: replays a stretch of the Mooncake synthetic trace (prompts built
# from its 512-token hash_id blocks, so requests that share ids share a prefix; capped at the fleet's 1,536 input
# tokens: three blocks; by default its last 300 requests, where prefixes are shared most: an offline bound for
# them, one infinite cache that has seen every earlier prompt of the stretch, is 0.60) against `make realfleet`'s fleet — three llama.cpp llama-server pools behind one
# switchyard — once per policy in one --compare run, and prints each run's cached_prompt_ratio: the prompt tokens
# the servers themselves reported as served from their prompt caches (usage.prompt_tokens_details.cached_tokens,
# read by the openai adapter), over all prompt tokens. Every run's prompts are salted, so no run finds another's.
#   PREFIX_POLICIES=switchyard,round_robin   the --compare list (the run order)
#   PREFIX_FROM=3693 PREFIX_REQUESTS=300     the stretch: from request PREFIX_FROM (0-based), this many calls per policy
#   PREFIX_CALLER_REGION=""                  routing hint; none by default, so every pool is in one tier and the
#                                            comparison is about prefixes, not nearness
#   PREFIX_SPEEDUP=2                         trace clock divided by this
#   PREFIX_OUT=reports/realfleet-prefix      report files ($PREFIX_OUT.json / .html)
#   PREFIX_LLAMA_ARGS="--cache-ram 0"        llama-server flags: by default the servers' prompt cache is what their
#                                            slots hold (a host-memory cache of 8 GiB would hold every prompt of the
#                                            tiny model; a 70B model's 1,000-token prompt takes ~300 MB of KV cache)
# Needs free ports 18181-18183 and 50161 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
POLICIES=${PREFIX_POLICIES:-switchyard,round_robin}
FROM=${PREFIX_FROM:-3693}
REQUESTS=${PREFIX_REQUESTS:-300}
CALLER=${PREFIX_CALLER_REGION:-}
SPEEDUP=${PREFIX_SPEEDUP:-2}
OUT=${PREFIX_OUT:-reports/realfleet-prefix}
TRACE=${PREFIX_TRACE:-../shared/traces/mooncake_synthetic_trace.jsonl}
mkdir -p "$(dirname "$OUT")"
LOG=$(mktemp)
go build -o "$LOG.load" ./cmd/switchyard-load
echo realfleet-prefix >"$LOG.token"
# The stretch as its own trace, its clock starting at 0.
python3 - "$TRACE" "$FROM" "$REQUESTS" >"$LOG.trace" <<'PY'
import json, sys
rows = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):int(sys.argv[2]) + int(sys.argv[3])]
t0 = json.loads(rows[0])["timestamp"]
for line in rows:
    r = json.loads(line)
    r["timestamp"] -= t0
    print(json.dumps(r))
PY

SWITCHYARD_ADMIN_TOKEN=realfleet-prefix REALFLEET_LLAMA_ARGS=${PREFIX_LLAMA_ARGS---cache-ram 0} REALFLEET_PORTS="18181 18182 18183" REALFLEET_LISTEN=127.0.0.1:50161 \
	setsid ./scripts/realfleet.sh --metrics-listen off --console-listen off --http-listen off --log-format text >"$LOG" 2>&1 &
FLEET=$!
stop() {
	kill -INT -- "-$FLEET" 2>/dev/null || true
	wait "$FLEET" 2>/dev/null || true
	rm -f "$LOG" "$LOG.load" "$LOG.token" "$LOG.trace"
}
trap stop EXIT
for _ in $(seq 1 240); do
	grep -q "listening on" "$LOG" && break
	sleep 0.5 # the fleet starting: bounded at 2 minutes
done
grep -q "listening on" "$LOG" || { cat "$LOG" >&2; echo "realfleet-prefix: the fleet did not start" >&2; exit 1; }
sleep 2 # first health checks and load reports

"$LOG.load" --target 127.0.0.1:50161 --admin-token-file "$LOG.token" --trace "$LOG.trace" --format mooncake \
	--speedup "$SPEEDUP" --timeout 60s --caller-region "$CALLER" --no-progress \
	--compare "$POLICIES" --report-json "$OUT.json" --report-html "$OUT.html"
python3 - "$OUT.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
for r in runs:
    t = r["tokens"]
    print("realfleet-prefix: %-15s cached_prompt_ratio %.3f (%d of %d prompt tokens, from the servers' usage), success %.2f%%, TTFT p99 %.0f ms" % (
        r["label"], r["cached_prompt_ratio"], t.get("cached_prompt", 0), t.get("prompt", 0), 100 * r["success_ratio"], r["latency_ms"]["ttft"]["p99"]))
PY
