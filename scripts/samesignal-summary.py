#!/usr/bin/env python3
"""Summarises scripts/samesignal.sh's report JSONs: one row per run and policy, then per cell the median over its
runs (every round and order) of each policy's success and p99 TTFT, and in how many runs the default policy was
strictly best (success ≥ every rival's and p99 TTFT < every rival's; at 100 % success a tie counts as ≥).

usage: samesignal-summary.py DIR [DIR...]
"""
import glob
import json
import os
import re
import statistics
import sys

LAG = ("scheduler_lag_p99_ms", "client_wait_p99_ms", "generator_sched_p99_ms")
ORDER = ["switchyard", "gie", "envoy_locality", "least_request", "round_robin"]


def runs(dirs):
    for d in dirs:
        for f in sorted(glob.glob(os.path.join(d, "*.json"))):
            name = os.path.basename(f)[:-5]
            m = re.match(r"(\d+)-(.+)-([AB])$", name)
            if not m:
                continue
            load = "?"
            if os.path.exists(f[:-5] + ".load"):
                load = open(f[:-5] + ".load").read().strip()
            rep = json.load(open(f))
            yield m.group(2), name, load, rep["runs"]


def main(dirs):
    cells = {}
    print("%-22s %-15s %9s %9s %7s %5s %5s %5s %7s %-7s %s" % (
        "run", "policy", "success", "ttft_p99", "failed", "lag", "sched", "wait", "cached", "valid", "load"))
    for cell, name, load, rs in runs(dirs):
        row = {}
        for r in rs:
            lat = r["latency_ms"]
            p99 = lambda k: lat.get(k, {}).get("p99", float("nan"))
            valid = all(s["met"] for s in r.get("slos", []) if s["name"] in LAG)
            row[r["label"]] = (r["success_ratio"], p99("ttft"), valid, r.get("cached_prompt_ratio", 0.0))
            print("%-22s %-15s %8.2f%% %9.1f %7d %5.0f %5.0f %5.0f %7.3f %-7s %s" % (
                name, r["label"], 100 * r["success_ratio"], p99("ttft"), r["requests"]["failed"],
                p99("scheduler_lag"), p99("generator_sched"), p99("client_wait"), r.get("cached_prompt_ratio", 0.0),
                "valid" if valid else "INVALID", load))
        cells.setdefault(cell, []).append((name, row))
    for cell, rows in cells.items():
        pols = [p for p in ORDER if any(p in row for _, row in rows)]
        print("\n%s: medians over %d runs (%s)" % (cell, len(rows), ", ".join(n for n, _ in rows)))
        print("  %-15s %9s %9s %8s" % ("policy", "success", "ttft_p99", "cached"))
        for p in pols:
            v = [row[p] for _, row in rows if p in row]
            print("  %-15s %8.2f%% %9.1f %8.3f" % (p, 100 * statistics.median(x[0] for x in v),
                                                   statistics.median(x[1] for x in v), statistics.median(x[3] for x in v)))
        best = valid = succ = 0
        for _, row in rows:
            if "switchyard" not in row:
                continue
            me = row["switchyard"]
            rivals = [row[p] for p in pols if p != "switchyard" and p in row]
            valid += all(x[2] for x in [me] + rivals)
            best += all(me[0] >= x[0] and me[1] < x[1] for x in rivals)
            succ += all(me[0] >= x[0] for x in rivals)
        print("  switchyard: success ≥ every rival's in %d of %d runs; strictly best (also p99 TTFT <) in %d; every column valid in %d" % (
            succ, len(rows), best, valid))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
