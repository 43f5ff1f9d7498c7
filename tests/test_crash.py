"""Crash safety: every KV write call of a scripted workload fails in turn.

After each failure the database reopened from the KV passes ``integrity_check`` and
holds exactly the state before or after the interrupted transaction, never a mix. The
script includes transactions that overflow the atomic-batch limit (redo protocol),
one that spills dirty chunks to staging mid-transaction, a VACUUM that shrinks the file,
and savepoints. A real ``kill -9`` of a writer process on LMDB closes the file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from typing import Any, Callable

import apsw
import pytest

import vfs
from vfs.protocol import KVLimits

from actor_db.kv import KVStore, LmdbKV, MemoryKV
from tests.faults import FaultyKV
from tests.helpers import dump, integrity

SMALL_LIMITS = KVLimits(max_batch_keys=16, max_batch_bytes=64 * 1024)
"""Small enough that transactions of more than ~12 chunks use the redo protocol."""
OPTIONS: dict[str, Any] = {"max_dirty_bytes": 24 * 4096, "cache_chunks": 64}

Txn = Callable[[apsw.Connection], None]


def _exec(sql: str, *args: Any) -> Txn:
    def txn(con: apsw.Connection) -> None:
        con.execute(sql, args)
    return txn


def _big_insert(con: apsw.Connection) -> None:
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([i % 251]) * 3000,) for i in range(120)])


def _savepoints(con: Any) -> None:
    """Savepoints inside one transaction (shared with the DB-API suite: same calls)."""
    with con:
        con.execute("INSERT INTO t (v) VALUES (x'01')")
        con.execute("SAVEPOINT s1")
        con.execute("DELETE FROM t WHERE id < 20")
        con.execute("ROLLBACK TO s1")
        con.execute("SAVEPOINT s2")
        con.execute("UPDATE t SET v = x'02' WHERE id % 7 = 0")
        con.execute("RELEASE s2")


SCRIPT: list[Txn] = [
    _exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"),
    _exec("CREATE INDEX t_v ON t (v)"),
    _exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) INSERT INTO t (v) SELECT CAST(printf('%.*c', 300 + i, char(65 + i % 26)) AS BLOB) FROM n"),
    _big_insert,                                     # ~180 chunks: spills and uses redo
    _exec("UPDATE t SET v = CAST(printf('%.*c', 100 + id, char(97 + id % 26)) AS BLOB) WHERE id % 3 = 0"),
    _exec("DELETE FROM t WHERE id > 60"),
    _exec("VACUUM"),                                 # shrinks the file
    _savepoints,
    _exec("INSERT INTO t (v) VALUES (zeroblob(5000))"),
]


def reference_states(limits: KVLimits) -> tuple[list[Any], int]:
    """The database after each transaction (index 0 = empty) and the write calls needed."""
    kv = FaultyKV(MemoryKV().actor("ref"), limits=limits)
    con = vfs.connect(kv, **OPTIONS)
    states = [dump(con)]
    for txn in SCRIPT:
        txn(con)
        states.append(dump(con))
    con.close()
    return states, kv.writes


def shape(state: list[tuple[str, list[tuple[Any, ...]]]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The full content (the script is deterministic: no randomblob)."""
    return state


def _chain(exc: BaseException | None) -> str:
    """Messages of an exception and its causes/contexts (``with con:`` re-raises
    SQLite's sticky I/O error with ours as the context)."""
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " | ".join(out)


def run_with_fault(store: KVStore, actor: str, n: int, vfs_kind: str, apply_then_fail: bool) -> int | None:
    """Run the script, failing write call ``n``; returns the interrupted txn index."""
    kv = FaultyKV(store.actor(actor), fail_write_at=n, apply_then_fail=apply_then_fail, limits=SMALL_LIMITS)
    con = vfs.connect(kv, vfs=vfs_kind, **OPTIONS)
    interrupted = None
    for i, txn in enumerate(SCRIPT):
        try:
            txn(con)
        except apsw.Error as exc:
            assert "injected" in _chain(exc), exc  # the message names the KV cause
            interrupted = i
            break
    try:
        con.close()
    except apsw.Error:
        pass
    return interrupted


