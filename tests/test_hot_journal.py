"""Hot rollback journals in file tag 1 (RivetKit's large commits) and WAL-flagged page 1s.

The oracle is SQLite itself: a real commit is recorded over an in-memory VFS
(:mod:`tests.sqlite_crash`), cut after each of its writes, and the files of each cut
are read both by SQLite's own unix VFS (which rolls a hot journal back) and by our
VFSes over the same bytes mapped into tag 0 / tag 1 keys as RivetKit stores them.
"""

from __future__ import annotations

import functools
import sqlite3
import struct
from typing import Any, Iterator

import apsw
import pytest

import vfs
from actor_db.kv import KVStore, MemoryKV
from tests.faults import FaultyKV, OtherProcessView
from tests.interop_support import dump_kv, load_kv
from tests.sqlite_crash import Files, Recording, dump, read_file, record_commit, sqlite_reads, state_at, store_state
from vfs.keys import COMMIT_RECORD_KEY, FILE_JOURNAL, FILE_MAIN, chunk_key, meta_key, staged_range
from vfs.protocol import KV, KVLimits, PreloadRequest, WriteBatch

TABLES = ["t", "b"]


def _series(a: int, b: int) -> str:
    return f"(WITH RECURSIVE s(v) AS (SELECT {a} UNION ALL SELECT v+1 FROM s WHERE v<{b}) SELECT v FROM s)"


def _workload(rows: int) -> tuple[list[str], list[str]]:
    setup = ["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "CREATE INDEX t_v ON t(v)",
             "CREATE TABLE b(id INTEGER PRIMARY KEY, x BLOB)",
             f"INSERT INTO t SELECT v, printf('%0200d', v) FROM {_series(1, rows)}",
             "INSERT INTO b VALUES (1, zeroblob(20000)), (2, CAST(printf('%09000d', 7) AS BLOB))"]
    commit = ["UPDATE t SET v = printf('%0210d', id + 1) WHERE id % 3 = 0",
              f"INSERT INTO t SELECT v, 'new' FROM {_series(rows + 1, rows * 19 // 15)}",
              "DELETE FROM t WHERE id % 7 = 0", "DELETE FROM b WHERE id = 1"]
    return setup, commit


SETUP, COMMIT = _workload(1500)
"""A commit of ~400 pages: RivetKit sends commits over 127 pages through the journal."""


@functools.lru_cache(maxsize=None)
def recording(page_size: int = 4096, shrink: bool = False) -> Recording:
    """The recorded commit; ``shrink``: with ``auto_vacuum=FULL`` a commit that deletes
    most rows, so the file shrinks (and a rollback grows it back)."""
    setup, commit = _workload(1500 if page_size == 4096 else 300)
    if shrink:
        return record_commit(["PRAGMA auto_vacuum=FULL"] + setup, ["DELETE FROM t WHERE id > 100", "DELETE FROM b"],
                             page_size)
    return record_commit(setup, commit, page_size)


@functools.lru_cache(maxsize=None)
def files_at(page_size: int, shrink: bool, cut: int) -> Files:
    return state_at(recording(page_size, shrink), cut)


@functools.lru_cache(maxsize=None)
def oracle(page_size: int, shrink: bool, cut: int) -> tuple[str, Files]:
    return sqlite_reads(files_at(page_size, shrink, cut), TABLES)


def sample_cuts(rec: Recording, n: int) -> list[int]:
    """``n`` evenly spread cuts plus the boundaries: the journal's header finalized,
    the first and last main-file write, and both sides of the commit point (the
    journal header zeroed)."""
    ops = rec.ops
    total = len(ops)
    main_writes = [i for i, (f, op, _) in enumerate(ops) if f == "main"]
    header = [i for i, (f, op, arg) in enumerate(ops) if f == "journal" and op == "write" and arg[0] == 0]
    special = {0, total, total - 1}
    for i in header + main_writes[:1] + main_writes[-1:]:
        special |= {i, i + 1}
    spread = {round(k * total / max(n - 1, 1)) for k in range(n)}
    return sorted(c for c in special | spread if 0 <= c <= total)


