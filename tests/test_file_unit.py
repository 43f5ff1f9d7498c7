"""File-level semantics of :class:`vfs.file.KVFile`, driven directly (no SQLite)."""

from __future__ import annotations

import pytest

from vfs.file import FileOptions, KVFile
from vfs.keys import CHUNK_SIZE
from vfs.preload import PreloadMap
from vfs.protocol import KVLimits
from vfs.stats import VFSStats

from actor_db.kv import KVStore, MemoryKV


def open_file(kv, **options) -> KVFile:  # type: ignore[no-untyped-def]
    return KVFile(kv, PreloadMap.empty(), FileOptions(**options), VFSStats())


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((seed + i * 7) % 256 for i in range(n))


def test_unaligned_writes_reads_and_short_reads(store: KVStore) -> None:
    kv = store.actor("unit")
    f = open_file(kv)
    data = pattern(3 * CHUNK_SIZE + 123)
    f.xWrite(data[:5000], 0)
    f.xWrite(data[5000:], 5000)
    assert f.xRead(len(data), 0) == data
    assert f.xRead(100, CHUNK_SIZE - 50) == data[CHUNK_SIZE - 50:CHUNK_SIZE + 50]
    assert f.xRead(1000, len(data) - 10) == data[-10:]  # short read: fewer bytes
    assert f.xRead(10, len(data) + 5) == b""
    f.xSync(0)
    g = open_file(kv, cache_chunks=0)
    assert g.xFileSize() == len(data)
    assert g.xRead(len(data), 0) == data


def test_truncate_then_extend_reads_zeros(store: KVStore) -> None:
    kv = store.actor("trunc")
    f = open_file(kv)
    f.xWrite(pattern(5 * CHUNK_SIZE), 0)
    f.xSync(0)
    f.xTruncate(CHUNK_SIZE + 100)  # mid-chunk
    f.xWrite(b"\xff" * 10, 4 * CHUNK_SIZE)  # grow again past the old stale chunks
    expected = pattern(CHUNK_SIZE + 100) + bytes(3 * CHUNK_SIZE - 100) + b"\xff" * 10
    assert f.xRead(len(expected), 0) == expected
    f.xSync(0)
    g = open_file(kv, cache_chunks=0)
    assert g.xRead(len(expected), 0) == expected


def test_spilled_chunks_truncated_and_regrown_are_not_resurrected() -> None:
    store = MemoryKV(KVLimits(max_batch_keys=8))
    kv = store.actor("spill")
    f = open_file(kv, max_dirty_bytes=4 * CHUNK_SIZE)
    f.xWrite(pattern(20 * CHUNK_SIZE), 0)  # spills to staging several times
    f.xTruncate(2 * CHUNK_SIZE)
    f.xWrite(b"\x01" * CHUNK_SIZE, 10 * CHUNK_SIZE)
    f.xSync(0)
    expected = pattern(2 * CHUNK_SIZE) + bytes(8 * CHUNK_SIZE) + b"\x01" * CHUNK_SIZE
    g = open_file(kv, cache_chunks=0)
    assert g.xFileSize() == len(expected)
    assert g.xRead(len(expected), 0) == expected
    assert f.stats.large_commits == 1
    assert kv.scan(bytes([8, 1, 2]), bytes([8, 1, 4])) == []  # no staging or record left


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1])
def test_sizes_round_trip(store: KVStore, size: int) -> None:
    kv = store.actor(f"size{size}")
    f = open_file(kv)
    f.xWrite(pattern(size), 0) if size else None
    f.xSync(0)
    assert open_file(kv).xFileSize() == size
