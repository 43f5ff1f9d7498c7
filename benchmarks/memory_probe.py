"""Measure resident memory per awake and per sleeping actor, in a fresh process.

Run by :mod:`benchmarks.bench_memory` as ``python -m benchmarks.memory_probe --actors N``;
prints one JSON object. Resident memory is the process's anonymous resident set
(``RssAnon`` in ``/proc/self/status``, bytes): heap, thread stacks and SQLite's
allocations, but not the LMDB store's file-backed pages, so the stored data itself is
not charged to the actors. Steps:

1. a registry on a fresh LMDB store; one actor created, used and put to sleep so that
   code paths and caches are warm; ``base`` measured;
2. N actors created one after another (each a 100-row table), each put to sleep before
   the next is created (at most one awake at a time); ``asleep``;
3. all N woken by one query each, all awake at once; ``awake``.

Before each measurement: ``gc.collect()`` and ``malloc_trim(0)`` (freed heap goes back
to the OS). Per sleeping actor = (asleep - base) / N; per awake actor = (awake - base) / N
(everything an awake actor holds, its sleeping part included). SQLite's own heap
(``apsw.memory_used()``) is reported alongside.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import sys
import tempfile
import threading
from typing import Any

import apsw

import actor_db
from actor_db.kv import LmdbKV


def rss_anon_bytes() -> int:
    """``RssAnon`` of this process in bytes (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def _settle() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS just stays higher
        pass


async def probe(actors: int, rows: int, path: str) -> dict[str, Any]:
    definition = actor_db.actor(
        "mem", state=lambda: {"n": 0},
        db=actor_db.db(migrations=["CREATE TABLE items (id INTEGER PRIMARY KEY, v BLOB)"]),
        idle_timeout_s=None)
    payload = b"x" * 100

    @definition.action
    async def count(c: Any) -> int:
        rows_ = await c.db.execute("SELECT count(*), sum(length(v)) FROM items")
        return int(rows_[0][0])

    @definition.action
    async def fill(c: Any, count: int) -> int:
        await c.db.executemany("INSERT INTO items (v) VALUES (?)", [(payload,)] * count)
        c.state["n"] += count
        rows_ = await c.db.execute("SELECT count(*) FROM items")
        return int(rows_[0][0])

    store = LmdbKV(path, durable=False)
    registry = actor_db.Registry([definition], kv=store)
    warm = registry.get_or_create("mem", "warmup")
    await warm.call("fill", rows)
    await warm.sleep()
    _settle()
    base, base_sqlite = rss_anon_bytes(), apsw.memory_used()
    handles = [registry.get_or_create("mem", f"a{i}") for i in range(actors)]
    for handle in handles:
        await handle.call("fill", rows)
        await handle.sleep()
    _settle()
    asleep, asleep_sqlite = rss_anon_bytes(), apsw.memory_used()
    counts = await asyncio.gather(*(h.call("count") for h in handles))
    assert counts == [rows] * actors, counts
    _settle()
    awake, awake_sqlite, threads = rss_anon_bytes(), apsw.memory_used(), threading.active_count()
    await registry.close()
    store.close()
    return {
        "actors": actors, "rows_per_actor": rows,
        "per_awake_bytes": (awake - base) / actors, "per_sleeping_bytes": (asleep - base) / actors,
        "sqlite_heap_per_awake_bytes": (awake_sqlite - base_sqlite) / actors,
        "sqlite_heap_per_sleeping_bytes": (asleep_sqlite - base_sqlite) / actors,
        "threads_awake": threads, "rss_anon_base_bytes": base,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="actor-db-bench-mem-") as path:
        result = asyncio.run(probe(args.actors, args.rows, os.path.join(path, "kv")))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
