"""The on-KV format is DESIGN.md section 2, byte for byte."""

from __future__ import annotations

import struct

import vfs
from vfs.keys import (
    CHUNK_SIZE, COMMIT_RECORD_KEY, FILE_MAIN, chunk_key, chunk_range, decode_meta, encode_meta,
    meta_key, staged_key,
)

from actor_db.kv import KVStore


def test_design_test_vector() -> None:
    assert chunk_key(FILE_MAIN, 256) == bytes([8, 1, 1, 0, 0, 0, 1, 0])


def test_layout() -> None:
    assert CHUNK_SIZE == 4096
    assert meta_key(0) == bytes([8, 1, 0, 0])
    assert meta_key(1) == bytes([8, 1, 0, 1])
    assert chunk_key(2, 0x01020304) == bytes([8, 1, 1, 2, 1, 2, 3, 4])
    assert chunk_range(0) == (bytes([8, 1, 1, 0, 0, 0, 0, 0]), bytes([8, 1, 1, 1]))
    assert encode_meta(12288) == struct.pack("<HQ", 1, 12288) and len(encode_meta(0)) == 10
    assert decode_meta(encode_meta(12288)) == 12288
    # Our redo subspaces never collide with RivetKit's meta (0) and chunk (1) subspaces.
    assert staged_key(0, 1)[:3] == bytes([8, 1, 2]) and COMMIT_RECORD_KEY == bytes([8, 1, 3])


def test_database_is_stored_as_described(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("fmt")
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (randomblob(10000))")
    size = con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    pairs = kv.scan(bytes([8]), bytes([9]))
    keys = [k for k, _ in pairs]
    assert keys[0] == meta_key(FILE_MAIN)
    assert decode_meta(pairs[0][1]) == size
    chunk_keys = [k for k in keys if k[:3] == bytes([8, 1, 1])]
    assert chunk_keys == [chunk_key(FILE_MAIN, i) for i in range(size // CHUNK_SIZE)]
    assert all(len(v) == CHUNK_SIZE for k, v in pairs if k in chunk_keys)
    # Chunk 0 is the SQLite header; nothing else (no journal, no redo leftovers) is stored.
    assert dict(pairs)[chunk_key(FILE_MAIN, 0)][:16] == b"SQLite format 3\x00"
    assert len(keys) == 1 + len(chunk_keys)
