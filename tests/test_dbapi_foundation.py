"""The foundation's parity, crash and round-trip suites, run THROUGH ``actor_db.dbapi``.

Issue 4 requires that "the foundation's parity, crash and round-trip tests also pass
through this API". The bodies below mirror ``tests/test_parity.py``,
``tests/test_crash.py`` and ``tests/test_round_trips.py`` (reusing their hypothesis
strategy, statement builder, limits and options) but every statement goes through the
DB-API facade: ``dbapi.connect(name, kv=...)``, ``con.execute``, ``with con:`` commits,
``con.rollback()``. They run over every KV driver (``store``) and every VFS
(``vfs_kind``, passed as ``vfs_options={"vfs": ...}``).

The crash sweep fails every KV write call of every transaction in turn, like
``test_crash.py``, but starts each faulty run from a restored KV snapshot of the state
before the interrupted transaction instead of replaying the script's prefix: the cost is
then linear in the script's write calls, not quadratic (the foundation suite keeps the
replaying variant). A fault-free reference run checks that the warm script and the
chain of snapshot-started transactions give identical states.

How a faulty KV reaches the facade: ``dbapi.connect`` accepts an actor-scoped view as
``kv=`` (anything with ``get_many`` and ``identity``), so a :class:`tests.faults.FaultyKV`
wrapping ``store.actor(name)`` is handed over as is; its ``limits`` (``SMALL_LIMITS``)
make large transactions take the redo protocol.

The round-trip tests open with ``locking="exclusive"`` (the VFS's single-connection
mode, as in ``test_round_trips.py``): they check that the facade adds no KV call of its
own. What the default multi-connection locking costs is asserted in
``tests/test_dbapi.py`` and ``tests/test_multi_connection.py``.

Left out here: the ``kill -9`` subprocess test and the 20 MB B-tree-depth test (both
exercise the VFS below the facade, which adds no KV calls of its own; they stay in the
foundation suites).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sqlite3
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vfs
from vfs.protocol import WriteBatch

from actor_db import dbapi
from actor_db.kv import KVStore, MemoryKV
from tests.faults import FaultyKV, InjectedFault
from tests import helpers
from tests.helpers import full_preload
from tests.test_crash import SMALL_LIMITS, _savepoints
from tests.test_crash import OPTIONS as CRASH_OPTIONS
from tests.test_parity import OPS, blob, run, statements

_names = itertools.count()


def _name(prefix: str) -> str:
    """A fresh bare actor name (letters, digits, ``-``), unique in this process."""
    return f"{prefix}-{next(_names)}"


def _open(name: str, kv: Any, vfs_kind: str, isolation_level: str | None = "", **vfs_options: Any) -> dbapi.Connection:
    con = dbapi.connect(name, kv=kv, isolation_level=isolation_level, vfs_options={"vfs": vfs_kind, **vfs_options})
    assert isinstance(con, dbapi.Connection) and con.kv_backed
    return con


def integrity(con: dbapi.Connection) -> str:
    """``PRAGMA integrity_check`` through the facade (``tests.helpers`` works on any
    connection with ``execute``)."""
    return helpers.integrity(con)  # type: ignore[arg-type]


def dump(con: dbapi.Connection) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every user table's rows, ordered, through the facade."""
    return helpers.dump(con)  # type: ignore[arg-type]


def _stats(con: dbapi.Connection) -> vfs.VFSStats:
    """The VFS counters of a KV-backed facade connection."""
    raw = con.apsw_connection
    assert isinstance(raw, vfs.KVConnection)
    return raw.stats


def _causes(exc: BaseException | None) -> list[BaseException]:
    """An exception and its causes/contexts (the facade re-raises apsw's I/O error as a
    stdlib class; the KV error stays in the chain)."""
    out = []
    while exc is not None:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _chain(exc: BaseException | None) -> str:
    return " | ".join(f"{type(e).__name__}: {e}" for e in _causes(exc))


