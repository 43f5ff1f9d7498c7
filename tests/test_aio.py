"""``actor_db.aio``: the aiosqlite-shaped async API, on every driver and both VFSes."""

from __future__ import annotations

import asyncio
import gc
import sqlite3 as stdlib
import threading
import warnings
from typing import Any

import pytest

import actor_db
import actor_db.aio as aio
from actor_db.kv import KVStore


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_connect_execute_fetch_iterate(store: KVStore, vfs_kind: str) -> None:
    async def main() -> None:
        async with aio.connect("aio", kv=store, vfs_options={"vfs": vfs_kind}) as db:
            await db.execute("create table t(x, y)")
            cursor = await db.executemany("insert into t values (?, ?)", [(i, str(i)) for i in range(200)])
            assert cursor.rowcount == 200
            await db.commit()
            async with db.execute("select x, y from t order by x") as cursor:
                assert await cursor.fetchone() == (0, "0")
                assert await cursor.fetchmany(2) == [(1, "1"), (2, "2")]
                rows = [row async for row in cursor]
                assert len(rows) == 197 and rows[-1] == (199, "199")
            assert await db.execute_fetchall("select count(*) from t") == [(200,)]
            assert await db.execute_insert("insert into t values (?, ?)", (1000, "k")) == (201,)
            await db.rollback()
            db.row_factory = aio.Row
            row = await (await db.execute("select x, y from t where x = 7")).fetchone()
            assert row["y"] == "7" and tuple(row) == (7, "7")
            await db.executescript("create table u(z); insert into u values (1);")
            assert db.in_transaction is False and db.total_changes > 0
            dump = [line async for line in db.iterdump()]
            assert any("CREATE TABLE t" in line for line in dump)
            target = stdlib.connect(":memory:")
            await db.backup(target)
            assert target.execute("select count(*) from t").fetchone() == (200,)
            target.close()
        reopened = await aio.connect("aio", kv=store, vfs_options={"vfs": vfs_kind})
        try:
            assert await reopened.execute_fetchall("select count(*) from t") == [(200,)]
        finally:
            await reopened.close()
    _run(main())


def test_errors_are_the_stdlib_classes_and_nothing_committed_is_lost(store: KVStore) -> None:
    async def main() -> None:
        async with aio.connect("errs", kv=store) as db:
            await db.execute("create table t(x primary key)")
            await db.execute("insert into t values (1)")
            await db.commit()
            with pytest.raises(aio.IntegrityError):
                await db.execute("insert into t values (1)")
            with pytest.raises(aio.OperationalError, match="no such table"):
                await db.execute("select * from missing")
            await db.rollback()
            assert await db.execute_fetchall("select x from t") == [(1,)]
        assert issubclass(aio.OperationalError, stdlib.OperationalError)
    _run(main())


def test_calls_run_in_order_off_the_loop_on_a_shared_pool(store: KVStore) -> None:
    loop_thread: list[int] = []
    ran_on: list[int] = []

    def where(x: int) -> int:
        ran_on.append(threading.get_ident())
        return x

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        connections = [await aio.connect(f"pool-{i}", kv=store) for i in range(50)]
        try:
            db = connections[0]
            await db.create_function("where_", 1, where)
            await db.execute("create table t(x)")
            # 100 inserts awaited together: they run one at a time, in the order awaited
            await asyncio.gather(*(db.execute("insert into t values (where_(?))", (i,)) for i in range(100)))
            assert await db.execute_fetchall("select x from t order by rowid") == [(i,) for i in range(100)]
        finally:
            for c in connections:
                await c.close()
    threads_before = threading.active_count()
    _run(main())
    assert loop_thread[0] not in ran_on  # SQLite work never ran on the event loop's thread
    assert threading.active_count() - threads_before <= 32  # no thread per connection


def test_a_cancelled_await_leaves_the_connection_usable(store: KVStore) -> None:
    async def main() -> None:
        async with aio.connect("cancel", kv=store) as db:
            await db.execute("create table t(x)")
            task = asyncio.ensure_future(db.execute("insert into t values (1)"))
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await db.execute("insert into t values (2)")
            await db.commit()
            assert (await db.execute_fetchall("select count(*) from t"))[0][0] in (1, 2)
    _run(main())


def test_an_unclosed_connection_warns(store: KVStore) -> None:
    async def main() -> None:
        db = await aio.connect("leak", kv=store)
        await db.execute("select 1")
        del db
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(main())
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    actor_db.connect("leak", kv=store).close()  # the database is free again


def test_del_right_after_an_await_finalizes_at_once_while_the_pool_thread_lingers(
        store: KVStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosqlite's contract (its own ``test_emits_warning_when_left_open``): ``del db``
    warns there and then. The pool thread that ran the last job may still be finishing
    its drain when the awaiting task resumes (here it is held for a moment after each
    delivery); it must not be holding the connection."""
    deliver = aio._deliver
    lingering = threading.Event()

    def deliver_then_linger(*args: Any) -> None:
        deliver(*args)
        lingering.wait(0.5)  # (released by the test as soon as it has looked)

    monkeypatch.setattr(aio, "_deliver", deliver_then_linger)

    async def main() -> list[warnings.WarningMessage]:
        db = await aio.connect("linger", kv=store)
        await db.execute("select 1")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del db
        lingering.set()
        return caught

    caught = _run(main())
    assert [w for w in caught if issubclass(w.category, ResourceWarning)], "no warning at del"
    actor_db.connect("linger", kv=store).close()  # the database is free again
