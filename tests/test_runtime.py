"""The actor runtime end to end: round trips, rows, errors, state atomicity (every driver)."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import apsw
import pytest

import actor_db
from actor_db.errors import (
    ActionNotFoundError, ActorNotFoundError, CommitFailedError, KVError, KVLimitError, StateError,
)
from actor_db.kv import KVStore, MemoryKV
from actor_db.runtime.keys import STATE_KEY
from vfs.keys import (FILE_MAIN, HISTORY_BASES_KEY, HISTORY_HEAD_KEY, chunk_key, history_delta_key,
                      history_entry_key, meta_key)
from vfs.protocol import KVLimits
from tests.runtime_support import HookedStore, actor_keys, run

EVENTS = "CREATE TABLE events (id INTEGER PRIMARY KEY, delta INTEGER NOT NULL)"


def counter_type(**options: Any) -> actor_db.runtime.ActorDefinition:
    """The issue's example actor, plus a few actions the tests need."""
    counter = actor_db.actor("counter", state=lambda: {"count": 0},
                             db=actor_db.db(migrations=[EVENTS]), **options)

    @counter.action
    async def add(c: actor_db.Context, delta: int) -> int:
        await c.db.execute("INSERT INTO events (delta) VALUES (?)", delta)
        rows = await c.db.execute("SELECT COALESCE(SUM(delta), 0) AS total FROM events")
        c.state["count"] = rows[0]["total"]
        return int(rows[0]["total"])

    @counter.action
    async def total(c: actor_db.Context) -> tuple[int, int]:
        rows = await c.db.execute("SELECT COALESCE(SUM(delta), 0) AS total, count(*) AS n FROM events")
        return rows[0][0], rows[0]["n"]

    @counter.action
    async def bump(c: actor_db.Context) -> None:
        await c.db.execute("UPDATE events SET delta = delta + 1 WHERE id = 1")

    @counter.action
    async def bump_and_count(c: actor_db.Context) -> None:
        await c.db.execute("UPDATE events SET delta = delta + 1 WHERE id = 1")
        c.state["count"] += 1

    @counter.action
    def state(c: actor_db.Context) -> Any:
        return c.state

    @counter.action
    async def fail_after_insert(c: actor_db.Context) -> None:
        await c.db.execute("INSERT INTO events (delta) VALUES (1000)")
        c.state["count"] = -1
        raise RuntimeError("user failure")

    @counter.action
    async def bad_sql(c: actor_db.Context) -> None:
        await c.db.execute("INSERT INTO events (delta) VALUES (7)")
        await c.db.execute("SELEC nonsense")

    @counter.action
    async def bulk(c: actor_db.Context, n: int) -> int:
        return await c.db.executemany("INSERT INTO events (delta) VALUES (?)", [(1,)] * n)

    return counter


@pytest.mark.parametrize("gate", [True, False], ids=["output-gate", "wait-per-commit"])
def test_issue_example_and_round_trips(store: KVStore, reopen_store: Callable[[], KVStore], gate: bool) -> None:
    async def first() -> dict[str, Any]:
        registry = actor_db.Registry([counter_type(output_gate=gate)], kv=store)
        handle = registry.get_or_create("counter", key="room-1")
        assert await handle.call("add", 5) == 5
        created = handle.metrics()
        assert created["startup_is_new"] is True
        # Without the output gate: preload + creation batch + one commit for the pending
        # migration (then the action's own commit). With it, the first call of a new
        # actor is speculative: claim, creation, migration and the action's writes in
        # ONE conditional round trip (issue 25), the call included.
        assert created["startup_kv_round_trips"] == (1 if gate else 3)
        assert created["kv_round_trips"] == (1 if gate else 4)
        before = handle.metrics()["kv_round_trips"]
        assert await handle.call("add", 5) == 10  # INSERT + SELECT + state: one atomic batch
        assert handle.metrics()["kv_round_trips"] - before == 1
        before = handle.metrics()["kv_round_trips"]
        assert await handle.call("total") == (10, 2)  # warm SELECT
        assert handle.metrics()["kv_round_trips"] - before == 0
        await registry.close()
        return created

    run(first())

    async def wake() -> None:
        other = reopen_store()  # a new driver object: nothing cached, as a new process
        try:
            registry = actor_db.Registry([counter_type()], kv=other)
            handle = registry.get_or_create("counter", key="room-1")
            assert await handle.call("total") == (10, 2)
            m = handle.metrics()
            assert m["startup_is_new"] is False
            assert m["startup_kv_round_trips"] == 1
            assert m["kv_round_trips"] == 1  # the SELECT was answered from the preload
            assert m["vfs_live_reads"] == 0
            assert m["vfs_preload_hits"] > 0
            assert await handle.call("state") == {"count": 10}
            await registry.close()
        finally:
            other.close()

    run(wake())


