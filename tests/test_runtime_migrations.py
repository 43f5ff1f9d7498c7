"""Migrations: versioned with PRAGMA user_version, callables, on_migrate, failure path,
and the preload being cleared before (and only before) migrations run."""

from __future__ import annotations

from typing import Any

import apsw
import pytest

import actor_db
from actor_db.errors import MigrationError
from actor_db.kv import KVStore
from vfs.keys import FILE_MAIN, chunk_key
from vfs.preload import NOT_LOADED
from tests.runtime_support import run

V1 = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"
V2 = "ALTER TABLE items ADD COLUMN qty INTEGER NOT NULL DEFAULT 0"
V3 = "CREATE INDEX items_name ON items (name)"


def item_type(migrations: list[Any], on_migrate: Any = None, **options: Any) -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("items", state=lambda: {}, db=actor_db.db(migrations=migrations, on_migrate=on_migrate),
                       **options)

    @t.action
    async def version(c: actor_db.Context) -> int:
        return int((await c.db.execute("PRAGMA user_version"))[0][0])

    @t.action
    async def tables(c: actor_db.Context) -> list[str]:
        rows = await c.db.execute("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') ORDER BY name")
        return [r["name"] for r in rows]

    @t.action
    async def columns(c: actor_db.Context) -> list[str]:
        return [r["name"] for r in await c.db.execute("PRAGMA table_info(items)")]

    @t.action
    async def add(c: actor_db.Context, name: str) -> None:
        await c.db.execute("INSERT INTO items (name) VALUES (?)", name)

    @t.action
    async def names(c: actor_db.Context) -> list[str]:
        return [r[0] for r in await c.db.execute("SELECT name FROM items ORDER BY id")]

    @t.action
    async def integrity(c: actor_db.Context) -> str:
        return str((await c.db.execute("PRAGMA integrity_check"))[0][0])

    return t


async def _call(store: KVStore, definition: actor_db.runtime.ActorDefinition, action: str, *args: Any,
                key: str = "k") -> tuple[Any, dict[str, Any]]:
    registry = actor_db.Registry([definition], kv=store)
    handle = registry.get_or_create(definition.name, key=key)
    try:
        result = await handle.call(action, *args)
        return result, handle.metrics()
    finally:
        await registry.close()


def test_versioned_migrations_run_once_in_order(store: KVStore) -> None:
    async def main() -> None:
        assert (await _call(store, item_type([V1]), "version"))[0] == 1
        await _call(store, item_type([V1]), "add", "a")
        # a release adds two steps: only they run, in one commit
        result, m = await _call(store, item_type([V1, V2, V3]), "columns")
        assert result == ["id", "name", "qty"]
        # two steps, ONE commit; reads after the preload was cleared go live
        assert m["kv_writes"] == 1
        assert m["startup_kv_round_trips"] == 1 + m["vfs_live_reads"] + 1
        assert (await _call(store, item_type([V1, V2, V3]), "version"))[0] == 3
        assert (await _call(store, item_type([V1, V2, V3]), "names"))[0] == ["a"]
        assert (await _call(store, item_type([V1, V2, V3]), "integrity"))[0] == "ok"

    run(main())


def test_callable_migrations_sync_and_async(store: KVStore) -> None:
    def sync_step(con: apsw.Connection) -> None:
        con.execute(V1)
        con.execute("INSERT INTO items (name) VALUES ('from sync')")

    async def async_step(db: actor_db.runtime.Database) -> None:
        rows = await db.execute("SELECT count(*) AS n FROM items")
        await db.execute("INSERT INTO items (name) VALUES (?)", f"async saw {rows[0]['n']}")

    async def main() -> None:
        assert (await _call(store, item_type([sync_step, async_step]), "names"))[0] == ["from sync", "async saw 1"]
        assert (await _call(store, item_type([sync_step, async_step]), "version"))[0] == 2

    run(main())


