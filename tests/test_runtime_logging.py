"""Every query is logged at DEBUG with its SQL (truncated), duration and KV reads/writes;
a startup read beyond the preload is a WARNING."""

from __future__ import annotations

import logging

import pytest

import actor_db
from actor_db.kv import MemoryKV
from tests.runtime_support import run


def test_each_query_is_logged_at_debug_with_its_kv_cost(caplog: pytest.LogCaptureFixture) -> None:
    notes = actor_db.actor("notes", db=actor_db.db(migrations=["CREATE TABLE n (body TEXT)"]))

    @notes.action
    async def add(c: actor_db.Context, body: str) -> None:
        await c.db.execute("INSERT INTO n (body) VALUES (?)", body)

    async def scenario() -> None:
        registry = actor_db.Registry([notes], kv=MemoryKV())
        handle = registry.get_or_create("notes", key="k")
        await handle.call("add", "first")
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="actor_db.runtime.database"):
            await handle.call("add", "x" * 5000)
        await registry.close()

    run(scenario())
    queries = [r.getMessage() for r in caplog.records if "query" in r.getMessage()]
    assert any("INSERT INTO n (body) VALUES (?)" in m and "kv reads 0" in m for m in queries), queries
    assert all(len(m) < 1000 for m in queries)  # SQL is truncated, values never logged
    assert not any("xxxxx" in m for m in queries)