def check_cut(store: KVStore, actor: str, files: Files, want: str, after: Files, vfs_kind: str,
              mode: str) -> None:
    """Store ``files`` for ``actor``, open them in ``mode`` and compare with SQLite."""
    store_state(store.actor(actor), files)
    if mode == "owner":
        kv = store.actor(actor)
        kv.acquire_ownership()
        con = vfs.connect(kv, vfs=vfs_kind)
        assert dump(con, TABLES) == want
        con.close()
        # The KV now holds what SQLite's rollback left: the same main file, and the
        # journal deleted exactly when SQLite deleted it.
        plain = store.actor(actor)
        assert read_file(plain, FILE_MAIN) == after["main"]
        assert (read_file(plain, FILE_JOURNAL) is None) == ("journal" not in after)
        con = vfs.connect(OtherProcessView(plain), vfs=vfs_kind, readonly=True)
        assert dump(con, TABLES) == want
        con.close()
    elif mode == "readonly":
        view = OtherProcessView(store.actor(actor))
        con = vfs.connect(view, vfs=vfs_kind, readonly=True)
        assert dump(con, TABLES) == want
        con.close()
        assert view.writes == 0
        assert read_file(store.actor(actor), FILE_JOURNAL) == files.get("journal")
    else:
        with store.actor(actor).snapshot() as snap:
            con = vfs.connect(snap, vfs=vfs_kind, readonly=True)
            assert dump(con, TABLES) == want
            con.close()


@pytest.mark.parametrize("mode", ["owner", "readonly", "snapshot"])
def test_every_crash_cut_reads_as_sqlite_reads_it(store: KVStore, vfs_kind: str, mode: str) -> None:
    """Issue 26: cuts of a large rollback-journal commit. Before the fix, cuts with the
    main file partly rewritten failed with `malformed`, and the cut with every page
    written but the journal still hot read the uncommitted state."""
    rec = recording(4096, False)
    memory = isinstance(store, MemoryKV)
    cuts = range(0, len(rec.ops) + 1, 15) if memory and mode != "snapshot" else sample_cuts(rec, 6)
    old_state = oracle(4096, False, 0)[0]
    new_state = oracle(4096, False, len(rec.ops))[0]
    assert old_state != new_state
    for cut in cuts:
        want, after = oracle(4096, False, cut)
        assert want in (old_state, new_state), cut  # SQLite itself: one committed state or the other
        check_cut(store, f"cut-{mode}-{cut}", files_at(4096, False, cut), want, after, vfs_kind, mode)


@pytest.mark.parametrize("page_size", [512, 1024, 8192, 65536])
@pytest.mark.parametrize("shrink", [False, True], ids=["grow", "shrink"])
def test_crash_cuts_at_other_page_sizes(vfs_kind: str, page_size: int, shrink: bool) -> None:
    store = MemoryKV()
    rec = recording(page_size, shrink)
    for cut in sample_cuts(rec, 4):
        want, after = oracle(page_size, shrink, cut)
        for mode in ("owner", "readonly"):
            check_cut(store, f"ps-{mode}-{cut}", files_at(page_size, shrink, cut), want, after, vfs_kind, mode)


