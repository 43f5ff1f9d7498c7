"""A history base image a commit makes due is built off the event loop (issue 25).

Building a base drains the actor's output gate, scans its chunk keys and writes the
image: two or three KV round trips. Inside an action that runs inline on the event
loop's thread, that stalled every actor of the loop for those round trips (at 5 ms per
round trip, 64 busy actors lost a quarter of their throughput to it). The runtime now
has the VFS flag the base (``KVFile.base_due``) and builds it on the actor's worker
right after the action, before the actor's next call runs.

On every driver and both VFSes: the base is built, and built before the next call of
the actor returns; on a store whose calls are real I/O (not ``instant_writes``), never
on the event loop's thread. The drop-in connection (no runtime) still builds it inside
the commit.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest

import actor_db
import vfs
import vfs.history as vhistory
from actor_db.kv import KVStore
from tests.runtime_support import run

ROW_BYTES = 3000
"""Each action inserts this many bytes: every commit changes at least one 4 KiB chunk."""


@pytest.fixture
def on_vfs(vfs_kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every database the runtime opens in the test uses ``vfs_kind``."""
    monkeypatch.setattr(vfs, "connect", functools.partial(vfs.connect, vfs=vfs_kind))
    return vfs_kind


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """Each base build: (ran on a thread with a running event loop, copied chunks)."""
    seen: list[tuple[bool, int]] = []
    original = vhistory.build_base

    def recording(*args: Any, **kwargs: Any) -> int:
        copied = original(*args, **kwargs)
        seen.append((asyncio._get_running_loop() is not None, copied))
        return copied

    monkeypatch.setattr(vhistory, "build_base", recording)
    return seen


def _logbook() -> Any:
    # A base after every 2x the database's size of recorded chunk bytes (no 1 MiB floor).
    options = vhistory.HistoryOptions(base_min_bytes=0, base_factor=2.0)
    logbook = actor_db.actor("logbook", db=actor_db.db(
        migrations=["CREATE TABLE entry (id INTEGER PRIMARY KEY, body BLOB)"], history=options))

    @logbook.action
    async def add(c: actor_db.Context) -> None:
        await c.db.execute("INSERT INTO entry (body) VALUES (zeroblob(?))", ROW_BYTES)

    @logbook.action
    async def bases(c: actor_db.Context) -> int:
        return len(c.db._gate()._require().kv_file.history.bases)  # type: ignore[attr-defined]

    @logbook.action
    async def count(c: actor_db.Context) -> int:
        rows = await c.db.execute("SELECT count(*) AS n FROM entry")
        return int(rows[0]["n"])

    return logbook


def test_due_bases_are_built_after_the_action_off_the_loop(store: KVStore, on_vfs: str,
                                                           builds: list[tuple[bool, int]]) -> None:
    async def main() -> None:
        async with actor_db.Registry([_logbook()], kv=store) as registry:
            h = registry.get_or_create("logbook", "k")
            actions = 40
            for _ in range(actions):
                await h.call("add")
            # The build queued after the last action runs before this call does.
            assert await h.call("bases") >= 2
            assert await h.call("count") == actions
        assert len(builds) >= 2, builds
        assert all(copied > 0 for _, copied in builds), builds
        if not store.instant_writes:
            on_loop = [b for b in builds if b[0]]
            assert not on_loop, f"{len(on_loop)} of {len(builds)} base builds stalled the event loop"
    run(main())


def test_the_drop_in_connection_builds_the_base_inside_the_commit(store: KVStore, vfs_kind: str,
                                                                   builds: list[tuple[bool, int]]) -> None:
    options = vhistory.HistoryOptions(base_min_bytes=0, base_factor=2.0)
    con = vfs.connect(store.actor("plain"), vfs=vfs_kind, history=options)
    try:
        con.execute("CREATE TABLE entry (id INTEGER PRIMARY KEY, body BLOB)")
        for _ in range(20):
            before = len(builds)
            con.execute("INSERT INTO entry (body) VALUES (zeroblob(?))", (ROW_BYTES,))
            if len(builds) > before:
                break
        else:
            pytest.fail("no base was made due in 20 commits")
        assert not con.kv_file.base_due
        assert con.kv_file.history.bases and con.kv_file.history.bases[-1].seq == con.kv_file.history.head.last_seq
        assert threading.current_thread() is threading.main_thread()
    finally:
        con.close()