def test_metrics_names(store: KVStore) -> None:
    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=store)
        handle = registry.get_or_create("counter", key="m")
        await handle.call("add", 1)
        m = handle.metrics()
        for name in ("startup_kv_round_trips", "startup_total_ms", "startup_is_new", "kv_round_trips",
                     "vfs_preload_hits", "vfs_cache_hits", "vfs_live_reads",
                     "startup_internal_preload_ms", "startup_internal_load_state_ms",
                     "startup_internal_open_db_ms", "startup_internal_migrate_ms",
                     "startup_user_state_factory_ms", "startup_user_migrations_ms", "startup_user_on_wake_ms"):
            assert name in m, name
        assert all(m[k] >= 0 for k in m if k.endswith("_ms"))
        assert m["startup_total_ms"] >= m["startup_internal_preload_ms"]
        await registry.close()

    run(main())


def test_creation_is_preload_plus_one_batch(store: KVStore) -> None:
    hooked = HookedStore(store)
    plain = actor_db.actor("plain", state=lambda: {"x": 1}, db=actor_db.db())

    @plain.action
    async def noop(c: actor_db.Context) -> int:
        return 1

    async def main() -> None:
        registry = actor_db.Registry([plain], kv=hooked)
        handle = registry.get_or_create("plain", key="k")
        await handle.wake()
        assert handle.metrics()["startup_kv_round_trips"] == 2
        ops = hooked.ops("plain/k")
        assert [op for op, _ in ops] == ["preload", "write"]
        request = ops[0][1]
        prefix = store.actor("plain/k").prefix
        assert prefix + STATE_KEY in request.keys and prefix + meta_key(FILE_MAIN) in request.keys
        assert request.max_total_bytes == 1024 * 1024
        assert request.ranges[0].max_bytes == 768 * 1024 and request.ranges[0].partial
        batch = ops[1][1]
        # The database's first commit, with its history (on by default, docs/history.md):
        # the head, the bases record, the entry of commit 1 and chunk 0 again, in the same batch.
        history = {HISTORY_HEAD_KEY, HISTORY_BASES_KEY, history_entry_key(1), history_delta_key(1, 0)}
        assert {prefix + STATE_KEY, prefix + meta_key(FILE_MAIN), prefix + chunk_key(FILE_MAIN, 0)} | \
            {prefix + k for k in history} == set(batch.puts)
        record = json.loads(batch.puts[prefix + STATE_KEY])
        assert record["state"] == {"x": 1} and record["type"] == "plain" and record["key"] == "k"
        assert await handle.call("noop") == 1
        assert len(hooked.ops("plain/k")) == 2  # an action touching nothing costs nothing
        await registry.close()

    run(main())


def test_warm_update_is_one_round_trip_with_state_in_the_same_batch(store: KVStore) -> None:
    hooked = HookedStore(store)

    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=hooked)
        handle = registry.get_or_create("counter", key="u")
        await handle.call("add", 1)
        prefix = store.actor("counter/u").prefix
        n = len(hooked.ops("counter/u"))
        await handle.call("bump")  # UPDATE only
        ops = hooked.ops("counter/u")[n:]
        assert [op for op, _ in ops] == ["write"]
        assert prefix + STATE_KEY not in ops[0][1].puts  # state unchanged: not rewritten
        n = len(hooked.ops("counter/u"))
        await handle.call("bump_and_count")  # UPDATE + state change
        ops = hooked.ops("counter/u")[n:]
        assert [op for op, _ in ops] == ["write"]
        assert prefix + STATE_KEY in ops[0][1].puts and prefix + chunk_key(FILE_MAIN, 1) in ops[0][1].puts
        assert json.loads(ops[0][1].puts[prefix + STATE_KEY])["state"] == {"count": 2}
        await registry.close()

    run(main())


def test_rows_executemany_and_transaction(store: KVStore) -> None:
    t = actor_db.actor("rows", db=actor_db.db(migrations=["CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"]))

    @t.action
    async def go(c: actor_db.Context) -> list[Any]:
        changed = await c.db.executemany("INSERT INTO t (name) VALUES (?)", [("a",), ("b",), ("c",)])
        try:
            async with c.db.transaction():
                await c.db.execute("INSERT INTO t (name) VALUES ('rolled back')")
                raise ValueError("inside")
        except ValueError:
            pass
        async with c.db.transaction() as tx:
            await tx.execute("INSERT INTO t (name) VALUES (:name)", {"name": "d"})
        rows = await c.db.execute("SELECT id, name FROM t ORDER BY id")
        return [changed, [(r[0], r["name"], r["id"]) for r in rows], rows[0] == (1, "a"), rows[0].keys()]

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("rows", key="k")
        changed, rows, eq, keys = await handle.call("go")
        assert changed == 3
        assert rows == [(1, "a", 1), (2, "b", 2), (3, "c", 3), (4, "d", 4)]
        assert eq is True and keys == ["id", "name"]
        await registry.close()

    run(main())


