"""A query action runs in SQLite's autocommit mode: no implicit ``BEGIN`` / ``COMMIT``.

``ActorConnection.execute`` learns, on an SQL text's first run inside an action (in the
implicit transaction, as always), whether the text is ONE statement that SQLite reports
read-only and is a query. From its second run on, such a text opens no transaction of
its own when none is open. What must hold, on every driver and both VFSes:

- a repeated query costs no ``BEGIN`` / ``COMMIT`` statement and no KV round trip, and
  returns what it would inside a transaction;
- a write, a text with several statements (``SELECT ...; UPDATE ...``) and a
  ``WITH ... UPDATE`` still run in the action's transaction: when the action then
  fails, everything it wrote is rolled back, and so is a write after a skipped query;
- a user's ``SAVEPOINT`` text, which SQLite calls read-only, is never learned as a query.
"""

from __future__ import annotations

from typing import Any

import pytest

import actor_db
from actor_db.kv import KVStore
from actor_db.runtime import database as runtime_database
from tests.runtime_support import run
from tests.test_runtime_errors import runtime_vfs  # noqa: F401  (fixture)

READ = "SELECT n FROM items WHERE id = ?"


def items_type() -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("ro", state=lambda: {"seen": 0},
                       db=actor_db.db(migrations=["CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"]),
                       idle_timeout_s=None)

    @t.action
    async def seed(c: actor_db.Context) -> None:
        await c.db.executemany("INSERT INTO items (n) VALUES (?)", [(0,)] * 3)

    @t.action
    async def read(c: actor_db.Context, row: int) -> int:
        return int((await c.db.execute(READ, row))[0][0])

    @t.action
    async def bump(c: actor_db.Context, row: int) -> None:
        await c.db.execute("UPDATE items SET n = n + 1 WHERE id = ?", row)

    @t.action
    async def read_then_fail(c: actor_db.Context, row: int) -> None:
        await c.db.execute(READ, row)  # a known query: no BEGIN before it
        await c.db.execute("UPDATE items SET n = n + 100 WHERE id = ?", row)
        c.state["seen"] += 1
        raise RuntimeError("after the write")

    @t.action
    async def run_sql_then_fail(c: actor_db.Context, sql: str) -> None:
        await c.db.execute(sql)
        raise RuntimeError("after the text")

    @t.action
    async def run_sql(c: actor_db.Context, sql: str) -> None:
        await c.db.execute(sql)

    @t.action
    async def seen(c: actor_db.Context) -> int:
        return int(c.state["seen"])

    return t


class StatementLog:
    """Records the transaction control the runtime runs on an actor's connection: the
    implicit ``BEGIN`` / ``COMMIT`` (on the query cursor, through its tracer, which is
    chained) and ``ROLLBACK`` (on the connection); the queries themselves are left out."""

    _CONTROL = ("BEGIN", "COMMIT", "END", "ROLLBACK")

    def __init__(self, handle: actor_db.ActorHandle) -> None:
        core = handle._instance._core
        assert core is not None and core.con is not None and core._cursor is not None
        self.sql: list[str] = []
        core.con.exec_trace = self._trace
        inner = core._cursor.exec_trace

        def chained(cursor: Any, sql: str, bindings: Any) -> bool:
            self._trace(cursor, sql, bindings)
            return bool(inner(cursor, sql, bindings))

        core._cursor.exec_trace = chained

    def _trace(self, cursor: Any, sql: str, bindings: Any) -> bool:
        text = sql.strip().upper()
        if text.startswith(self._CONTROL):
            self.sql.append(text)
        return True

    def take(self) -> list[str]:
        out, self.sql = self.sql, []
        return out


@pytest.fixture(autouse=True)
def fresh_knowledge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test learns its SQL texts itself (the knowledge is process-wide)."""
    monkeypatch.setattr(runtime_database, "_READ_ONLY", {})


def test_a_known_query_runs_without_begin_or_commit(store: KVStore, runtime_vfs: str) -> None:
    async def main() -> None:
        registry = actor_db.Registry([items_type()], kv=store)
        h = registry.get_or_create("ro", "a")
        await h.call("seed")
        log = StatementLog(h)
        assert await h.call("read", 1) == 0
        assert log.take() == ["BEGIN", "COMMIT"]  # first run: learned inside the transaction
        assert runtime_database._READ_ONLY == {READ: True}
        before = h.metrics()["kv_round_trips"]
        for _ in range(3):
            assert await h.call("read", 1) == 0
        assert log.take() == []
        assert h.metrics()["kv_round_trips"] == before
        await h.call("bump", 1)  # a write keeps its transaction
        assert log.take() == ["BEGIN", "COMMIT"]
        assert await h.call("read", 1) == 1  # the query sees the committed write
        assert log.take() == []
        await registry.close()

    run(main())


def test_a_write_after_a_skipped_begin_still_rolls_back(store: KVStore, runtime_vfs: str) -> None:
    async def main() -> None:
        registry = actor_db.Registry([items_type()], kv=store)
        h = registry.get_or_create("ro", "a")
        await h.call("seed")
        await h.call("read", 2)  # learn the query
        log = StatementLog(h)
        with pytest.raises(RuntimeError, match="after the write"):
            await h.call("read_then_fail", 2)
        assert log.take() == ["BEGIN", "ROLLBACK"]  # the UPDATE opened the transaction
        assert await h.call("read", 2) == 0
        await h.sleep()  # and nothing of it reached the KV
        assert await h.call("read", 2) == 0
        assert await h.call("seen") == 0
        await registry.close()

    run(main())


@pytest.mark.parametrize("sql", [
    "SELECT 1; UPDATE items SET n = n + 7 WHERE id = 3",
    "WITH t(x) AS (SELECT 3) UPDATE items SET n = n + 7 WHERE id IN (SELECT x FROM t)",
    "UPDATE items SET n = n + 7 WHERE id = 3",
])
def test_texts_that_write_keep_the_transaction(store: KVStore, runtime_vfs: str, sql: str) -> None:
    async def main() -> None:
        registry = actor_db.Registry([items_type()], kv=store)
        h = registry.get_or_create("ro", "a")
        await h.call("seed")
        for _ in range(2):  # the second run uses what the first one learned
            with pytest.raises(RuntimeError, match="after the text"):
                await h.call("run_sql_then_fail", sql)
            assert await h.call("read", 3) == 0
        assert runtime_database._READ_ONLY[sql] is False
        await h.call("run_sql", sql)
        assert await h.call("read", 3) == 7
        await registry.close()

    run(main())


def test_a_savepoint_text_is_not_a_query(store: KVStore, runtime_vfs: str) -> None:
    """SQLite calls ``SAVEPOINT`` read-only; run outside a transaction it would start one
    that its ``RELEASE`` commits, and the action's later writes would not roll back."""
    async def main() -> None:
        registry = actor_db.Registry([items_type()], kv=store)
        h = registry.get_or_create("ro", "a")
        await h.call("seed")
        for _ in range(2):
            with pytest.raises(RuntimeError, match="after the text"):
                await h.call("run_sql_then_fail", "SAVEPOINT user_sp")
        assert runtime_database._READ_ONLY["SAVEPOINT user_sp"] is False
        assert await h.call("read", 1) == 0
        await registry.close()

    run(main())
