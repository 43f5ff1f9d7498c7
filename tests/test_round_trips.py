"""KV round trips, asserted exactly (DESIGN.md section 3's expected costs)."""

from __future__ import annotations

import pytest

import vfs
from vfs.protocol import KVLimits

from actor_db.kv import KVStore, MemoryKV
from tests.helpers import full_preload, integrity


def make_db(store: KVStore, vfs_kind: str, actor: str = "rt", rows: int = 100) -> None:
    con = vfs.connect(store.actor(actor), vfs=vfs_kind)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    con.close()


def test_warm_update_is_one_call_and_warm_select_zero(store: KVStore, vfs_kind: str) -> None:
    make_db(store, vfs_kind)
    con = vfs.connect(store.actor("rt"), vfs=vfs_kind)
    con.execute("SELECT count(*) FROM t").fetchall()  # warm SQLite's page cache
    before = store.round_trips
    con.execute("UPDATE t SET v = 'x' WHERE id = 7")
    assert store.round_trips - before == 1
    before = store.round_trips
    assert con.execute("SELECT v FROM t WHERE id = 7").fetchall() == [("x",)]
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(100,)]
    assert store.round_trips - before == 0
    con.close()


def test_rollback_writes_nothing(store: KVStore, vfs_kind: str) -> None:
    make_db(store, vfs_kind)
    con = vfs.connect(store.actor("rt"), vfs=vfs_kind)
    con.execute("SELECT count(*) FROM t").fetchall()
    before = store.round_trips
    con.execute("BEGIN")
    con.execute("UPDATE t SET v = 'gone'")
    con.execute("INSERT INTO t (v) VALUES ('gone')")
    con.execute("ROLLBACK")
    assert store.round_trips - before == 0
    assert con.execute("SELECT count(*) FROM t WHERE v = 'gone'").fetchall() == [(0,)]
    con.close()


def test_reopen_with_full_preload_reads_nothing_live(store: KVStore, vfs_kind: str) -> None:
    make_db(store, vfs_kind, rows=3000)  # well under 768 KiB
    kv = store.actor("rt")
    before = store.round_trips
    preload = full_preload(kv)
    con = vfs.connect(kv, preload=preload, vfs=vfs_kind)
    assert con.execute("SELECT count(*), max(v) FROM t").fetchall() == [(3000, "row 999")]
    assert store.round_trips - before == 1  # the preload itself
    assert con.stats.live_reads == 0 and con.stats.round_trips == 0
    assert con.stats.preload_hits > 0
    con.close()


def test_cold_select_without_preload_is_one_call_for_a_small_db(store: KVStore, vfs_kind: str) -> None:
    con = vfs.connect(store.actor("tiny"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.close()
    before = store.round_trips
    con = vfs.connect(store.actor("tiny"), vfs=vfs_kind)
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    # meta + commit record + the first chunks (page 1, the table's root) in one call.
    assert store.round_trips - before == 1
    con.close()


@pytest.mark.slow
def test_point_query_on_20mb_db_costs_at_most_btree_depth(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("big")
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
    with con:
        con.executemany("INSERT INTO t (payload) VALUES (randomblob(1000))", [()] * 20_000)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    assert pages * 4096 >= 20_000_000
    # B-tree depth of table t, from SQLite's own dbstat: path '/' is the root, '/000/' a child...
    depth = con.execute("SELECT max(length(path) - length(replace(path, '/', ''))) FROM dbstat WHERE name = 't'").fetchone()[0]
    assert depth >= 2
    con.close()
    before = store.round_trips
    con = vfs.connect(kv, vfs=vfs_kind, preload=vfs.PreloadMap.empty())
    assert len(con.execute("SELECT payload FROM t WHERE id = 12345").fetchone()[0]) == 1000
    spent = store.round_trips - before
    # The meta, page 1 (the schema) and the first pages (the table's root) come in the
    # open's single call; then one call per remaining level of the table's B-tree.
    assert spent <= depth, (spent, depth)
    print(f"20 MB point query: {spent} round trips, table depth {depth}")
    assert integrity(con) == "ok"
    con.close()


def test_one_mib_insert_is_at_most_two_calls_without_batch_limit(vfs_kind: str) -> None:
    store = MemoryKV()
    con = vfs.connect(store.actor("mib"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (b BLOB)")
    before = store.round_trips
    con.execute("INSERT INTO t VALUES (randomblob(1048576))")
    assert store.round_trips - before <= 2
    assert con.stats.large_commits == 0
    con.close()


def test_one_mib_insert_under_rivetkit_limits_uses_redo(vfs_kind: str) -> None:
    store = MemoryKV(KVLimits(max_batch_keys=128, max_batch_bytes=976 * 1024))
    con = vfs.connect(store.actor("mib"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (b BLOB)")
    before = store.round_trips
    con.execute("INSERT INTO t VALUES (randomblob(1048576))")
    spent = store.round_trips - before
    # ~260 chunks, 124 per batch: 3 staging + 1 record + 3 apply = 7 (RivetKit: 317).
    assert spent <= 8, spent
    assert con.stats.large_commits == 1
    assert integrity(con) == "ok"
    con.close()
    con = vfs.connect(store.actor("mib"), vfs=vfs_kind)
    assert con.execute("SELECT length(b) FROM t").fetchall() == [(1048576,)]
    con.close()