def test_on_migrate_runs_at_every_start(store: KVStore) -> None:
    calls: list[int] = []

    async def on_migrate(db: actor_db.runtime.Database) -> None:
        calls.append(1)
        await db.execute("CREATE TABLE IF NOT EXISTS starts (n INTEGER)")
        await db.execute("INSERT INTO starts VALUES (1)")

    t = item_type([V1], on_migrate=on_migrate)

    @t.action
    async def starts(c: actor_db.Context) -> int:
        return int((await c.db.execute("SELECT count(*) FROM starts"))[0][0])

    async def main() -> None:
        registry = actor_db.Registry([t], kv=store)
        handle = registry.get_or_create("items", key="k")
        assert await handle.call("starts") == 1
        await handle.sleep()
        assert await handle.call("starts") == 2
        await handle.sleep()
        assert await handle.call("starts") == 3
        assert len(calls) == 3
        assert handle.metrics()["startup_user_on_migrate_ms"] > 0
        await registry.close()

    run(main())


def test_failing_migration_keeps_last_good_version(store: KVStore) -> None:
    bad = "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1)"  # fails half-way

    async def main() -> None:
        await _call(store, item_type([V1]), "add", "a")
        registry = actor_db.Registry([item_type([V1, V2, bad, V3])], kv=store)
        handle = registry.get_or_create("items", key="k")
        with pytest.raises(MigrationError) as info:
            await handle.call("names")
        assert info.value.version == 2
        assert "migration 3 failed" in str(info.value)
        assert isinstance(info.value.__cause__, apsw.SQLError)
        assert handle.metrics()["status"] == "asleep"  # closed cleanly, not half-started
        with pytest.raises(MigrationError):  # every later call reports it too
            await handle.call("names")
        await registry.close()
        # the fixed release starts from version 2: step 2 kept, nothing of step 3 left
        fixed = item_type([V1, V2, "CREATE TABLE half (x)", V3])
        registry = actor_db.Registry([fixed], kv=store)
        handle = registry.get_or_create("items", key="k")
        assert await handle.call("columns") == ["id", "name", "qty"]
        assert await handle.call("version") == 4
        assert await handle.call("tables") == ["half", "items", "items_name"]
        assert await handle.call("names") == ["a"]
        assert await handle.call("integrity") == "ok"
        await registry.close()

    run(main())


def test_failing_callable_and_on_migrate(store: KVStore) -> None:
    async def boom(db: actor_db.runtime.Database) -> None:
        await db.execute("INSERT INTO items (name) VALUES ('never')")
        raise RuntimeError("user migration bug")

    def on_migrate_boom(con: apsw.Connection) -> None:
        con.execute("INSERT INTO items (name) VALUES ('never either')")
        raise ValueError("on_migrate bug")

    async def main() -> None:
        with pytest.raises(MigrationError) as info:
            await _call(store, item_type([V1, boom]), "names")
        assert info.value.version == 1 and isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(MigrationError) as info:
            await _call(store, item_type([V1], on_migrate=on_migrate_boom), "names")
        assert isinstance(info.value.__cause__, ValueError)
        assert (await _call(store, item_type([V1]), "names"))[0] == []

    run(main())


def test_database_newer_than_code(store: KVStore) -> None:
    async def main() -> None:
        await _call(store, item_type([V1, V2]), "version")
        with pytest.raises(MigrationError, match="newer"):
            await _call(store, item_type([V1]), "version")

    run(main())


def test_preload_cleared_before_migrations_and_kept_otherwise(store: KVStore) -> None:
    seen: list[Any] = []

    def probe(con: apsw.Connection) -> None:
        seen.append(con.preload.lookup(chunk_key(FILE_MAIN, 0)))  # type: ignore[attr-defined]
        con.execute(V2)

    async def main() -> None:
        await _call(store, item_type([V1]), "add", "a")
        # a pending migration: the preload's chunks are gone before it runs (the ordinary
        # wake: a speculative first call would run the probe on a new actor's empty image too)
        await _call(store, item_type([V1, probe], speculative_create=False), "names")
        assert seen == [NOT_LOADED]
        # nothing pending: the first query after the wake is served by the preload
        result, m = await _call(store, item_type([V1, probe], speculative_create=False), "names")
        assert result == ["a"] and len(seen) == 1
        assert m["startup_kv_round_trips"] == 1 and m["kv_round_trips"] == 1
        assert m["vfs_preload_hits"] > 0 and m["vfs_live_reads"] == 0

    run(main())


def test_bad_migration_declarations() -> None:
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.db(migrations=[42])  # type: ignore[list-item]
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.db(on_migrate=3.5)  # type: ignore[arg-type]
    with pytest.raises(actor_db.errors.ConfigurationError):
        actor_db.db(cache_size=1)
