"""Render ``bench_serve.py``'s pytest-benchmark JSON as the markdown tables of the
report: ``python -m benchmarks.serve_report serve.json``. Every number comes from the
JSON's ``extra_info`` (never typed by hand)."""

from __future__ import annotations

import json
import sys
from typing import Any


def render(data: dict[str, Any]) -> str:
    rows = [b["extra_info"] | {"group": b["group"]} for b in data["benchmarks"]]
    out = ["### Serving (issue 22)", ""]
    out += ["Forwarded vs local call (loopback, Redis store; CPU = both node processes):", "",
            "| connections | local req/s | local ms | local CPU us | forwarded req/s | forwarded ms | "
            "forwarded CPU us | extra CPU us | extra ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["group"] == "serve-forward"):
        loc, fwd = r["local"], r["forwarded"]
        out.append(f"| {r['connections']} | {loc['requests_per_s']:.0f} | {loc['latency_ms']:.2f} | "
                   f"{loc['cpu_us_per_call']:.0f} | {fwd['requests_per_s']:.0f} | {fwd['latency_ms']:.2f} | "
                   f"{fwd['cpu_us_per_call']:.0f} | {r['extra_cpu_us']:.0f} | {r['extra_latency_ms']:.2f} |")
    for r in (r for r in rows if r["group"] == "serve-http"):
        out += ["", f"HTTP overhead: an action in-process {r['in_process_cpu_us']:.0f} us CPU, over HTTP on its "
                    f"owner {r['http']['cpu_us_per_call']:.0f} us: **+{r['http_overhead_cpu_us']:.0f} us**."]
    workers = {r["workers"]: r for r in rows if r["group"] == "serve-workers"}
    if workers:
        out += ["", "| workers | actions/s | node CPU us/action | load average (1 min) |", "|---|---|---|---|"]
        for w, r in sorted(workers.items()):
            out.append(f"| {w} | {r['requests_per_s']:.0f} | {r['cpu_us_per_call']:.0f} | {r['loadavg_1m']:.1f} |")
        if 1 in workers and 2 in workers:
            ratio = workers[2]["requests_per_s"] / workers[1]["requests_per_s"]
            out.append(f"\n`--workers 2` / `--workers 1`: **{ratio:.2f}x** ({workers[1]['actors']} actors, "
                       f"{workers[1]['cores']} cores).")
    upkeep = [r for r in rows if r["group"] == "serve-upkeep"]
    if upkeep:
        out += ["", f"Placement upkeep (lease {upkeep[0]['lease_s']:g} s, no calls running): store round trips "
                    "per second", "",
                "| nodes | awake actors | round trips/s |", "|---|---|---|"]
        for r in sorted(upkeep, key=lambda r: (r["nodes"], r["awake_actors"])):
            out.append(f"| {r['nodes']} | {r['awake_actors']} | {r['round_trips_per_s']:.1f} |")
    out += ["", _verdict(rows)]
    return "\n".join(out) + "\n"


def _verdict(rows: list[dict[str, Any]]) -> str:
    """The issue's targets, with this run's figures."""
    parts: list[str] = []
    for r in (r for r in rows if r["group"] == "serve-http"):
        ok = "met" if r["http_overhead_cpu_us"] <= 150 else "NOT met"
        parts.append(f"HTTP overhead {r['http_overhead_cpu_us']:.0f} us CPU per action (target <= 150 us: {ok}).")
    for r in sorted((r for r in rows if r["group"] == "serve-forward"), key=lambda r: r["connections"]):
        ok = "met" if r["extra_cpu_us"] <= 200 else "NOT met"
        parts.append(f"Forwarded call at {r['connections']} connection(s): +{r['extra_cpu_us']:.0f} us CPU, "
                     f"+{r['extra_latency_ms']:.2f} ms (target <= 200 us: {ok}).")
    workers = {r["workers"]: r for r in rows if r["group"] == "serve-workers"}
    if 1 in workers and 2 in workers:
        ratio = workers[2]["requests_per_s"] / workers[1]["requests_per_s"]
        ok = "met" if ratio >= 1.7 else "NOT met"
        parts.append(f"`--workers 2` {ratio:.2f}x one worker (target >= 1.7x: {ok}); node CPU per action "
                     f"{workers[1]['cpu_us_per_call']:.0f} -> {workers[2]['cpu_us_per_call']:.0f} us.")
    upkeep = [r for r in rows if r["group"] == "serve-upkeep"]
    for nodes in sorted({r["nodes"] for r in upkeep}):
        same = sorted((r["awake_actors"], r["round_trips_per_s"]) for r in upkeep if r["nodes"] == nodes)
        parts.append(f"Upkeep, {nodes} node(s): " + ", ".join(f"{rt:.1f}/s with {a} awake" for a, rt in same) + ".")
    return " ".join(parts)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.stdout.write(render(json.load(f)))
