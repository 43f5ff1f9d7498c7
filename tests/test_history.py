"""History, bookmarks and restore (issue 24; docs/history.md).

The oracle test runs a random sequence of commits (inserts, updates, deletes, schema
changes, VACUUM, a transaction larger than the batch limit that also spills) on every
driver next to a stdlib ``sqlite3`` file, takes a bookmark after each, then restores
random bookmarks: every restore gives exactly the rows the stdlib file had then, and
``integrity_check`` ok. Scaled down here (``HISTORY_ORACLE_COMMITS``, default 160
commits and 8 restores per driver); ``HISTORY_ORACLE_COMMITS=2000 HISTORY_ORACLE_RESTORES=50`` runs the issue's
full size (2,000 commits, 50 restores).
"""

from __future__ import annotations

import os
import random
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import apsw
import pytest

import vfs
from vfs import history as vh
from vfs.keys import HISTORY_RANGE, history_seq
from vfs.protocol import KVLimits

from actor_db.errors import HistoryError
from actor_db.kv import KVStore, MemoryKV
from actor_db.ops import history as ops_history
from tests.faults import FaultyKV, ForwardingKV
from tests.helpers import dump, integrity, view_dump

COMMITS = int(os.environ.get("HISTORY_ORACLE_COMMITS", "160"))
RESTORES = int(os.environ.get("HISTORY_ORACLE_RESTORES", "8"))
LIMITS = KVLimits(max_batch_keys=64, max_batch_bytes=256 * 1024)
"""A batch cap (RivetKit-like, smaller) so that large commits take the journal path."""


def _oracle_dump(con: sqlite3.Connection) -> list[tuple[str, list[tuple[Any, ...]]]]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
    return [(t, [tuple(r) for r in con.execute(f'SELECT * FROM "{t}" ORDER BY rowid')]) for t in tables]


class Workload:
    """Random SQL applied to both databases; ``step()`` is one commit."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tables = ["t"]
        self.extra = 0
        self.big_done = 0

    def setup(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, n INTEGER)", ())]

    def step(self, i: int, total: int) -> tuple[str, list[tuple[str, tuple[Any, ...]]]]:
        rng = self.rng
        if self.big_done == 0 and i >= total // 3 or self.big_done == 1 and i >= 2 * total // 3:
            self.big_done += 1
            blob = rng.randbytes(2500)
            # The first spills past the dirty bound (redo log); the second fits it but
            # not one batch (a rollback journal in tag 1).
            rows = 160 if self.big_done == 1 else 50
            return "big", [("INSERT INTO t (v, n) VALUES (?, ?)", (blob + bytes([k % 256]), k)) for k in range(rows)]
        roll = rng.random()
        table = rng.choice(self.tables)
        if roll < 0.45:
            rows = rng.randint(1, 6)
            return "insert", [(f'INSERT INTO "{table}" (v, n) VALUES (?, ?)', (rng.randbytes(rng.randint(1, 1500)),
                                                                               rng.randint(0, 99)))
                              for _ in range(rows)]
        if roll < 0.65:
            return "update", [(f'UPDATE "{table}" SET v = ?, n = n + 1 WHERE n % 7 = ?',
                               (rng.randbytes(rng.randint(1, 900)), rng.randint(0, 6)))]
        if roll < 0.8:
            return "delete", [(f'DELETE FROM "{table}" WHERE n % 11 = ?', (rng.randint(0, 10),))]
        if roll < 0.9:
            if len(self.tables) > 1 and rng.random() < 0.3:
                gone = self.tables.pop()
                return "schema", [(f'DROP TABLE "{gone}"', ())]
            self.extra += 1
            name = f"x{self.extra}"
            self.tables.append(name)
            return "schema", [(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, v BLOB, n INTEGER)', ()),
                              (f'CREATE INDEX "{name}_n" ON "{name}" (n)', ())]
        if roll < 0.95:
            return "vacuum", [("VACUUM", ())]
        return "noop-read", []


def _apply(con: Any, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    """One transaction (VACUUM runs on its own)."""
    if len(statements) == 1 and statements[0][0] == "VACUUM":
        con.execute("VACUUM")
        return
    con.execute("BEGIN")
    for sql, args in statements:
        con.execute(sql, args)
    con.execute("COMMIT")


def _bookmark(con: vfs.KVConnection) -> str:
    head = con.kv_file.history.head
    assert head is not None
    return vh.encode_bookmark(head.last_seq, head.last_time_ms)


def test_oracle_restores_match_stdlib_sqlite(store: KVStore, tmp_path: Any) -> None:
    """Random commits with bookmarks; restores to random bookmarks give exactly the
    stdlib file's rows at that point (and an undo of a restore gives the state before)."""
    view = store.actor("oracle")
    capped = ForwardingKV(view, LIMITS)
    oracle = sqlite3.connect(tmp_path / "oracle.db", isolation_level=None)
    work = Workload(seed=24)
    rng = random.Random(7)
    targets = set(rng.sample(range(COMMITS), RESTORES))
    expected: dict[str, list[Any]] = {}
    con = vfs.connect(capped, history=True, max_dirty_bytes=64 * 4096)
    kinds: set[str] = set()
    try:
        _apply(con, work.setup())
        _apply(oracle, work.setup())
        for i in range(COMMITS):
            kind, statements = work.step(i, COMMITS)
            kinds.add(kind)
            _apply(con, statements)
            _apply(oracle, statements)
            if i in targets:
                expected[_bookmark(con)] = _oracle_dump(oracle)
        assert con.stats.large_commits >= 2  # the big transactions (journal and spilled redo)
    finally:
        con.close()
    assert {"insert", "update", "delete", "schema", "vacuum", "big"} <= kinds
    final = _oracle_dump(oracle)
    oracle.close()
    marks = list(expected)
    rng.shuffle(marks)
    for mark in marks:
        result = ops_history.restore(view, bookmark=mark)
        assert view_dump(view) == expected[mark], mark
    # Undo the last restore: the state before it (the previous restore's target).
    result = ops_history.restore(view, bookmark=result.before)
    assert view_dump(view) == expected[marks[-2]] if len(marks) > 1 else final