# ======================================================================================
# 1. Parity with the stdlib sqlite3 (hypothesis)
# ======================================================================================
@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(OPS, min_size=1, max_size=40))
@pytest.mark.parametrize("isolation_level", [None, ""], ids=["autocommit", "implicit-begin"])
def test_random_workloads_through_dbapi_match_stdlib_sqlite(store: KVStore, vfs_kind: str, isolation_level: str | None,
                                                            ops: list[tuple[Any, ...]]) -> None:
    """``None``: BEGIN/COMMIT/SAVEPOINT come only from the workload. ``""`` (the stdlib
    default): both modules also open a transaction before each INSERT/UPDATE/DELETE, so
    the facade's re-implementation of that rule is compared too."""
    name = _name("dbapi-parity")
    con = _open(name, store, vfs_kind, isolation_level=isolation_level, cache_chunks=16, max_dirty_bytes=1 << 20)
    ref = sqlite3.connect(":memory:", isolation_level=isolation_level)  # type: ignore[arg-type]
    schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, n INTEGER)"
    con.execute(schema)
    ref.execute(schema)
    for op in ops:
        sql, args = statements(op)
        got = run(con.execute, sql, args)
        want = run(ref.execute, sql, args)
        if op[0] == "page_size":
            continue  # not observable in results; it only changes the layout
        assert got == want, (op, got, want)
        assert con.in_transaction == ref.in_transaction, op
    ref.commit()
    con.commit()
    assert not con.in_transaction
    final = run(con.execute, *statements(("select",)))
    assert final == run(ref.execute, *statements(("select",)))
    assert integrity(con) == "ok"
    con.close()
    reopened = _open(name, store, vfs_kind)
    assert run(reopened.execute, *statements(("select",))) == final
    assert integrity(reopened) == "ok"
    reopened.close()
    ref.close()


# ======================================================================================
# 2. Crash safety: every KV write call of the script fails in turn
# ======================================================================================
Txn = Callable[[dbapi.Connection], None]


def _ddl(sql: str) -> Txn:
    """A statement the facade runs in autocommit (no implicit BEGIN before DDL/VACUUM)."""
    def txn(con: dbapi.Connection) -> None:
        con.execute(sql)
    return txn


def _dml(sql: str) -> Txn:
    """A DML statement in an implicit transaction committed by ``with con:``."""
    def txn(con: dbapi.Connection) -> None:
        with con:
            con.execute(sql)
    return txn


def _big_insert(con: dbapi.Connection) -> None:
    # 40 rows (test_crash.py: 120): ~70 dirty chunks with the index on v, still well
    # over max_dirty_bytes (24 chunks: spills to staging) and the 16-key batch limit
    # (redo), at a third of the write calls (the sweep's cost grows with their square).
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([i % 251]) * 3000,) for i in range(40)])


SCRIPT: list[Txn] = [
    _ddl("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"),
    _ddl("CREATE INDEX t_v ON t (v)"),
    _dml("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) INSERT INTO t (v) SELECT CAST(printf('%.*c', 300 + i, char(65 + i % 26)) AS BLOB) FROM n"),
    _big_insert,                                     # spills and uses redo
    _dml("UPDATE t SET v = CAST(printf('%.*c', 100 + id, char(97 + id % 26)) AS BLOB) WHERE id % 3 = 0"),
    _dml("DELETE FROM t WHERE id > 60"),
    _ddl("VACUUM"),                                  # shrinks the file
    _savepoints,
    _dml("INSERT INTO t (v) VALUES (zeroblob(5000))"),
]


@dataclasses.dataclass(frozen=True)
class Reference:
    """The script's outcome on a fault-free MemoryKV, through the facade.

    :ivar states: the database content after each transaction (index 0 = empty).
    :ivar snapshots: every key/value of the actor after each transaction (index 0 =
        empty); restoring ``snapshots[k]`` recreates the KV exactly as the interrupted
        transaction ``k`` found it.
    :ivar writes: KV write calls transaction ``k`` makes when run on a connection
        freshly opened on ``snapshots[k]`` (how the sweep runs it).
    """

    states: list[Any]
    snapshots: list[list[tuple[bytes, bytes]]]
    writes: list[int]


def _snapshot(view: Any) -> list[tuple[bytes, bytes]]:
    """Every key/value of one actor (its whole relative keyspace), 1 round trip."""
    return list(view.scan(b"", b"\xff\xff"))


def _restore(view: Any, pairs: list[tuple[bytes, bytes]]) -> None:
    """Put ``pairs`` into an empty actor, in as few batches as the driver's limits allow."""
    batch = WriteBatch()
    for key, value in pairs:
        if batch and not view.limits.batch_fits(batch.op_count + 1, batch.payload_bytes + len(key) + len(value)):
            view.write(batch)
            batch = WriteBatch()
        batch.put(key, value)
    if batch:
        view.write(batch)