def _mid_commit(rec: Recording) -> int:
    """A cut with the journal finalized and about half the main pages rewritten."""
    main_writes = [i for i, (f, _, _) in enumerate(rec.ops) if f == "main"]
    return main_writes[len(main_writes) // 2]


class CountingOwner(FaultyKV):
    """:class:`FaultyKV` that forwards the inner view's ownership (an owner's open)."""

    @property  # type: ignore[override]
    def fence_token(self) -> int | None:
        return getattr(self.inner, "fence_token", None)


def test_owner_rolls_back_in_one_atomic_batch(vfs_kind: str) -> None:
    rec = recording(4096, False)
    cut = _mid_commit(rec)
    want, after = oracle(4096, False, cut)
    store = MemoryKV()
    store_state(store.actor("a"), state_at(rec, cut))
    inner = store.actor("a")
    inner.acquire_ownership()
    kv = CountingOwner(inner)
    con = vfs.connect(kv, vfs=vfs_kind)
    assert kv.writes == 1  # restored pages, meta and the journal's deletion together
    batch = kv.batches[0]
    assert meta_key(FILE_JOURNAL) in batch.deletes
    assert any(r.start == chunk_key(FILE_JOURNAL, 0) for r in batch.delete_ranges)
    assert sum(1 for key in batch.puts if key.startswith(chunk_key(FILE_MAIN, 0)[:4])) > 100
    # the open's preload call, the journal read, the batch (its first chunk came along)
    assert con.stats.round_trips == 3
    assert dump(con, TABLES) == want
    con.close()
    assert read_file(store.actor("a"), FILE_MAIN) == after["main"]


def test_large_rollback_survives_a_failure_at_every_write(vfs_kind: str) -> None:
    """With a 32-key batch limit the rollback goes through the redo protocol (staging,
    then ONE batch with the commit record and the journal's deletion): a failure at any
    write leaves either the hot journal or the commit record, never a mix."""
    rec = recording(4096, False)
    cut = _mid_commit(rec)
    want, after = oracle(4096, False, cut)
    limits = KVLimits(max_batch_keys=32)
    total = None
    n = 1
    while total is None or n <= total:
        store = MemoryKV()
        store_state(store.actor("a"), state_at(rec, cut))
        inner = store.actor("a")
        inner.acquire_ownership()
        kv = CountingOwner(inner, fail_write_at=n, limits=limits)
        try:
            con = vfs.connect(kv, vfs=vfs_kind)
        except apsw.IOError as exc:
            assert "injected" in str(exc.__cause__) or "injected" in str(exc)
        else:
            total = kv.writes if total is None else total
            assert dump(con, TABLES) == want
            con.close()
        if total is None and not kv.failed:
            total = kv.writes
        # A reader in between sees the committed state too.
        con = vfs.connect(OtherProcessView(store.actor("a")), vfs=vfs_kind, readonly=True)
        assert dump(con, TABLES) == want, n
        con.close()
        owner = store.actor("a")
        owner.acquire_ownership()
        con = vfs.connect(owner, vfs=vfs_kind)
        assert dump(con, TABLES) == want, n
        con.close()
        assert read_file(store.actor("a"), FILE_MAIN) == after["main"], n
        assert read_file(store.actor("a"), FILE_JOURNAL) is None
        assert store.actor("a").scan(*staged_range()) == []
        assert store.actor("a").get_many([COMMIT_RECORD_KEY]) == [None]
        n += 1
    assert total is not None and total > 3  # staging batches, the record batch, apply batches


def _journal_variants(journal: bytes) -> Iterator[tuple[str, bytes]]:
    """Damaged or unusual journals SQLite has rules for."""
    page = 4096
    record = page + 8
    sector = struct.unpack(">I", journal[20:24])[0]
    yield "bad-checksum", journal[:sector + 5 * record + 4 + page] + b"\xff\xff\xff\xff" \
        + journal[sector + 5 * record + 8 + page:]
    yield "nrec-all", journal[:8] + b"\xff\xff\xff\xff" + journal[12:]
    yield "nrec-zero", journal[:8] + bytes(4) + journal[12:]
    yield "bad-magic", b"\x01" + journal[1:]
    yield "cut-mid-record", journal[:sector + 3 * record + 100]
    yield "bad-page-size", journal[:24] + struct.pack(">I", 1000) + journal[28:]
    yield "page-zero", journal[:sector + 2 * record] + bytes(4) + journal[sector + 2 * record + 4:]
    yield "grow", journal[:16] + struct.pack(">I", struct.unpack(">I", journal[16:20])[0] + 5) + journal[20:]
    yield "super-journal", journal + b"x.db" + struct.pack(">II", 4, sum(b"x.db")) + journal[:8]


def _outcome(read: Any) -> str:
    """A dump, or the name of the apsw error reading failed with."""
    try:
        return str(read())
    except apsw.Error as exc:
        return type(exc).__name__


@functools.lru_cache(maxsize=None)
def _damaged_oracle(cut: int, name: str) -> str:
    files = files_at(4096, False, cut)
    journal = dict(_journal_variants(files["journal"]))[name]
    return _outcome(lambda: sqlite_reads({"main": files["main"], "journal": journal}, TABLES)[0])


@pytest.mark.parametrize("mode", ["owner", "readonly"])
def test_damaged_journals_read_as_sqlite_reads_them(vfs_kind: str, mode: str) -> None:
    """Journals cut short, with bad checksums, headers or page numbers: playback stops
    where SQLite's stops. Before any main page is rewritten that leaves the old state;
    in the middle of the main writes, the same damage (or the same answer) as SQLite."""
    rec = recording(4096, False)
    first_main = next(i for i, (f, _, _) in enumerate(rec.ops) if f == "main")
    store = MemoryKV()
    for cut in (first_main, _mid_commit(rec)):
        files = state_at(rec, cut)
        for name, journal in _journal_variants(files["journal"]):
            variant = {"main": files["main"], "journal": journal}
            want = _damaged_oracle(cut, name)
            actor = f"{name}-{mode}-{cut}"
            store_state(store.actor(actor), variant)
            if mode == "owner":
                store.actor(actor).acquire_ownership()
                kv: KV = store.actor(actor)
            else:
                kv = OtherProcessView(store.actor(actor))

            def ours() -> str:
                con = vfs.connect(kv, vfs=vfs_kind, readonly=mode == "readonly")
                try:
                    return dump(con, TABLES)
                finally:
                    con.close()
            assert _outcome(ours) == want, (name, cut)
            if cut == first_main:
                assert want == oracle(4096, False, 0)[0], name  # the old state


def test_writable_non_owner_writes_the_rollback_before_its_commit(vfs_kind: str) -> None:
    rec = recording(4096, False)
    cut = _mid_commit(rec)
    want, after = oracle(4096, False, cut)
    store = MemoryKV()
    store_state(store.actor("a"), state_at(rec, cut))
    kv = FaultyKV(store.actor("a"))  # writable, no ownership: no write at open
    con = vfs.connect(kv, vfs=vfs_kind)
    assert kv.writes == 0
    assert dump(con, TABLES) == want
    con.execute("INSERT INTO b VALUES (99, x'00')")
    assert kv.writes == 2  # the rollback, then the commit
    con.close()
    con = vfs.connect(store.actor("a"), vfs=vfs_kind)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert con.execute("SELECT count(*) FROM b WHERE id = 99").fetchall() == [(1,)]
    con.close()
    assert read_file(store.actor("a"), FILE_JOURNAL) is None


def test_hot_journal_next_to_a_commit_record_is_refused(vfs_kind: str) -> None:
    rec = recording(4096, False)
    store = MemoryKV()
    store_state(store.actor("a"), state_at(rec, _mid_commit(rec)))
    batch = WriteBatch()
    batch.put(COMMIT_RECORD_KEY, struct.pack("<HQq", 1, 4096, -1))
    store.actor("a").write(batch)
    with pytest.raises(apsw.CorruptError, match="both a hot rollback journal"):
        vfs.connect(store.actor("a"), vfs=vfs_kind, readonly=True)


# ------------------------------------------------------------- WAL-flagged page 1
def _wal_file(tmp_path: Any) -> bytes:
    path = tmp_path / "wal.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, "v" * (i % 50)) for i in range(500)])
    con.commit()
    con.close()
    data = path.read_bytes()
    assert data[18:20] == b"\x02\x02"
    return data


def _rows(con: Any) -> list[Any]:
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    return con.execute("SELECT count(*), sum(length(v)) FROM t").fetchall()  # type: ignore[no-any-return]


EXPECTED_WAL_ROWS = [(500, sum(i % 50 for i in range(500)))]


def test_wal_flagged_page_one_opens_and_the_owner_repairs_it(store: KVStore, vfs_kind: str, tmp_path: Any) -> None:
    """Issue 28 item 1: page 1 saying WAL (18-19 = 2, 2) opened with `unable to open`."""
    store_state(store.actor("w"), {"main": _wal_file(tmp_path)})
    view = OtherProcessView(store.actor("w"))
    con = vfs.connect(view, vfs=vfs_kind, readonly=True)
    assert _rows(con) == EXPECTED_WAL_ROWS
    assert con.execute("PRAGMA journal_mode").fetchall() == [("memory",)]
    con.close()
    assert view.writes == 0
    with store.actor("w").snapshot() as snap:
        con = vfs.connect(snap, vfs=vfs_kind, readonly=True)
        assert _rows(con) == EXPECTED_WAL_ROWS
        con.close()
    assert store.actor("w").get_many([chunk_key(FILE_MAIN, 0)])[0][18:20] == b"\x02\x02"  # type: ignore[index]
    owner = store.actor("w")
    owner.acquire_ownership()
    con = vfs.connect(owner, vfs=vfs_kind)
    assert store.actor("w").get_many([chunk_key(FILE_MAIN, 0)])[0][18:20] == b"\x01\x01"  # type: ignore[index]
    assert _rows(con) == EXPECTED_WAL_ROWS
    con.execute("INSERT INTO t VALUES (1000, 'x')")
    con.close()
    con = vfs.connect(store.actor("w"), vfs=vfs_kind, readonly=True)
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(501,)]
    con.close()