def _history_matches_database(view: Any) -> None:
    """The state the history head names is exactly the database."""
    head, = view.get_many([vfs.keys.HISTORY_HEAD_KEY])
    if head is None:
        return
    seq = vh.Head.decode(head).last_seq
    size, chunks = vh.read_state(view.get_many, lambda s, e, n: view.scan(s, e, limit=n), seq)
    if size == 0:  # the in-place rollback of a database's creation: empty again
        assert view_dump(view) == []
        return
    past = apsw.Connection(":memory:")
    past.deserialize("main", vh.image(size, chunks))
    assert integrity(past) == "ok"
    assert dump(past) == view_dump(view)


def _crash_script(con: apsw.Connection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("INSERT INTO t (v) VALUES (randomblob(3000))")
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([i]) * 3000,) for i in range(40)])  # > the cap
    con.execute("UPDATE t SET v = x'01' WHERE id % 3 = 0")
    con.execute("DELETE FROM t WHERE id % 2 = 0")
    con.execute("VACUUM")


@pytest.mark.parametrize("apply_then_fail", [False, True], ids=["lost-write", "lost-reply"])
def test_crash_at_every_write_keeps_history_and_database_agreeing(apply_then_fail: bool) -> None:
    """A write failure at every write call of a workload (one-batch and large commits,
    VACUUM) and of a restore: afterwards the history head names exactly the database,
    and the database is one whole state."""
    limits = KVLimits(max_batch_keys=32, max_batch_bytes=128 * 1024)
    # Count the writes of a clean run first.
    clean = MemoryKV()
    counter = FaultyKV(clean.actor("a"), limits=limits)
    con = vfs.connect(counter, history=True, max_dirty_bytes=16 * 4096)
    _crash_script(con)
    con.close()
    total = counter.writes
    assert total > 10
    for n in range(1, total + 1):
        store = MemoryKV()
        faulty = FaultyKV(store.actor("a"), fail_write_at=n, apply_then_fail=apply_then_fail, limits=limits)
        con = vfs.connect(faulty, history=True, max_dirty_bytes=16 * 4096)
        try:
            _crash_script(con)
        except apsw.Error:
            pass
        con.close()
        # The owner's reopen finishes or drops what the failure left, then commits again.
        con = vfs.connect(store.actor("a"), history=True)
        assert integrity(con) == "ok"
        con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
        con.execute("INSERT INTO t (v) VALUES (x'aa')")
        con.close()
        _history_matches_database(store.actor("a"))