@functools.lru_cache(maxsize=None)
def _reference(vfs_kind: str) -> Reference:
    """Run the script once warm (one connection, as an application would) and once as a
    chain of cold per-transaction runs from snapshots; both must give the same states."""
    warm_kv = FaultyKV(MemoryKV().actor("ref"), limits=SMALL_LIMITS)
    con = _open("ref", warm_kv, vfs_kind, **CRASH_OPTIONS)
    warm = [dump(con)]
    for txn in SCRIPT:
        txn(con)
        warm.append(dump(con))
    assert _stats(con).large_commits > 0, "the script must exercise the redo protocol"
    con.close()

    states, snapshots, writes = [warm[0]], [_snapshot(MemoryKV().actor("empty"))], []
    for k, txn in enumerate(SCRIPT):
        view = MemoryKV().actor(f"cold-{k}")
        _restore(view, snapshots[k])
        kv = FaultyKV(view, limits=SMALL_LIMITS)
        con = _open(f"cold-{k}", kv, vfs_kind, **CRASH_OPTIONS)
        txn(con)
        states.append(dump(con))
        con.close()
        writes.append(kv.writes)
        snapshots.append(_snapshot(view))
    assert states == warm
    return Reference(states, snapshots, writes)


def _assert_names_kv_cause(exc: BaseException) -> None:
    """A KV failure surfaces as a stdlib ``sqlite3`` error naming the KV cause."""
    assert isinstance(exc, sqlite3.DatabaseError), _chain(exc)  # the stdlib class itself
    assert isinstance(exc, sqlite3.OperationalError), _chain(exc)
    assert exc.sqlite_errorcode is not None and exc.sqlite_errorcode & 0xFF == dbapi.SQLITE_IOERR, _chain(exc)
    assert "injected" in str(exc), _chain(exc)  # the message itself names the KV cause
    assert any(isinstance(e, InjectedFault) for e in _causes(exc)), _chain(exc)


def _start_at(store: KVStore, k: int, ref: Reference, vfs_kind: str, **fault: Any) -> tuple[str, FaultyKV, dbapi.Connection]:
    """A new actor holding the state before transaction ``k``, opened through the facade
    on a :class:`FaultyKV` with ``SMALL_LIMITS``."""
    name = _name("dbapi-crash")
    view = store.actor(name)
    _restore(view, ref.snapshots[k])
    kv = FaultyKV(view, limits=SMALL_LIMITS, **fault)
    return name, kv, _open(name, kv, vfs_kind, **CRASH_OPTIONS)


@pytest.mark.parametrize("apply_then_fail", [False, True], ids=["lost-write", "lost-reply"])
def test_every_write_failure_through_dbapi_leaves_before_or_after(store: KVStore, vfs_kind: str, apply_then_fail: bool) -> None:
    """Each write call of each transaction fails in turn (transaction ``k`` starts from
    a restored snapshot of the state before it, which keeps the sweep linear in the
    script's write calls instead of quadratic)."""
    ref = _reference(vfs_kind)
    assert sum(ref.writes) > 20  # the script really exercises many write calls
    interrupted, swallowed = set(), 0
    for k, txn in enumerate(SCRIPT):
        for m in range(1, ref.writes[k] + 1):
            name, kv, con = _start_at(store, k, ref, vfs_kind, fail_write_at=m, apply_then_fail=apply_then_fail)
            try:
                txn(con)
            except dbapi.Error as exc:
                _assert_names_kv_cause(exc)
                assert not con.in_transaction  # ``with con:`` rolled back what SQLite kept
                interrupted.add(k)
                expected = [ref.states[k]] if not apply_then_fail else [ref.states[k], ref.states[k + 1]]
            else:
                # The failure hit the apply phase of a large commit, after its commit
                # point: SQLite was told it committed; the next transaction on the same
                # connection rolls it forward first.
                swallowed += 1
                expected = [ref.states[k + 1]]
                if k + 1 < len(SCRIPT):
                    SCRIPT[k + 1](con)
                    expected = [ref.states[k + 2]]
            assert kv.failed, (k, m)
            con.close()
            con = _open(name, store, vfs_kind)
            assert integrity(con) == "ok", (k, m)
            assert dump(con) in expected, (k, m)
            con.close()
    assert interrupted == set(range(len(SCRIPT))), interrupted  # every transaction was interrupted
    assert swallowed > 0  # some failures hit a large commit's apply phase (roll-forward path)


