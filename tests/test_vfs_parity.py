"""One behaviour, two implementations (issue 25): the Python VFS (``vfs/``) and the C VFS
(``native/``) make exactly the same KV round trips, fetch the same chunks and read the
same pages live, on a database past the preload, however it is opened (no preload, an
empty one, a partial one), with the chunk cache off (``cache_chunks=0``), capped at a
few chunks or shared, SQLite's own page cache on or off, on every driver; and through
large commits under RivetKit's batch limits (the rollback journal) and a VACUUM.

(``tests/test_hint_interior.py`` checks the hints they write after the same workload.)
"""

from __future__ import annotations

from typing import Any

import pytest

import vfs
from vfs.protocol import KVLimits, PreloadRequest

from actor_db.kv import KVStore, MemoryKV
from actor_db.runtime.metrics import CountingKV
from tests.drivers import vfs_kinds

ROWS = 6000
PK = "SELECT length(v) FROM t WHERE id = ?"
INDEX = "SELECT id FROM t WHERE k = ?"
FILL = ("WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO t SELECT i, printf('k%07d', (i * 7919) % ?), randomblob(200) FROM s")

pytestmark = pytest.mark.skipif(len(vfs_kinds()) < 2, reason="needs the native VFS")


def _build(store: KVStore, actor: str, step: int) -> None:
    owner = store.actor(actor)
    owner.acquire_ownership()
    con = vfs.connect(owner, vfs="python")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
    con.execute("CREATE INDEX t_k ON t (k)")
    for start in range(1, ROWS + 1, step):
        with con:
            con.execute(FILL, (start, min(ROWS, start + step - 1), ROWS))
    con.close()


def _workload(store: KVStore, actor: str, kind: str, preload_mode: str, cache_chunks: int | None,
              sqlite_cache: int | None, writes: bool) -> tuple[Any, ...]:
    counting = CountingKV(store.actor(actor))
    if preload_mode == "none":
        preload = None
    elif preload_mode == "empty":
        preload = vfs.PreloadMap.empty()
    else:
        preload = counting.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(),
                                                  ranges=vfs.sqlite_preload_ranges(128 * 1024)))
    con = vfs.connect(counting, preload=preload, vfs=kind, cache_chunks=cache_chunks)
    if sqlite_cache is not None:
        con.execute(f"PRAGMA cache_size={sqlite_cache}")
    trips = []
    for i in range(1, ROWS, 499):
        con.execute(PK, (i,)).fetchall()
        con.execute(INDEX, (f"k{(i * 3 * 7919) % ROWS:07d}",)).fetchall()
        trips.append(counting.round_trips)
    for sql in ("SELECT count(*), sum(length(v)) FROM t WHERE id > 3000", "SELECT count(*) FROM t WHERE k > 'k0002'"):
        con.execute(sql).fetchall()
        trips.append(counting.round_trips)
    if writes:
        for n in range(2):
            with con:
                con.execute(FILL, (10000 + n * 2000, 11999 + n * 2000, ROWS))
            trips.append(counting.round_trips)
        with con:
            con.execute("DELETE FROM t WHERE id % 3 = 0")
        trips.append(counting.round_trips)
        con.execute("VACUUM")
        trips.append(counting.round_trips)
        con.execute("SELECT count(*), sum(length(v)) FROM t").fetchall()
        trips.append(counting.round_trips)
    stats = con.stats.snapshot()
    con.close()
    return trips, stats.chunks_fetched, stats.live_reads, stats.large_commits


@pytest.mark.parametrize("preload_mode", ["none", "empty", "partial"])
@pytest.mark.parametrize(("cache_chunks", "sqlite_cache"), [(0, None), (0, 0), (4, 0), (None, 0)],
                         ids=["no-chunk-cache", "no-cache-at-all", "tiny-chunk-cache", "runtime-like"])
def test_both_vfses_read_alike_past_the_preload(store: KVStore, preload_mode: str, cache_chunks: int | None,
                                                sqlite_cache: int | None) -> None:
    _build(store, "parity", 3000)
    python = _workload(store, "parity", "python", preload_mode, cache_chunks, sqlite_cache, writes=False)
    native = _workload(store, "parity", "native", preload_mode, cache_chunks, sqlite_cache, writes=False)
    assert native == python
    assert python[2] > 0  # the database is past the preload: pages were read live


@pytest.mark.parametrize(("cache_chunks", "sqlite_cache"), [(0, None), (0, 0), (None, 0)],
                         ids=["no-chunk-cache", "no-cache-at-all", "runtime-like"])
def test_both_vfses_commit_alike_under_rivetkit_limits(cache_chunks: int | None, sqlite_cache: int | None) -> None:
    """Commits past the atomic-batch limit (128 keys / 976 KiB) and a VACUUM: the same
    round trips, each VFS on its own copy of the same database."""
    outcome = []
    for kind in ("python", "native"):
        store = MemoryKV(KVLimits(max_batch_keys=128, max_batch_bytes=976 * 1024))
        _build(store, "limits", 500)
        outcome.append(_workload(store, "limits", kind, "partial", cache_chunks, sqlite_cache, writes=True))
    assert outcome[1] == outcome[0]
    assert outcome[0][3] >= 2  # large commits went through the journal