def test_crash_during_restore_leaves_old_or_new_state() -> None:
    store = MemoryKV()
    view = store.actor("r")
    con = vfs.connect(view, history=True)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("INSERT INTO t (v) VALUES (randomblob(100))")
    early = _bookmark(con)
    early_rows = dump(con)
    con.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([i]) * 2000,) for i in range(30)])
    late_rows = dump(con)
    con.close()
    outcomes = set()
    for n in range(1, 40):
        copy = MemoryKV()
        batch = vfs.WriteBatch()
        for k, v in view.scan(b"", b"\xff"):
            batch.put(k, v)
        copy.actor("r").write(batch)
        faulty = _OwnerFaulty(copy.actor("r"), n)
        try:
            ops_history.restore(faulty, bookmark=early)
            outcomes.add("done")
        except Exception:
            outcomes.add("failed")
        rows_now = view_dump(copy.actor("r"))
        assert rows_now in (early_rows, late_rows)
        _history_matches_database(copy.actor("r"))
        if faulty.writes < n:
            break
    assert outcomes == {"done", "failed"}


class _OwnerFaulty(FaultyKV):
    """A faulty view that forwards the driver's ownership and lease calls (a restore's)."""

    def __init__(self, inner: Any, n: int) -> None:
        super().__init__(inner, fail_write_at=n, limits=KVLimits(max_batch_keys=16, max_batch_bytes=64 * 1024))

    @property
    def fence_token(self) -> Any:
        return getattr(self.inner, "fence_token", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_one_round_trip_per_commit_and_bytes(store: KVStore, vfs_kind: str) -> None:
    """History on: a small commit is still ONE round trip, carrying its chunks twice plus
    an entry and the head (and, when leftovers are possible, a range delete:
    :func:`test_delta_range_delete_only_when_leftovers_are_possible`)."""
    for history, name in ((True, "on"), (False, "off")):
        view = store.actor(f"rt-{name}")
        con = vfs.connect(view, history=history, vfs=vfs_kind)
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(200)])
        before = con.stats.round_trips
        con.execute("UPDATE t SET v = 'x' WHERE id = 7")
        assert con.stats.round_trips - before == 1
        con.close()
    assert not store.actor("rt-off").scan(*HISTORY_RANGE, limit=1)
    assert store.actor("rt-on").scan(*HISTORY_RANGE, limit=1)


def _big_insert(con: Any) -> None:
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([k]) * 2500,) for k in range(50)])  # > LIMITS


def test_delta_range_delete_only_when_leftovers_are_possible(vfs_kind: str) -> None:
    """A small commit clears its sequence number's delta keys (what a large commit that
    failed after writing its deltas left there) only when there may be some: the first
    commit after an open, the first after a failed or a large commit. A small commit
    that follows a small commit of the same file carries no range delete (one operation
    less per commit). And whichever write of a large commit fails, the next small commit
    on the SAME connection leaves a history that names exactly the database."""
    def script(view: Any) -> tuple[Any, list[int]]:
        con = vfs.connect(view, history=True, vfs=vfs_kind)
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        con.execute("INSERT INTO t (v) VALUES (x'01')")
        return con, []

    clean = FaultyKV(MemoryKV().actor("a"), limits=LIMITS)
    con, _ = script(clean)
    first, second = clean.batches[-2:]
    assert first.delete_ranges and not second.delete_ranges
    start = clean.writes
    _big_insert(con)
    large_writes = clean.writes - start
    assert large_writes > 1
    con.execute("INSERT INTO t (v) VALUES (x'02')")  # the first small commit after a large one
    assert clean.batches[-1].delete_ranges
    con.execute("INSERT INTO t (v) VALUES (x'03')")
    assert not clean.batches[-1].delete_ranges
    con.close()
    for n in range(1, large_writes + 1):
        store = MemoryKV()
        faulty = FaultyKV(store.actor("a"), limits=LIMITS)
        con, _ = script(faulty)
        faulty.fail_write_at = faulty.writes + n
        with pytest.raises(apsw.Error):
            _big_insert(con)
        con.execute("INSERT INTO t (v) VALUES (x'04')")  # same connection: reuses the sequence number
        assert faulty.batches[-1].delete_ranges, n
        assert integrity(con) == "ok"
        con.close()
        _history_matches_database(store.actor("a"))


