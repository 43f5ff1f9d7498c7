"""Actors at scale (issue 13): threads, memory, latency and CPU with many awake actors.

Run one probe per fresh process (each prints one JSON object)::

    python -m benchmarks.scale awake --actors 10000        # threads, memory, read p50, wake/sleep CPU
    python -m benchmarks.scale cpu --actions 3000           # CPU per cached read / 1-row write action
    python -m benchmarks.scale latency --actors 1 64 256    # write throughput, 5 ms per round trip
    python -m benchmarks.scale callers --callers 64         # ONE actor, 64 concurrent writers, 5 ms

Definitions (units in the names):

- ``threads``: ``threading.active_count()`` with every actor awake (OS threads of the
  process that Python knows about: the main thread, the runtime's pool, LMDB/Redis
  have none of their own).
- ``rss_anon_per_awake_actor_bytes``: (``RssAnon`` with N awake) - (``RssAnon`` before
  the first wake), over N; ``vm_size_bytes``: ``VmSize`` (virtual memory) with N awake.
- ``read_p50_us``: median wall time of one ``handle.call("read", id)`` (a warm
  ``SELECT`` of one row), calls made one at a time to random awake actors.
- ``wake_all_cpu_per_actor_us``: process CPU time (all threads) to wake N actors with one
  ``asyncio.gather``, over N; ``wake_one_cpu_per_actor_us`` the same N actors one at a
  time, from the same state (heap trimmed, all asleep); ``sleep_all_cpu_per_actor_us``
  / ``sleep_one_cpu_per_actor_us`` to put all N to sleep at once / one at a time.
- ``cpu_per_read_action_us`` / ``cpu_per_write_action_us``: process CPU time of N
  sequential actions on one actor over N (MemoryKV, no injected latency); the write
  action updates one row (one commit).
- ``throughput_per_s``: actions per second of wall time; ``speedup`` versus one actor.

Process CPU time counts every thread, so a thread hop's cost on both sides is included.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import random
import statistics
import sys
import threading
import time
from typing import Any

import actor_db
from actor_db.kv import MemoryKV

from benchmarks.kvlatency import LatencyKV

__all__ = ["definition", "probe_awake", "probe_cpu", "probe_latency", "probe_callers", "main"]

ROWS = 10


def definition() -> Any:
    """The probe's actor type ``s``: a 10-row table, a read and a 1-row write action."""
    s = actor_db.actor(
        "s", state=lambda: {"n": 0},
        db=actor_db.db(migrations=["CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, v TEXT)"]),
        idle_timeout_s=None)

    @s.action
    async def seed(c: Any) -> None:
        await c.db.executemany("INSERT INTO items (n, v) VALUES (0, ?)", [("x" * 20,)] * ROWS)

    @s.action
    async def read(c: Any, row_id: int) -> int:
        rows = await c.db.execute("SELECT n FROM items WHERE id = ?", row_id)
        return int(rows[0][0])

    @s.action
    async def write(c: Any, row_id: int) -> None:
        await c.db.execute("UPDATE items SET n = n + 1 WHERE id = ?", row_id)

    return s


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _settle() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _registry(store: Any, **options: Any) -> Any:
    try:
        return actor_db.Registry([definition()], kv=store, **options)
    except TypeError:  # an older runtime without the option
        return actor_db.Registry([definition()], kv=store)


async def _gather_chunked(coros: list[Any], chunk: int = 2000) -> None:
    for i in range(0, len(coros), chunk):
        await asyncio.gather(*coros[i:i + chunk])


async def probe_awake(actors: int, reads: int, options: dict[str, Any]) -> dict[str, Any]:
    """Wake ``actors`` actors (created beforehand, asleep), measure, read, sleep them."""
    store = MemoryKV()
    registry = _registry(store, **options)
    handles = [registry.get_or_create("s", f"a{i}") for i in range(actors)]
    for h in handles[:1]:
        await h.call("seed")
    # Create every actor with its table (asleep afterwards); one at a time keeps it simple.
    for h in handles[1:]:
        await h.call("seed")
        await h.sleep()
    await handles[0].sleep()
    _settle()
    rss0 = _status("RssAnon")
    cpu = time.process_time()
    await _gather_chunked([h.wake() for h in handles])
    wake_all_cpu = (time.process_time() - cpu) / actors
    for h in handles:  # one read each: the table's page in SQLite's cache
        await h.call("read", 1)
    _settle()
    out: dict[str, Any] = {
        "actors": actors,
        "threads": threading.active_count(),
        "rss_anon_per_awake_actor_bytes": (_status("RssAnon") - rss0) / actors,
        "vm_size_bytes": _status("VmSize"),
        "wake_all_cpu_per_actor_us": wake_all_cpu * 1e6,
    }
    rng = random.Random(1)
    lat: list[float] = []
    cpu = time.process_time()
    for _ in range(reads):
        h = handles[rng.randrange(actors)]
        t0 = time.perf_counter()
        await h.call("read", rng.randint(1, ROWS))
        lat.append(time.perf_counter() - t0)
    out["read_cpu_per_action_us"] = (time.process_time() - cpu) / reads * 1e6
    out["read_p50_us"] = statistics.median(lat) * 1e6
    cpu = time.process_time()
    await _gather_chunked([h.sleep() for h in handles])
    out["sleep_all_cpu_per_actor_us"] = (time.process_time() - cpu) / actors * 1e6
    # One at a time, the SAME actors from the same heap state as "all at once" (the heap
    # trimmed, every actor awake at the end): a per-actor cost grows with the number
    # of awake actors (memory touched for the first time, caches), not with how the
    # wakes are issued, so waking only a few here would compare unlike things.
    _settle()
    cpu = time.process_time()
    for h in handles:
        await h.wake()
    out["wake_one_cpu_per_actor_us"] = (time.process_time() - cpu) / actors * 1e6
    cpu = time.process_time()
    for h in handles:
        await h.sleep()
    out["sleep_one_cpu_per_actor_us"] = (time.process_time() - cpu) / actors * 1e6
    await registry.close()
    return out


