"""Runtime benchmarks: concurrent actors on a KV with injected latency, and wake cost.

Run: ``python -m pytest benchmarks/bench_runtime.py --benchmark-json=out.json``.
The issue-3 claim: 50 actors doing interleaved actions on a KV with 5 ms latency per
call finish in well under 50x the single-actor time (compare the ``actors-1`` and
``actors-50`` results of group ``runtime-latency``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import actor_db
from actor_db.kv import MemoryKV
from tests.runtime_support import HookedStore

LATENCY_S = 0.005
ACTIONS_PER_ACTOR = 2


def _counter() -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("bench", state=lambda: {"n": 0},
                       db=actor_db.db(migrations=["CREATE TABLE e (v INTEGER)"]), idle_timeout_s=None)

    @t.action
    async def add(c: actor_db.Context, v: int) -> None:
        await c.db.execute("INSERT INTO e VALUES (?)", v)
        c.state["n"] += 1

    return t


@pytest.mark.parametrize("actors", [1, 50], ids=lambda n: f"actors-{n}")
def test_interleaved_actions_with_latency(benchmark: Any, actors: int) -> None:
    store = HookedStore(MemoryKV())
    store.hook = lambda op, actor, payload: time.sleep(LATENCY_S)
    loop = asyncio.new_event_loop()
    registry = actor_db.Registry([_counter()], kv=store)
    handles = [registry.get_or_create("bench", key=f"k{i}") for i in range(actors)]

    async def wake_all() -> None:
        await asyncio.gather(*(h.wake() for h in handles))

    loop.run_until_complete(wake_all())

    async def round_() -> None:
        async def work(h: actor_db.ActorHandle) -> None:
            for i in range(ACTIONS_PER_ACTOR):
                await h.call("add", i)
        await asyncio.gather(*(work(h) for h in handles))

    benchmark.group = "runtime-latency"
    benchmark.extra_info.update(actors=actors, latency_ms=LATENCY_S * 1000, actions_per_actor=ACTIONS_PER_ACTOR)
    benchmark.pedantic(lambda: loop.run_until_complete(round_()), rounds=3, iterations=1)
    loop.run_until_complete(registry.close())
    loop.close()


def test_wake_existing_actor(benchmark: Any) -> None:
    store = MemoryKV()
    loop = asyncio.new_event_loop()
    registry = actor_db.Registry([_counter()], kv=store)
    handle = registry.get_or_create("bench", key="w")
    loop.run_until_complete(handle.call("add", 1))

    def cycle() -> None:
        loop.run_until_complete(handle.sleep())
        loop.run_until_complete(handle.wake())

    benchmark.group = "runtime-wake"
    benchmark(cycle)
    assert handle.metrics()["startup_kv_round_trips"] == 1
    loop.run_until_complete(registry.close())
    loop.close()
