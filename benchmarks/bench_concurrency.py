"""Concurrency: many actors doing mixed actions against a KV with 1 ms and 5 ms latency.

Every actor (type ``conc``, a 100-row table) runs its own client loop of actions, one
at a time, and all actors run at once on one event loop (the runtime runs their SQLite
calls and KV writes on one bounded thread pool, default 64 threads; the injected latency
is a ``time.sleep`` that releases the GIL, so KV waits overlap as on a network). The
mix, drawn per actor from a seeded RNG:

- 60 % ``read``: ``SELECT n, length(v) FROM items WHERE id = ?`` (0 round trips warm);
- 30 % ``update``: ``UPDATE items SET n = n + 1 WHERE id = ?`` plus a ``c.state``
  change (1 round trip: the state rides in the commit's batch);
- 10 % ``insert``: one 100-byte row (1 round trip).

Actors are created and awake before timing starts. Reported: total throughput
(actions/s over the wall time of the whole run), p50 and p99 action latency (each
``handle.call`` from the client's side), and round trips per action.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from typing import Any

import pytest

from actor_db.kv import MemoryKV
from benchmarks import backends
from benchmarks.kvlatency import LatencyKV
from benchmarks.measure import record
from benchmarks.settings import settings

S = settings()
MIX = (("read", 0.6), ("update", 0.3), ("insert", 0.1))
TABLE_ROWS = 100

CASES = [
    pytest.param(actors, latency, id=f"{actors}-actors-{latency * 1000:g}ms")
    for latency in S.concurrency_latencies_s for actors in S.concurrency_actors
]
pytestmark = pytest.mark.skipif(not backends.runtime_available(), reason="the actor runtime is not in this checkout")


def _definition() -> Any:
    import actor_db

    conc = actor_db.actor(
        "conc", state=lambda: {"writes": 0},
        db=actor_db.db(migrations=["CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, v BLOB)"]),
        idle_timeout_s=None)
    payload = os.urandom(100)

    @conc.action
    async def seed(c: Any, rows: int) -> None:
        await c.db.executemany("INSERT INTO items (n, v) VALUES (0, ?)", [(payload,)] * rows)

    @conc.action
    async def read(c: Any, row_id: int) -> int:
        rows = await c.db.execute("SELECT n, length(v) FROM items WHERE id = ?", row_id)
        return int(rows[0][1])

    @conc.action
    async def update(c: Any, row_id: int) -> None:
        await c.db.execute("UPDATE items SET n = n + 1 WHERE id = ?", row_id)
        c.state["writes"] += 1

    @conc.action
    async def insert(c: Any) -> None:
        await c.db.execute("INSERT INTO items (n, v) VALUES (0, ?)", payload)

    return conc


def _plan(seed: int, count: int) -> list[tuple[str, tuple[Any, ...]]]:
    rng = random.Random(seed)
    names = [name for name, _ in MIX]
    weights = [w for _, w in MIX]
    plan: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(count):
        name = rng.choices(names, weights)[0]
        plan.append((name, () if name == "insert" else (rng.randint(1, TABLE_ROWS),)))
    return plan


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@pytest.mark.benchmark(group="concurrency")
@pytest.mark.parametrize(("actors", "latency_s"), CASES)
def test_concurrency(benchmark: Any, actors: int, latency_s: float) -> None:
    import actor_db

    per_actor = max(8, S.concurrency_actions_total // actors)
    store = LatencyKV(MemoryKV(), 0.0)
    loop = asyncio.new_event_loop()
    registry = actor_db.Registry([_definition()], kv=store)
    handles = [registry.get_or_create("conc", f"a{i}") for i in range(actors)]
    latencies: list[float] = []

    async def setup_all() -> None:
        await asyncio.gather(*(h.call("seed", TABLE_ROWS) for h in handles))

    async def client(index: int) -> None:
        handle = handles[index]
        for name, args in _plan(index, per_actor):
            started = time.perf_counter()
            await handle.call(name, *args)
            latencies.append(time.perf_counter() - started)

    async def run_all() -> None:
        await asyncio.gather(*(client(i) for i in range(actors)))

    try:
        loop.run_until_complete(setup_all())
        store.latency_s = latency_s
        before = store.round_trips
        started = time.perf_counter()
        benchmark.pedantic(lambda: loop.run_until_complete(run_all()), rounds=1, iterations=1)
        wall = time.perf_counter() - started
        trips = store.round_trips - before
        total = actors * per_actor
        assert len(latencies) == total
        record(benchmark, backend="ours (runtime)", actors=actors, latency_ms=latency_s * 1000.0, actions=total,
               mix="60% read / 30% update+state / 10% insert", throughput_per_s=total / wall,
               p50_ms=_percentile(latencies, 0.5) * 1000.0, p99_ms=_percentile(latencies, 0.99) * 1000.0,
               mean_ms=statistics.fmean(latencies) * 1000.0, round_trips=trips, round_trips_per_action=trips / total,
               threads=registry.pool.peak_threads)
    finally:
        store.latency_s = 0.0
        loop.run_until_complete(registry.close())
        loop.close()
