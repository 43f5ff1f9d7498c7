"""Damaged storage is refused, never read as data (issue 11, item 4).

A chunk value of the wrong length, a meta whose size is not a whole number of pages or
beyond what the key format addresses, a meta missing while chunks exist: each is an
``apsw.CorruptError`` naming the actor and the key, on both VFSes and every driver,
with and without the startup preload; nothing stored is changed by the attempt, so
repairing the damaged key gives the database back whole.
"""

from __future__ import annotations

import struct

import apsw
import pytest

import vfs
from vfs.keys import FILE_MAIN, chunk_key, meta_key
from vfs.protocol import WriteBatch

from actor_db.kv import KVStore
from tests.helpers import full_preload, integrity

ROWS = 20_000
TOTAL = ROWS * (ROWS - 1) // 2


def _build(kv: vfs.KV, vfs_kind: str) -> None:
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (n INTEGER)")
    con.execute("WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                "INSERT INTO t SELECT i FROM s", (ROWS - 1,))
    con.close()


def _put(kv: vfs.KV, key: bytes, value: bytes | None) -> None:
    batch = WriteBatch()
    if value is None:
        batch.delete(key)
    else:
        batch.put(key, value)
    kv.write(batch)


def _sum(kv: vfs.KV, vfs_kind: str, preload: bool) -> int:
    con = vfs.connect(kv, vfs=vfs_kind, preload=full_preload(kv) if preload else None, cache_chunks=8)
    try:
        return int(con.execute("SELECT sum(n) FROM t").get)
    finally:
        con.close()


@pytest.mark.parametrize("preload", [False, True], ids=["live", "preload"])
def test_a_truncated_chunk_is_corrupt_not_zeros(store: KVStore, vfs_kind: str, preload: bool) -> None:
    kv = store.actor("cut")
    _build(kv, vfs_kind)
    key = chunk_key(FILE_MAIN, 3)
    good = kv.get_many([key])[0]
    assert good is not None and len(good) == 4096
    _put(kv, key, good[:100])
    with pytest.raises(apsw.CorruptError) as info:
        _sum(kv, vfs_kind, preload)
    message = str(info.value)
    assert "actor 'cut'" in message and repr(key) in message and "100 bytes" in message
    assert kv.get_many([key])[0] == good[:100]  # the reader changed nothing
    _put(kv, key, good)
    assert _sum(kv, vfs_kind, preload) == TOTAL


def test_an_overlong_chunk_is_corrupt(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("long")
    _build(kv, vfs_kind)
    key = chunk_key(FILE_MAIN, 2)
    good = kv.get_many([key])[0]
    assert good is not None
    _put(kv, key, good + b"\x00" * 10)
    with pytest.raises(apsw.CorruptError, match="4106 bytes"):
        _sum(kv, vfs_kind, preload=False)


def _meta(size: int) -> bytes:
    return struct.pack("<HQ", 1, size)


@pytest.mark.parametrize("size", [4096 * 3 + 100, 1 << 50, (1 << 64) - 1], ids=["unaligned", "2^50", "2^64-1"])
def test_a_bad_meta_size_is_corrupt_and_nothing_is_overwritten(store: KVStore, vfs_kind: str, size: int) -> None:
    kv = store.actor("meta")
    _build(kv, vfs_kind)
    good = kv.get_many([meta_key(FILE_MAIN)])[0]
    chunks_before = kv.scan(chunk_key(FILE_MAIN, 0), chunk_key(FILE_MAIN, 1 << 20))
    _put(kv, meta_key(FILE_MAIN), _meta(size))
    for preload in (False, True):
        with pytest.raises(apsw.CorruptError, match=r"actor 'meta'.*declares"):
            vfs.connect(kv, vfs=vfs_kind, preload=full_preload(kv) if preload else None)
    assert kv.scan(chunk_key(FILE_MAIN, 0), chunk_key(FILE_MAIN, 1 << 20)) == chunks_before
    _put(kv, meta_key(FILE_MAIN), good)
    assert _sum(kv, vfs_kind, preload=True) == TOTAL


@pytest.mark.parametrize("preload", [False, True], ids=["live", "preload"])
def test_a_missing_meta_never_creates_over_existing_chunks(store: KVStore, vfs_kind: str, preload: bool) -> None:
    kv = store.actor("nometa")
    _build(kv, vfs_kind)
    good = kv.get_many([meta_key(FILE_MAIN)])[0]
    chunks_before = kv.scan(chunk_key(FILE_MAIN, 0), chunk_key(FILE_MAIN, 1 << 20))
    _put(kv, meta_key(FILE_MAIN), None)
    with pytest.raises(apsw.CorruptError, match=r"actor 'nometa'.*meta .*missing but chunk 0 exists"):
        con = vfs.connect(kv, vfs=vfs_kind, preload=full_preload(kv) if preload else None, cache_chunks=0)
        con.execute("CREATE TABLE fresh (x)")  # what an app does on an 'empty' database
    assert kv.scan(chunk_key(FILE_MAIN, 0), chunk_key(FILE_MAIN, 1 << 20)) == chunks_before
    _put(kv, meta_key(FILE_MAIN), good)
    assert _sum(kv, vfs_kind, preload=preload) == TOTAL


def test_a_missing_first_chunk_is_corrupt(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("nohead")
    _build(kv, vfs_kind)
    _put(kv, chunk_key(FILE_MAIN, 0), None)
    with pytest.raises(apsw.CorruptError, match="chunk 0 .*missing"):
        vfs.connect(kv, vfs=vfs_kind)


def test_a_short_last_chunk_covering_the_file_still_reads(store: KVStore, vfs_kind: str) -> None:
    """Writers that store the file's last chunk only up to the file's end (a database
    with a page size below 4096) stay readable: only a chunk too short for the bytes
    the file needs from it is damage."""
    kv = store.actor("short-tail")
    con = vfs.connect(kv, vfs=vfs_kind, page_size=1024)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES ('hello')")
    con.close()
    size = struct.unpack("<HQ", kv.get_many([meta_key(FILE_MAIN)])[0] or b"")[1]
    last = (size - 1) // 4096
    key = chunk_key(FILE_MAIN, last)
    value = kv.get_many([key])[0]
    assert value is not None and size % 4096
    _put(kv, key, value[:size - last * 4096])
    con = vfs.connect(kv, vfs=vfs_kind)
    assert integrity(con) == "ok" and con.execute("SELECT x FROM t").get == "hello"
    con.close()


# ------------------------------------------- issue 29, item 5: an "empty" meta or record
def _refused_and_untouched(kv: vfs.KV, vfs_kind: str, key: bytes, preload: bool) -> None:
    """Opening (and writing, as an app does on an empty database) is refused with a
    CorruptError naming ``key``; no chunk changes."""
    chunks_before = kv.scan(chunk_key(FILE_MAIN, 0), chunk_key(FILE_MAIN, 1 << 20))
    assert chunks_before
    with pytest.raises(apsw.CorruptError) as info:
        con = vfs.connect(kv, vfs=vfs_kind, preload=full_preload(kv) if preload else None, cache_chunks=0)
        try:
            con.execute("CREATE TABLE fresh (x)")  # what an app does on an 'empty' database
        finally:
            con.close()
    assert repr(key) in str(info.value), str(info.value)
    assert "actor 'empty'" in str(info.value)
    assert kv.scan(chunk_key(FILE_MAIN, 0), chunk_key(FILE_MAIN, 1 << 20)) == chunks_before


@pytest.mark.parametrize("preload", [False, True], ids=["live", "preload"])
@pytest.mark.parametrize("meta", [b"", struct.pack("<HQ", 1, 0)], ids=["0-byte-value", "declares-0"])
def test_an_empty_meta_never_creates_over_existing_chunks(store: KVStore, vfs_kind: str, preload: bool,
                                                          meta: bytes) -> None:
    kv = store.actor("empty")
    _build(kv, vfs_kind)
    good = kv.get_many([meta_key(FILE_MAIN)])[0]
    _put(kv, meta_key(FILE_MAIN), meta)
    _refused_and_untouched(kv, vfs_kind, meta_key(FILE_MAIN), preload)
    _put(kv, meta_key(FILE_MAIN), good)
    assert _sum(kv, vfs_kind, preload=preload) == TOTAL


def _record(size: int, truncate_from: int = -1) -> bytes:
    return struct.pack("<HQq", 1, size, truncate_from)


@pytest.mark.parametrize("preload", [False, True], ids=["live", "preload"])
@pytest.mark.parametrize("record", [_record(1 << 62), _record(0), _record(4096 * 3 + 100), _record(8192, 1 << 40)],
                         ids=["2^62", "0", "unaligned", "truncate-past-the-format"])
def test_a_bad_commit_record_is_corrupt_and_nothing_is_applied(store: KVStore, vfs_kind: str, preload: bool,
                                                               record: bytes) -> None:
    from vfs.keys import COMMIT_RECORD_KEY

    kv = store.actor("empty")
    kv.acquire_ownership()  # the owner rolls a record forward at open: it must refuse instead
    _build(kv, vfs_kind)
    meta = kv.get_many([meta_key(FILE_MAIN)])[0]
    _put(kv, COMMIT_RECORD_KEY, record)
    _refused_and_untouched(kv, vfs_kind, COMMIT_RECORD_KEY, preload)
    assert kv.get_many([meta_key(FILE_MAIN), COMMIT_RECORD_KEY]) == [meta, record]
    _put(kv, COMMIT_RECORD_KEY, None)
    assert _sum(kv, vfs_kind, preload=preload) == TOTAL


def test_a_creation_rolled_back_in_place_leaves_no_chunk_to_refuse(store: KVStore, vfs_kind: str) -> None:
    """The one way our own writers leave a meta of 0 bytes: a database's first commit
    lands but its reply is lost, and SQLite rolls the creation back in place (a commit
    of 0 bytes). That commit deletes every chunk, so the next open finds an empty
    database, not chunks under a zero meta (which item 5's check refuses)."""
    from typing import Any, Callable

    from tests.faults import ForwardingKV

    class LostReply(ForwardingKV):
        def __init__(self, inner: vfs.KV) -> None:
            super().__init__(inner)
            self.lose = False

        def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
            result = call()
            if batch is not None and self.lose:
                self.lose = False
                raise RuntimeError("the reply was lost")
            return result

    inner = store.actor("created")
    kv = LostReply(inner)
    con = vfs.connect(kv, vfs=vfs_kind)
    kv.lose = True
    with pytest.raises(apsw.IOError, match="the reply was lost"):
        con.execute("CREATE TABLE t (x)")
    con.close()
    assert inner.get_many([meta_key(FILE_MAIN), chunk_key(FILE_MAIN, 0)]) == [_meta(0), None]
    again = vfs.connect(inner, vfs=vfs_kind)
    again.execute("CREATE TABLE t (x)")
    again.execute("INSERT INTO t VALUES (1)")
    again.close()
    assert _sum_of_x(inner, vfs_kind) == 1


def _sum_of_x(kv: vfs.KV, vfs_kind: str) -> int:
    con = vfs.connect(kv, vfs=vfs_kind)
    try:
        assert integrity(con) == "ok"
        return int(con.execute("SELECT sum(x) FROM t").get)
    finally:
        con.close()
