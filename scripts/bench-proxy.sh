#!/usr/bin/env bash
# bench-proxy.sh — what switchyard adds to a call, next to nginx, in one run.
#
# Starts, on free loopback ports: switchyard-sim serving one pool of 100,000
# slots at time scale 100000 (a 4-token Generate takes microseconds), nginx
# (grpc_pass to a keepalive upstream; worker_processes auto, or 1 with PIN=1),
# the smallest grpc-go proxy
# (scripts/grpc-floor-proxy: forwards bytes, nothing else — the floor any
# grpc-go proxy pays here), two real redis-servers, and switchyard in front of
# the simulator three times: with strict Redis counting (one reservation per
# call), with leased Redis counting (blocks of slots, the default with
# --redis; its own redis-server, so its commands per call are counted apart)
# and with in-memory counters. It also times one bare Redis round trip
# (redis-benchmark PING, one connection).
# ghz drives every path the same way: 100 concurrent callers over 4
# connections at a fixed rate (default 1,000 calls/s for 15 s), then 20,000
# calls with 64 concurrent callers unthrottled (saturation). ROUNDS repeats
# the whole sequence, rotating the order of the paths, and the table shows
# each path's median over the rounds.
#
#   ./scripts/bench-proxy.sh                 # or: make bench-proxy
#   ROUNDS=3 RATE=1000 DURATION=15s ./scripts/bench-proxy.sh
#   PROFILE=1 ./scripts/bench-proxy.sh       # also CPU and alloc profiles of switchyard (strict Redis) under the fixed rate
#   PIN=1 ./scripts/bench-proxy.sh           # load generator and backend on CPU 0, each proxy on CPU 1
#   BASE=abc1234 ./scripts/bench-proxy.sh    # also switchyard built at commit abc1234 (in-memory counters),
#                                            # to compare a change with what it changed, in the same run
#
# Installs nginx (Debian) and ghz (go install, into a cache directory) when
# missing. Needs redis-server (scripts/test.sh installs it) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
RATE=${RATE:-1000}
DURATION=${DURATION:-15s}
SAT_CALLS=${SAT_CALLS:-20000}
GHZ_VERSION=v0.120.0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

need_apt() { # need_apt COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "bench-proxy: installing $2" >&2
	$SUDO apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1 ||
		{ $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y --no-install-recommends "$2" >/dev/null; }
}
need_apt nginx nginx
need_apt redis-server redis-server
need_apt python3 python3
need_apt curl curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/bin
GHZ=$(command -v ghz || true)
if [ -z "$GHZ" ]; then
	GHZ=$CACHE/ghz
	if [ ! -x "$GHZ" ]; then
		echo "bench-proxy: installing ghz $GHZ_VERSION into $CACHE" >&2
		mkdir -p "$CACHE"
		GOBIN=$CACHE go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
	fi
fi

# PIN=1 (needs 2+ CPUs): the load generator and the backend run on CPU 0,
# every proxy under test (nginx, the floor, switchyard and its redis-server)
# on CPU 1, so each proxy gets the same one core and ghz's own work does not
# land in its latency.
LOADGEN="" PROXY="" NGINX_WORKERS=auto
if [ "${PIN:-0}" = 1 ]; then
	LOADGEN="taskset -c 0" PROXY="taskset -c 1" NGINX_WORKERS=1 # one worker per core it may use
fi

WORK=$(mktemp -d /tmp/bench-proxy.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "${KEEP:-0}" = 1 ]; then echo "bench-proxy: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
waitport() { # waitport PORT NAME
	for _ in $(seq 1 200); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench-proxy: $2 did not listen on $1" >&2
	exit 1
}

echo "bench-proxy: building" >&2
go build -o "$WORK/bin/" ./cmd/switchyard ./cmd/switchyard-sim ./scripts/grpc-floor-proxy
if [ -n "${BASE:-}" ]; then
	echo "bench-proxy: building switchyard at $BASE" >&2
	git worktree add -q --detach "$WORK/base-src" "$BASE"
	(cd "$WORK/base-src" && go build -o "$WORK/bin/switchyard-base" ./cmd/switchyard)
	git worktree remove --force "$WORK/base-src"
fi

SIM=$(freeport)
$LOADGEN "$WORK/bin/switchyard-sim" --pool "bench=h100:100000@127.0.0.1:$SIM" --time-scale 100000 \
	--queue-length 100000 --control-listen off --log-level error >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
waitport "$SIM" switchyard-sim

