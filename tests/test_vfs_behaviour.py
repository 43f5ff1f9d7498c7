"""Behaviour of the KV-backed VFS: persistence, isolation, settings, page sizes, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import apsw
import pytest

import vfs
from vfs.keys import FILE_MAIN, chunk_key, meta_key
from vfs.protocol import KVLimits, WriteBatch

from actor_db.errors import KVLimitError
from actor_db.kv import KVStore, LmdbKV, MemoryKV
from tests.helpers import full_preload, integrity, rows


def test_persists_across_reopen(store: KVStore, reopen_store: Any, vfs_kind: str) -> None:
    con = vfs.connect(store.actor("p"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v)")
    con.execute("INSERT INTO t VALUES ('a', 1), ('b', x'00ff')")
    con.close()
    other = reopen_store()
    con = vfs.connect(other.actor("p"), vfs=vfs_kind)
    assert rows(con, "SELECT * FROM t ORDER BY k") == [("a", 1), ("b", b"\x00\xff")]
    assert integrity(con) == "ok"
    con.close()
    other.close()


def test_persists_across_processes_on_lmdb(tmp_path: Any, vfs_kind: str) -> None:
    path = str(tmp_path / "store")
    script = textwrap.dedent("""
        import sys, vfs
        from actor_db.kv import LmdbKV
        con = vfs.connect(LmdbKV(sys.argv[1]).actor("proc"), vfs=sys.argv[2])
        con.execute("CREATE TABLE t (x)")
        with con:
            con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5000)])
    """)
    subprocess.run([sys.executable, "-c", script, path, vfs_kind], check=True)
    store = LmdbKV(path)
    kv = store.actor("proc")
    con = vfs.connect(kv, preload=full_preload(kv), vfs=vfs_kind)
    assert rows(con, "SELECT count(*), sum(x) FROM t") == [(5000, sum(range(5000)))]
    assert integrity(con) == "ok"
    con.close()
    store.close()


def test_two_actors_in_one_store_are_isolated(store: KVStore, vfs_kind: str) -> None:
    a = vfs.connect(store.actor("a"), vfs=vfs_kind)
    b = vfs.connect(store.actor("b"), vfs=vfs_kind)  # both open at once
    a.execute("CREATE TABLE t (who)")
    b.execute("CREATE TABLE t (who)")
    a.execute("INSERT INTO t VALUES ('a')")
    b.execute("INSERT INTO t VALUES ('b'), ('b')")
    a.close()
    b.close()
    a = vfs.connect(store.actor("a"), vfs=vfs_kind)
    b = vfs.connect(store.actor("b"), vfs=vfs_kind)
    assert rows(a, "SELECT who FROM t") == [("a",)]
    assert rows(b, "SELECT who FROM t") == [("b",), ("b",)]
    a.close()
    b.close()


def test_second_open_of_one_actor_is_refused(store: KVStore, reopen_store: Any, vfs_kind: str) -> None:
    con = vfs.connect(store.actor("one"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    with pytest.raises(apsw.BusyError, match="already open in this process"):
        vfs.connect(store.actor("one"), vfs=vfs_kind)
    other = reopen_store()  # another driver object on the same data: same database
    with pytest.raises(apsw.BusyError):
        vfs.connect(other.actor("one"), vfs=vfs_kind)
    con.close()
    con = vfs.connect(other.actor("one"), vfs=vfs_kind)  # free again after close
    assert integrity(con) == "ok"
    con.close()


@pytest.mark.parametrize("pragma", [
    "synchronous=OFF", "synchronous=0", "locking_mode=NORMAL", "locking_mode=normal",
])
def test_pragmas_that_break_the_commit_protocol_are_refused(store: KVStore, vfs_kind: str, pragma: str) -> None:
    con = vfs.connect(store.actor("pr"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    with pytest.raises(apsw.SQLError, match="not supported on a KV-backed database"):
        con.execute(f"PRAGMA {pragma}")
    assert rows(con, "PRAGMA journal_mode") == [("memory",)]
    assert rows(con, "PRAGMA locking_mode") == [("exclusive",)]
    assert rows(con, "PRAGMA synchronous") == [(1,)]
    con.execute("PRAGMA synchronous=FULL")  # stricter is fine
    con.execute("PRAGMA journal_mode=MEMORY")
    con.execute("INSERT INTO t VALUES (1)")
    assert integrity(con) == "ok"
    con.close()


@pytest.mark.parametrize("mode", ["WAL", "wal", "DELETE", "OFF", "truncate", "PERSIST", "bogus", "'WAL'", "MEMORY"])
def test_journal_mode_cannot_change_and_says_so_without_error(store: KVStore, vfs_kind: str, mode: str) -> None:
    """SQLite's rule for a database whose journal mode cannot change (an in-memory one):
    no error, the row returned is the mode it kept. Nothing changes: the in-memory
    journal still rolls back, and commits still reach the KV as before."""
    kv = store.actor("jm")
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    assert rows(con, f"PRAGMA journal_mode={mode}") == [("memory",)]
    assert rows(con, f"PRAGMA main.journal_mode={mode}") == [("memory",)]
    assert rows(con, "PRAGMA journal_mode") == [("memory",)]
    assert rows(con, "PRAGMA locking_mode") == [("exclusive",)]
    con.execute("BEGIN")
    con.execute(f"PRAGMA journal_mode={mode}")  # inside a transaction too
    con.execute("INSERT INTO t VALUES (1)")
    con.execute("ROLLBACK")
    con.execute("INSERT INTO t VALUES (2)")
    assert rows(con, "SELECT x FROM t") == [(2,)]
    con.close()
    con = vfs.connect(kv, vfs=vfs_kind)
    assert rows(con, "SELECT x FROM t") == [(2,)]
    assert integrity(con) == "ok"
    con.close()


@pytest.mark.parametrize("page_size", [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536])
def test_every_page_size_works(store: KVStore, vfs_kind: str, page_size: int) -> None:
    kv = store.actor(f"ps{page_size}")
    con = vfs.connect(kv, vfs=vfs_kind, cache_chunks=8)
    con.execute(f"PRAGMA page_size={page_size}")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    blobs = [bytes([i]) * n for i, n in enumerate([1, 4095, 4096, 4097, 9000, 70000])]
    with con:
        con.executemany("INSERT INTO t (b) VALUES (?)", [(b,) for b in blobs])
    con.execute("DELETE FROM t WHERE id IN (2, 5)")
    con.execute("VACUUM")
    assert rows(con, "PRAGMA page_size") == [(page_size,)]
    con.close()
    con = vfs.connect(kv, vfs=vfs_kind, cache_chunks=0)
    assert rows(con, "PRAGMA page_size") == [(page_size,)]
    assert [r[0] for r in con.execute("SELECT b FROM t ORDER BY id")] == [blobs[i] for i in (0, 2, 3, 5)]
    assert integrity(con) == "ok"
    con.close()


def test_vacuum_shrinks_the_stored_file(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("shrink")
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (b BLOB)")
    con.execute("INSERT INTO t VALUES (zeroblob(400000))")
    big = len(kv.scan(bytes([8, 1, 1]), bytes([8, 1, 2])))
    con.execute("DELETE FROM t")
    before = store.round_trips
    con.execute("VACUUM")
    # SQLite truncates after the commit's sync; the header-declared size makes the
    # shrink part of the single atomic commit batch. The chunks past the new end are
    # deleted by a second batch once SQLite has seen the commit succeed (phase two):
    # until then a failed or interrupted commit must leave them for SQLite's rollback.
    assert store.round_trips - before == 2
    assert con.stats.commits == 4
    small = kv.scan(bytes([8, 1, 1]), bytes([8, 1, 2]))
    pages = rows(con, "PRAGMA page_count")[0][0]
    assert len(small) == pages < big
    con.close()


def test_multi_megabyte_blobs_and_chunk_boundaries(store: KVStore, vfs_kind: str) -> None:
    con = vfs.connect(store.actor("blobs"), vfs=vfs_kind, cache_chunks=4, max_dirty_bytes=1 << 20)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    sizes = [4095, 4096, 4097, 3 * 1024 * 1024, 5 * 1024 * 1024 + 1]
    for n in sizes:  # the 5 MiB one spills past max_dirty_bytes mid-transaction
        con.execute("INSERT INTO t (b) VALUES (?)", (bytes(range(256)) * (n // 256) + b"x" * (n % 256),))
    con.close()
    con = vfs.connect(store.actor("blobs"), vfs=vfs_kind)
    got = [r[0] for r in con.execute("SELECT b FROM t ORDER BY id")]
    assert [len(b) for b in got] == sizes
    assert all(b == bytes(range(256)) * (len(b) // 256) + b"x" * (len(b) % 256) for b in got)
    assert integrity(con) == "ok"
    con.close()


def test_corrupt_meta_is_a_clear_error_and_loses_nothing(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("corrupt")
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (42)")
    con.close()
    good = kv.get_many([meta_key(FILE_MAIN)])[0]
    assert good is not None
    bad = WriteBatch()
    bad.put(meta_key(FILE_MAIN), b"\x07\x00garbage!")
    kv.write(bad)
    with pytest.raises(apsw.CorruptError, match="meta is corrupt"):
        vfs.connect(kv, vfs=vfs_kind)
    assert kv.get_many([chunk_key(FILE_MAIN, 0)])[0] is not None  # nothing was overwritten
    fix = WriteBatch()
    fix.put(meta_key(FILE_MAIN), good)
    kv.write(fix)
    con = vfs.connect(kv, vfs=vfs_kind)
    assert rows(con, "SELECT x FROM t") == [(42,)]
    con.close()


def test_oversized_value_for_the_driver_is_refused_cleanly(vfs_kind: str) -> None:
    # A driver whose values cannot hold a 4096-byte chunk: every commit must fail clearly.
    store = MemoryKV(KVLimits(max_value_bytes=1024))
    con = vfs.connect(store.actor("tiny-values"), vfs=vfs_kind)
    with pytest.raises(apsw.IOError, match="exceeds the driver's limit") as info:
        con.execute("CREATE TABLE t (x)")
    assert isinstance(info.value.__cause__, KVLimitError)
    assert len(store) == 0  # nothing half-written
    con.close()


def test_oversized_state_in_the_same_batch_loses_nothing_committed(vfs_kind: str) -> None:
    store = MemoryKV(KVLimits(max_value_bytes=64 * 1024))
    kv = store.actor("big-extra")
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    extra = WriteBatch()
    extra.put(b"\x01", bytes(100_000))  # an actor state too large for the driver
    con.kv_file.commit_hook = lambda: extra
    with pytest.raises(apsw.IOError, match="exceeds the driver's limit"):
        con.execute("INSERT INTO t VALUES (2)")
    con.kv_file.commit_hook = None
    assert rows(con, "SELECT x FROM t") == [(1,)]
    con.execute("INSERT INTO t VALUES (3)")
    con.close()
    con = vfs.connect(store.actor("big-extra"), vfs=vfs_kind)
    assert rows(con, "SELECT x FROM t ORDER BY x") == [(1,), (3,)]
    assert store.actor("big-extra").get_many([b"\x01"]) == [None]
    con.close()


def test_commit_hook_writes_atomically_with_the_commit(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("hook")
    con = vfs.connect(kv, vfs=vfs_kind)
    calls: list[int] = []
    extra = WriteBatch()
    extra.put(b"\x01", b"state-v1")
    con.kv_file.commit_hook = lambda: extra
    con.kv_file.after_commit = lambda: calls.append(1)
    before = store.round_trips
    con.execute("CREATE TABLE t (x)")
    assert store.round_trips - before == 1
    assert kv.get_many([b"\x01"]) == [b"state-v1"] and calls == [1]
    con.close()


def test_wrong_sql_and_types_are_sqlite_errors(store: KVStore, vfs_kind: str) -> None:
    con = vfs.connect(store.actor("sql"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (x INTEGER NOT NULL)")
    with pytest.raises(apsw.SQLError):
        con.execute("SELEC 1")
    with pytest.raises(apsw.ConstraintError):
        con.execute("INSERT INTO t VALUES (NULL)")
    with pytest.raises(TypeError):
        con.execute("INSERT INTO t VALUES (?)", (object(),))
    con.execute("INSERT INTO t VALUES (1)")
    assert rows(con, "SELECT x FROM t") == [(1,)]
    con.close()


def test_connect_argument_errors() -> None:
    kv = MemoryKV().actor("args")
    with pytest.raises(ValueError, match="page_size"):
        vfs.connect(kv, page_size=1000)
    with pytest.raises(ValueError, match="unknown vfs"):
        vfs.connect(kv, vfs="wasm")
    con = vfs.connect(kv)  # the failed attempts released the actor
    con.close()