def test_bad_input(store: KVStore) -> None:
    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=store)
        with pytest.raises(ActorNotFoundError):
            registry.get_or_create("no-such-type", key="k")
        handle = registry.get_or_create("counter", key="bad")
        assert await handle.call("add", 2) == 2
        with pytest.raises(ActionNotFoundError):
            await handle.call("no_such_action")
        with pytest.raises(apsw.SQLError):
            await handle.call("bad_sql")
        with pytest.raises(RuntimeError, match="user failure"):
            await handle.call("fail_after_insert")
        # both failed actions were rolled back, state included; the actor is still usable
        assert await handle.call("total") == (2, 1)
        assert await handle.call("state") == {"count": 2}
        assert await handle.call("add", 3) == 5
        await registry.close()

    run(main())


def test_huge_values(store: KVStore) -> None:
    blobs = actor_db.actor("blobs", state=lambda: {"big": ""},
                           db=actor_db.db(migrations=["CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB)"]))

    @blobs.action
    async def put(c: actor_db.Context, n: int) -> int:
        await c.db.execute("INSERT INTO b (data) VALUES (randomblob(?))", n)
        c.state["big"] = "x" * 300_000
        rows = await c.db.execute("SELECT length(data) AS n FROM b ORDER BY id DESC LIMIT 1")
        return int(rows[0]["n"])

    @blobs.action
    async def sizes(c: actor_db.Context) -> list[int]:
        return [r[0] for r in await c.db.execute("SELECT length(data) FROM b ORDER BY id")] + [len(c.state["big"])]

    async def main() -> None:
        registry = actor_db.Registry([blobs], kv=store)
        handle = registry.get_or_create("blobs", key="k")
        assert await handle.call("put", 5 * 1024 * 1024) == 5 * 1024 * 1024
        await handle.sleep()
        assert await handle.call("sizes") == [5 * 1024 * 1024, 300_000]
        await registry.close()

    run(main())


def test_huge_values_with_batch_limits() -> None:
    """A store with RivetKit's limits: a large transaction goes through the redo log, and
    a state record over the value limit fails the whole action (nothing applied)."""
    store = MemoryKV(KVLimits(max_key_bytes=2048, max_value_bytes=128 * 1024, max_batch_keys=128,
                              max_batch_bytes=976 * 1024))
    t = actor_db.actor("limited", state=lambda: {"s": ""},
                       db=actor_db.db(migrations=["CREATE TABLE b (data BLOB)"]))

    @t.action
    async def put(c: actor_db.Context, n: int, state_bytes: int) -> None:
        await c.db.execute("INSERT INTO b VALUES (zeroblob(?))", n)
        c.state["s"] = "x" * state_bytes

    @t.action
    async def count(c: actor_db.Context) -> tuple[int, int]:
        rows = await c.db.execute("SELECT count(*), COALESCE(sum(length(data)), 0) FROM b")
        return rows[0][0], len(c.state["s"])

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("limited", key="k")
        await handle.call("put", 2 * 1024 * 1024, 10)  # 512+ chunks: several batches
        assert await handle.call("count") == (1, 10)
        with pytest.raises(apsw.IOError) as info:
            await handle.call("put", 1000, 200 * 1024)  # record over 128 KiB
        assert isinstance(info.value.__cause__, KVLimitError)
        assert await handle.call("count") == (1, 10)
        await handle.sleep()
        assert await handle.call("count") == (1, 10)
        await registry.close()

    run(main())


def test_state_must_be_json(store: KVStore) -> None:
    t = actor_db.actor("js", state=lambda: {"n": 0}, db=actor_db.db(migrations=["CREATE TABLE t (x)"]))

    @t.action
    async def poison(c: actor_db.Context) -> None:
        await c.db.execute("INSERT INTO t VALUES (1)")
        c.state["bad"] = object()

    @t.action
    async def count(c: actor_db.Context) -> tuple[int, Any]:
        return (await c.db.execute("SELECT count(*) FROM t"))[0][0], c.state

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("js", key="k")
        with pytest.raises(StateError):
            await handle.call("poison")
        assert await handle.call("count") == (0, {"n": 0})
        await registry.close()

    run(main())