async def probe_cpu(actions: int, options: dict[str, Any]) -> dict[str, Any]:
    """CPU per cached read action and per 1-row write action on one actor (no latency)."""
    registry = _registry(MemoryKV(), **options)
    h = registry.get_or_create("s", "cpu")
    await h.call("seed")
    for i in range(200):  # warm up both paths
        await h.call("read", 1 + i % ROWS)
        await h.call("write", 1 + i % ROWS)
    out: dict[str, Any] = {"actions": actions}
    for name in ("read", "write"):
        trips = h.metrics()["kv_round_trips"]
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(actions):
            await h.call(name, 1 + i % ROWS)
        out[f"cpu_per_{name}_action_us"] = (time.process_time() - cpu) / actions * 1e6
        out[f"wall_per_{name}_action_us"] = (time.perf_counter() - wall) / actions * 1e6
        out[f"kv_round_trips_per_{name}_action"] = (h.metrics()["kv_round_trips"] - trips) / actions
    await registry.close()
    return out


async def probe_latency(actors: int, seconds: float, latency_s: float, options: dict[str, Any]) -> dict[str, Any]:
    """``actors`` actors, each with one client doing 1-row write actions back to back."""
    store = LatencyKV(MemoryKV(), 0.0)
    registry = _registry(store, **options)
    handles = [registry.get_or_create("s", f"l{i}") for i in range(actors)]
    await _gather_chunked([h.call("seed") for h in handles])
    store.latency_s = latency_s
    done = [0]
    stop = time.perf_counter() + seconds
    failures: list[BaseException] = []

    async def client(i: int) -> None:
        h = handles[i]
        n = 0
        while time.perf_counter() < stop:
            try:
                await h.call("write", 1 + n % ROWS)
            except Exception as exc:  # counted, reported
                failures.append(exc)
            n += 1
            done[0] += 1

    trips = store.round_trips
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(actors)))
    wall = time.perf_counter() - started
    out = {"actors": actors, "latency_ms": latency_s * 1000, "actions": done[0], "throughput_per_s": done[0] / wall,
           "round_trips_per_action": (store.round_trips - trips) / max(done[0], 1), "failures": len(failures),
           "threads": threading.active_count()}
    store.latency_s = 0.0
    await registry.close()
    return out


async def probe_callers(callers: int, seconds: float, latency_s: float, options: dict[str, Any]) -> dict[str, Any]:
    """ONE actor, ``callers`` concurrent clients each doing 1-row writes back to back."""
    store = LatencyKV(MemoryKV(), 0.0)
    registry = _registry(store, **options)
    h = registry.get_or_create("s", "one")
    await h.call("seed")
    store.latency_s = latency_s
    done = [0]
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            await h.call("write", 1 + (i + n) % ROWS)
            n += 1
            done[0] += 1

    trips = store.round_trips
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(callers)))
    wall = time.perf_counter() - started
    out = {"callers": callers, "latency_ms": latency_s * 1000, "actions": done[0],
           "throughput_per_s": done[0] / wall, "round_trips_per_action": (store.round_trips - trips) / max(done[0], 1)}
    store.latency_s = 0.0
    await registry.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=["awake", "cpu", "latency", "callers"])
    parser.add_argument("--actors", type=int, nargs="+", default=[100])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--actions", type=int, default=3000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=JSON",
                        help="a Registry option, e.g. max_threads=64")
    args = parser.parse_args(argv)
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    results: list[dict[str, Any]] = []
    if args.probe == "awake":
        for n in args.actors:
            results.append(asyncio.run(probe_awake(n, args.reads, options)))
    elif args.probe == "cpu":
        results.append(asyncio.run(probe_cpu(args.actions, options)))
    elif args.probe == "latency":
        for n in args.actors:
            results.append(asyncio.run(probe_latency(n, args.seconds, args.latency_ms / 1000, options)))
    else:
        results.append(asyncio.run(probe_callers(args.callers, args.seconds, args.latency_ms / 1000, options)))
    json.dump(results if len(results) > 1 else results[0], sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