def test_dbapi_connection_recovers_after_kv_failure(store: KVStore, vfs_kind: str) -> None:
    """After a failed transaction the same facade connection is usable: retrying it and
    running the rest of the script gives the reference result (first and last write
    call of each transaction fail)."""
    ref = _reference(vfs_kind)
    for k in range(len(SCRIPT)):
        for m in sorted({1, ref.writes[k]}):
            name, kv, con = _start_at(store, k, ref, vfs_kind, fail_write_at=m)
            failures = 0
            for txn in SCRIPT[k:]:
                try:
                    txn(con)
                except dbapi.Error as exc:
                    _assert_names_kv_cause(exc)
                    failures += 1
                    con.rollback()  # a no-op unless the failed statement left one open
                    txn(con)        # the KV is back: retrying succeeds
            assert kv.failed and failures <= 1, (k, m)
            assert integrity(con) == "ok"
            assert dump(con) == ref.states[-1], (k, m)
            con.close()
            con = _open(name, store, vfs_kind)
            assert dump(con) == ref.states[-1], (k, m)
            con.close()


def test_kv_down_gives_operational_error_naming_the_cause(store: KVStore, vfs_kind: str) -> None:
    name = _name("dbapi-down")
    kv = FaultyKV(store.actor(name))
    con = _open(name, kv, vfs_kind, cache_chunks=0)
    con.execute("CREATE TABLE t (x)")
    with con:
        con.execute("INSERT INTO t VALUES (1)")
    kv.down = True
    with pytest.raises(sqlite3.OperationalError) as info:
        with con:
            con.execute("INSERT INTO t VALUES (2)")
    _assert_names_kv_cause(info.value)
    assert "injected: KV is down" in _chain(info.value)
    kv.down = False
    with con:
        con.execute("INSERT INTO t VALUES (3)")
    assert con.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,)]
    con.close()
    # Opening (a cold read) fails loudly too, with the same class.
    kv.down = True
    with pytest.raises(sqlite3.OperationalError) as info:
        _open(name, kv, vfs_kind)
    assert "injected: KV is down" in _chain(info.value)
    kv.down = False
    con = _open(name, kv, vfs_kind)
    assert integrity(con) == "ok"
    assert con.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,)]
    con.close()


# ======================================================================================
# 3. KV round trips, exact, through the facade
# ======================================================================================
def _make_db(store: KVStore, vfs_kind: str, name: str, rows: int = 100) -> None:
    con = _open(name, store, vfs_kind)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    con.close()


def test_warm_update_commit_is_one_call_and_warm_select_zero(store: KVStore, vfs_kind: str) -> None:
    name = _name("dbapi-rt")
    _make_db(store, vfs_kind, name)
    con = _open(name, store, vfs_kind, locking="exclusive")
    con.execute("SELECT count(*) FROM t").fetchall()  # warm SQLite's page cache
    before = store.round_trips
    with con:  # implicit BEGIN before the UPDATE, COMMIT at exit
        cur = con.execute("UPDATE t SET v = 'x' WHERE id = 7")
        assert cur.rowcount == 1
        assert store.round_trips - before == 0  # nothing reaches the KV before the commit
    assert store.round_trips - before == 1
    before = store.round_trips
    con.execute("UPDATE t SET v = 'y' WHERE id = 8")
    con.commit()  # explicit commit() costs the same
    assert store.round_trips - before == 1
    before = store.round_trips
    assert con.execute("SELECT v FROM t WHERE id = 7").fetchall() == [("x",)]
    assert con.execute("SELECT count(*) FROM t").fetchone() == (100,)
    assert store.round_trips - before == 0
    con.close()


def test_autocommit_update_is_one_call(store: KVStore, vfs_kind: str) -> None:
    name = _name("dbapi-rt")
    _make_db(store, vfs_kind, name)
    con = _open(name, store, vfs_kind, isolation_level=None, locking="exclusive")
    con.execute("SELECT count(*) FROM t").fetchall()
    before = store.round_trips
    con.execute("UPDATE t SET v = 'x' WHERE id = 7")
    assert store.round_trips - before == 1
    con.close()


def test_rollback_writes_nothing(store: KVStore, vfs_kind: str) -> None:
    name = _name("dbapi-rt")
    _make_db(store, vfs_kind, name)
    con = _open(name, store, vfs_kind, locking="exclusive")
    con.execute("SELECT count(*) FROM t").fetchall()
    before = store.round_trips
    con.execute("UPDATE t SET v = 'gone'")
    con.execute("INSERT INTO t (v) VALUES ('gone')")
    assert con.in_transaction
    con.rollback()
    assert store.round_trips - before == 0
    assert con.execute("SELECT count(*) FROM t WHERE v = 'gone'").fetchall() == [(0,)]
    # A ``with con:`` block that raises rolls back, also for free.
    with pytest.raises(ZeroDivisionError):
        with con:
            con.execute("DELETE FROM t")
            1 / 0
    assert store.round_trips - before == 0
    assert con.execute("SELECT count(*) FROM t").fetchone() == (100,)
    con.close()


