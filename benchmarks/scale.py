"""Actors at scale (issue 13): threads, memory, latency and CPU with many awake actors.

Run one probe per fresh process (each prints one JSON object)::

    python -m benchmarks.scale awake --actors 10000        # threads, memory, read p50, wake/sleep CPU
    python -m benchmarks.scale compare --actors 100 10000   # read p50 ratio, 10,000 vs 100 awake
    python -m benchmarks.scale cpu --actions 3000           # CPU per cached read / 1-row write action
    python -m benchmarks.scale latency --actors 1 64 256    # write throughput, 5 ms per round trip
    python -m benchmarks.scale speedup --actors 1 64 256    # the same, counts run in turns (ratios)
    python -m benchmarks.scale callers --callers 64         # ONE actor, 64 concurrent writers, 5 ms

Definitions (units in the names):

- ``threads``: ``threading.active_count()`` with every actor awake (OS threads of the
  process that Python knows about: the main thread, the runtime's pool, LMDB/Redis
  have none of their own); ``os_threads_max``: the most ``Threads`` of
  ``/proc/self/status`` (every OS thread, native ones too) seen after each wake and
  read phase; ``pool_peak_threads`` the most pool threads that ever existed at once,
  ``max_threads`` the pool's cap. With MemoryKV no call blocks, so the pool starts none.
- ``rss_anon_per_awake_actor_bytes``: (``RssAnon`` with N awake) - (``RssAnon`` before
  the first wake), over N, both after ``gc.collect()`` and ``malloc_trim(0)``; the N
  actors were each created (``seed``) and put to sleep, one at a time, before (so what
  a first wake leaves after sleep is not counted); ``vm_size_bytes``: ``VmSize``
  (virtual memory) with N awake.
- A *read pass*: ``gc.collect(1)``, then ``warmup`` + ``reads`` calls of
  ``handle.call("read", row)`` (a warm one-row ``SELECT``) made one at a time, actor
  ``handles[int(u * n)]`` and row drawn from ``Random(seed)``; its p50 is the median wall
  time of the last ``reads`` calls. ``read_p50_us`` (awake): the median of ``passes``
  such p50s over all N awake actors (seeds 1000, 1001, ...); it is one process at one
  moment, so comparing it across runs mixes in the machine's load.
- ``read_p50_ratio`` (compare): the cost of many awake actors for a read, measured so
  that machine noise cancels. Two processes live at once, one with SMALL actors awake,
  one with LARGE (each set up as in ``awake``); the parent runs read passes in them in
  turn, never two at once: pair k is three passes with seed 2000 + k (the same draws):
  ``small`` (the SMALL process, its SMALL actors), ``large`` (the LARGE process, all its
  actors) and ``hot`` (the LARGE process, its first SMALL actors only: the same working
  set as ``small`` with many more awake), in an order rotated each pair and reversed
  every three pairs, so a drift hits every arm alike. Pair ratio = p50(large) /
  p50(small); ``read_p50_ratio`` is the median of the ``pairs`` pair ratios,
  ``..._q1`` / ``..._q3`` their quartiles, ``large_read_p50_excess_us`` the median pair
  difference p50(large) - p50(small) (steadier than the ratio when the machine's load
  moves both: the load scales the base, the extra memory cost adds a near-constant
  time); ``hot_read_p50_ratio`` / ``hot_read_p50_excess_us`` the same for ``hot``;
  ``*_read_p50_us`` the median of each arm's per-pass p50s. ``large`` / ``small`` is
  what issue 13 asks about (reads spread over every awake actor, whose memory then no
  longer fits the CPU caches); ``hot`` / ``small`` isolates the runtime's own
  per-awake-actor overhead (GC, dictionaries) from that memory effect. ``loadavg``: the
  machine's 1-minute load average before and after (2 cores: above ~1 means another
  process shared the CPUs and their caches).
- ``wake_all_cpu_per_actor_us``: process CPU time (all threads) to wake N actors with one
  ``asyncio.gather``, over N; ``wake_one_cpu_per_actor_us`` the same N actors one at a
  time, from the same state (heap trimmed, all asleep, each woken before); with the
  one-at-a-time pair, ``wake_all_cpu_per_actor_us`` is measured again after it, from
  that same state, and ``first_wake_all_cpu_per_actor_us`` keeps the first wake after
  the actors' creation (fresh heap pages, first statements); ``sleep_all_cpu_per_actor_us``
  / ``sleep_one_cpu_per_actor_us`` to put all N to sleep at once / one at a time
  (``--no-one-at-a-time`` skips the one-at-a-time pair). ``create_wall_s``,
  ``setup_wall_s``, ``wall_s``: wall time to create the N actors, to have them awake,
  and of the whole probe.
- ``cpu_per_read_action_us`` / ``cpu_per_write_action_us``: process CPU time per action
  of sequential actions on one actor (MemoryKV, no injected latency), the median of 9
  read passes and 9 write passes run in turns (N / 9 actions each); the write action
  updates one row (one commit).
- ``throughput_per_s``: actions per second of wall time; ``speedup`` versus one actor.
  ``speedup`` (the probe): every actor count has its own registry and store, all alive
  at once, and they run in turns (``--rounds`` rounds, each running every count once for
  ``--settle`` + ``--seconds`` seconds, only the last ``--seconds`` counted, the order
  rotated each round); ``throughput_per_s`` is the median over rounds, ``speedup`` the
  median over rounds of (throughput / the 1-actor throughput of the same round),
  ``speedup_min`` / ``speedup_max`` the extremes: the machine's drift between two runs
  minutes apart no longer enters the ratio. Its ``threads`` is the main thread plus the
  most pool threads of that count's registry (what one process per count would have).

Process CPU time counts every thread, so a thread hop's cost on both sides is included.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import actor_db
from actor_db.kv import MemoryKV

from benchmarks.kvlatency import LatencyKV

__all__ = ["definition", "probe_awake", "probe_compare", "serve_reads", "probe_cpu", "probe_latency", "probe_speedup",
           "probe_callers", "main"]

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


def _status(field: str, unit: int = 1024) -> int:
    """A field of ``/proc/self/status``: kB fields in bytes, ``unit=1`` for counts."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * unit
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