def test_history_off_drops_and_follow_keeps() -> None:
    store = MemoryKV()
    view = store.actor("a")
    con = vfs.connect(view, history=True)
    con.execute("CREATE TABLE t (x)")
    con.close()
    con = vfs.connect(view)  # history=None: keeps recording what the database has
    con.execute("INSERT INTO t VALUES (1)")
    head = con.kv_file.history.head
    assert head is not None and head.last_seq == 2
    con.close()
    con = vfs.connect(view, history=False)
    before = con.stats.round_trips
    con.execute("INSERT INTO t VALUES (2)")
    assert con.stats.round_trips - before == 1  # the drop rides in the commit's batch
    con.close()
    assert not view.scan(*HISTORY_RANGE, limit=1)
    with pytest.raises(HistoryError):
        ops_history.bookmark(view)
    with pytest.raises(TypeError):
        vfs.connect(view, history="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("locking", ["in-process", "cross-process"])
def test_shared_connections_record_one_history(locking: str) -> None:
    """Several connections of a process (one shared head), or of several processes
    (the head re-read when another's commit is seen), record one consistent history."""
    from tests.faults import OtherProcessView

    store = MemoryKV()
    view = store.actor("m")
    first = vfs.connect(view, history=True, locking=locking)
    other_view = OtherProcessView(view) if locking == "cross-process" else view
    second = vfs.connect(other_view, history=None, locking=locking)
    first.execute("CREATE TABLE t (x)")
    marks = []
    for i in range(6):
        con = first if i % 2 else second
        con.execute("INSERT INTO t VALUES (?)", (i,))
        marks.append((ops_history.bookmark(view), i + 1))
    first.close()
    second.close()
    seqs = [vh.decode_bookmark(m)[0] for m, _ in marks]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    for mark, rows in marks:
        ops_history.restore(view, bookmark=mark)
        assert len(view_dump(view)[0][1]) == rows


def test_bookmarks_times_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_700_000_000_000]
    monkeypatch.setattr(vh, "time_ms", lambda: clock[0])
    store = MemoryKV()
    view = store.actor("a")
    con = vfs.connect(view, history=True)
    con.execute("CREATE TABLE t (x)")
    marks = []
    for i in range(5):
        clock[0] += 60_000
        con.execute("INSERT INTO t VALUES (?)", (i,))
        marks.append(_bookmark(con))
    con.close()
    t2 = (1_700_000_000_000 + 2 * 60_000) / 1000
    assert ops_history.bookmark_for_time(view, t2) == marks[1]
    assert ops_history.bookmark_for_time(view, t2 + 30) == marks[1]
    aware = datetime.fromtimestamp(t2, timezone.utc)
    assert ops_history.bookmark_for_time(view, aware) == marks[1]
    with pytest.raises(HistoryError):
        ops_history.bookmark_for_time(view, datetime(2023, 1, 1))  # naive
    with pytest.raises(HistoryError):
        ops_history.bookmark_for_time(view, 1_600_000_000)  # before the history
    with pytest.raises(HistoryError):
        ops_history.restore(view, bookmark="not a bookmark")
    with pytest.raises(HistoryError):
        ops_history.restore(view, bookmark=vh.encode_bookmark(999, 0))
    result = ops_history.restore(view, at=t2)
    assert result.restored == marks[1]
    assert view_dump(view) == [("t", [(0,), (1,)])]


