"""The read path: preload map -> chunk cache (with read-ahead) -> live KV."""

from __future__ import annotations

import vfs
from vfs.keys import FILE_MAIN, chunk_key, chunk_range
from vfs.preload import ABSENT, NOT_LOADED

from actor_db.kv import KVStore
from tests.helpers import full_preload, integrity, rows


def build(store: KVStore, vfs_kind: str, actor: str, n_rows: int, payload: int = 1000) -> None:
    con = vfs.connect(store.actor(actor), vfs=vfs_kind)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    with con:
        con.executemany("INSERT INTO t (b) VALUES (zeroblob(?))", [(payload,)] * n_rows)
    con.close()


def test_writes_keep_the_preload_current(store: KVStore, vfs_kind: str) -> None:
    build(store, vfs_kind, "wt", 200)
    kv = store.actor("wt")
    preload = full_preload(kv)
    con = vfs.connect(kv, preload=preload, vfs=vfs_kind)
    con.execute("PRAGMA cache_size=1")  # SQLite keeps almost nothing: reads reach the VFS
    con.execute("UPDATE t SET b = x'abcdef' WHERE id = 150")
    con.execute("DELETE FROM t WHERE id < 10")
    before = con.stats.snapshot()
    assert rows(con, "SELECT hex(b) FROM t WHERE id = 150") == [("ABCDEF",)]
    assert rows(con, "SELECT count(*) FROM t") == [(191,)]
    spent = con.stats - before
    assert spent.round_trips == 0 and spent.preload_hits > 0  # served by the updated preload
    # The preload holds exactly what the KV holds.
    for key, value in kv.scan(*chunk_range(FILE_MAIN)):
        assert preload.lookup(key) == value
    assert integrity(con) == "ok"
    con.close()


def test_cleared_preload_falls_back_to_the_kv(store: KVStore, vfs_kind: str) -> None:
    build(store, vfs_kind, "clr", 50)
    kv = store.actor("clr")
    preload = full_preload(kv)
    assert preload.lookup(chunk_key(FILE_MAIN, 0)) not in (ABSENT, NOT_LOADED)
    preload.clear(*chunk_range(FILE_MAIN))  # what the runtime does before migrations
    assert preload.lookup(chunk_key(FILE_MAIN, 0)) is NOT_LOADED
    con = vfs.connect(kv, preload=preload, vfs=vfs_kind)
    assert rows(con, "SELECT count(*) FROM t") == [(50,)]
    assert con.stats.preload_hits == 0 and con.stats.live_reads >= 1
    con.close()


def test_partial_preload_never_claims_skipped_chunks_absent(store: KVStore, vfs_kind: str) -> None:
    build(store, vfs_kind, "part", 2000)  # ~2 MB: more than the 64 KiB budget below
    kv = store.actor("part")
    preload = full_preload(kv, max_bytes=64 * 1024)
    kept = [i for i in range(600) if isinstance(preload.lookup(chunk_key(FILE_MAIN, i)), bytes)]
    assert kept == list(range(16))
    assert preload.lookup(chunk_key(FILE_MAIN, 16)) is NOT_LOADED
    con = vfs.connect(kv, preload=preload, vfs=vfs_kind)
    assert rows(con, "SELECT count(*), sum(length(b)) FROM t") == [(2000, 2_000_000)]
    assert con.stats.preload_hits >= 16 and con.stats.live_reads >= 1
    assert integrity(con) == "ok"
    con.close()


def test_sequential_scan_reads_ahead_and_cache_serves_rereads(store: KVStore, vfs_kind: str) -> None:
    build(store, vfs_kind, "scan", 3000)  # ~3 MB, far above the 100-page SQLite cache below
    con = vfs.connect(store.actor("scan"), vfs=vfs_kind, cache_chunks=2000, readahead_max_chunks=64,
                      preload=vfs.PreloadMap.empty())
    con.execute("PRAGMA cache_size=100")
    assert rows(con, "SELECT count(*), sum(length(b)) FROM t") == [(3000, 3_000_000)]
    first = con.stats.snapshot()
    # ~760 chunks arrive in far fewer calls thanks to read-ahead.
    assert first.chunks_fetched >= 700
    assert first.live_reads * 8 < first.chunks_fetched, first
    # A second scan misses SQLite's small cache but hits the chunk cache: no round trips.
    assert rows(con, "SELECT count(*) FROM t WHERE length(b) = 1000") == [(3000,)]
    second = con.stats - first
    assert second.round_trips == 0 and second.cache_hits > 500
    con.close()


def test_random_reads_do_not_read_ahead(store: KVStore, vfs_kind: str) -> None:
    build(store, vfs_kind, "rand", 3000)
    con = vfs.connect(store.actor("rand"), vfs=vfs_kind, cache_chunks=0)
    con.execute("PRAGMA cache_size=0")
    before = con.stats.snapshot()
    for i in (2900, 17, 1500, 250, 2222):
        assert rows(con, "SELECT length(b) FROM t WHERE id = ?", i) == [(1000,)]
    spent = con.stats - before
    assert spent.chunks_fetched <= 3 * spent.live_reads  # no runaway read-ahead on point reads
    con.close()


def test_demoted_preload_serves_from_the_cache(store: KVStore, vfs_kind: str) -> None:
    """Before migrations the runtime moves preloaded chunks into the chunk cache."""
    build(store, vfs_kind, "demote", 200)
    kv = store.actor("demote")
    preload = full_preload(kv)
    con = vfs.connect(kv, preload=preload, vfs=vfs_kind)
    moved = con.kv_file.demote_preload()
    assert moved > 40
    assert preload.lookup(chunk_key(FILE_MAIN, 1)) is NOT_LOADED  # no read is answered by the preload
    before = con.stats.snapshot()
    assert rows(con, "SELECT count(*), sum(length(b)) FROM t") == [(200, 200_000)]
    spent = con.stats - before
    assert spent.round_trips == 0 and spent.preload_hits == 0 and spent.cache_hits > 40
    con.execute("UPDATE t SET b = x'01' WHERE id = 5")  # the cache stays write-through
    con.execute("PRAGMA cache_size=1")
    assert rows(con, "SELECT hex(b) FROM t WHERE id = 5") == [("01",)]
    con.close()