async def _create(registry: Any, actors: int) -> list[Any]:
    """``actors`` handles to seeded actors, all asleep: each created by its own ``seed``
    action then put to sleep, one at a time (about 1 ms per actor, CPU-bound: gathering
    them is no faster, and copying a seeded actor's keys into the store was tried and
    dropped: it saved little once each copy had to be woken once, as it must, since a
    first wake leaves a few KiB per actor that stay after sleep)."""
    handles = [registry.get_or_create("s", f"a{i}") for i in range(actors)]
    for h in handles:
        await h.call("seed")
        await h.sleep()
    return handles


async def _read_pass(handles: list[Any], seed: int, reads: int, warmup: int) -> tuple[list[float], float]:
    """One pass of ``warmup`` + ``reads`` read actions, one at a time, on random actors
    of ``handles``: the wall times (s) of the last ``reads`` and the process CPU time (s)
    of all. Draws come from ``Random(seed)``, the actor is ``handles[int(u * len)]``, so
    two passes with one seed make the same draws whatever the number of actors."""
    gc.collect(1)  # the young generations empty at the start of every pass
    rng = random.Random(seed)
    n_actors = len(handles)
    draws = [(handles[int(rng.random() * n_actors)], rng.randint(1, ROWS)) for _ in range(warmup + reads)]
    lat: list[float] = []
    clock = time.perf_counter
    cpu = time.process_time()
    for n, (h, row) in enumerate(draws):
        t0 = clock()
        await h.call("read", row)
        if n >= warmup:
            lat.append(clock() - t0)
    return lat, time.process_time() - cpu


async def _wake_all(registry: Any, actors: int) -> tuple[list[Any], dict[str, Any]]:
    """Create ``actors`` actors (asleep), wake them all with one (chunked) gather, read one
    row of each: the handles and the figures of the wake."""
    started = time.perf_counter()
    handles = await _create(registry, actors)
    out: dict[str, Any] = {"actors": actors, "create_wall_s": time.perf_counter() - started}
    _settle()
    rss0 = _status("RssAnon")
    cpu = time.process_time()
    await _gather_chunked([h.wake() for h in handles])
    wake_all_cpu = (time.process_time() - cpu) / actors
    for h in handles:  # one read each: the table's page in SQLite's cache
        await h.call("read", 1)
    threads = _status("Threads", 1)
    _settle()
    out.update({
        "threads": threading.active_count(),
        "os_threads": threads,
        "rss_anon_per_awake_actor_bytes": (_status("RssAnon") - rss0) / actors,
        "vm_size_bytes": _status("VmSize"),
        "wake_all_cpu_per_actor_us": wake_all_cpu * 1e6,
        "setup_wall_s": time.perf_counter() - started,
    })
    return handles, out


