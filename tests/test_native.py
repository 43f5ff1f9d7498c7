"""The native (C) VFS: same KV format and round trips as the Python VFS, errors that name
the KV cause, no leak over thousands of opens, and a mixed speedtest1-like workload.

The foundation's behavioural suites (test_vfs_behaviour, test_round_trips, test_parity,
test_reads, test_format, test_crash, ...) already run on both VFSes through the
``vfs_kind`` fixture; this file checks what is specific to the C one.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import apsw
import pytest

import native
import vfs
from actor_db.kv import KVStore, MemoryKV
from tests.faults import FaultyKV
from tests.helpers import dump, full_preload, integrity
from vfs.protocol import KVLimits

pytestmark = pytest.mark.skipif(not native.AVAILABLE and os.environ.get("CI", "").lower() not in {"1", "true", "yes"},
                                reason="native VFS not built (CI fails in tests/drivers.vfs_kinds instead)")


def _workload(con: apsw.Connection, seed: int = 7) -> list[Any]:
    """A speedtest1-like mix (inserts, indexed and unindexed lookups, updates, deletes,
    joins, a big transaction, ROLLBACK, VACUUM); returns what the queries returned."""
    rng = random.Random(seed)
    out: list[Any] = []
    con.execute("CREATE TABLE t1(a INTEGER PRIMARY KEY, b INTEGER, c TEXT)")
    con.execute("CREATE TABLE t2(a INTEGER PRIMARY KEY, b INTEGER, c BLOB)")
    with con:
        con.executemany("INSERT INTO t1(b, c) VALUES(?, ?)",
                        [(rng.randrange(100000), f"row {i} " + "x" * rng.randrange(200)) for i in range(3000)])
    for i in range(50):  # many small transactions
        con.execute("INSERT INTO t2(b, c) VALUES(?, ?)", (i, rng.randbytes(rng.randrange(1, 3000))))
    con.execute("CREATE INDEX t1b ON t1(b)")
    out += con.execute("SELECT count(*), sum(b), max(length(c)) FROM t1").fetchall()
    out += [con.execute("SELECT c FROM t1 WHERE b BETWEEN ? AND ?", (x, x + 500)).fetchall()
            for x in (rng.randrange(100000) for _ in range(30))]
    with con:
        con.execute("UPDATE t1 SET c = c || '!' WHERE a % 7 = 0")
        con.execute("DELETE FROM t1 WHERE a % 11 = 0")
    try:
        with con:
            con.execute("DELETE FROM t1")
            raise KeyError("roll back")
    except KeyError:
        pass
    out += con.execute("SELECT t1.a, t2.b, length(t2.c) FROM t1 JOIN t2 ON t1.a = t2.a ORDER BY t1.a").fetchall()
    with con:  # one large transaction (several MiB of pages)
        con.executemany("INSERT INTO t2(b, c) VALUES(?, ?)", [(i, rng.randbytes(2000)) for i in range(2000)])
    with con:
        con.execute("DELETE FROM t2 WHERE a > 1000")
    con.execute("VACUUM")
    out += con.execute("SELECT count(*), sum(length(c)) FROM t2").fetchall()
    out.append(hashlib.sha256(repr(dump(con)).encode()).hexdigest())
    out.append(integrity(con))
    return out


def _run(kind: str, store: KVStore, actor: str, **kwargs: Any) -> tuple[list[Any], dict[str, int]]:
    con = vfs.connect(store.actor(actor), vfs=kind, **kwargs)
    try:
        result = _workload(con)
        return result, con.stats.as_dict()
    finally:
        con.close()


@pytest.mark.parametrize("options", [
    {},
    {"cache_chunks": 0},
    {"cache_chunks": 16, "readahead_max_chunks": 8},
    {"max_dirty_bytes": 64 * 1024},  # spills to the staging range, commits through the redo log
], ids=["default", "no-cache", "small-cache", "spill"])
def test_mixed_workload_identical_results_and_counters(store: KVStore, options: dict[str, Any]) -> None:
    """Same results as apsw on a local file, and EVERY counter (round trips, hits,
    chunks) identical between the Python and the native VFS."""
    py, py_stats = _run("python", store, "py", **options)
    nat, nat_stats = _run("native", store, "nat", **options)
    local = apsw.Connection(":memory:")
    expected = _workload(local)
    assert py == expected
    assert nat == expected
    assert nat_stats == py_stats
    assert nat_stats["round_trips"] > 0


def test_mixed_workload_under_small_batch_limits() -> None:
    """Driver limits force every commit through the redo protocol: same counters."""
    limits = KVLimits(max_batch_keys=16, max_batch_bytes=64 * 1024)
    base = MemoryKV()
    results = {}
    for kind in ("python", "native"):
        kv = FaultyKV(base.actor(kind), limits=limits)
        con = vfs.connect(kv, vfs=kind)
        try:
            results[kind] = (_workload(con), con.stats.as_dict())
        finally:
            con.close()
    assert results["native"] == results["python"]
    assert results["native"][1]["large_commits"] > 0


@pytest.mark.parametrize("writer,reader", [("native", "python"), ("python", "native")])
def test_a_database_written_by_one_vfs_opens_in_the_other(store: KVStore, writer: str, reader: str) -> None:
    con = vfs.connect(store.actor("a"), vfs=writer)
    written = _workload(con)
    before = dump(con)
    con.close()
    con = vfs.connect(store.actor("a"), vfs=reader, preload=full_preload(store.actor("a")))
    try:
        assert dump(con) == before
        assert integrity(con) == "ok"
        assert written[-1] == "ok"
    finally:
        con.close()


def test_preload_warm_open_and_reads_cost_what_python_costs(store: KVStore) -> None:
    con = vfs.connect(store.actor("a"), vfs="python")
    _workload(con)
    con.close()
    costs = {}
    for kind in ("python", "native"):
        preload = full_preload(store.actor("a"), max_bytes=64 * 1024)  # partial: 16 chunks
        con = vfs.connect(store.actor("a"), vfs=kind, preload=preload, cache_chunks=8)
        try:
            con.execute("SELECT count(*) FROM t1").fetchall()
            preload.clear()  # e.g. before migrations: C must forget its copy too
            con.execute("PRAGMA cache_size=1")  # force SQLite to re-read pages
            con.execute("SELECT sum(length(c)) FROM t2").fetchall()
            costs[kind] = con.stats.as_dict()
        finally:
            con.close()
    assert costs["native"] == costs["python"]
    assert costs["native"]["preload_hits"] > 0


@pytest.mark.parametrize("rows", [40, 160], ids=["db-within-preload", "db-past-preload"])
def test_commits_keep_the_preload_mirror_current(store: KVStore, rows: int) -> None:
    """A commit updates C's copy of the preload in one call (``kvn_preload_put_dirty``),
    not through the Python map's listener: a committed chunk the preload covers gets
    its new bytes (in place of a value, or of "absent" past the old end), a chunk it
    never covered stays not loaded; with no chunk cache to hide a stale copy, every
    page reads back as the Python VFS reads it."""
    from native.file import lib

    outcome = {}
    for kind in ("python", "native"):
        con = vfs.connect(store.actor(kind), vfs="python")
        con.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        with con:
            con.executemany("INSERT INTO t(b) VALUES(?)", [("x" * 300,) for _ in range(rows)])  # ~4 / ~16 chunks
        con.close()
        # 8 chunks of budget: the whole small database (every later chunk known absent),
        # or the first 8 chunks of the big one (later chunks not loaded).
        preload = full_preload(store.actor(kind), max_bytes=32 * 1024)
        con = vfs.connect(store.actor(kind), vfs=kind, preload=preload, cache_chunks=0)
        try:
            for i in range(1, 41, 7):
                with con:
                    con.execute("UPDATE t SET b = ? WHERE a = ?", (f"row {i} updated " * 10, i))
            with con:  # grow to ~16 chunks: past the preload's 8
                con.executemany("INSERT INTO t(b) VALUES(?)", [("y" * 900,) for _ in range(40)])
            if kind == "native":
                states = [lib.kvn_preload_lookup(con.kv_file._c, i) for i in range(12)]
                assert states == ([2] * 12 if rows == 40 else [2] * 8 + [0] * 4)
            con.execute("PRAGMA cache_size=1")  # SQLite re-reads every page through the VFS
            outcome[kind] = ([tuple(r) for r in con.execute("SELECT a, b FROM t ORDER BY a")], integrity(con))
        finally:
            con.close()
    assert outcome["native"] == outcome["python"]
    content, check = outcome["native"]
    assert check == "ok" and len(content) == rows + 40
    assert content[7] == (8, "row 8 updated " * 10) and content[1] == (2, "x" * 300)


def test_a_commit_still_tells_other_preload_listeners(store: KVStore) -> None:
    """The native file mirrors a commit into C itself and skips only its own listener:
    any other listener of the same preload hears every committed key, as with the
    Python VFS."""
    heard: dict[str, list[bytes]] = {}
    for kind in ("python", "native"):
        kv = store.actor(kind)
        con = vfs.connect(kv, vfs="python")
        con.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        con.close()
        preload = full_preload(kv)
        keys: list[bytes] = []
        preload.add_listener(lambda start, end, keys=keys: keys.append(start))
        con = vfs.connect(kv, vfs=kind, preload=preload)
        try:
            with con:
                con.execute("INSERT INTO t(b) VALUES ('x')")
            assert con.kv_file._meta_key in keys
        finally:
            con.close()
        heard[kind] = keys
    assert heard["native"] == heard["python"] and len(heard["native"]) >= 2  # chunks and the meta


def test_kv_failures_raise_apsw_errors_naming_the_cause_and_recover(store: KVStore) -> None:
    kv = FaultyKV(store.actor("a"))
    con = vfs.connect(kv, vfs="native", cache_chunks=0)
    try:
        con.execute("CREATE TABLE t(x)")
        con.execute("INSERT INTO t VALUES (1)")
        kv.down = True
        with pytest.raises(apsw.IOError, match=r"actor-db: KV write of the commit batch .*injected: KV is down"):
            con.execute("INSERT INTO t VALUES (2)")
        con.execute("PRAGMA cache_size=1")
        with pytest.raises(apsw.IOError, match=r"injected: KV is down") as info:
            con.execute("SELECT * FROM t").fetchall()
        assert isinstance(info.value.__cause__, Exception)
        kv.down = False
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
        con.execute("INSERT INTO t VALUES (3)")
        assert con.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,)]
        assert integrity(con) == "ok"
    finally:
        con.close()


def test_open_failure_raises_the_kv_cause(store: KVStore) -> None:
    kv = FaultyKV(store.actor("a"))
    kv.down = True
    with pytest.raises(apsw.IOError, match="injected: KV is down"):
        vfs.connect(kv, vfs="native")
    kv.down = False
    con = vfs.connect(kv, vfs="native")  # the failed open released the actor
    con.close()


def test_refused_pragma_gives_a_clear_error() -> None:
    con = vfs.connect(MemoryKV().actor("a"), vfs="native")
    try:
        with pytest.raises(apsw.SQLError, match="synchronous must be NORMAL"):
            con.execute("PRAGMA synchronous=OFF")
        # journal_mode cannot change: SQLite's rule is no error, the row is the mode kept
        assert con.execute("PRAGMA journal_mode=WAL").fetchall() == [("memory",)]
    finally:
        con.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_no_leak_over_2000_open_close_cycles() -> None:
    """Every C block is freed on close (exact count), and RSS stays bounded."""
    from native._kvvfs import lib

    store = MemoryKV()
    kv = store.actor("a")
    con = vfs.connect(kv, vfs="native")
    con.execute("CREATE TABLE t(x INTEGER PRIMARY KEY, y BLOB)")
    with con:
        con.executemany("INSERT INTO t(y) VALUES(?)", [(bytes(500),)] * 200)
    con.close()

    def cycle(i: int) -> None:
        c = vfs.connect(kv, vfs="native", preload=full_preload(kv, max_bytes=16 * 1024))
        c.execute("SELECT sum(length(y)) FROM t").fetchall()
        c.execute("UPDATE t SET y = ? WHERE x = ?", (bytes([i % 256]) * 500, i % 200 + 1))
        c.close()

    for i in range(100):  # warm up allocator pools and caches
        cycle(i)
    blocks = lib.kvn_live_allocations()
    rss = _rss_bytes()
    for i in range(2000):
        cycle(i)
    assert lib.kvn_live_allocations() == blocks
    assert _rss_bytes() - rss < 16 * 1024 * 1024


def test_error_while_rolling_back_does_not_crash(vfs_kind: str) -> None:
    """Failures inside SQLite's own rollback (further callbacks fail while an error is
    pending) keep the first error and leave the connection usable."""
    base = MemoryKV().actor("a")
    kv = FaultyKV(base)
    con = vfs.connect(kv, vfs=vfs_kind, cache_chunks=0, max_dirty_bytes=8 * 4096)
    try:
        con.execute("CREATE TABLE t(x INTEGER PRIMARY KEY, y BLOB)")
        with con:
            con.executemany("INSERT INTO t(y) VALUES(?)", [(bytes(3000),)] * 50)
        con.execute("PRAGMA cache_size=2")
        for n in range(1, 6):
            kv.fail_write_at = kv.writes + n
            with pytest.raises(apsw.IOError, match="injected"):
                con.execute("UPDATE t SET y = randomblob(3000)")
        kv.fail_write_at = None
        assert con.execute("SELECT count(*) FROM t").fetchone() == (50,)
        assert integrity(con) == "ok"
    finally:
        con.close()


def test_vfs_kinds_include_native_when_built() -> None:
    from tests.drivers import vfs_kinds

    assert vfs_kinds() == ["python", "native"]


def test_unknown_vfs_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 'python' or 'native'"):
        vfs.connect(MemoryKV().actor("a"), vfs="rust")




@pytest.mark.parametrize("options", [{}, {"max_dirty_bytes": 64 * 1024}], ids=["default", "spill"])
def test_commits_leave_byte_identical_kv_contents(options: dict[str, Any]) -> None:
    """The native commit hands its dirty chunks to Python in one bulk copy (buffers that
    grow for the workload's large transaction and shrink after it): every key and value
    it leaves in the KV equals the Python VFS's, with the same round trips."""
    store = MemoryKV()
    contents = {}
    for kind in ("python", "native"):
        _, stats = _run(kind, store, kind, **options)
        kv = store.actor(kind)
        contents[kind] = (kv.scan(b"", b"\xff" * 16), stats["round_trips"], stats["chunks_written"])
    assert contents["native"] == contents["python"]
    assert len(contents["native"][0]) > 500  # the database (over 2 MiB after VACUUM) is there
