"""Per-actor mutex and worker threads: one actor's queries never interleave, a slow KV
call in one actor does not stall another, and many actors stay isolated. Also the
ambiguous-failure paths of the state/commit batch."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

import actor_db
from actor_db.errors import KVError
from actor_db.kv import KVStore
from actor_db.runtime.keys import STATE_KEY
from tests.runtime_support import HookedStore, run


def account_type() -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("acct", state=lambda: {"ops": 0},
                       db=actor_db.db(migrations=["CREATE TABLE bal (id INTEGER PRIMARY KEY CHECK (id = 1), v INTEGER)",
                                                  "INSERT INTO bal VALUES (1, 0)"]))

    @t.action
    async def deposit(c: actor_db.Context, amount: int) -> int:
        # read, yield to the loop, write: a lost update if actions of one actor overlapped
        v = (await c.db.execute("SELECT v FROM bal"))[0]["v"]
        await asyncio.sleep(0)
        await c.db.execute("UPDATE bal SET v = ? WHERE id = 1", v + amount)
        c.state["ops"] += 1
        return int(v + amount)

    @t.action
    async def balance(c: actor_db.Context) -> tuple[int, int]:
        return int((await c.db.execute("SELECT v FROM bal"))[0][0]), int(c.state["ops"])

    return t


def test_actions_of_one_actor_never_interleave(store: KVStore) -> None:
    async def main() -> None:
        registry = actor_db.Registry([account_type()], kv=store)
        handle = registry.get_or_create("acct", key="one")
        results = await asyncio.gather(*(handle.call("deposit", 1) for _ in range(40)))
        assert sorted(results) == list(range(1, 41))
        assert await handle.call("balance") == (40, 40)
        await registry.close()

    run(main())


def test_slow_kv_in_one_actor_does_not_stall_another(store: KVStore) -> None:
    hooked = HookedStore(store)
    release = threading.Event()
    blocked = threading.Event()
    slow_on = {"on": False}

    def hook(op: str, actor: str | None, payload: Any) -> None:
        if slow_on["on"] and actor == "acct/slow" and op == "write":
            blocked.set()
            assert release.wait(timeout=60), "test never released the slow KV call"

    hooked.hook = hook

    async def main() -> None:
        registry = actor_db.Registry([account_type()], kv=hooked)
        slow = registry.get_or_create("acct", key="slow")
        fast = registry.get_or_create("acct", key="fast")
        await slow.call("deposit", 1)
        await fast.call("deposit", 1)
        slow_on["on"] = True
        stuck = asyncio.create_task(slow.call("deposit", 5))  # its commit blocks in the KV
        await asyncio.to_thread(blocked.wait, 60)
        for i in range(20):  # the other actor's actions (KV reads and writes) complete meanwhile
            assert await fast.call("deposit", 1) == i + 2
        assert not stuck.done()
        slow_on["on"] = False
        release.set()
        assert await stuck == 6
        assert await slow.call("balance") == (6, 2)
        assert await fast.call("balance") == (21, 21)
        await registry.close()

    run(main())


def test_many_actors_with_kv_latency_stay_isolated(store: KVStore) -> None:
    hooked = HookedStore(store)
    hooked.hook = lambda op, actor, payload: time.sleep(0.001)  # injected latency per call

    async def main() -> None:
        registry = actor_db.Registry([account_type()], kv=hooked)
        handles = [registry.get_or_create("acct", key=f"a{i}") for i in range(50)]

        async def work(i: int, h: actor_db.ActorHandle) -> None:
            for _ in range(3):
                await h.call("deposit", i)

        await asyncio.gather(*(work(i, h) for i, h in enumerate(handles)))
        balances = await asyncio.gather(*(h.call("balance") for h in handles))
        assert balances == [(3 * i, 3) for i in range(50)]
        await registry.close()

    run(main())


def test_lost_reply_keeps_memory_and_kv_in_agreement(store: KVStore) -> None:
    """The commit batch is applied but its reply is lost: the action fails, and the
    runtime re-reads the state so memory matches the KV (which holds the new data)."""
    hooked = HookedStore(store)
    lose = {"on": False}

    def hook(op: str, actor: str | None, payload: Any) -> None:
        if lose["on"] and op == "write" and actor == "acct/lost":
            lose["on"] = False
            hooked.inner._write(payload)  # apply, then report failure
            raise KVError("injected: reply lost")

    hooked.hook = hook

    async def main() -> None:
        registry = actor_db.Registry([account_type()], kv=hooked)
        handle = registry.get_or_create("acct", key="lost")
        await handle.call("deposit", 1)
        lose["on"] = True
        with pytest.raises(Exception):
            await handle.call("deposit", 10)
        stored = json.loads(store.actor("acct/lost").get_many([STATE_KEY])[0] or b"")["state"]
        balance = await handle.call("balance")
        assert balance[1] == stored["ops"] and balance in ((1, 1), (11, 2))
        await handle.sleep()
        assert await handle.call("balance") == balance
        await registry.close()

    run(main())


def test_rollback_after_cache_spill_does_not_save_state(store: KVStore) -> None:
    t = actor_db.actor("spill", state=lambda: {"n": 0},
                       db=actor_db.db(migrations=["CREATE TABLE b (data BLOB)"], max_dirty_bytes=4096 * 8))

    @t.action
    async def big_then_fail(c: actor_db.Context) -> None:
        c.state["n"] = 99
        await c.db.execute("INSERT INTO b VALUES (randomblob(400000))")  # spills to staging
        raise RuntimeError("after the spill")

    @t.action
    async def look(c: actor_db.Context) -> tuple[int, int]:
        return int((await c.db.execute("SELECT count(*) FROM b"))[0][0]), int(c.state["n"])

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("spill", key="k")
        with pytest.raises(RuntimeError):
            await handle.call("big_then_fail")
        assert await handle.call("look") == (0, 0)
        assert json.loads(store.actor("spill/k").get_many([STATE_KEY])[0] or b"")["state"] == {"n": 0}
        await handle.sleep()
        assert await handle.call("look") == (0, 0)
        await registry.close()

    run(main())
