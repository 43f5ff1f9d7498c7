"""Interop with RivetKit's own SQLite VFS (``@rivetkit/sqlite-vfs`` 2.2.1, run by Node).

Both sides read and write the same keys and values (KV dumps, :mod:`tests.interop_support`):
databases written by either open in the other with identical answers, at every page
size, with blobs over a chunk, after VACUUM and a shrink; and every sampled crash cut of
either side's large commit reads as the same committed state on both sides.
"""

from __future__ import annotations

import functools
from typing import Any

import apsw
import pytest

import vfs
from actor_db.kv import KVStore, MemoryKV
from tests.faults import FaultyKV, OtherProcessView
from tests.interop_support import Job, dump_kv, load_kv, require_rivetkit, run_rivetkit
from vfs.protocol import KVLimits

pytestmark = pytest.mark.usefixtures("rivetkit")

RIVETKIT_LIMITS = KVLimits(max_batch_keys=128, max_batch_bytes=976 * 1024)

QUERIES = [
    "PRAGMA integrity_check",
    "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name",
    # every row, in one result row (RivetKit steps each row through an async boundary)
    "SELECT group_concat(id || ':' || v || ':' || length(b) || ':' || hex(substr(b, 1, 3)) || hex(substr(b, -3)), ';')"
    " FROM (SELECT * FROM t ORDER BY id)",
    "SELECT count(*), sum(length(b)), max(v) FROM t",
    "PRAGMA page_size",
    "PRAGMA page_count",
]


def _series(a: int, b: int) -> str:
    return f"(WITH RECURSIVE s(x) AS (SELECT {a} UNION ALL SELECT x+1 FROM s WHERE x<{b}) SELECT x FROM s)"


BUILD = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)",
    "CREATE INDEX t_v ON t(v)",
    f"INSERT INTO t SELECT x, printf('row-%06d', x), CAST(printf('%0*d', 4096 + (x * 977) % 16384, x) AS BLOB) FROM {_series(1, 400)}",
    f"INSERT INTO t SELECT x, printf('small-%06d', x), zeroblob(x % 300) FROM {_series(401, 2400)}",
    "UPDATE t SET v = v || '-u' WHERE id % 5 = 0",
    "DELETE FROM t WHERE id % 11 = 0",
    "VACUUM",
    "DELETE FROM t WHERE id BETWEEN 100 AND 350",
    "VACUUM",  # a shrink
]
"""Deterministic (both sides build the same bytes): ~3 MiB with blobs of 4-20 KiB (over a chunk), an index, updates, deletes, VACUUM, a shrink."""

MORE = [
    f"INSERT INTO t SELECT x, printf('more-%06d', x), CAST(printf('%05000d', x) AS BLOB) FROM {_series(5000, 5120)}",
    "UPDATE t SET v = v || '-m' WHERE id % 3 = 0",
    "DELETE FROM t WHERE id % 13 = 0",
]
"""A second writer's work: more than 127 pages (RivetKit commits it through its journal)."""


@pytest.fixture
def rivetkit() -> None:
    require_rivetkit()


