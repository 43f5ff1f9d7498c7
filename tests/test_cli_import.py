"""``actor-db import`` is all-or-nothing: every KV write of an import failing in turn.

These call :func:`actor_db.cli.import_database` in-process, because the fault injection
(:class:`tests.faults.FaultyKV`) wraps the actor's KV view; the subprocess tests in
``test_cli.py`` cover the same function through the console script.
"""

from __future__ import annotations

import pathlib
import sqlite3

import apsw
import pytest

import vfs
from vfs.keys import staged_range

from actor_db.cli import CLIError, import_database
from actor_db.kv import KVStore
from tests.cli_support import dump, make_sqlite_file
from tests.faults import FaultyKV, InjectedFault

# Small enough that the import needs the redo protocol (staging, commit record, apply).
MAX_DIRTY = 16 * 1024
EMPTY = ["BEGIN TRANSACTION;", "COMMIT;"]
"""``iterdump`` of a database with no schema (an actor without a database)."""


def _contents(store: KVStore, actor: str) -> list[str]:
    """The actor database's logical content (iterdump via the stdlib's dump code), after
    a fresh open (which rolls a commit record forward or drops staging)."""
    con = vfs.connect(store.actor(actor))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [line for line in _iterdump(con)]
    finally:
        con.close()


def _iterdump(con: apsw.Connection) -> list[str]:
    mem = sqlite3.connect(":memory:")
    data = con.serialize("main")
    if data:
        mem.deserialize(data)
    return list(mem.iterdump())


@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "src.db"
    make_sqlite_file(path, rows=400)
    return path


def _count_writes(store: KVStore, source: pathlib.Path, actor: str, **kwargs: object) -> int:
    probe = FaultyKV(store.actor(actor))
    import_database(source, probe, max_dirty_bytes=MAX_DIRTY, **kwargs)  # type: ignore[arg-type]
    return probe.writes


@pytest.mark.parametrize("apply_then_fail", [False, True], ids=["lost-write", "lost-reply"])
def test_failed_import_of_a_new_actor_leaves_nothing(store: KVStore, source: pathlib.Path,
                                                     apply_then_fail: bool) -> None:
    expected = dump(source)
    writes = _count_writes(store, source, "probe")
    assert writes >= 4  # staged batches, the commit record, the apply
    assert _contents(store, "probe") == expected
    outcomes = set()
    for n in range(1, writes + 1):
        actor = f"a{n}"
        faulty = FaultyKV(store.actor(actor), fail_write_at=n, apply_then_fail=apply_then_fail)
        try:
            import_database(source, faulty, max_dirty_bytes=MAX_DIRTY)
            raised = False
        except (apsw.IOError, InjectedFault) as exc:  # the lease's own writes fail as the KV error
            assert isinstance(exc, InjectedFault) or isinstance(exc.__cause__, InjectedFault)
            raised = True
        assert faulty.failed
        after = _contents(store, actor)
        # before the commit point: no database at all; after it: the whole file
        # (a failure while applying a durable commit is not an error: the next open
        # finishes it, so the import reports success)
        assert after in (EMPTY, expected), n
        if not raised:
            assert after == expected, n
        outcomes.add("none" if after == EMPTY else "all")
        assert store.actor(actor).scan(*staged_range()) == []  # no staged chunk left behind
    assert "none" in outcomes
    if apply_then_fail:
        assert "all" in outcomes  # a lost reply after the commit record: rolled forward


def test_failed_forced_import_keeps_the_old_database(store: KVStore, source: pathlib.Path,
                                                     tmp_path: pathlib.Path) -> None:
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE old (x)")
    con.executemany("INSERT INTO old VALUES (?)", [(i,) for i in range(50)])
    con.commit()
    con.close()
    old_dump, new_dump = dump(old), dump(source)
    import_database(old, store.actor("probe"))
    writes = _count_writes(store, source, "probe", force=True)
    outcomes = set()
    for n in range(1, writes + 1):
        actor = f"f{n}"
        import_database(old, store.actor(actor))
        faulty = FaultyKV(store.actor(actor), fail_write_at=n)
        try:
            import_database(source, faulty, force=True, max_dirty_bytes=MAX_DIRTY)
            raised = False
        except (apsw.IOError, InjectedFault):
            raised = True
        after = _contents(store, actor)
        assert after in (old_dump, new_dump), n  # never a mix of old and new pages
        assert raised or after == new_dump, n
        outcomes.add(after == new_dump)
    assert outcomes == {False, True}  # failures before and after the commit point
    import_database(source, store.actor("f1"), force=True)
    assert _contents(store, "f1") == new_dump


def test_refusals_write_nothing(store: KVStore, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import_database(source, store.actor("a"))
    before = store.round_trips
    with pytest.raises(CLIError, match="already has a database"):
        import_database(source, store.actor("a"))
    assert store.round_trips - before == 1  # one read of the meta, no write
    text = tmp_path / "notes.txt"
    text.write_text("not sqlite")
    with pytest.raises(CLIError, match="not a SQLite database"):
        import_database(text, store.actor("b"))
    assert store.actor_ids() == ["a"]


def test_import_cost_in_round_trips(store: KVStore, source: pathlib.Path) -> None:
    """A file that fits one atomic batch and the dirty bound: open (1) + commit (1)."""
    if store.limits.max_batch_keys is not None:
        pytest.skip("this driver caps batches; the redo path is covered above")  # never in CI: no driver caps
    result = import_database(source, store.actor("a"))
    assert result.kv_round_trips == 2
    assert not result.large_commit
    assert result.pages == source.stat().st_size // 4096
    small = import_database(source, store.actor("b"), max_dirty_bytes=MAX_DIRTY)
    assert small.large_commit and small.kv_round_trips > 2


def test_import_into_lmdb_needs_at_most_one_and_a_half_times_the_database(tmp_path: pathlib.Path) -> None:
    """A spilling import (the redo protocol: staging, commit record, apply) frees each
    staged chunk in the batch that applies it, so the store's high-water mark (LMDB's
    last page, bytes) stays within 1.5x the database's size, where staging everything and
    then applying everything needed 2x (issue 28 item 3: 50 MiB of text took 104.6 MB).
    The peak is the database plus one apply batch (<= 1,024 chunks, 4 MiB) whose freed
    staging LMDB can reuse only from the next transaction on: ~20 MiB here."""
    import random

    from actor_db.kv.lmdb import LmdbKV

    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
             for _ in range(2000)]
    path = tmp_path / "text.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO t (body) VALUES (?)",
                    ((" ".join(rng.choice(words) for _ in range(60)),) for _ in range(40_000)))
    con.commit()
    con.close()
    db_bytes = path.stat().st_size
    store = LmdbKV(tmp_path / "store")
    try:
        result = import_database(path, store.actor("text"), max_dirty_bytes=256 * 1024)
        assert result.pages * 4096 == db_bytes
        info, stat = store._env.info(), store._env.stat()
        high_water = (info["last_pgno"] + 1) * stat["psize"]
        assert high_water <= 1.5 * db_bytes, (high_water, db_bytes)
        assert _contents(store, "text")[-2].startswith("INSERT INTO \"t\" VALUES(40000,")
    finally:
        store.close()
