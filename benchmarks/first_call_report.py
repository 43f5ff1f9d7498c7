"""Render the first-call figures of issue 25 from pytest-benchmark JSON as markdown:
``python -m benchmarks.first_call_report out.json [more.json ...]``. Reads the groups
``first-call`` (``bench_first_call.py``), ``size-any-key`` and ``size-write-heavy``
(``bench_big_databases.py``) from whichever files hold them; every number comes from
the JSON's ``extra_info`` (never typed by hand)."""

from __future__ import annotations

import json
import sys
from typing import Any

from benchmarks.datasets import human_size

CALLS = {"write": "new actor, first write call", "read": "new actor, first read call",
         "existing": "existing actor, a new runtime's first call (a write)"}


def render(files: list[dict[str, Any]]) -> str:
    rows = [b["extra_info"] | {"group": b["group"]} for data in files for b in data["benchmarks"]]
    out: list[str] = []
    first = [r for r in rows if r["group"] == "first-call"]
    if first:
        latency = first[0]["latency_ms"]
        out += [f"**First calls** (`pytest benchmarks/bench_first_call.py`, {latency:g} ms injected latency per "
                "round trip; *ordinary* = `speculative_create=False`, the behaviour before, rounds alternated "
                "with the new one in one run; times are medians, CPU is the whole process's):", "",
                "| call | driver | round trips, before → now | wall ms, before → now | CPU µs, before → now |",
                "|---|---|--:|--:|--:|"]
        for r in sorted(first, key=lambda r: (list(CALLS).index(r["call"]), r["driver"])):
            out.append(f"| {CALLS[r['call']]} | {r['driver']} | {r['round_trips_ordinary']} → **{r['round_trips']}** "
                       f"| {r['median_ms_ordinary']:.1f} → {r['median_ms']:.1f} "
                       f"| {r['median_cpu_us_ordinary']:,.0f} → {r['median_cpu_us']:,.0f} |")
    sizes: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        if r["group"] in ("size-any-key", "size-write-heavy"):
            sizes.setdefault((r["size"], r["driver"]), {}).update(r)
    if sizes:
        out += ["", "**Wakes at each size** (`pytest benchmarks/bench_big_databases.py -k \"never_read or "
                "write_heavy\"`): round trips of a wake, of wake + a PK query for a key never read, of the index "
                "query for another key after it, the wake's preload bytes, and the first call repeating the last "
                "workload after a write-heavy awake period:", "",
                "| database | driver | interior pages | wake | wake + PK, never-read key | then index query | "
                "preload bytes | first call after a write-heavy period |", "|---|---|--:|--:|--:|--:|--:|--:|"]
        for (size, driver), r in sorted(sizes.items()):
            def cell(name: str, fmt: str = "{}") -> str:
                return fmt.format(r[name]) if name in r else "—"
            out.append(f"| {human_size(size)} | {driver} | {cell('interior_pages')} | {cell('wake_round_trips')} | "
                       f"{cell('wake_pk_round_trips')} | {cell('index_after_pk_round_trips', '+{}')} | "
                       f"{cell('preload_bytes', '{:,}')} | {cell('first_call_round_trips')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m benchmarks.first_call_report out.json [more.json ...]", file=sys.stderr)
        return 2
    files = []
    for path in paths:
        with open(path) as f:
            files.append(json.load(f))
    sys.stdout.write(render(files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