async def probe_awake(actors: int, reads: int, options: dict[str, Any], *, passes: int = 3, warmup: int = 200,
                      one_at_a_time: bool = True) -> dict[str, Any]:
    """Wake ``actors`` actors (created beforehand, asleep), measure, read, sleep them."""
    started = time.perf_counter()
    store = MemoryKV()
    registry = _registry(store, **options)
    handles, out = await _wake_all(registry, actors)
    threads = [out["os_threads"]]
    p50s: list[float] = []
    cpu = 0.0
    for k in range(passes):
        lat, spent = await _read_pass(handles, 1000 + k, reads, warmup)
        p50s.append(statistics.median(lat))
        cpu += spent
    out["read_cpu_per_action_us"] = cpu / (passes * (reads + warmup)) * 1e6
    out["read_p50_us"] = statistics.median(p50s) * 1e6
    out["read_p50_passes_us"] = [round(x * 1e6, 2) for x in p50s]
    threads.append(_status("Threads", 1))
    cpu = time.process_time()
    await _gather_chunked([h.sleep() for h in handles])
    out["sleep_all_cpu_per_actor_us"] = (time.process_time() - cpu) / actors * 1e6
    if one_at_a_time:
        # One at a time, the SAME actors from the same heap state as "all at once" (the heap
        # trimmed, every actor awake at the end): a per-actor cost grows with the number
        # of awake actors (memory touched for the first time, caches), not with how the
        # wakes are issued, so waking only a few here would compare unlike things.
        _settle()
        cpu = time.process_time()
        for h in handles:
            await h.wake()
        out["wake_one_cpu_per_actor_us"] = (time.process_time() - cpu) / actors * 1e6
        threads.append(_status("Threads", 1))
        cpu = time.process_time()
        for h in handles:
            await h.sleep()
        out["sleep_one_cpu_per_actor_us"] = (time.process_time() - cpu) / actors * 1e6
        # All at once again, now from the state the one-at-a-time wake started from: the
        # first wake above is also every actor's first wake after its creation (fresh
        # heap pages, first statements), which the one-at-a-time wake never is.
        out["first_wake_all_cpu_per_actor_us"] = out["wake_all_cpu_per_actor_us"]
        _settle()
        cpu = time.process_time()
        await _gather_chunked([h.wake() for h in handles])
        out["wake_all_cpu_per_actor_us"] = (time.process_time() - cpu) / actors * 1e6
        await _gather_chunked([h.sleep() for h in handles])
    pool = registry.pool
    out.update({"os_threads_max": max(threads), "pool_peak_threads": pool.peak_threads,
                "max_threads": pool.max_threads})
    await registry.close()
    out["wall_s"] = time.perf_counter() - started
    return out


async def serve_reads(actors: int, options: dict[str, Any]) -> None:
    """The child side of :func:`probe_compare`: wake ``actors`` actors, print their
    figures (one JSON line), then for each ``SEED READS WARMUP SPAN`` line on stdin run
    one read pass on the first SPAN actors and print its p50 (µs); stop at end of input."""
    registry = _registry(MemoryKV(), **options)
    handles, out = await _wake_all(registry, actors)
    print(json.dumps(out), flush=True)
    for line in sys.stdin:
        seed, reads, warmup, span = (int(x) for x in line.split())
        lat, _cpu = await _read_pass(handles[:span], seed, reads, warmup)
        print(json.dumps({"p50_us": statistics.median(lat) * 1e6}), flush=True)
    await registry.close()