def test_reopen_with_full_preload_reads_nothing_live(store: KVStore, vfs_kind: str) -> None:
    name = _name("dbapi-rt")
    _make_db(store, vfs_kind, name, rows=3000)  # well under 768 KiB
    before = store.round_trips
    preload = full_preload(store.actor(name))
    con = dbapi.connect(name, kv=store, preload=preload, vfs_options={"vfs": vfs_kind, "locking": "exclusive"})
    assert con.execute("SELECT count(*), max(v) FROM t").fetchall() == [(3000, "row 999")]
    assert store.round_trips - before == 1  # the preload itself
    stats = _stats(con)
    assert stats.live_reads == 0 and stats.round_trips == 0
    assert stats.preload_hits > 0
    assert con.apsw_connection.preload is preload
    con.close()


def test_reopen_without_preload_reads_live(store: KVStore, vfs_kind: str) -> None:
    """The counterpart of the preload test: without ``preload=`` the open makes its own
    preload call (one round trip, counted in the connection's stats), so the test above
    really measures the pass-through."""
    name = _name("dbapi-rt")
    _make_db(store, vfs_kind, name, rows=3000)
    before = store.round_trips
    con = _open(name, store, vfs_kind, locking="exclusive")
    assert con.execute("SELECT count(*), max(v) FROM t").fetchall() == [(3000, "row 999")]
    assert store.round_trips - before >= 1
    assert _stats(con).round_trips >= 1
    con.close()


def test_cold_select_is_one_call_for_a_small_db(store: KVStore, vfs_kind: str) -> None:
    name = _name("dbapi-tiny")
    con = _open(name, store, vfs_kind, locking="exclusive")
    con.execute("CREATE TABLE t (x)")
    with con:
        con.execute("INSERT INTO t VALUES (1)")
    con.close()
    before = store.round_trips
    con = _open(name, store, vfs_kind, locking="exclusive")
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert store.round_trips - before == 1
    con.close()


@pytest.mark.parametrize("how", ["randomblob", "bound-bytes"])
def test_one_mib_insert_is_at_most_two_calls_without_batch_limit(vfs_kind: str, how: str) -> None:
    store = MemoryKV()
    con = _open("mib", store, vfs_kind, locking="exclusive")
    con.execute("CREATE TABLE t (b BLOB)")
    payload = blob(1, 1 << 20)  # 1 MiB, the parity suite's pattern
    before = store.round_trips
    with con:
        if how == "randomblob":
            con.execute("INSERT INTO t VALUES (randomblob(1048576))")
        else:
            con.execute("INSERT INTO t VALUES (?)", (payload,))
    assert store.round_trips - before <= 2
    assert _stats(con).large_commits == 0
    con.close()
    con = _open("mib", store, vfs_kind)
    assert con.execute("SELECT length(b) FROM t").fetchone() == (1048576,)
    if how == "bound-bytes":
        assert con.execute("SELECT b FROM t").fetchone() == (payload,)
    assert integrity(con) == "ok"
    con.close()


def test_vfs_options_reach_vfs_connect(store: KVStore) -> None:
    """``vfs_options`` is passed to :func:`vfs.connect`: an unknown VFS is refused, and a
    ``max_dirty_bytes`` below the transaction's size makes its commit a large (redo) one."""
    with pytest.raises(ValueError, match="unknown vfs"):
        dbapi.connect(_name("dbapi-opt"), kv=store, vfs_options={"vfs": "no-such-vfs"})
    large = {}
    for max_dirty_bytes in (4096, None):
        options = {} if max_dirty_bytes is None else {"max_dirty_bytes": max_dirty_bytes}
        con = dbapi.connect(_name("dbapi-opt"), kv=store, vfs_options=options)
        con.execute("CREATE TABLE t (b BLOB)")
        stats = _stats(con)
        before = stats.large_commits
        with con:
            con.execute("INSERT INTO t VALUES (zeroblob(100000))")  # 25 chunks
        large[max_dirty_bytes] = stats.large_commits - before
        assert integrity(con) == "ok"
        con.close()
    assert large == {4096: 1, None: 0}
