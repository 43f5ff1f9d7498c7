"""Lifecycle: sleep/wake, idle sleep, destroy, hooks, the per-actor gate, the VFS commit
hook failure path, and the default store."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import apsw
import pytest

import actor_db
import vfs
from actor_db.errors import ActorDBError, ActorNotFoundError, ActorShuttingDownError, KVLimitError
from actor_db.kv import KVStore, LmdbKV, MemoryKV
from actor_db.runtime.idle import idle_timers_for
from actor_db.runtime.keys import STATE_KEY
from tests.runtime_support import actor_keys, run


def notes_type(**options: Any) -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("notes", state=lambda: {"wakes": 0, "sleeps": 0},
                       db=actor_db.db(migrations=["CREATE TABLE notes (body TEXT)"]), **options)

    @t.action
    async def add(c: actor_db.Context, body: str) -> int:
        await c.db.execute("INSERT INTO notes VALUES (?)", body)
        return int((await c.db.execute("SELECT count(*) FROM notes"))[0][0])

    @t.action
    async def bodies(c: actor_db.Context) -> list[str]:
        return [r["body"] for r in await c.db.execute("SELECT body FROM notes ORDER BY rowid")]

    @t.action
    def state(c: actor_db.Context) -> Any:
        return dict(c.state)

    return t


def test_sleep_and_wake_keep_everything(store: KVStore) -> None:
    async def main() -> None:
        registry = actor_db.Registry([notes_type()], kv=store)
        handle = registry.get_or_create("notes", key="k")
        assert await handle.call("add", "one") == 1
        await handle.sleep()
        assert handle.metrics()["status"] == "asleep"
        assert not [t for t in threading.enumerate() if t.name == "actor-db:notes/k"]  # worker stopped
        await handle.sleep()  # idempotent
        assert await handle.call("add", "two") == 2
        m = handle.metrics()
        assert m["starts_total"] == 2 and m["startup_is_new"] is False and m["startup_kv_round_trips"] == 1
        assert await handle.call("bodies") == ["one", "two"]
        await registry.close()

    run(main())


def test_destroy_removes_every_key(store: KVStore) -> None:
    async def main() -> None:
        registry = actor_db.Registry([notes_type()], kv=store)
        doomed = registry.get_or_create("notes", key="doomed")
        other = registry.get_or_create("notes", key="other")
        for i in range(300):  # a database of many chunks
            await doomed.call("add", "x" * 500 + str(i))
        await other.call("add", "kept")
        assert len(actor_keys(store, "notes/doomed")) > 30
        await doomed.destroy()
        assert actor_keys(store, "notes/doomed") == []
        assert await other.call("bodies") == ["kept"]
        with pytest.raises(ActorNotFoundError):
            await doomed.call("bodies")
        fresh = registry.get_or_create("notes", key="doomed")
        assert await fresh.call("bodies") == []
        assert fresh.metrics()["startup_is_new"] is True
        await fresh.destroy()
        await fresh.destroy()  # idempotent
        assert actor_keys(store, "notes/doomed") == []
        asleep = registry.get_or_create("notes", key="other")
        await asleep.sleep()
        await asleep.destroy()  # destroying an asleep actor needs no wake
        assert actor_keys(store, "notes/other") == []
        await registry.close()

    run(main())


def test_idle_sleep_and_hooks(store: KVStore) -> None:
    slept = asyncio.Event

    async def main() -> None:
        went_to_sleep = slept()

        async def on_wake(c: actor_db.Context) -> None:
            c.state["wakes"] += 1
            await c.db.execute("INSERT INTO notes VALUES ('woke')")

        async def on_sleep(c: actor_db.Context) -> None:
            c.state["sleeps"] += 1
            went_to_sleep.set()

        t = notes_type(idle_timeout_s=0.05)
        t.on_wake, t.on_sleep = on_wake, on_sleep
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("notes", key="idle")
        assert await handle.call("state") == {"wakes": 1, "sleeps": 0}
        await asyncio.wait_for(went_to_sleep.wait(), timeout=30)
        # the idle sleep holds the actor's lock until it has closed, so this call wakes it
        assert await handle.call("state") == {"wakes": 2, "sleeps": 1}
        assert await handle.call("bodies") == ["woke", "woke"]
        assert handle.metrics()["startup_user_on_wake_ms"] > 0
        await registry.close()

    run(main())


def test_in_flight_action_finishes_before_sleep_and_stray_queries_fail(store: KVStore) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        started = asyncio.Event()
        leaked: list[actor_db.runtime.Database] = []
        t = notes_type()

        @t.action
        async def slow(c: actor_db.Context) -> int:
            await c.db.execute("INSERT INTO notes VALUES ('slow')")
            leaked.append(c.db)
            started.set()
            await gate.wait()
            return int((await c.db.execute("SELECT count(*) FROM notes"))[0][0])

        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("notes", key="busy")
        action = asyncio.create_task(handle.call("slow"))
        await started.wait()
        sleeper = asyncio.create_task(handle.sleep())
        await asyncio.sleep(0)
        assert not sleeper.done()  # waits for the action
        gate.set()
        assert await action == 1
        await sleeper
        assert handle.metrics()["status"] == "asleep"
        with pytest.raises(ActorShuttingDownError):
            await leaked[0].execute("SELECT 1")
        assert await handle.call("bodies") == ["slow"]
        with pytest.raises(ActorDBError, match="only be used while"):
            await leaked[0].execute("SELECT 1")  # awake again, but outside an action
        await registry.close()

    run(main())


def test_reentrant_call_is_refused(store: KVStore) -> None:
    t = notes_type()
    holder: dict[str, Any] = {}

    @t.action
    async def reenter(c: actor_db.Context) -> None:
        await holder["handle"].call("bodies")

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        holder["handle"] = registry.get_or_create("notes", key="r")
        with pytest.raises(ActorDBError, match="deadlock"):
            await holder["handle"].call("reenter")
        assert await holder["handle"].call("bodies") == []
        await registry.close()

    run(main())


def test_default_store_is_lmdb_in_dot_actor_db(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        registry = actor_db.Registry([notes_type()])
        assert isinstance(registry.kv, LmdbKV)
        assert registry.kv.path == os.path.realpath(tmp_path / ".actor-db")
        await registry.get_or_create("notes", key="k").call("add", "x")
        await registry.close()
        again = actor_db.Registry([notes_type()])
        assert await again.get_or_create("notes", key="k").call("bodies") == ["x"]
        await again.close()

    run(main())
    assert (tmp_path / ".actor-db" / "data.mdb").exists()


def test_declaration_errors() -> None:
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.actor("bad/name")
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.actor("ok", preload_max_sqlite_bytes=-1)
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.actor("ok", no_such_option=1)
    t = actor_db.actor("dup")
    t.action(lambda c: None, name="a")
    with pytest.raises(actor_db.errors.ConfigurationError):
        t.action(lambda c: None, name="a")
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.Registry([t, actor_db.actor("dup")], kv=MemoryKV())


def test_vfs_commit_hook_failure_leaves_database_usable(store: KVStore) -> None:
    """Foundation fix: a commit hook that raises fails the commit as an I/O error, and
    the file drops its buffer so the database still matches the KV."""
    con = vfs.connect(store.actor("hook"))
    try:
        con.execute("CREATE TABLE t (x)")

        def hook() -> vfs.WriteBatch:
            raise KVLimitError("state too big")

        con.kv_file.commit_hook = hook
        with pytest.raises(apsw.IOError) as info:
            con.execute("INSERT INTO t VALUES (1)")
        assert isinstance(info.value.__cause__, KVLimitError)
        con.kv_file.commit_hook = None
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
        con.execute("INSERT INTO t VALUES (2)")
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()
    con = vfs.connect(store.actor("hook"))
    try:
        assert con.execute("SELECT x FROM t").fetchall() == [(2,)]
    finally:
        con.close()
    assert STATE_KEY not in actor_keys(store, "hook")


def test_one_idle_timer_per_actor_postponed_by_each_call(store: KVStore) -> None:
    """Calls do not create a timer each: the actor's one entry in its loop's idle timers,
    when it comes out before the latest deadline, adds itself again for that deadline
    (driven by hand: no wall-clock assertion)."""
    async def main() -> None:
        registry = actor_db.Registry([notes_type(idle_timeout_s=3600)], kv=store)
        handle = registry.get_or_create("notes", key="timer")
        await handle.call("state")
        instance = handle._instance
        timers = idle_timers_for(asyncio.get_running_loop())
        entries = len(timers)
        first = instance._idle_seq
        assert first != 0
        await handle.call("state")
        assert instance._idle_seq == first and len(timers) == entries  # the same entry, its deadline moved on
        instance._idle_seq = 0  # (as the timers do when the entry comes out)
        instance._idle_fire()  # comes out early (the deadline is an hour away): added again
        second = instance._idle_seq
        assert second not in (0, first) and instance.status == "awake" and len(timers) == entries + 1
        instance._idle_seq = 0
        instance._idle_deadline = 0.0  # the deadline has passed, no call since: sleep
        instance._idle_fire()
        await handle.sleep()  # (waits for the idle sleep that started)
        assert instance.status == "asleep" and instance._idle_seq == 0
        await registry.close()

    run(main())