def test_wal_flag_found_by_a_later_read_is_repaired_by_the_first_commit(vfs_kind: str, tmp_path: Any) -> None:
    """A preload without chunk 0: page 1 is first read live (not at open)."""
    store = MemoryKV()
    store_state(store.actor("w"), {"main": _wal_file(tmp_path)})
    kv: KV = store.actor("w")
    preload = kv.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=()))
    con = vfs.connect(kv, vfs=vfs_kind, preload=preload)
    assert _rows(con) == EXPECTED_WAL_ROWS
    con.execute("INSERT INTO t VALUES (1000, 'x')")
    con.close()
    assert store.actor("w").get_many([chunk_key(FILE_MAIN, 0)])[0][18:20] == b"\x01\x01"  # type: ignore[index]


# ------------------------------------------------ our own journaled large commits
@pytest.mark.parametrize(("page_size", "apply_then_fail"), [(4096, False), (4096, True), (1024, False),
                                                           (65536, False)],
                         ids=["lost-write", "lost-reply", "1024-lost-write", "65536-lost-write"])
def test_our_journaled_commit_cut_at_every_write_reads_as_sqlite_reads_it(vfs_kind: str, page_size: int,
                                                                          apply_then_fail: bool) -> None:
    """A commit larger than a batch writes a SQLite rollback journal in tag 1: cut at
    every write call, the KV's files read the same in plain SQLite (which rolls our
    journal back itself) as in ours, and as the state before or after the commit."""
    limits = KVLimits(max_batch_keys=16)
    store = MemoryKV()
    setup, commit = _workload(300)
    con = vfs.connect(store.actor("ref"), vfs=vfs_kind, page_size=page_size)
    for sql in setup:
        con.execute(sql)
    con.close()
    saved = dump_kv(store.actor("ref"))

    def base(actor: str) -> None:
        load_kv(store.actor(actor), saved)

    def run(kv: KV) -> None:
        con = vfs.connect(kv, vfs=vfs_kind)
        try:
            with con:
                for sql in commit:
                    con.execute(sql)
            assert con.kv_file.stats.large_commits == 1
        finally:
            try:
                con.close()
            except apsw.Error:
                pass

    old = dump_of(store.actor("ref"), vfs_kind)
    counted = FaultyKV(store.actor("ref"), limits=limits)
    run(counted)
    new = dump_of(store.actor("ref"), vfs_kind)
    total = counted.writes
    assert old != new and total > 4
    assert not any(key[:4] == meta_key(FILE_JOURNAL) for key in counted.batches[-1].puts)  # deleted at the end
    for n in range(1, total + 1):
        actor = f"n{n}"
        base(actor)
        try:
            run(FaultyKV(store.actor(actor), fail_write_at=n, apply_then_fail=apply_then_fail, limits=limits))
        except apsw.Error:
            pass
        plain = store.actor(actor)
        files = {"main": read_file(plain, FILE_MAIN) or b""}
        journal = read_file(plain, FILE_JOURNAL)
        if journal is not None:
            files["journal"] = journal
        want, _ = sqlite_reads(files, TABLES)
        assert want in (old, new), n
        assert dump_of(OtherProcessView(plain), vfs_kind) == want, n
        if n < total and not apply_then_fail:
            assert want == old, n  # the commit point is the last write
        owner = store.actor(actor)
        owner.acquire_ownership()
        assert dump_of(owner, vfs_kind, readonly=False) == want, n
        assert read_file(store.actor(actor), FILE_JOURNAL) is None, n