@pytest.mark.parametrize("gate", [True, False], ids=["output-gate", "wait-per-commit"])
def test_state_and_commit_are_atomic_under_kv_failure(store: KVStore, gate: bool) -> None:
    hooked = HookedStore(store)
    failing = {"on": False}

    def hook(op: str, actor: str | None, payload: Any) -> None:
        if failing["on"] and op == "write" and actor == "counter/f":
            failing["on"] = False
            raise KVError("injected: write lost")

    hooked.hook = hook

    async def main() -> None:
        registry = actor_db.Registry([counter_type(output_gate=gate)], kv=hooked)
        handle = registry.get_or_create("counter", key="f")
        assert await handle.call("add", 1) == 1
        failing["on"] = True
        # Without a gate SQLite's commit fails; with one, the caller's result is
        # withheld and the gate's error names the failed write (the actor is reset).
        with pytest.raises(CommitFailedError if gate else apsw.IOError) as info:
            await handle.call("add", 10)
        assert isinstance(info.value.__cause__, KVError)
        assert handle.metrics()["resets_total"] == (1 if gate else 0)
        # neither the row nor the state reached the KV, and memory agrees
        assert await handle.call("total") == (1, 1)
        assert await handle.call("state") == {"count": 1}
        assert json.loads(store.actor("counter/f").get_many([STATE_KEY])[0] or b"")["state"] == {"count": 1}
        assert await handle.call("add", 2) == 3
        await handle.sleep()
        assert await handle.call("total") == (3, 2)
        assert await handle.call("state") == {"count": 3}
        await registry.close()

    run(main())


def test_state_only_change_is_one_write(store: KVStore) -> None:
    t = actor_db.actor("st", state=lambda: {"n": 0})

    @t.action
    def inc(c: actor_db.Context) -> int:
        c.state["n"] += 1
        return int(c.state["n"])

    @t.action
    async def db_use(c: actor_db.Context) -> None:
        await c.db.execute("SELECT 1")

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("st", key="k")
        assert await handle.call("inc") == 1
        # claim + the state record as the call left it: one round trip (issue 25)
        assert handle.metrics()["startup_kv_round_trips"] == 1 and handle.metrics()["kv_round_trips"] == 1
        before = handle.metrics()["kv_round_trips"]
        assert await handle.call("inc") == 2
        assert handle.metrics()["kv_round_trips"] - before == 1
        with pytest.raises(actor_db.errors.ConfigurationError):
            await handle.call("db_use")
        await handle.sleep()
        assert await handle.call("inc") == 3
        assert handle.metrics()["startup_kv_round_trips"] == 1
        assert set(actor_keys(store, "st/k")) == {STATE_KEY}
        await registry.close()

    run(main())


def test_preload_budget_override_and_warning(store: KVStore, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=store)
        handle = registry.get_or_create("counter", key="p")
        await handle.call("add", 1)
        await registry.close()
        # preload disabled for SQLite: the wake is still one call, the query reads live
        registry = actor_db.Registry([counter_type(preload_max_sqlite_bytes=0)], kv=store)
        handle = registry.get_or_create("counter", key="p")
        with caplog.at_level(logging.WARNING, logger="actor_db.runtime.startup"):
            assert await handle.call("total") == (1, 1)
        m = handle.metrics()
        assert m["vfs_preload_hits"] == 0 and m["vfs_live_reads"] >= 1
        # opening reads the database head live: the warning names the missed preload
        assert m["startup_kv_round_trips"] == 2
        assert any("beyond the preload" in r.getMessage() for r in caplog.records)
        await registry.close()

    run(main())


def test_large_database_over_budget_still_wakes_in_one_call(store: KVStore) -> None:
    t = actor_db.actor("big", db=actor_db.db(migrations=["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"]))

    @t.action
    async def fill(c: actor_db.Context, rows: int) -> None:
        await c.db.executemany("INSERT INTO t (v) VALUES (randomblob(1000))", [()] * rows)

    @t.action
    async def first(c: actor_db.Context) -> int:
        return int((await c.db.execute("SELECT id FROM t ORDER BY id LIMIT 1"))[0][0])

    @t.action
    async def count(c: actor_db.Context) -> int:
        return int((await c.db.execute("SELECT count(*) FROM t"))[0][0])

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("big", key="k")
        await handle.call("fill", 2000)  # ~2.2 MiB: over the 768 KiB budget
        await registry.close()
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("big", key="k")
        assert await handle.call("first") == 1
        assert handle.metrics()["startup_kv_round_trips"] == 1
        assert await handle.call("count") == 2000  # beyond the preload: live reads
        assert handle.metrics()["vfs_live_reads"] >= 1
        await registry.close()

    run(main())
