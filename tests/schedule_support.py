"""The actor type of the schedule tests, and a child process that runs it (killed with
SIGKILL by the tests): ``python -m tests.schedule_support SPEC MODE``.

Modes: ``set`` schedules one entry (``plan``), prints ``set`` and waits to be killed;
``fire`` runs a registry that fires due entries; with ``$SCHED_BLOCK_FILE`` set, the
fired ``record`` action inserts its row, writes that file and blocks (to be killed
mid-action, before its commit).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
from typing import Any

import actor_db
from actor_db.kv import KVStore, LmdbKV

ROOT = pathlib.Path(__file__).resolve().parent.parent

_EVENTS: dict[str, asyncio.Event] = {}
"""tag -> event set when a ``record`` for that tag committed its work (in this process)."""


def arm(*tags: str) -> None:
    """Fresh events for ``tags`` (call before the entries can fire; per test and loop)."""
    for tag in tags:
        _EVENTS[tag] = asyncio.Event()


def fired(tag: str) -> asyncio.Event:
    """The event ``record(tag)`` sets (armed by :func:`arm`)."""
    return _EVENTS[tag]


def jobs_type(**options: Any) -> actor_db.runtime.ActorDefinition:
    jobs = actor_db.actor("jobs", state=lambda: {"runs": 0}, db=actor_db.db(migrations=["CREATE TABLE done (tag TEXT)"]),
                          **{"idle_timeout_s": 0.2, "schedule_backoff_s": 0.02, "schedule_max_attempts": 3,
                             **options})

    @jobs.action
    async def plan(c: actor_db.Context, delay: float, tag: str) -> str:
        return c.schedule.after(delay, "record", tag)

    @jobs.action
    async def record(c: actor_db.Context, tag: str) -> None:
        await c.db.execute("INSERT INTO done VALUES (?)", tag)
        c.state["runs"] += 1
        block = os.environ.get("SCHED_BLOCK_FILE")
        if block:
            pathlib.Path(block).write_text("inside")
            await asyncio.sleep(3600)
        event = _EVENTS.get(tag)
        if event is not None:
            asyncio.get_running_loop().call_soon(event.set)  # (after the commit: the action returned)

    @jobs.action
    async def count(c: actor_db.Context, tag: str) -> int:
        rows = await c.db.execute("SELECT count(*) FROM done WHERE tag = ?", tag)
        return int(rows[0][0])

    @jobs.action
    async def flaky(c: actor_db.Context, tag: str) -> None:
        await c.db.execute("INSERT INTO done VALUES (?)", tag)
        raise RuntimeError(f"flaky {tag}")

    @jobs.action
    async def plan_flaky(c: actor_db.Context, tag: str) -> str:
        return c.schedule.after(0, "flaky", tag)

    return jobs


def spec_of(store: KVStore) -> list[Any]:
    """How a child process opens the same store."""
    if isinstance(store, LmdbKV):
        return ["lmdb", store.path]
    return ["redis-cluster" if store.is_cluster else "redis", store.url, store.namespace]  # type: ignore[attr-defined]


def open_spec(spec: list[Any]) -> KVStore:
    if spec[0] == "lmdb":
        return LmdbKV(spec[1])
    from actor_db.kv.redis import RedisKV

    return RedisKV(spec[1], namespace=spec[2], cluster=spec[0] == "redis-cluster", check_persistence=False)


async def _child(spec: list[Any], mode: str) -> None:
    store = open_spec(spec)
    schedules = actor_db.ScheduleOptions(enabled=mode == "fire", poll_interval_s=0.02)
    async with actor_db.Registry([jobs_type()], store, schedules=schedules) as registry:
        if mode == "set":
            await registry.get_or_create("jobs", "k").call("plan", 0.3, "from-dead")
        print(mode, flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(_child(json.loads(sys.argv[1]), sys.argv[2]))