def dump_of(kv: KV, vfs_kind: str, readonly: bool = True) -> str:
    con = vfs.connect(kv, vfs=vfs_kind, readonly=readonly)
    try:
        return dump(con, TABLES)
    finally:
        con.close()


def test_large_commit_round_trips_and_bytes_journal_against_redo(vfs_kind: str) -> None:
    """Issue 26 item 2: a 10,000-row commit under RivetKit's batch limits (128 keys /
    976 KiB), cold cache. The redo log writes every chunk twice (stage, apply) plus a
    record; the journal writes the before-images of the pages that existed (few, for an
    insert), the pages once, and one commit-point batch."""
    from benchmarks.large_commit_costs import measure

    redo = measure("redo", vfs_kind=vfs_kind, updates=False)
    journaled = measure("journal", vfs_kind=vfs_kind, updates=False)
    assert (redo["writes"], redo["reads"]) == (15, 0)
    assert (journaled["writes"], journaled["reads"]) == (8, 1)  # 1 read: the before-images
    assert journaled["bytes_written"] < 0.55 * redo["bytes_written"]


def test_a_journal_next_to_an_empty_database_is_deleted_not_played(vfs_kind: str) -> None:
    """SQLite deletes a journal whose database has no page (it would turn hot later)."""
    rec = recording(4096, False)
    files = state_at(rec, _mid_commit(rec))
    store = MemoryKV()
    store_state(store.actor("a"), {"journal": files["journal"]})
    owner = store.actor("a")
    owner.acquire_ownership()
    con = vfs.connect(owner, vfs=vfs_kind)
    assert read_file(store.actor("a"), FILE_JOURNAL) is None
    con.execute("CREATE TABLE x(y)")
    con.close()
    con = vfs.connect(store.actor("a"), vfs=vfs_kind, readonly=True)
    assert con.execute("SELECT name FROM sqlite_schema").fetchall() == [("x",)]
    con.close()
