"""``KeyboardInterrupt`` / ``SystemExit`` anywhere in a commit or a rollback (issue 11,
item 3): the file always stays consistent with the KV.

An interrupt is not an ``Exception``: before the fix the Python VFS's commit path let
it through with its buffers half updated, so a connection answered ``CorruptError``
until closed, a half-applied large transaction could become durable, and an interrupt
during SQLite's rollback playback left half-restored pages in the dirty buffer for the
next commit to write. Here interrupts are injected at random points (KV calls before or
after they apply, and the Python VFS's own file methods) over many seeds; after each,
the live connection, a fresh read of the KV and a stdlib ``sqlite3`` oracle must agree.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any, Callable

import apsw
import pytest

import vfs
from vfs.protocol import KV, KVLimits, WriteBatch

from actor_db.kv import KVStore
from tests.faults import ForwardingKV, OtherProcessView
from tests.helpers import integrity

LIMITS = KVLimits(max_batch_keys=16, max_batch_bytes=64 * 1024)
"""Transactions of more than ~12 chunks go through the redo protocol."""
OPTIONS: dict[str, Any] = {"max_dirty_bytes": 24 * 4096, "cache_chunks": 64}
SEEDS = {"memory": 60, "lmdb": 25, "redis": 25}

Txn = list[str]
"""Statements run one by one; a transaction brackets them with BEGIN/COMMIT itself."""

SCRIPT: list[Txn] = [
    ["CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, n INTEGER)", "CREATE INDEX t_n ON t (n)"],
    ["WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 40) "
     "INSERT INTO t (v, n) SELECT zeroblob(300 + i), i FROM s"],
    ["BEGIN",
     "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 120) "
     "INSERT INTO t (v, n) SELECT CAST(printf('%.*c', 3000, char(65 + i % 26)) AS BLOB), 1000 + i FROM s",
     "COMMIT"],                                                           # spills, redo
    ["UPDATE t SET v = CAST(printf('%.*c', 200 + id, char(97 + id % 26)) AS BLOB), n = n + 1 WHERE id % 3 = 0"],
    ["BEGIN", "DELETE FROM t WHERE id % 2 = 0",
     "INSERT INTO t (v, n) SELECT v, n FROM t WHERE id < 100", "ROLLBACK"],  # rollback after spill
    ["DELETE FROM t WHERE id > 60"],
    ["VACUUM"],                                                           # shrinks the file
    ["BEGIN", "INSERT INTO t (v, n) VALUES (x'01', -1)", "SAVEPOINT s1", "DELETE FROM t WHERE id < 20",
     "ROLLBACK TO s1", "UPDATE t SET n = n * 2 WHERE id % 7 = 0", "RELEASE s1", "COMMIT"],
    ["BEGIN", "UPDATE t SET v = zeroblob(2500) WHERE id <= 40", "INSERT INTO t (v, n) VALUES (zeroblob(9000), 7)",
     "COMMIT"],                                                           # redo again
]


class InterruptingKV(ForwardingKV):
    """An actor view that raises ``exc`` at its ``at``-th call once armed (before the
    call reaches the store, or, with ``after``, once a write has been applied: the
    interrupt lands between the KV and the VFS's bookkeeping). Reports :data:`LIMITS`."""

    def __init__(self, inner: KV) -> None:
        super().__init__(inner, LIMITS)
        self.calls = 0
        self.at: int | None = None
        self.after = False
        self.exc: type[BaseException] = KeyboardInterrupt
        self.fired = False
        self.armed = True
        """Calls are counted (and may raise) only while armed: not during checks."""

    def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
        if not self.armed:
            return call()
        self.calls += 1
        if self.at is not None and self.calls == self.at and not self.fired:
            self.fired = True
            if self.after and batch is not None:
                call()
            raise self.exc("injected interrupt")
        return call()


FILE_METHODS = ("xWrite", "xTruncate", "xSync", "xRead")


class FileInterrupter:
    """Raises at the ``at``-th call of the Python VFS file's methods (apsw looks them
    up on the file object at every call)."""

    def __init__(self, file: Any) -> None:
        self.calls = 0
        self.at: int | None = None
        self.exc: type[BaseException] = KeyboardInterrupt
        self.fired = False
        self.armed = True
        for name in FILE_METHODS:
            setattr(file, name, self._wrap(getattr(file, name)))

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if not self.armed:
                return method(*args)
            self.calls += 1
            if self.at is not None and self.calls == self.at and not self.fired:
                self.fired = True
                raise self.exc("injected interrupt")
            return method(*args)
        return call


def _run(con: Any, txn: Txn) -> None:
    for sql in txn:
        con.execute(sql)


def _dump(con: Any) -> list[Any]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
    return [(t, [tuple(r) for r in con.execute(f'SELECT * FROM "{t}" ORDER BY rowid')]) for t in tables]


def _open(kv: Any, vfs_kind: str) -> Any:
    con = vfs.connect(kv, vfs=vfs_kind, **OPTIONS)
    con.execute("PRAGMA cache_size=8")  # SQLite spills to the VFS mid-transaction
    return con


def _count_calls(vfs_kind: str) -> tuple[int, int]:
    """KV calls and file-method calls of one clean run of the script."""
    from actor_db.kv import MemoryKV

    kv = InterruptingKV(MemoryKV().actor("count"))
    con = _open(kv, vfs_kind)
    files = FileInterrupter(con.kv_file) if vfs_kind == "python" else None
    kv.calls = 0
    for txn in SCRIPT:
        _run(con, txn)
    calls = kv.calls, files.calls if files else 0
    con.close()
    return calls


def _kv_state(store: KVStore, actor: str, vfs_kind: str) -> list[Any]:
    """What the KV holds now, read by a read-only open as another process would."""
    con = vfs.connect(OtherProcessView(store.actor(actor)), vfs=vfs_kind, readonly=True)
    try:
        assert integrity(con) == "ok"
        return _dump(con)
    finally:
        con.close()


def _one_run(store: KVStore, vfs_kind: str, seed: int, totals: tuple[int, int]) -> str:
    rng = random.Random(seed)
    actor = f"int-{vfs_kind}-{seed}"
    owner = store.actor(actor)
    owner.acquire_ownership()
    kv = InterruptingKV(owner)
    con = _open(kv, vfs_kind)
    files = FileInterrupter(con.kv_file) if vfs_kind == "python" else None
    oracle = sqlite3.connect(":memory:", isolation_level=None)
    exc = rng.choice([KeyboardInterrupt, SystemExit])
    if files is not None and rng.random() < 0.4:
        files.at, files.exc, files.calls = rng.randint(1, totals[1]), exc, 0
        where = f"file call {files.at}"
    else:
        kv.at, kv.exc, kv.after, kv.calls = rng.randint(1, totals[0]), exc, rng.random() < 0.5, 0
        where = f"KV call {kv.at}{' after applying' if kv.after else ''}"
    label = f"seed {seed}: {exc.__name__} at {where}"
    def arm(on: bool) -> None:
        kv.armed = on
        if files is not None:
            files.armed = on

    for i, txn in enumerate(SCRIPT):
        before = _dump(oracle)
        arm(True)
        try:
            _run(con, txn)
        except (KeyboardInterrupt, SystemExit, apsw.Error):
            arm(False)
            if con.in_transaction:
                try:
                    con.execute("ROLLBACK")
                except apsw.Error:
                    pass
            live = _dump(con)  # the connection keeps working: no CorruptError
            assert integrity(con) == "ok", label
            assert live == _kv_state(store, actor, vfs_kind), f"{label}: live connection and KV disagree (txn {i})"
            _run(oracle, txn)
            after = _dump(oracle)
            if live == before:
                oracle.close()
                oracle = sqlite3.connect(":memory:", isolation_level=None)
                for done in SCRIPT[:i]:
                    _run(oracle, done)
            else:
                assert live == after, f"{label}: txn {i} is neither absent nor whole"
            continue
        arm(False)
        _run(oracle, txn)
        assert _dump(con) == _dump(oracle), f"{label}: diverged from the oracle after txn {i}"
    con.close()
    fresh = vfs.connect(owner, vfs=vfs_kind)
    try:
        assert integrity(fresh) == "ok", label
        assert _dump(fresh) == _dump(oracle), f"{label}: reopened database diverged from the oracle"
    finally:
        fresh.close()
        oracle.close()
    fired = (files is not None and files.fired) or kv.fired
    return "fired" if fired else "not fired"


def test_interrupts_at_random_points_never_diverge(store: KVStore, vfs_kind: str, driver: Any) -> None:
    totals = _count_calls(vfs_kind)
    kind = type(driver).__name__.lower()
    seeds = next((n for name, n in SEEDS.items() if name in kind), 20)
    outcomes = [_one_run(store, vfs_kind, seed, totals) for seed in range(seeds)]
    assert outcomes.count("fired") >= seeds * 0.8  # the injection points really are reached


@pytest.mark.parametrize("rollback", ["ROLLBACK", "ROLLBACK TO s"])
def test_interrupt_during_rollback_playback_loses_nothing(store: KVStore, rollback: str) -> None:
    """ROLLBACK (and ROLLBACK TO) replay SQLite's memory journal through the file's
    methods; an interrupt at each point of that playback in turn must leave the live
    connection, the KV and the next commit in agreement."""
    for at in range(1, 120, 7):
        kv = store.actor(f"playback-{rollback[-1]}-{at}")
        con = _open(kv, "python")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        con.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200) "
                    "INSERT INTO t (v) SELECT zeroblob(1500) FROM s")
        files = FileInterrupter(con.kv_file)
        files.armed = False
        con.execute("BEGIN")
        con.execute("INSERT INTO t (v) VALUES (x'01')")
        con.execute("SAVEPOINT s")
        con.execute("DELETE FROM t WHERE id % 2 = 0")
        con.execute("UPDATE t SET v = randomblob(1400)")  # every page changes; spilled to the VFS
        files.armed, files.at = True, at
        try:
            con.execute(rollback)
        except KeyboardInterrupt:
            pass
        files.armed = False
        if con.in_transaction:
            con.execute("COMMIT")
        con.execute("INSERT INTO t (v) VALUES (x'ff')")  # the next commit
        live = _dump(con)
        assert integrity(con) == "ok", at
        con.close()
        fresh = vfs.connect(kv)
        assert integrity(fresh) == "ok", at
        assert _dump(fresh) == live, f"{rollback}: interrupt at file call {at}: KV and connection disagree"
        fresh.close()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_the_apply_phase_keeps_the_connection_usable(store: KVStore, vfs_kind: str,
                                                                 exc: type[BaseException]) -> None:
    owner = store.actor("apply")
    owner.acquire_ownership()
    kv = InterruptingKV(owner)
    con = _open(kv, vfs_kind)
    _run(con, SCRIPT[0])
    _run(con, SCRIPT[1])
    before = _dump(con)
    writes: list[int] = []
    original = kv.inner.write

    def spy(batch: WriteBatch) -> None:
        writes.append(kv.calls)
        original(batch)
    kv.inner.write = spy  # type: ignore[method-assign]
    kv.calls = 0
    # Find the call that applies: the one after the commit record (a dry run on a twin).
    from actor_db.kv import MemoryKV
    twin = InterruptingKV(MemoryKV().actor("twin"))
    tcon = _open(twin, vfs_kind)
    _run(tcon, SCRIPT[0])
    _run(tcon, SCRIPT[1])
    twin.calls = 0
    tw: list[tuple[int, WriteBatch]] = []
    twin_write = twin.inner.write
    twin.inner.write = lambda b: (tw.append((twin.calls, b)), twin_write(b))[1]  # type: ignore[method-assign]
    _run(tcon, SCRIPT[2])
    tcon.close()
    from vfs.keys import COMMIT_RECORD_KEY
    record_call = next(c for c, b in tw if b.puts.get(COMMIT_RECORD_KEY, b"\x00\x00staging") != b"\x00\x00staging")
    kv.at, kv.exc, kv.after = record_call + 1, exc, True  # the first apply batch lands, then the interrupt
    with pytest.raises((exc, apsw.Error)):
        _run(con, SCRIPT[2])
    if con.in_transaction:
        con.execute("ROLLBACK")
    live = _dump(con)
    assert integrity(con) == "ok"
    assert live == _kv_state(store, "apply", vfs_kind)
    oracle = sqlite3.connect(":memory:", isolation_level=None)
    for txn in SCRIPT[:3]:
        _run(oracle, txn)
    assert live in (before, _dump(oracle))
    _run(con, SCRIPT[3])  # and it keeps committing
    con.close()
