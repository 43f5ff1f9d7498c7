"""Bookmarks and restore through the actor runtime (issue 24; docs/history.md)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import actor_db
from actor_db.errors import HistoryError, OperationError
from actor_db.kv import KVStore
from tests.runtime_support import run


def notes_type(**db_options: Any) -> Any:
    notes = actor_db.actor("notes", db=actor_db.db(migrations=["CREATE TABLE n (id INTEGER PRIMARY KEY, body TEXT)"],
                                                   **db_options))

    @notes.action
    async def add(c: actor_db.Context, body: str) -> str:
        before = await c.db.bookmark()  # the state before this action's own writes
        await c.db.execute("INSERT INTO n (body) VALUES (?)", body)
        return before

    @notes.action
    async def put(c: actor_db.Context, body: str) -> None:
        await c.db.execute("INSERT INTO n (body) VALUES (?)", body)

    @notes.action
    async def mark(c: actor_db.Context) -> str:
        return await c.db.bookmark()

    @notes.action
    async def wipe(c: actor_db.Context) -> None:
        await c.db.execute("DELETE FROM n")

    @notes.action
    async def bodies(c: actor_db.Context) -> list[str]:
        return [r["body"] for r in await c.db.execute("SELECT body FROM n ORDER BY id")]

    return notes


def test_bookmark_restore_and_undo(store: KVStore) -> None:
    async def main() -> None:
        async with actor_db.Registry([notes_type()], kv=store) as registry:
            h = registry.get_or_create("notes", "r1")
            await h.call("add", "a")
            await h.call("add", "b")
            mark = await h.call("mark")
            assert await h.bookmark() == mark
            before_c = await h.call("add", "c")
            assert before_c == mark
            await h.call("wipe")  # the DELETE without WHERE
            assert await h.call("bodies") == []
            result = await h.restore(bookmark=mark)  # the actor is awake: put to sleep first
            assert result.restored == mark
            assert await h.call("bodies") == ["a", "b"]
            await h.restore(bookmark=result.before)  # undo the restore
            assert await h.call("bodies") == []
            with pytest.raises(HistoryError):
                await h.restore(bookmark="h1-zz")
            with pytest.raises(OperationError):
                await h.restore()
    run(main())


def test_restore_at_time_and_history_off(store: KVStore) -> None:
    async def main() -> None:
        async with actor_db.Registry([notes_type(history=timedelta(days=1))], kv=store) as registry:
            h = registry.get_or_create("notes", "r2")
            await h.call("add", "a")
            t = time.time()
            time.sleep(0.01)  # a clock tick between the two commits (times are in ms)
            await h.call("add", "b")
            mark = await h.bookmark_for_time(t)
            assert mark == await h.bookmark_for_time(datetime.fromtimestamp(t, timezone.utc))
            await h.restore(at=t)
            assert await h.call("bodies") == ["a"]
        async with actor_db.Registry([notes_type(history=False)], kv=store) as registry:
            h = registry.get_or_create("notes", "r3")
            await h.call("put", "x")
            with pytest.raises(HistoryError):
                await h.call("mark")
            with pytest.raises(HistoryError):
                await h.bookmark()
    run(main())


def test_db_history_setting_is_checked() -> None:
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.db(history="yes")  # type: ignore[arg-type]
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.db(history=timedelta(0))