def _norm(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def ours(kv: Any, vfs_kind: str, *, readonly: bool = True) -> Any:
    """Our answers to :data:`QUERIES` (or the apsw error's class name)."""
    try:
        con = vfs.connect(kv, vfs=vfs_kind, readonly=readonly)
    except apsw.Error as exc:
        return type(exc).__name__
    try:
        return [_norm([list(row) for row in con.execute(q)]) for q in QUERIES]
    except apsw.Error as exc:
        return type(exc).__name__
    finally:
        con.close()


def theirs(results: list[Any]) -> Any:
    """RivetKit's answers (or ``"error: ..."``)."""
    if any(isinstance(r, dict) for r in results):
        return "error: " + next(r["error"] for r in results if isinstance(r, dict))
    return _norm(results[-len(QUERIES):])


def _queries() -> list[tuple[str, bool]]:
    return [(q, True) for q in QUERIES]


@functools.lru_cache(maxsize=None)
def rivetkit_database() -> tuple[bytes, Any]:
    """A database RivetKit built (its dump) and its answers (built once per process)."""
    job = Job([(";".join(BUILD), False)] + _queries())
    run_rivetkit([job])
    return job.dump_out, theirs(job.results)


def test_rivetkit_database_opens_in_ours_and_back(store: KVStore, vfs_kind: str) -> None:
    dump, answers = rivetkit_database()
    assert answers[0] == [["ok"]] and answers[3][0][0] > 1500
    load_kv(store.actor("rk"), dump)
    assert ours(OtherProcessView(store.actor("rk")), vfs_kind) == answers
    owner = store.actor("rk")
    owner.acquire_ownership()
    con = vfs.connect(owner, vfs=vfs_kind)
    for sql in MORE:
        con.execute(sql)
    con.close()
    mine = ours(store.actor("rk"), vfs_kind)
    job = Job(_queries(), dump_in=dump_kv(store.actor("rk")))
    run_rivetkit([job])
    assert theirs(job.results) == mine


@pytest.mark.parametrize("page_size", [512, 1024, 4096, 8192, 65536])
def test_our_database_opens_in_rivetkit_and_back(vfs_kind: str, page_size: int) -> None:
    store = MemoryKV()
    con = vfs.connect(store.actor("a"), vfs=vfs_kind, page_size=page_size)
    for sql in BUILD[:6]:
        con.execute(sql)
    con.execute("VACUUM")
    con.execute("DELETE FROM t WHERE id BETWEEN 100 AND 350")
    con.execute("VACUUM")
    con.close()
    mine = ours(store.actor("a"), vfs_kind)
    assert mine[4] == [[page_size]]
    job = Job(_queries() + [(";".join(MORE), False)] + _queries(), dump_in=dump_kv(store.actor("a")))
    run_rivetkit([job])
    assert _norm(job.results[:len(QUERIES)]) == mine
    after = theirs(job.results)
    assert after[0] == [["ok"]] and after != mine
    load_kv(store.actor("b"), job.dump_out)
    assert ours(store.actor("b"), vfs_kind) == after


def _sample(total: int, n: int) -> list[int]:
    return sorted({round(k * total / (n - 1)) for k in range(n)} | {total - 2, total - 1, total})


@functools.lru_cache(maxsize=None)
def rivetkit_crash_cuts() -> tuple[Any, Any, list[tuple[int, bytes, Any]]]:
    """Old answers, new answers, and per sampled cut of RivetKit's large commit
    (:data:`MORE` in one transaction): the cut, the KV left, RivetKit's answers."""
    base, old = rivetkit_database()
    commit = "BEGIN;" + ";".join(MORE) + ";COMMIT"
    full = Job([(commit, False)] + _queries(), dump_in=base)
    run_rivetkit([full])
    cuts = _sample(full.writes, 12)
    cut_job = Job([(commit, False)], dump_in=base, cuts=cuts)
    run_rivetkit([cut_job])
    readers = [Job(_queries(), dump_in=dump) for _, _, _, dump in cut_job.cut_runs]
    run_rivetkit(readers)
    out = [(cut, dump, theirs(reader.results)) for cut, (_, _, _, dump), reader in zip(cuts, cut_job.cut_runs, readers)]
    return old, theirs(full.results), out


@pytest.mark.parametrize("mode", ["owner", "readonly"])
def test_rivetkit_crash_cuts_read_the_same_on_both_sides(vfs_kind: str, mode: str) -> None:
    """Issue 26: RivetKit cut in its journaled commit. Before the fix, cuts with the main
    file partly rewritten failed with `malformed` in ours, and the cut with every page
    written but the journal still hot read the uncommitted state."""
    old, new, cuts = rivetkit_crash_cuts()
    assert old != new
    store = MemoryKV()
    for cut, dump, answers in cuts:
        assert answers in (old, new), cut  # RivetKit itself: a committed state
        load_kv(store.actor(f"c{cut}"), dump)
        if mode == "owner":
            kv: Any = store.actor(f"c{cut}")
            kv.acquire_ownership()
            assert ours(kv, vfs_kind, readonly=False) == answers, cut
        else:
            assert ours(OtherProcessView(store.actor(f"c{cut}")), vfs_kind) == answers, cut
    if mode == "owner":
        # What the owner's rollback left reads the same in RivetKit (a mid-commit cut).
        cut, _, answers = cuts[len(cuts) // 2]
        job = Job(_queries(), dump_in=dump_kv(store.actor(f"c{cut}")))
        run_rivetkit([job])
        assert theirs(job.results) == answers


def test_our_large_commit_cuts_read_the_same_on_both_sides(vfs_kind: str) -> None:
    """Cut our large commit (under RivetKit's 128-key limit) at every write call: what
    is left reads as the same committed state in RivetKit and in ours."""
    base, _ = rivetkit_database()

    def commit(kv: Any) -> None:
        con = vfs.connect(kv, vfs=vfs_kind)
        try:
            with con:
                for sql in MORE:
                    con.execute(sql)
        finally:
            try:
                con.close()
            except apsw.Error:
                pass

    store = MemoryKV()  # the VFS sees RivetKit's limits through FaultyKV
    load_kv(store.actor("full"), base)
    counted = FaultyKV(store.actor("full"), limits=RIVETKIT_LIMITS)
    commit(counted)
    total = counted.writes
    load_kv(store.actor("ref-old"), base)
    old, new = ours(store.actor("ref-old"), vfs_kind), ours(store.actor("full"), vfs_kind)
    assert old != new and total > 3
    dumps: list[tuple[int, bytes]] = []
    for n in range(1, total + 1):
        load_kv(store.actor(f"n{n}"), base)
        kv = FaultyKV(store.actor(f"n{n}"), fail_write_at=n, limits=RIVETKIT_LIMITS)
        try:
            commit(kv)
        except apsw.Error:
            pass
        dumps.append((n, dump_kv(store.actor(f"n{n}"))))
    readers = [Job(_queries(), dump_in=dump) for _, dump in dumps]
    run_rivetkit(readers)
    for (n, dump), reader in zip(dumps, readers):
        answers = theirs(reader.results)
        mine = ours(OtherProcessView(store.actor(f"n{n}")), vfs_kind)
        assert mine in (old, new), n
        assert answers == mine, (n, total)