def test_retention_prunes_whole_eras_in_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eras older than the retention go with range deletes inside a commit; states
    inside the retention stay restorable; byte retention keeps at least the latest base."""
    clock = [1_700_000_000_000]
    monkeypatch.setattr(vh, "time_ms", lambda: clock[0])
    store = MemoryKV()
    view = store.actor("a")
    options = vh.HistoryOptions(retention_s=3600, base_min_bytes=0, base_factor=2.0)
    con = vfs.connect(view, history=options)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    marks = []
    for i in range(60):
        clock[0] += 120_000  # 2 minutes per commit: 2 hours in all
        con.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(200),))
        marks.append((clock[0], _bookmark(con)))
    bases = con.kv_file.history.bases
    con.close()
    assert len(bases) >= 2
    assert bases[0].time_ms <= clock[0] - 3600_000  # the era holding the horizon is kept
    oldest_seq = bases[0].seq
    pruned = [m for t, m in marks if vh.decode_bookmark(m)[0] < oldest_seq]
    assert pruned
    with pytest.raises(HistoryError):
        ops_history.restore(view, bookmark=pruned[0])
    for key, _ in view.scan(*HISTORY_RANGE):
        if key[3] in (2, 3, 4):  # entries, changed chunks, base images
            assert history_seq(key)[0] >= oldest_seq, key
    inside = [m for t, m in marks if t >= clock[0] - 3600_000]
    ops_history.restore(view, bookmark=inside[0])
    # Bytes: a tight cap keeps only the latest era.
    con = vfs.connect(view, history=vh.HistoryOptions(retention_s=86400, max_bytes=1, base_min_bytes=0,
                                                      base_factor=2.0))
    for i in range(10):
        con.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(200),))
    assert len(con.kv_file.history.bases) == 1
    con.close()


def test_branch_copies_a_past_state() -> None:
    store = MemoryKV()
    view = store.actor("src")
    con = vfs.connect(view, history=timedelta(days=1))
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    mark = _bookmark(con)
    con.execute("INSERT INTO t VALUES (2)")
    con.close()
    result = ops_history.branch(view, store.actor("dst"), bookmark=mark)
    assert view_dump(store.actor("dst")) == [("t", [(1,)])]
    assert result.restored == mark
    ops_history.branch(view, store.actor("now"))
    assert view_dump(store.actor("now")) == [("t", [(1,), (2,)])]
    with pytest.raises(Exception):
        ops_history.branch(view, store.actor("dst"))
    assert view_dump(view) == [("t", [(1,), (2,)])]


def test_drop_in_takes_the_same_setting(tmp_path: Any) -> None:
    import actor_db

    store = MemoryKV()
    con = actor_db.connect("doc", kv=store, history=timedelta(hours=1))
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    mark = ops_history.bookmark(store.actor("doc"))
    con.execute("INSERT INTO t VALUES (2)")
    con.commit()
    con.close()
    head = vh.Head.decode(store.actor("doc").get_many([vfs.keys.HISTORY_HEAD_KEY])[0])
    assert head.retention_ms == 3600_000
    ops_history.restore(store.actor("doc"), bookmark=mark)
    con = actor_db.connect("doc", kv=store, readonly=True)
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    con.close()


def test_the_prune_check_agrees_with_the_prune_itself() -> None:
    """A commit walks the bases (``History._prune``) only when ``_prune_due`` says the
    walk would drop an era: over random bases, horizons and byte limits, the check and
    the walk never disagree (a check that said no where the walk would prune would keep
    history past its retention)."""
    rng = random.Random(20261207)
    history = vh.History(vh.policy_for(True))
    for _ in range(20_000):
        n = rng.randint(1, 6)
        times = sorted(rng.randint(0, 1_000) for _ in range(n))
        cums = sorted(rng.randint(0, 10**6) for _ in range(n))
        bases = [vh.Base(i + 1, times[i], cums[i], False, 4096) for i in range(n)]
        now, retention = rng.randint(0, 1_500), rng.randint(1, 800)
        max_bytes = rng.choice([0, rng.randint(1, 10**6)])
        total = cums[-1] + rng.randint(0, 10**6)
        pending = vh.Pending(n + 1, vh.Head(n + 1, now, 0, total, retention, max_bytes), bases)
        history._prune(pending, now, retention, max_bytes)
        assert (pending.bases is not bases) == vh._prune_due(bases, now, retention, max_bytes, total)