def probe_compare(small: int, large: int, pairs: int, reads: int, warmup: int,
                  option_args: list[str]) -> dict[str, Any]:
    """Read p50 with ``large`` versus ``small`` awake actors: two live processes, read
    passes alternated between them (see the module docstring)."""
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    cmd = [sys.executable, "-m", "benchmarks.scale", "serve"]
    for o in option_args:
        cmd += ["--option", o]
    procs = {n: subprocess.Popen(cmd + ["--actors", str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, bufsize=1) for n in (small, large)}
    # The arms: (name, process, actors read); "hot" reads the first ``small`` actors of
    # the large process (same working set as "small", many more awake).
    arms = [("small", small, small), ("large", large, large), ("hot", large, small)]
    p50: dict[str, list[float]] = {name: [] for name, _, _ in arms}
    try:
        setup = {n: json.loads(p.stdout.readline()) for n, p in procs.items()}  # type: ignore[union-attr]
        for k in range(pairs):
            order = arms[k % 3:] + arms[:k % 3]
            for name, n, span in (order if (k // 3) % 2 == 0 else order[::-1]):
                p = procs[n]
                p.stdin.write(f"{2000 + k} {reads} {warmup} {span}\n")  # type: ignore[union-attr]
                p50[name].append(float(json.loads(p.stdout.readline())["p50_us"]))  # type: ignore[union-attr]
    finally:
        for p in procs.values():
            p.stdin.close()  # type: ignore[union-attr]
        for p in procs.values():
            p.wait(timeout=600)
    out: dict[str, Any] = {"small": small, "large": large, "pairs": pairs, "reads": reads, "warmup": warmup,
                           "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    for name in ("large", "hot"):
        ratios = [a / b for a, b in zip(p50[name], p50["small"])]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        key = "read_p50_ratio" if name == "large" else "hot_read_p50_ratio"
        out.update({key: statistics.median(ratios), f"{key}_q1": q[0], f"{key}_q3": q[2],
                    f"{name}_read_p50_excess_us": statistics.median(a - b for a, b in zip(p50[name], p50["small"]))})
    for name in p50:
        out[f"{name}_read_p50_us"] = statistics.median(p50[name])
        out[f"{name}_read_p50_passes_us"] = [round(x, 2) for x in p50[name]]
    for n, fig in setup.items():
        out[f"rss_anon_per_awake_actor_bytes_{n}"] = fig["rss_anon_per_awake_actor_bytes"]
    out["wall_s"] = time.perf_counter() - started
    return out


async def probe_cpu(actions: int, options: dict[str, Any], passes: int = 9) -> dict[str, Any]:
    """CPU per cached read action and per 1-row write action on one actor (no latency):
    ``passes`` read passes and write passes in turns, ``actions / passes`` actions each;
    the figures are the median pass (a burst of load on the machine moves one pass, not
    the result)."""
    registry = _registry(MemoryKV(), **options)
    h = registry.get_or_create("s", "cpu")
    await h.call("seed")
    for i in range(200):  # warm up both paths
        await h.call("read", 1 + i % ROWS)
        await h.call("write", 1 + i % ROWS)
    per_pass = max(actions // passes, 1)
    cpu_us: dict[str, list[float]] = {"read": [], "write": []}
    wall_us: dict[str, list[float]] = {"read": [], "write": []}
    trips = {"read": 0, "write": 0}
    for _ in range(passes):
        for name in ("read", "write"):
            before = h.metrics()["kv_round_trips"]
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(per_pass):
                await h.call(name, 1 + i % ROWS)
            cpu_us[name].append((time.process_time() - cpu) / per_pass * 1e6)
            wall_us[name].append((time.perf_counter() - wall) / per_pass * 1e6)
            trips[name] += h.metrics()["kv_round_trips"] - before
    out: dict[str, Any] = {"actions": per_pass * passes, "passes": passes}
    for name in ("read", "write"):
        out[f"cpu_per_{name}_action_us"] = statistics.median(cpu_us[name])
        out[f"wall_per_{name}_action_us"] = statistics.median(wall_us[name])
        out[f"kv_round_trips_per_{name}_action"] = trips[name] / (per_pass * passes)
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


async def probe_speedup(counts: list[int], rounds: int, phase_s: float, settle_s: float, latency_s: float,
                        options: dict[str, Any]) -> list[dict[str, Any]]:
    """Write throughput of ``counts`` actors (the first must be 1) with ``latency_s`` per
    round trip, measured in turns so that the machine's drift cancels in the ratios.

    Each actor count has its own registry and store (its own pool and group committer),
    all alive at once. A *round* runs every count once, in an order rotated each round:
    its clients write back to back for ``settle_s + phase_s`` seconds and only the
    actions that end in the last ``phase_s`` count (the first ``settle_s`` let the
    group committer learn how many actors write). ``speedup`` of a count is the median,
    over rounds, of its throughput over the 1-actor throughput of the same round.
    """
    if not counts or counts[0] != 1:
        raise ValueError("speedup needs --actors 1 N ...: ratios are to one actor")
    arms = []
    for n in counts:
        store = LatencyKV(MemoryKV(), 0.0)
        registry = _registry(store, **options)
        handles = [registry.get_or_create("s", f"p{n}-{i}") for i in range(n)]
        await _gather_chunked([h.call("seed") for h in handles])
        arms.append({"n": n, "store": store, "registry": registry, "handles": handles, "runs": [],
                     "actions": 0, "trips": 0, "failures": 0, "threads": 0})

    async def phase(arm: dict[str, Any]) -> float:
        store, handles = arm["store"], arm["handles"]
        store.latency_s = latency_s
        started = time.perf_counter()
        counted_from, stop = started + settle_s, started + settle_s + phase_s
        counted = [0]
        trips: list[int] = []

        async def client(h: Any) -> None:
            n = 0
            while time.perf_counter() < stop:
                try:
                    await h.call("write", 1 + n % ROWS)
                except Exception:  # counted, reported
                    arm["failures"] += 1
                n += 1
                if time.perf_counter() >= counted_from:
                    counted[0] += 1
                    if not trips:
                        trips.append(store.round_trips)

        await asyncio.gather(*(client(h) for h in handles))
        arm["threads"] = 1 + arm["registry"].pool.peak_threads  # the main thread + this count's pool
        store.latency_s = 0.0
        arm["actions"] += counted[0]
        arm["trips"] += store.round_trips - (trips[0] if trips else store.round_trips)
        return counted[0] / phase_s

    for r in range(rounds):
        order = arms[r % len(arms):] + arms[:r % len(arms)]
        for arm in order:
            arm["runs"].append(await phase(arm))
    out = []
    for arm in arms:
        ratios = sorted(run / one for run, one in zip(arm["runs"], arms[0]["runs"]))
        out.append({"actors": arm["n"], "latency_ms": latency_s * 1000, "rounds": rounds, "phase_s": phase_s,
                    "actions": arm["actions"], "throughput_per_s": statistics.median(arm["runs"]),
                    "throughput_runs": arm["runs"], "speedup": statistics.median(ratios),
                    "speedup_min": ratios[0], "speedup_max": ratios[-1],
                    "round_trips_per_action": arm["trips"] / max(arm["actions"], 1),
                    "failures": arm["failures"], "threads": arm["threads"]})
        await arm["registry"].close()
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
    parser.add_argument("probe", choices=["awake", "compare", "serve", "cpu", "latency", "speedup", "callers"])
    parser.add_argument("--actors", type=int, nargs="+", default=[100])
    parser.add_argument("--reads", type=int, default=3000, help="recorded read actions per pass")
    parser.add_argument("--passes", type=int, default=3, help="awake: read passes")
    parser.add_argument("--pairs", type=int, default=40, help="compare: pairs of read passes")
    parser.add_argument("--warmup", type=int, default=200, help="unrecorded read actions opening each pass")
    parser.add_argument("--no-one-at-a-time", dest="one_at_a_time", action="store_false",
                        help="awake: skip the one-at-a-time wake and sleep measures")
    parser.add_argument("--actions", type=int, default=3000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="speedup: rounds (each runs every actor count once)")
    parser.add_argument("--settle", type=float, default=0.25, help="speedup: seconds of each phase not counted")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=JSON",
                        help="a Registry option, e.g. max_threads=64")
    args = parser.parse_args(argv)
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    results: list[dict[str, Any]] = []
    if args.probe == "awake":
        for n in args.actors:
            results.append(asyncio.run(probe_awake(n, args.reads, options, passes=args.passes, warmup=args.warmup,
                                                   one_at_a_time=args.one_at_a_time)))
    elif args.probe == "compare":
        if len(args.actors) != 2 or not 0 < args.actors[0] < args.actors[1]:
            parser.error("compare needs --actors SMALL LARGE (SMALL < LARGE)")
        results.append(probe_compare(args.actors[0], args.actors[1], args.pairs, args.reads, args.warmup,
                                     args.option))
    elif args.probe == "serve":
        asyncio.run(serve_reads(args.actors[0], options))
        return 0
    elif args.probe == "cpu":
        results.append(asyncio.run(probe_cpu(args.actions, options)))
    elif args.probe == "speedup":
        results.extend(asyncio.run(probe_speedup(args.actors, args.rounds, args.seconds, args.settle,
                                                 args.latency_ms / 1000, options)))
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