@pytest.mark.parametrize("apply_then_fail", [False, True], ids=["lost-write", "lost-reply"])
def test_every_write_failure_leaves_before_or_after(store: KVStore, vfs_kind: str, apply_then_fail: bool) -> None:
    states, total = reference_states(SMALL_LIMITS)
    shapes = [shape(s) for s in states]
    assert total > 20  # the script really exercises many write calls
    seen_interrupted = set()
    # Lost replies differ from lost writes only on the write that fails; every other
    # write position of the VFS protocol is covered by the lost-write sweep.
    for n in range(1, total + 1, 2 if apply_then_fail else 1):
        actor = f"crash-{n}"
        k = run_with_fault(store, actor, n, vfs_kind, apply_then_fail)
        owner = store.actor(actor)
        owner.acquire_ownership()  # only the owner cleans up what the crash left
        con = vfs.connect(owner, vfs=vfs_kind)
        assert integrity(con) == "ok", n
        got = shape(dump(con))
        con.close()
        # The owner's open rolled a committed record forward or dropped uncommitted staging.
        assert store.actor(actor).scan(bytes([8, 1, 2]), bytes([8, 1, 4])) == [], n
        if k is None:
            # The failure hit the apply phase of a large commit, after its commit point:
            # SQLite was told it committed, and the next call rolled it forward.
            assert got == shapes[-1], n
        else:
            seen_interrupted.add(k)
            assert got in (shapes[k], shapes[k + 1]), (n, k)
            if not apply_then_fail:
                # A write that never reached the KV cannot have committed.
                assert got == shapes[k], (n, k)
    if not apply_then_fail:
        assert seen_interrupted == set(range(len(SCRIPT))), seen_interrupted  # every transaction was interrupted


def test_connection_recovers_after_kv_failure(store: KVStore, vfs_kind: str) -> None:
    """A failed commit leaves the same connection usable once the KV is back."""
    states, total = reference_states(SMALL_LIMITS)
    shapes = [shape(s) for s in states]
    for n in range(1, total + 1, 3):
        actor = f"recover-{n}"
        kv = FaultyKV(store.actor(actor), fail_write_at=n, limits=SMALL_LIMITS)
        con = vfs.connect(kv, vfs=vfs_kind, **OPTIONS)
        for txn in SCRIPT:
            try:
                txn(con)
            except apsw.Error:
                if con.in_transaction:  # the failed statement's transaction is rolled back
                    con.execute("ROLLBACK")
                txn(con)  # the KV is back: retrying succeeds
        assert integrity(con) == "ok"
        assert shape(dump(con)) == shapes[-1], n
        con.close()
        con = vfs.connect(store.actor(actor), vfs=vfs_kind)
        assert shape(dump(con)) == shapes[-1], n
        con.close()


def test_kv_down_gives_io_error_naming_the_cause(store: KVStore, vfs_kind: str) -> None:
    kv = FaultyKV(store.actor("down"))
    con = vfs.connect(kv, vfs=vfs_kind, cache_chunks=0)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    kv.down = True
    with pytest.raises(apsw.IOError, match="injected: KV is down") as info:
        con.execute("INSERT INTO t VALUES (2)")
    assert isinstance(info.value.__cause__, Exception)
    kv.down = False
    con.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in con.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
    con.close()
    # Reads fail loudly too, on a cold connection.
    kv.down = True
    with pytest.raises(apsw.IOError, match="injected"):
        vfs.connect(kv, vfs=vfs_kind).execute("SELECT * FROM t").fetchall()
    kv.down = False
    con = vfs.connect(kv, vfs=vfs_kind)
    assert integrity(con) == "ok"
    con.close()


WRITER = textwrap.dedent("""
    import sys
    import vfs
    from actor_db.kv import LmdbKV
    from tests.faults import FaultyKV
    from tests.test_crash import SMALL_LIMITS
    store = LmdbKV(sys.argv[1])
    con = vfs.connect(FaultyKV(store.actor("killme"), limits=SMALL_LIMITS), max_dirty_bytes=64 * 4096)
    con.execute("CREATE TABLE IF NOT EXISTS t (txn INTEGER, v BLOB)")
    con.execute("CREATE TABLE IF NOT EXISTS last (txn INTEGER)")
    start = (con.execute("SELECT max(txn) FROM last").fetchone()[0] or 0) + 1
    for txn in range(start, start + 10_000):
        rows = 3 if txn % 2 else 150   # every other transaction overflows the batch limit
        with con:
            con.executemany("INSERT INTO t VALUES (?, randomblob(2000))", [(txn,)] * rows)
            if txn % 5 == 0:
                con.execute("DELETE FROM t WHERE txn < ?", (txn - 4,))
            con.execute("DELETE FROM last")
            con.execute("INSERT INTO last VALUES (?)", (txn,))
        print(txn, flush=True)
""")


@pytest.mark.slow
def test_kill_dash_nine_mid_write_on_lmdb(tmp_path: Any, vfs_kind: str) -> None:
    path = str(tmp_path / "store")
    rng = random.Random(1234)
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), text=True)
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 12)):
            assert proc.stdout.readline(), "writer died early"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = LmdbKV(path)
        con = vfs.connect(store.actor("killme"), vfs=vfs_kind)
        assert integrity(con) == "ok", round_
        last = next(iter(con.execute("SELECT max(txn) FROM last")))[0]
        counts: dict[int, int] = {r[0]: r[1] for r in con.execute("SELECT txn, count(*) FROM t GROUP BY txn")}
        # Every transaction is whole: 3 or 150 rows, none torn, none after `last`.
        for txn, n in counts.items():
            assert n == (3 if txn % 2 else 150), (txn, n)
            assert txn <= last
        assert last in counts
        con.close()
        store.close()