NGX=$(freeport)
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $WORK/nginx/body;
	proxy_temp_path $WORK/nginx/proxy;
	fastcgi_temp_path $WORK/nginx/fastcgi;
	uwsgi_temp_path $WORK/nginx/uwsgi;
	scgi_temp_path $WORK/nginx/scgi;
	# One benchmark run is far more than nginx's default 1,000 calls per
	# connection, after which it closes the connection (clients see it).
	keepalive_requests 10000000;
	upstream sim {
		server 127.0.0.1:$SIM;
		keepalive 64;
		keepalive_requests 10000000;
	}
	server {
		listen 127.0.0.1:$NGX http2;
		location / { grpc_pass grpc://sim; }
	}
}
EOF
$PROXY "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
waitport "$NGX" nginx

REDIS=$(freeport)
$PROXY redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
waitport "$REDIS" redis-server
REDIS2=$(freeport)
$PROXY redis-server --port "$REDIS2" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis2.log" 2>&1 &
PIDS+=($!)
waitport "$REDIS2" redis-server
# The leased router's store has been up for longer than a lease (its epoch is
# old): the steady state, without the one lease of learning mode a store
# starts with (docs/capacity.md).
redis-cli -p "$REDIS2" set sy:epoch 0 >/dev/null

cat >"$WORK/fleet.yaml" <<EOF
models:
  - {name: bench, max_input_tokens: 4096, max_output_tokens: 64}
pools:
  - {name: bench, cloud: aws, region: us-east-1, accelerator: h100, models: [bench],
     endpoints: ["127.0.0.1:$SIM"], limits: {max_concurrent: 100000}, cost_per_million_tokens: 1}
EOF
start_router() { # start_router PORT DEBUGPORT METRICSPORT [extra flags]
	local port=$1 dbg=$2 met=$3
	shift 3
	$PROXY env ${ROUTER_ENV:-} "${ROUTER_BIN:-$WORK/bin/switchyard}" --listen "127.0.0.1:$port" --config "$WORK/fleet.yaml" --log-level warn \
		--metrics-listen "127.0.0.1:$met" --console-listen off --http-listen off --watch-config 0 \
		--debug-listen "127.0.0.1:$dbg" "$@" >"$WORK/router-$port.log" 2>&1 &
	PIDS+=($!)
	waitport "$port" "switchyard on $port"
}
SYR=$(freeport)
SYR_DBG=$(freeport)
SYR_MET=$(freeport)
start_router "$SYR" "$SYR_DBG" "$SYR_MET" --redis "redis://127.0.0.1:$REDIS/0" --capacity-mode strict
SYL=$(freeport)
SYL_MET=$(freeport)
start_router "$SYL" "$(freeport)" "$SYL_MET" --redis "redis://127.0.0.1:$REDIS2/0"
SYM=$(freeport)
start_router "$SYM" "$(freeport)" "$(freeport)"
SYB=""
if [ -n "${BASE:-}" ]; then
	SYB=$(freeport)
	ROUTER_BIN="$WORK/bin/switchyard-base" start_router "$SYB" "$(freeport)" "$(freeport)"
fi

FLOOR=$(freeport)
$PROXY "$WORK/bin/grpc-floor-proxy" --listen "127.0.0.1:$FLOOR" --backend "127.0.0.1:$SIM" >"$WORK/floor.log" 2>&1 &
PIDS+=($!)
waitport "$FLOOR" grpc-floor-proxy

declare -A ADDR=([direct]="127.0.0.1:$SIM" [nginx]="127.0.0.1:$NGX" [floor]="127.0.0.1:$FLOOR" [redis]="127.0.0.1:$SYR" [leased]="127.0.0.1:$SYL" [memory]="127.0.0.1:$SYM")
PATHS=(direct nginx floor redis leased memory)
if [ -n "$SYB" ]; then
	ADDR[base]="127.0.0.1:$SYB"
	PATHS+=(base)
fi
DATA='{"model":"bench","prompt":"hello from the proxy benchmark","max_tokens":4}'
ghz_run() { # ghz_run ADDR OUT [ghz flags]
	local addr=$1 out=$2
	shift 2
	$LOADGEN "$GHZ" --insecure --proto proto/switchyard/v1/inference.proto --import-paths proto \
		--call switchyard.v1.Inference/Generate -d "$DATA" --connections 4 -O json "$@" "$addr" >"$out"
}

# Warm every path (connections, JIT-free but caches and pools).
for p in "${PATHS[@]}"; do ghz_run "${ADDR[$p]}" "$WORK/warm.json" -c 16 -n 2000; done

