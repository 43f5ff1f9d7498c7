"""The call prefetch (actor_db.runtime.prefetch): what an awake actor hands the CPU.

The prefetch changes no result, only when memory arrives in the CPU caches, so what is
tested is its list and its safety (its speed is in benchmarks/REPORT.md, "Actors at
scale"):

- an awake actor's list holds the cache lines of its instance, lock, gate, runner,
  database connection objects and SQLite's ``sqlite3`` struct, line-aligned, headed by
  its count; an asleep actor has none; a re-woken actor gets the lines of its NEW
  connection;
- prefetching addresses that are stale, unmapped or absurd is harmless (a prefetch
  never faults), which is what lets the list keep addresses instead of references;
- without the native extension the list is ``None`` and calls still work.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

import actor_db
from actor_db.kv import KVStore
from actor_db.runtime import prefetch as prefetch_module
from actor_db.runtime.prefetch import CACHE_LINE, MAX_LINES_PER_OBJECT, SQLITE_STRUCT_BYTES, actor_lines, object_lines
from tests.runtime_support import run
from tests.test_runtime_errors import runtime_vfs  # noqa: F401  (fixture)

needs_native = pytest.mark.skipif(not prefetch_module.AVAILABLE, reason="the native extension is not built")


def counter_type() -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("pf", state=lambda: {"n": 0},
                       db=actor_db.db(migrations=["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"]),
                       idle_timeout_s=None)

    @t.action
    async def add(c: actor_db.Context, v: int) -> int:
        await c.db.execute("INSERT INTO t (v) VALUES (?)", v)
        return int((await c.db.execute("SELECT count(*) FROM t"))[0][0])

    return t


def lines_of(instance: Any) -> list[int]:
    """The instance's prefetch list as Python ints (without the leading count)."""
    lines = instance._prefetch
    assert lines is not None
    count = int(lines[0])
    assert count == len(lines) - 1
    return [int(lines[i]) for i in range(1, count + 1)]


def line(address: int) -> int:
    return address - address % CACHE_LINE


def test_object_lines_cover_the_object_from_its_first_line() -> None:
    small, big = object(), bytearray(10_000)
    lines = object_lines(small)  # 16 bytes: one line, or two when they straddle a boundary
    assert lines[0] == line(id(small)) and lines[-1] == line(id(small) + 15)
    lines = object_lines(big)
    assert lines[0] == line(id(big)) and len(lines) == MAX_LINES_PER_OBJECT
    assert all(b - a == CACHE_LINE for a, b in zip(lines, lines[1:]))


@needs_native
def test_an_awake_actor_prefetches_its_objects_and_sqlite_struct(store: KVStore, runtime_vfs: str) -> None:
    async def main() -> None:
        reg = actor_db.Registry([counter_type()], kv=store)
        h = reg.get_or_create("pf", "a")
        assert await h.call("add", 1) == 1
        inst = h._instance
        lines = set(lines_of(inst))
        core = inst._core
        for obj in (inst, inst._lock, inst._outgate, inst._runner, inst._worker, inst.kv, inst._database,
                    core, core.state, core.con, core._cursor):
            assert line(id(obj)) in lines, obj
        sqlite = core.con.sqlite3pointer()
        assert set(range(sqlite, sqlite + SQLITE_STRUCT_BYTES, CACHE_LINE)) <= lines
        old = inst._prefetch

        await h.sleep()
        assert inst._prefetch is None  # asleep: nothing to prefetch, nothing kept
        gc.collect()
        assert await h.call("add", 2) == 2  # re-woken on a new connection
        sqlite = inst._core.con.sqlite3pointer()
        assert inst._prefetch is not old  # a new list, for the new objects
        lines = set(lines_of(inst))
        assert line(id(inst._core)) in lines and line(id(inst._core.con)) in lines and sqlite in lines
        await reg.close()

    run(main())


@needs_native
def test_prefetching_stale_or_absurd_addresses_is_harmless() -> None:
    gone = bytearray(4096)
    stale = id(gone)
    del gone
    gc.collect()
    lines = prefetch_module._ffi.new("uint64_t[]", [4, 0, 1, stale, 2**64 - CACHE_LINE])
    prefetch_module.prefetch(lines)  # would crash the process if a prefetch could fault
    prefetch_module.prefetch(None)


def test_without_the_native_extension_calls_work_and_nothing_is_prefetched(
        store: KVStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefetch_module, "AVAILABLE", False)
    assert actor_lines([object()], 4096) is None

    async def main() -> None:
        reg = actor_db.Registry([counter_type()], kv=store)
        h = reg.get_or_create("pf", "b")
        assert await h.call("add", 5) == 1 and await h.call("add", 6) == 2
        assert h._instance._prefetch is None
        await reg.close()

    run(main())
