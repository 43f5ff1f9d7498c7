"""Readers of a live actor never write and read one committed state (issue 11, items 1-2).

- An open that does not own the actor (``actor-db inspect``/``export``, another
  process's ``vfs.connect(...).close()``) must not touch a writer's staging: before
  the fix it deleted the staging of a large transaction in flight, and the writer's
  ``COMMIT`` then returned OK over a corrupt database.
- Such an open reads THROUGH a committed large transaction that is not applied yet
  (staged chunks over chunk keys) instead of rolling it forward.
- Export and inspect of an actor under a write load see one committed state (a
  snapshot): a bank whose balances must sum to 0 always does in every export.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import apsw
import pytest

import vfs
from vfs.keys import COMMIT_RECORD_KEY, staged_range
from vfs.protocol import KVLimits

from actor_db.cli import export_database, inspect_actor
from actor_db.kv import KVStore, MemoryKV
from tests.faults import FaultyKV, OtherProcessView
from tests.helpers import dump, integrity

BLOB = 3000
"""Bytes per row of the big transaction (a row per page, overflow-free)."""


def _owner(store: KVStore, actor: str) -> Any:
    kv = store.actor(actor)
    kv.acquire_ownership()
    return kv


def test_readers_never_touch_a_writers_staging(store: KVStore, vfs_kind: str, tmp_path: Path) -> None:
    kv = _owner(store, "busy")
    writer = vfs.connect(kv, vfs=vfs_kind, max_dirty_bytes=64 * 1024)
    writer.execute("PRAGMA cache_size=16")  # SQLite spills pages to the VFS mid-transaction
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    writer.execute("INSERT INTO t (v) VALUES (randomblob(100))")
    writer.execute("BEGIN")
    writer.executemany("INSERT INTO t (v) VALUES (randomblob(?))", [(BLOB,)] * 400)  # ~1.2 MB: spills
    assert kv.get_many([COMMIT_RECORD_KEY])[0] is not None  # the staging marker is down
    staged = len(kv.scan(*staged_range()))
    assert staged > 0

    # Every kind of reader, while the transaction is open.
    other = OtherProcessView(store.actor("busy"))
    con = vfs.connect(other, vfs=vfs_kind)
    assert con.execute("SELECT count(*) FROM t").get == 1  # the committed state
    con.close()
    ro = vfs.connect(OtherProcessView(store.actor("busy")), vfs=vfs_kind, readonly=True)
    assert integrity(ro) == "ok"
    ro.close()
    info = inspect_actor(store.actor("busy"))
    assert info["redo"]["staged_chunks"] == staged
    export_database(store.actor("busy"), tmp_path / "during.db")
    assert other.writes == 0
    assert len(kv.scan(*staged_range())) == staged  # untouched

    writer.executemany("INSERT INTO t (v) VALUES (randomblob(?))", [(BLOB,)] * 100)
    writer.execute("COMMIT")
    writer.close()
    con = vfs.connect(store.actor("busy"), vfs=vfs_kind)
    assert integrity(con) == "ok"
    assert con.execute("SELECT count(*) FROM t").get == 501
    con.close()
    plain = sqlite3.connect(tmp_path / "during.db")
    assert plain.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert plain.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    plain.close()


def test_a_reader_reads_through_a_committed_unapplied_transaction(store: KVStore, vfs_kind: str) -> None:
    """The writer's apply phase failed after the commit point: the commit is durable
    and a reader sees it, without writing (the owner applies it on its next write)."""
    limits = KVLimits(max_batch_keys=16, max_batch_bytes=64 * 1024)
    base = store.actor("durable")
    base.acquire_ownership()
    probe = FaultyKV(base, limits=limits)
    # The redo log's read-through (a journaled large commit has no unapplied state).
    con = vfs.connect(probe, vfs=vfs_kind, large_commits="redo")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("INSERT INTO t (v) VALUES (x'01')")
    writes_before = probe.writes
    # The big transaction: stage batches, the commit record, then the apply batches.
    # Fail the first apply batch: find it by counting the writes a clean run needs.
    reference = FaultyKV(MemoryKV().actor("reference"), limits=limits)
    ref = vfs.connect(reference, vfs="python", large_commits="redo")
    ref.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    ref.execute("INSERT INTO t (v) VALUES (x'01')")
    start = reference.writes
    with ref:
        ref.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([i % 250]) * BLOB,) for i in range(60)])
    stage_and_record = _writes_until_record(reference, start)
    ref.close()
    probe.fail_write_at = writes_before + stage_and_record + 1
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([i % 250]) * BLOB,) for i in range(60)])
    assert probe.failed
    assert base.get_many([COMMIT_RECORD_KEY])[0] not in (None, b"\x00\x00staging")
    expected = dump(con)

    reader = OtherProcessView(store.actor("durable"))
    seen = vfs.connect(reader, vfs=vfs_kind, readonly=True, cache_chunks=0)
    assert integrity(seen) == "ok"
    assert dump(seen) == expected
    seen.close()
    writable = OtherProcessView(store.actor("durable"))
    seen = vfs.connect(writable, vfs=vfs_kind)
    assert dump(seen) == expected
    seen.close()
    assert reader.writes == 0 and writable.writes == 0
    assert base.get_many([COMMIT_RECORD_KEY])[0] is not None  # still the owner's to apply
    con.execute("INSERT INTO t (v) VALUES (x'02')")  # the owner's next write applies it first
    assert base.get_many([COMMIT_RECORD_KEY])[0] is None and base.scan(*staged_range()) == []
    con.close()


def _writes_until_record(kv: FaultyKV, start: int) -> int:
    """Write calls after ``start`` up to and including the first commit record (the
    large commit's staging batches plus its commit point)."""
    marker = b"\x00\x00staging"
    return next(i for i, batch in enumerate(kv.batches[start:], 1)
                if batch.puts.get(COMMIT_RECORD_KEY, marker) != marker)


ACCOUNTS = 20


def test_exports_and_inspects_of_a_live_actor_are_snapshots(store: KVStore, vfs_kind: str, tmp_path: Path) -> None:
    kv = _owner(store, "bank")
    writer = vfs.connect(kv, vfs=vfs_kind, max_dirty_bytes=48 * 1024)
    writer.execute("PRAGMA cache_size=16")
    writer.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    writer.execute("CREATE TABLE transfer (id INTEGER PRIMARY KEY, note BLOB)")
    writer.executemany("INSERT INTO account VALUES (?, 0)", [(i,) for i in range(ACCOUNTS)])
    acknowledged = 0
    stop = threading.Event()
    failures: list[BaseException] = []

    def write_load() -> None:
        nonlocal acknowledged
        i = 0
        try:
            while not stop.is_set():
                i += 1
                amount, a, b = i % 97 + 1, i % ACCOUNTS, (i * 7 + 3) % ACCOUNTS
                with writer:
                    writer.execute("UPDATE account SET balance = balance - ? WHERE id = ?", (amount, a))
                    writer.execute("UPDATE account SET balance = balance + ? WHERE id = ?", (amount, b))
                    # every 5th transfer is large enough to spill to the staging range
                    writer.execute("INSERT INTO transfer (note) VALUES (randomblob(?))",
                                   (80 * 1024 if i % 5 == 0 else 16,))
                acknowledged = i
        except BaseException as exc:  # surfaced by the main thread
            failures.append(exc)

    thread = threading.Thread(target=write_load)
    thread.start()
    try:
        for n in range(12):
            floor = acknowledged
            target = tmp_path / f"export-{n}.db"
            export_database(store.actor("bank"), target)
            plain = sqlite3.connect(target)
            assert plain.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert plain.execute("SELECT sum(balance) FROM account").fetchone()[0] == 0
            assert plain.execute("SELECT count(*) FROM transfer").fetchone()[0] >= floor
            plain.close()
            info = inspect_actor(store.actor("bank"))
            assert info["tables"] == ["account", "transfer"]
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    assert acknowledged > 0
    writer.close()
    con = vfs.connect(store.actor("bank"), vfs=vfs_kind)
    assert integrity(con) == "ok"
    assert con.execute("SELECT count(*) FROM transfer").get == acknowledged
    assert con.execute("SELECT sum(balance) FROM account").get == 0
    con.close()


def test_a_snapshot_view_is_read_only(store: KVStore) -> None:
    kv = store.actor("ro")
    with kv.snapshot() as snap:
        with pytest.raises(Exception, match="read-only snapshot"):
            snap.write(vfs.WriteBatch(puts={b"k": b"v"}))
    con = vfs.connect(store.actor("ro2"))
    con.execute("CREATE TABLE t (x)")
    con.close()
    with store.actor("ro2").snapshot() as snap:
        ro = vfs.connect(snap, readonly=True)
        with pytest.raises(apsw.ReadOnlyError):
            ro.execute("INSERT INTO t VALUES (1)")
        ro.close()


def test_a_pinned_snapshot_survives_later_commits(store: KVStore) -> None:
    """Redis's fallback when commits keep landing: the copy is one state; on every
    driver a pinned snapshot reads the state of the moment it was taken."""
    con = vfs.connect(store.actor("pin"))
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    from actor_db.kv.snapshot import read_snapshot

    with read_snapshot(store.actor("pin"), pinned=True) as snap:
        con.execute("INSERT INTO t VALUES (2)")
        ro = vfs.connect(snap, readonly=True)
        assert ro.execute("SELECT group_concat(x) FROM t").get == "1"
        ro.close()
    con.close()
