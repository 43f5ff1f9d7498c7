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
    for r in (r for r in rows if r["group"] == "serve-workers" and "rounds" in r):
        out += ["", f"`--workers 1` vs `--workers 2`, read-heavy (9 reads : 1 write, random actors of "
                    f"{r['actors']}), LMDB, 32 keep-alive connections, rounds alternated; 'routed': each actor's "
                    "calls sent to its owner's own port (learnt from `X-Actor-DB-Node-URL`), 'shared port': every "
                    "call to the shared port (the kernel picks the worker). 'others' = CPU cores the machine's "
                    "other jobs used meanwhile; 'loop busy' = the share of one core the busiest worker's event "
                    "loop thread got (near 1.0: that worker was the limit; well below: the machine was).", "",
                "| round | 1 worker actions/s | 2 routed actions/s | 2 shared-port actions/s | routed / 1 | "
                "shared / 1 | node CPU us/action (1 / routed / shared) | forwarded (routed / shared) | "
                "client CPU us/action | loop busy (1 / routed) | others (cores) |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for i, rnd in enumerate(r["rounds"], 1):
            one, routed, shared = rnd["one"], rnd["two_routed"], rnd["two_shared"]
            out.append(f"| {i} | {one['requests_per_s']:.0f} | {routed['requests_per_s']:.0f} | "
                       f"{shared['requests_per_s']:.0f} | {routed['requests_per_s'] / one['requests_per_s']:.2f}x | "
                       f"{shared['requests_per_s'] / one['requests_per_s']:.2f}x | {one['cpu_us_per_call']:.0f} / "
                       f"{routed['cpu_us_per_call']:.0f} / {shared['cpu_us_per_call']:.0f} | "
                       f"{routed['forwarded_share']:.0%} / {shared['forwarded_share']:.0%} | "
                       f"{routed['client_cpu_us_per_call']:.0f} | "
                       f"{one.get('busiest_loop', 0):.2f} / {routed.get('busiest_loop', 0):.2f} | "
                       f"{(one['others_cores'] + routed['others_cores'] + shared['others_cores']) / 3:.2f} |")
        out.append(f"\n`--workers 2` routed / `--workers 1`: median **{r['ratio_routed_median']:.2f}x** "
                   f"(min {min(r['ratio_routed']):.2f}x, max {max(r['ratio_routed']):.2f}x); through the shared "
                   f"port: median {r['ratio_shared_median']:.2f}x ({r['cores']} cores).")
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
    for r in (r for r in rows if r["group"] == "serve-workers" and "rounds" in r):
        ok = "met" if r["ratio_routed_median"] >= 1.7 else "NOT met"
        parts.append(f"`--workers 2` with a routing client {r['ratio_routed_median']:.2f}x one worker, median of "
                     f"{len(r['rounds'])} rounds (min {min(r['ratio_routed']):.2f}x, max {max(r['ratio_routed']):.2f}x; "
                     f"target >= 1.7x: {ok}); through the shared port {r['ratio_shared_median']:.2f}x.")
    upkeep = [r for r in rows if r["group"] == "serve-upkeep"]
    for nodes in sorted({r["nodes"] for r in upkeep}):
        same = sorted((r["awake_actors"], r["round_trips_per_s"]) for r in upkeep if r["nodes"] == nodes)
        parts.append(f"Upkeep, {nodes} node(s): " + ", ".join(f"{rt:.1f}/s with {a} awake" for a, rt in same) + ".")
    return " ".join(parts)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.stdout.write(render(json.load(f)))
