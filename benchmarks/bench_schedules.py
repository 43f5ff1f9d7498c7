"""Durable schedules (issue 23): firing lateness, idle polling cost, cost of scheduling.

Run: ``python -m pytest benchmarks/bench_schedules.py --benchmark-json=out.json`` (the
figures are in each result's ``extra_info``; ``--bench-quick`` for a smoke run).

- ``schedules-lateness``: ``ENTRIES`` entries over ``ACTORS`` actors, due at
  ``RATE`` entries per second, fired by one registry. Lateness = the fired action's
  start (its first line) minus the entry's due time, ms. The actors are awake (the
  steady state; ``schedules-lateness-wakes`` measures fires that must wake their actor,
  at 100 per second). The issue's figure is 100,000 entries over 10,000 actors at
  1,000/s (100 s per store: ``ACTOR_DB_BENCH_SCHEDULES_FULL=1``); by default it is
  scaled down (see ``ENTRIES``/``ACTORS``), at the same rate. The window is the due
  times plus 60 s, counted from the first due time.
- ``schedules-lateness-asleep``: the same, every actor asleep when the firing starts
  (default idle timeout): each actor's first fire wakes it, ``RATE`` wakes per second
  over the first ``ACTORS`` entries (concurrent wakes share store calls).
- ``schedules-idle``: store round trips per second a running registry spends reading
  the due index while nothing is due, with no entry and with ``IDLE_ENTRIES`` entries
  (far in the future) over ``IDLE_ACTORS`` actors: the same.
- ``schedules-cost``: KV round trips of an action that inserts a row and changes its
  state, without and with one ``c.schedule.after`` (it rides the same batch: 0 extra).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from typing import Any, Iterator

import pytest

import actor_db
from actor_db.kv import KVStore, LmdbKV, MemoryKV
from actor_db.runtime.actor import DEFAULT_IDLE_TIMEOUT_S
from actor_db.runtime.schedule import Entry, PendingSchedule

QUICK = os.environ.get("ACTOR_DB_BENCH_QUICK") == "1"
FULL = os.environ.get("ACTOR_DB_BENCH_SCHEDULES_FULL") == "1"
"""The issue's size: 100,000 entries over 10,000 actors (about 2 minutes per store)."""
ENTRIES = 2_000 if QUICK else 100_000 if FULL else 10_000
ACTORS = 200 if QUICK else 10_000 if FULL else 1_000
RATE = 1_000
"""Due entries per second."""
IDLE_ENTRIES = 1_000 if QUICK else 10_000
IDLE_ACTORS = 100 if QUICK else 1_000
IDLE_SECONDS = 1.0 if QUICK else 3.0
WAKE_ENTRIES = 100 if QUICK else 500
WAKE_GAP_MS = 10

_LATE: list[float] = []


def _type(idle_timeout_s: float | None = None) -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("sched", state=lambda: {"n": 0}, db=actor_db.db(migrations=["CREATE TABLE hits (due INTEGER)"]),
                       idle_timeout_s=idle_timeout_s)

    @t.action
    async def hit(c: actor_db.Context, due_ms: int) -> None:
        _LATE.append(time.time() * 1000.0 - due_ms)
        await c.db.execute("INSERT INTO hits VALUES (?)", due_ms)

    @t.action
    async def touch(c: actor_db.Context) -> None:
        c.state["n"] += 1

    @t.action
    async def plan(c: actor_db.Context, dues: list[int]) -> None:
        for due in dues:
            c.schedule.at(due / 1000.0, "hit", due)

    @t.action
    async def write(c: actor_db.Context) -> None:
        await c.db.execute("INSERT INTO hits VALUES (0)")
        c.state["n"] += 1

    @t.action
    async def write_and_schedule(c: actor_db.Context) -> None:
        await c.db.execute("INSERT INTO hits VALUES (0)")
        c.state["n"] += 1
        c.schedule.after(3600, "hit", 0)

    return t


