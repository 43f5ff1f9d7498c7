"""First calls (issue 25): a new actor's first call, and an existing actor's first call
in a runtime that never started it.

Group ``first-call``: per round, a NEW actor (a type with 3 migrations: a table, an
index, a seed row) gets its first call, a write (``add``) or a read (``entries``); or an
actor that exists gets its first call from a fresh registry (``existing``). ``mode``
``speculative`` is this release (``ActorOptions.speculative_create``, the default: the
claim, the migrated image and the call's writes in ONE conditional round trip);
``ordinary`` is the behaviour before it (``speculative_create=False``: preload, then the
creation with the migrations, then the call's commit). Both modes run in the same
process, their rounds alternated, so a noisy machine shifts them alike. Recorded: the
round trips of the call (exact counts), its wall time at the run's injected latency
(``ACTOR_DB_BENCH_LATENCY_MS``, 1 ms by default) and the process CPU time it took (all
threads: the speculation's price for an actor that exists is CPU, not round trips), per
driver (memory, LMDB, Redis). ``python -m benchmarks.first_call_report out.json``
renders the tables.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

import actor_db
from benchmarks import backends
from benchmarks.bench_big_databases import open_store
from benchmarks.kvlatency import LatencyKV
from benchmarks.measure import record
from benchmarks.settings import settings

S = settings()
ROUNDS = 3 if S.quick else 20
DRIVERS = ["memory", "lmdb"] + (["redis"] if backends.redis_available() else [])
MIGRATIONS = ["CREATE TABLE entries (id INTEGER PRIMARY KEY, who TEXT NOT NULL)",
              "CREATE INDEX entries_who ON entries (who)",
              "INSERT INTO entries (who) VALUES ('seed')"]


def ledger(speculative: bool) -> Any:
    t = actor_db.actor("ledger", state=lambda: {"adds": 0}, db=actor_db.db(migrations=MIGRATIONS),
                       idle_timeout_s=None, speculative_create=speculative)

    @t.action
    async def add(c: actor_db.Context, who: str) -> int:
        await c.db.execute("INSERT INTO entries (who) VALUES (?)", who)
        c.state["adds"] += 1
        return int(c.state["adds"])

    @t.action
    async def entries(c: actor_db.Context) -> list[str]:
        return [r[0] for r in await c.db.execute("SELECT who FROM entries ORDER BY id")]

    return t


@pytest.mark.benchmark(group="first-call")
@pytest.mark.parametrize("call", ["write", "read", "existing"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_first_call(benchmark: Any, driver: str, call: str) -> None:
    """Round trips and time of a first call, both modes alternated round by round
    (pytest-benchmark's own time is of a round, both modes; each mode's median is in
    ``extra_info``)."""
    names = itertools.count()
    trips: dict[str, list[int]] = {"speculative": [], "ordinary": []}
    times: dict[str, list[float]] = {"speculative": [], "ordinary": []}
    cpu: dict[str, list[float]] = {"speculative": [], "ordinary": []}
    loop = asyncio.new_event_loop()
    with open_store(driver) as inner:
        store = LatencyKV(inner, S.latency_s)

        async def first_call(speculative: bool) -> None:
            mode = "speculative" if speculative else "ordinary"
            key = f"{mode}-{next(names)}"
            if call == "existing":  # made by another registry, which then closed
                store.latency_s = 0.0
                async with actor_db.Registry([ledger(speculative)], kv=store) as registry:
                    await registry.get_or_create("ledger", key).call("add", "before")
                store.latency_s = S.latency_s
            async with actor_db.Registry([ledger(speculative)], kv=store) as registry:
                handle = registry.get_or_create("ledger", key)
                before, started, cpu0 = store.round_trips, time.perf_counter(), time.process_time()
                if call == "read":
                    await handle.call("entries")
                else:
                    await handle.call("add", "first")
                cpu[mode].append(time.process_time() - cpu0)
                times[mode].append(time.perf_counter() - started)
                trips[mode].append(store.round_trips - before)

        def round_() -> None:
            loop.run_until_complete(first_call(False))  # the old behaviour, untimed by pytest-benchmark
            loop.run_until_complete(first_call(True))

        benchmark.pedantic(round_, rounds=ROUNDS, iterations=1)
    loop.close()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    record(benchmark, driver=driver, call=call, latency_ms=S.latency_s * 1000,
           round_trips=max(trips["speculative"]), round_trips_ordinary=max(trips["ordinary"]),
           median_ms=median(times["speculative"]) * 1000, median_ms_ordinary=median(times["ordinary"]) * 1000,
           median_cpu_us=median(cpu["speculative"]) * 1e6, median_cpu_us_ordinary=median(cpu["ordinary"]) * 1e6)
