"""SQLite's own cost of many open connections for a read, with no actor-db at all.

The floor under the runtime's "read p50 with 10,000 versus 100 awake" (issue 13): the
same one-row ``SELECT`` as :mod:`benchmarks.scale`'s read action, run straight on apsw
cursors of N plain connections on SQLite's in-memory ``memdb`` VFS (no KV, no
actor-db VFS, no runtime, SQLite's default page cache so every page stays cached)::

    python -m benchmarks.sqlite_floor --connections 100 10000

Definitions (units in the names):

- The process opens LARGE connections (``locking_mode=EXCLUSIVE``, one 10-row table
  each, the statement prepared and run once). A *pass* is ``warmup`` + ``reads``
  executions of ``cursor.execute(sql, (row,)).fetchall()``, one at a time, each on a
  connection drawn at random (``Random(seed)``) from a span of connections: the first
  SMALL (``small``) or all LARGE (``large``); its p50 is the median wall time of the last
  ``reads``. Pass pair k runs both spans with seed k, in an order alternated per pair.
- ``small_p50_us`` / ``large_p50_us``: the median of the passes' p50s;
  ``large_excess_us``: the median over pairs of p50(large) - p50(small), the time a read
  pays when its connection's memory is no longer in the CPU caches; ``large_ratio``
  the median of the pair ratios. ``rss_per_connection_bytes``: ``RssAnon`` growth over
  the LARGE opens, per connection.

Only apsw and SQLite run in the timed region, so ``large_excess_us`` is what SQLite's
own per-connection structures (connection, statement, b-tree, pager, page cache) cost in
memory stalls; no layer above SQLite can read a cold connection for less.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from typing import Any

import apsw

__all__ = ["probe_floor", "main"]

SQL = "SELECT n FROM items WHERE id = ?"
ROWS = 10


def _rss_anon() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def _open(i: int) -> tuple[apsw.Connection, apsw.Cursor]:
    con = apsw.Connection(f"file:/floor{i}?vfs=memdb",
                          flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI)
    con.execute("PRAGMA locking_mode=EXCLUSIVE")
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, v TEXT)")
    con.executemany("INSERT INTO items (n, v) VALUES (0, ?)", [("x" * 20,)] * ROWS)
    cursor = con.cursor()
    cursor.execute(SQL, (1,)).fetchall()
    return con, cursor


def _pass(cursors: list[apsw.Cursor], span: int, seed: int, reads: int, warmup: int) -> float:
    """One pass over the first ``span`` cursors: its p50 (s)."""
    rng = random.Random(seed)
    draws = [(cursors[int(rng.random() * span)], (rng.randint(1, ROWS),)) for _ in range(warmup + reads)]
    clock = time.perf_counter
    lat: list[float] = []
    for n, (cursor, args) in enumerate(draws):
        t0 = clock()
        cursor.execute(SQL, args).fetchall()
        if n >= warmup:
            lat.append(clock() - t0)
    return statistics.median(lat)


def probe_floor(small: int, large: int, pairs: int, reads: int, warmup: int) -> dict[str, Any]:
    """Open ``large`` connections, then ``pairs`` pairs of passes over the first ``small``
    and over all of them (see the module docstring)."""
    rss0 = _rss_anon()
    opened = [_open(i) for i in range(large)]
    rss = (_rss_anon() - rss0) / large
    cursors = [cursor for _con, cursor in opened]
    p50: dict[str, list[float]] = {"small": [], "large": []}
    for k in range(pairs):
        order = [("small", small), ("large", large)]
        for name, span in (order if k % 2 == 0 else order[::-1]):
            p50[name].append(_pass(cursors, span, k, reads, warmup) * 1e6)
    for con, _cursor in opened:
        con.close()
    return {
        "small": small, "large": large, "pairs": pairs, "reads": reads, "warmup": warmup,
        "sqlite_version": apsw.sqlite_lib_version(),
        "small_p50_us": statistics.median(p50["small"]),
        "large_p50_us": statistics.median(p50["large"]),
        "large_excess_us": statistics.median(b - a for a, b in zip(p50["small"], p50["large"])),
        "large_ratio": statistics.median(b / a for a, b in zip(p50["small"], p50["large"])),
        "rss_per_connection_bytes": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs=2, default=[100, 10_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--pairs", type=int, default=8, help="pairs of passes (one over SMALL, one over LARGE)")
    parser.add_argument("--reads", type=int, default=5000, help="recorded reads per pass")
    parser.add_argument("--warmup", type=int, default=500, help="unrecorded reads opening each pass")
    args = parser.parse_args(argv)
    small, large = args.connections
    if not 0 < small < large:
        parser.error("--connections needs SMALL LARGE with 0 < SMALL < LARGE")
    json.dump(probe_floor(small, large, args.pairs, args.reads, args.warmup), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