@pytest.fixture(params=["memory", "lmdb", "redis"])
def sched_store(request: pytest.FixtureRequest) -> Iterator[KVStore]:
    if request.param == "memory":
        yield MemoryKV()
    elif request.param == "lmdb":
        with tempfile.TemporaryDirectory(prefix="actor-db-bench-sched-") as d:
            store = LmdbKV(d)
            yield store
            store.close()
    else:
        from actor_db.kv.redis import RedisKV

        base = request.getfixturevalue("redis_store")
        store = RedisKV(base.url, namespace=f"bench-sched-{os.getpid()}-{time.monotonic_ns()}",
                        check_persistence=False)
        yield store
        store.drop_namespace()
        store.close()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _lateness(store: KVStore) -> dict[str, Any]:
    _LATE.clear()
    per_actor = ENTRIES // ACTORS
    async with actor_db.Registry([_type()], store) as registry:
        handles = [registry.get_or_create("sched", f"a{i}") for i in range(ACTORS)]
        started = time.perf_counter()
        await asyncio.gather(*(h.call("touch") for h in handles))
        per_call = (time.perf_counter() - started) / ACTORS
        # Due times: entry i at t0 + i / RATE; entry i belongs to actor i % ACTORS.
        t0 = int(time.time() * 1000 + per_call * ACTORS * 3000 + 2000)
        plans = [[t0 + (j * ACTORS + i) * 1000 // RATE for j in range(per_actor)] for i in range(ACTORS)]
        await asyncio.gather(*(h.call("plan", plans[i]) for i, h in enumerate(handles)))
        setup_late = time.time() * 1000 - t0
        assert setup_late < 0, f"setup took {setup_late:.0f} ms too long"
        trips = store.round_trips
        polls = registry.schedule_metrics()["schedule_polls_total"]
        # The window: the entries' due times (from t0) plus 60 s (not from now: t0 is
        # seconds away, the setup's slack, which is no firing time).
        deadline = time.monotonic() + (t0 / 1000.0 - time.time()) + ENTRIES / RATE + 60
        while len(_LATE) < ENTRIES and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        metrics = registry.schedule_metrics()
        pool_peak = registry.pool.peak_threads
    late = list(_LATE)
    return {
        "entries": ENTRIES, "actors": ACTORS, "rate_per_s": RATE, "fired": len(late),
        "lateness_p50_ms": round(_quantile(late, 0.50), 1), "lateness_p99_ms": round(_quantile(late, 0.99), 1),
        "lateness_max_ms": round(max(late), 1), "lateness_mean_ms": round(statistics.fmean(late), 1),
        "polls": metrics["schedule_polls_total"] - polls, "stale": metrics["schedule_stale_total"],
        "errors": metrics["schedule_error_total"], "round_trips": store.round_trips - trips, "pool_peak": pool_peak,
    }


async def _lateness_asleep(store: KVStore) -> dict[str, Any]:
    """:func:`_lateness`'s entries, actors and rate, every actor asleep when firing
    starts (planned by a registry that then closed) and the default idle timeout: each
    actor's first fire wakes it (the first ``ACTORS`` entries: ``RATE`` wakes per
    second, concurrent wakes sharing store calls), its later ones find it awake."""
    _LATE.clear()
    per_actor = ENTRIES // ACTORS
    sched = _type(idle_timeout_s=DEFAULT_IDLE_TIMEOUT_S)
    async with actor_db.Registry([sched], store, schedules=actor_db.ScheduleOptions(enabled=False)) as registry:
        handles = [registry.get_or_create("sched", f"s{i}") for i in range(ACTORS)]
        started = time.perf_counter()
        await asyncio.gather(*(h.call("touch") for h in handles))
        t0 = int(time.time() * 1000 + (time.perf_counter() - started) * 1500 + 5000)  # (plan, close, reopen)
        plans = [[t0 + (j * ACTORS + i) * 1000 // RATE for j in range(per_actor)] for i in range(ACTORS)]
        await asyncio.gather(*(h.call("plan", plans[i]) for i, h in enumerate(handles)))
    assert time.time() * 1000 < t0, "setup took too long"
    group = getattr(store, "_acquire_grouper", None)
    calls0, items0 = (group().calls, group().items) if group is not None and store.groups_acquires else (0, 0)
    async with actor_db.Registry([sched], store) as registry:
        trips = store.round_trips
        deadline = time.monotonic() + (t0 / 1000.0 - time.time()) + ENTRIES / RATE + 60
        while len(_LATE) < ENTRIES and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        metrics = registry.schedule_metrics()
        wakes = sum(h.metrics()["starts_total"] for h in registry.handles())
    calls, items = (group().calls - calls0, group().items - items0) if group is not None and store.groups_acquires \
        else (None, None)
    late = list(_LATE)
    first = late[:ACTORS]  # (the first ACTORS fired: in about due order, the waking fires)
    return {
        "entries": ENTRIES, "actors": ACTORS, "rate_per_s": RATE, "fired": len(late), "wakes": wakes,
        "lateness_p50_ms": round(_quantile(late, 0.50), 1), "lateness_p99_ms": round(_quantile(late, 0.99), 1),
        "lateness_max_ms": round(max(late), 1), "lateness_mean_ms": round(statistics.fmean(late), 1),
        "waking_fires_p50_ms": round(_quantile(first, 0.50), 1), "waking_fires_p99_ms": round(_quantile(first, 0.99), 1),
        "acquire_calls": calls, "acquired": items, "skipped": metrics["schedule_skipped_total"],
        "stale": metrics["schedule_stale_total"], "errors": metrics["schedule_error_total"],
        "round_trips": store.round_trips - trips,
    }


async def _wake_cost(store: KVStore) -> dict[str, Any]:
    """Lateness when every fire must wake its actor: ``WAKE_ENTRIES`` entries of as many
    asleep actors, due ``WAKE_GAP_MS`` apart (a durable wake is one write transaction:
    its fsync bounds the wakes per second on LMDB)."""
    _LATE.clear()
    async with actor_db.Registry([_type()], store, schedules=actor_db.ScheduleOptions(enabled=False)) as registry:
        handles = [registry.get_or_create("sched", f"w{i}") for i in range(WAKE_ENTRIES)]
        await asyncio.gather(*(h.call("touch") for h in handles))
        t0 = int(time.time() * 1000) + 1000
        await asyncio.gather(*(h.call("plan", [t0 + i * WAKE_GAP_MS]) for i, h in enumerate(handles)))
    async with actor_db.Registry([_type()], store):
        deadline = time.monotonic() + 60
        while len(_LATE) < WAKE_ENTRIES and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    late = list(_LATE)
    return {"entries": WAKE_ENTRIES, "gap_ms": WAKE_GAP_MS, "fired": len(late),
            "lateness_p50_ms": round(_quantile(late, 0.50), 1), "lateness_p99_ms": round(_quantile(late, 0.99), 1)}


def _run_once(benchmark: Any, group: str, run: Any, expected_fired: int) -> None:
    """Run the scenario coroutine ``run`` once as ``group``'s benchmark; its figures go to
    ``extra_info``; every entry must have fired."""
    benchmark.group = group
    info: dict[str, Any] = {}
    benchmark.pedantic(lambda: info.update(asyncio.run(run)), rounds=1, iterations=1)
    benchmark.extra_info.update(info)
    assert info["fired"] == expected_fired


@pytest.mark.parametrize("sched_store", ["lmdb", "redis"], indirect=True)
def test_firing_lateness_with_wakes(benchmark: Any, sched_store: KVStore) -> None:
    _run_once(benchmark, "schedules-lateness-wakes", _wake_cost(sched_store), WAKE_ENTRIES)


@pytest.mark.parametrize("sched_store", ["lmdb", "redis"], indirect=True)
def test_firing_lateness(benchmark: Any, sched_store: KVStore) -> None:
    _run_once(benchmark, "schedules-lateness", _lateness(sched_store), ENTRIES)


@pytest.mark.parametrize("sched_store", ["lmdb", "redis"], indirect=True)
def test_firing_lateness_asleep(benchmark: Any, sched_store: KVStore) -> None:
    _run_once(benchmark, "schedules-lateness-asleep", _lateness_asleep(sched_store), ENTRIES)


def _seed(store: KVStore, entries: int, actors: int) -> None:
    """``entries`` far-future entries over ``actors`` actors, written straight to the KV
    (what actions would commit; the due index follows the same batches)."""
    far = int(time.time() * 1000) + 10 * 86400 * 1000
    per = entries // actors
    for a in range(actors):
        pending = PendingSchedule()
        for j in range(per):
            pending.put(Entry(f"{a:06d}{j:06d}", "once", "hit", [0], far + j))
        batch = pending.take()
        assert batch is not None
        store.actor(f"sched/idle{a}").write(batch)


async def _idle(store: KVStore) -> float:
    async with actor_db.Registry([_type()], store):
        await asyncio.sleep(0.3)  # (the first poll)
        trips, started = store.round_trips, time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        return (store.round_trips - trips) / (time.perf_counter() - started)


@pytest.mark.parametrize("sched_store", ["memory", "lmdb", "redis"], indirect=True)
def test_idle_polling_round_trips(benchmark: Any, sched_store: KVStore) -> None:
    benchmark.group = "schedules-idle"
    info: dict[str, Any] = {}

    def measure() -> None:
        info["round_trips_per_s_empty"] = round(asyncio.run(_idle(sched_store)), 2)
        _seed(sched_store, IDLE_ENTRIES, IDLE_ACTORS)
        info["round_trips_per_s_full"] = round(asyncio.run(_idle(sched_store)), 2)
        info.update(entries=IDLE_ENTRIES, actors=IDLE_ACTORS, poll_interval_s=actor_db.ScheduleOptions().poll_interval_s)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(info)


async def _cost(store: KVStore) -> dict[str, int]:
    async with actor_db.Registry([_type()], store, schedules=actor_db.ScheduleOptions(enabled=False)) as registry:
        h = registry.get_or_create("sched", "cost")
        await h.call("write")
        out = {}
        for action in ("write", "write_and_schedule"):
            trips = h.metrics()["kv_round_trips"]
            for _ in range(10):
                await h.call(action)
            out[action] = h.metrics()["kv_round_trips"] - trips
        return out


@pytest.mark.parametrize("sched_store", ["memory", "lmdb", "redis"], indirect=True)
def test_schedule_cost_round_trips(benchmark: Any, sched_store: KVStore) -> None:
    benchmark.group = "schedules-cost"
    info: dict[str, Any] = {}
    benchmark.pedantic(lambda: info.update(asyncio.run(_cost(sched_store))), rounds=1, iterations=1)
    info["extra_round_trips_per_action"] = (info["write_and_schedule"] - info["write"]) / 10
    benchmark.extra_info.update(info)
    assert info["extra_round_trips_per_action"] == 0


def test_cluster_poll_cost(benchmark: Any) -> None:
    """One due-index poll of a 3-primary Redis Cluster (``tests.redis_server``): one
    script per primary over the 5,461-odd slots it serves, empty or not."""
    from actor_db.kv.redis import RedisKV
    from tests.redis_server import fresh_namespace, session_cluster

    store = RedisKV(session_cluster().url, namespace=fresh_namespace("bench-due"), cluster=True,
                    check_persistence=False)
    try:
        store.due(10)  # (the slot map, the scripts)
        trips = store.round_trips
        benchmark.group = "schedules-cluster-poll"
        benchmark.pedantic(lambda: store.due(256), rounds=20, iterations=1)
        benchmark.extra_info.update(primaries=len(store.client.get_primaries()),
                                    round_trips_per_poll=(store.round_trips - trips) / 20)
    finally:
        store.drop_namespace()
        store.close()