# acquire_stats: sum and count of the Redis router's own Acquire histogram.
acquire_stats() {
	curl -sf "http://127.0.0.1:$SYR_MET/metrics" | awk '
		/^switchyard_capacity_acquire_duration_seconds_sum/ {s += $NF}
		/^switchyard_capacity_acquire_duration_seconds_count/ {c += $NF}
		END {printf "%.9f %d\n", s, c}'
}
redis_evals() { redis-cli -p "$REDIS" info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ {n+=$3} END {print n+0}'; }
# leased_commands: every command the leased router's redis-server processed
# (scripts, pipelined heartbeats; this INFO call included).
leased_commands() { redis-cli -p "$REDIS2" info stats | tr -d '\r' | awk -F: '/^total_commands_processed:/ {print $2}'; }

for r in $(seq 1 "$ROUNDS"); do
	# Rotate the order each round, so no path always runs first or last.
	order=("${PATHS[@]:$(((r - 1) % ${#PATHS[@]}))}" "${PATHS[@]:0:$(((r - 1) % ${#PATHS[@]}))}")
	for p in "${order[@]}"; do
		echo "bench-proxy: round $r: $p: ${RATE} calls/s for $DURATION" >&2
		if [ "$p" = redis ]; then
			# One Redis round trip on its own (C client, one connection, idle
			# Redis): what a reservation's round trip costs at the least.
			$LOADGEN redis-benchmark -p "$REDIS" -c 1 -n 5000 -t ping --csv 2>/dev/null | tr -d '"' |
				awk -F, '$1 == "PING_MBULK" {print $5, $7}' >"$WORK/redis-rtt-$r"
			before=$(redis_evals)
			acq_before=$(acquire_stats)
		fi
		if [ "$p" = redis ] && [ "${PROFILE:-0}" = 1 ] && [ "$r" = 1 ]; then
			secs=${DURATION%s}
			curl -sf -o "$WORK/cpu.pprof" "http://127.0.0.1:$SYR_DBG/debug/pprof/profile?seconds=$((secs > 4 ? secs - 3 : secs))" &
			prof=$!
		fi
		[ "$p" = leased ] && lbefore=$(leased_commands)
		ghz_run "${ADDR[$p]}" "$WORK/$p-rate-$r.json" -c 100 -r "$RATE" -z "$DURATION"
		[ "$p" = leased ] && echo "$lbefore $(leased_commands)" >"$WORK/leased-commands-$r"
		if [ "$p" = redis ]; then
			after=$(redis_evals)
			echo "$before $after" >"$WORK/redis-evals-$r"
			echo "$acq_before $(acquire_stats)" >"$WORK/redis-acquire-$r"
			if [ -n "${prof:-}" ]; then
				wait "$prof" || true
				curl -sf -o "$WORK/allocs.pprof" "http://127.0.0.1:$SYR_DBG/debug/pprof/allocs"
				mkdir -p bench-proxy-profiles
				cp "$WORK/cpu.pprof" "$WORK/allocs.pprof" bench-proxy-profiles/
				cp "$WORK/bin/switchyard" bench-proxy-profiles/switchyard.bin
				prof=""
			fi
		fi
		echo "bench-proxy: round $r: $p: $SAT_CALLS calls, 64 concurrent" >&2
		ghz_run "${ADDR[$p]}" "$WORK/$p-sat-$r.json" -c 64 -n "$SAT_CALLS"
	done
done

python3 - "$WORK" "$ROUNDS" "$RATE" "$DURATION" "$SAT_CALLS" "${BASE:-}" <<'EOF'
import json, statistics, sys
work, rounds, rate, dur, sat, base = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
def load(path):
    with open(path) as f:
        return json.load(f)
def pct(rep, p):
    for d in rep.get("latencyDistribution") or []:
        if d["percentage"] == p:
            return d["latency"] / 1e6
    return float("nan")
kinds = {}
def errors(rep):
    for k, v in (rep.get("errorDistribution") or {}).items():
        kinds[k[:120]] = kinds.get(k[:120], 0) + v
    return sum(v for k, v in (rep.get("statusCodeDistribution") or {}).items() if k != "OK")
rows = {}
PATHS = ["direct", "nginx", "floor", "redis", "leased", "memory"] + (["base"] if base else [])
for p in PATHS:
    p50 = [pct(load(f"{work}/{p}-rate-{r}.json"), 50) for r in range(1, rounds + 1)]
    p99 = [pct(load(f"{work}/{p}-rate-{r}.json"), 99) for r in range(1, rounds + 1)]
    rps = [load(f"{work}/{p}-sat-{r}.json")["rps"] for r in range(1, rounds + 1)]
    errs = sum(errors(load(f"{work}/{p}-{k}-{r}.json")) for k in ("rate", "sat") for r in range(1, rounds + 1))
    rows[p] = dict(p50=statistics.median(p50), p99=statistics.median(p99), rps=statistics.median(rps), errs=errs,
                   all50=p50, all99=p99, allrps=rps)
d = rows["direct"]
names = {"direct": "ghz → sim directly", "nginx": "via nginx `grpc_pass`", "floor": "via a bare grpc-go proxy (floor)",
         "redis": "via switchyard, strict Redis counting", "leased": "via switchyard, leased Redis blocks",
         "memory": "via switchyard, in-memory counters", "base": f"via switchyard at {base}, in-memory counters"}
print(f"\n{rounds} round(s); fixed rate {rate} calls/s for {dur}, 100 concurrent over 4 connections; saturation {sat} calls, 64 concurrent; medians over rounds\n")
print("| path | p50 | p99 | added p50 over direct | added p99 over direct | saturation | errors |")
print("|---|---|---|---|---|---|---|")
n = rows["nginx"]
n50, n99 = n["p50"] - d["p50"], n["p99"] - d["p99"]
for p in PATHS:
    r = rows[p]
    a50, a99 = r["p50"] - d["p50"], r["p99"] - d["p99"]
    if p == "direct":
        add50 = add99 = "—"
    elif p == "nginx":
        add50, add99 = f"{a50:.2f} ms", f"{a99:.2f} ms"
    else:
        add50 = f"{a50:.2f} ms ({a50 / n50:.2f}× nginx)" if n50 > 0 else f"{a50:.2f} ms"
        add99 = f"{a99:.2f} ms ({a99 / n99:.2f}× nginx)" if n99 > 0 else f"{a99:.2f} ms"
    sat_s = f"{r['rps']:,.0f} calls/s" + ("" if p in ("direct", "nginx") else f" ({r['rps'] / n['rps']:.2f}× nginx)")
    print(f"| {names[p]} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | {add50} | {add99} | {sat_s} | {r['errs']} |")
for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
    print(f"\nerrors: {v} × {k}")
if rounds > 1:
    print("\nper round (p50 / p99 ms at the fixed rate; saturation calls/s):")
    for p in PATHS:
        r = rows[p]
        print(f"  {p:7s}", "  ".join(f"{a:.2f}/{b:.2f}/{c:,.0f}" for a, b, c in zip(r["all50"], r["all99"], r["allrps"])))
calls = 0
evals = 0
for r in range(1, rounds + 1):
    calls += load(f"{work}/redis-rate-{r}.json")["count"]
    b, a = open(f"{work}/redis-evals-{r}").read().split()
    evals += int(a) - int(b)
f = rows["floor"]
rtt = [open(f"{work}/redis-rtt-{r}").read().split() for r in range(1, rounds + 1)]
rtt50 = statistics.median(float(x[0]) for x in rtt if x)
print(f"\nabove the bare grpc-go proxy (floor), added p50: memory {rows['memory']['p50'] - f['p50']:+.2f} ms, "
      f"Redis {rows['redis']['p50'] - f['p50']:+.2f} ms; one Redis round trip on its own (redis-benchmark PING, one "
      f"connection): p50 {rtt50:.3f} ms = {rtt50 / n50:.2f}× nginx's whole added p50")
acq = []
for r in range(1, rounds + 1):
    s0, c0, s1, c1 = open(f"{work}/redis-acquire-{r}").read().split()
    if int(c1) > int(c0):
        acq.append((float(s1) - float(s0)) / (int(c1) - int(c0)) * 1000)
if acq:
    print(f"\nRedis reservation inside the router (its own acquire histogram, mean per call at the fixed rate): "
          f"{statistics.median(acq):.3f} ms")
print(f"\nRedis: {evals / calls:.3f} scripts (EVALSHA) per call at the fixed rate ({evals} for {calls} calls): one round trip per reservation.")
lcalls = lcmds = 0
for r in range(1, rounds + 1):
    lcalls += load(f"{work}/leased-rate-{r}.json")["count"]
    b, a = open(f"{work}/leased-commands-{r}").read().split()
    lcmds += int(a) - int(b) - 1
m = rows["memory"]
l = rows["leased"]
print(f"\nleased: {lcmds / lcalls:.4f} store commands per call at the fixed rate ({lcmds} for {lcalls} calls); "
      f"added p50 {l['p50'] - m['p50']:+.3f} ms, p99 {l['p99'] - m['p99']:+.3f} ms over the in-memory router")
if base:
    b = rows["base"]
    print(f"\nthis tree against {base} (both in-memory), same run: added p50 {m['p50'] - d['p50']:.3f} against "
          f"{b['p50'] - d['p50']:.3f} ms ({(m['p50'] - d['p50']) / (b['p50'] - d['p50']):.2f}×), p99 {m['p99'] - d['p99']:.3f} "
          f"against {b['p99'] - d['p99']:.3f} ms, saturation {m['rps']:,.0f} against {b['rps']:,.0f} calls/s ({m['rps'] / b['rps']:.2f}×)")
EOF
if [ "${PROFILE:-0}" = 1 ]; then
	echo "profiles in bench-proxy-profiles/: go tool pprof -top bench-proxy-profiles/switchyard.bin bench-proxy-profiles/cpu.pprof" >&2
fi
