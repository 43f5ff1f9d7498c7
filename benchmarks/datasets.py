"""Benchmark databases: built once as local SQLite files, then copied into KV stores.

A dataset is one table ``items(id INTEGER PRIMARY KEY, v BLOB)`` whose rows carry
:data:`ROW_VALUE_BYTES` random bytes (about four rows per 4096-byte page), grown until
the file reaches the requested size. Building goes through apsw on a local file (fast,
no VFS in the way) and the file is kept under the cache directory, keyed by size and
:data:`FORMAT`, so a second run reuses it. Loading into a KV writes the file's bytes
in :mod:`vfs.keys`'s chunk layout directly (the same bytes the VFS would have written),
straight to the unwrapped store: building a fixture costs no injected latency and is
not counted.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import apsw

from vfs import hint as vfs_hint
from vfs.keys import CHUNK_SIZE, FILE_MAIN, chunk_key, encode_meta, meta_key
from vfs.protocol import WriteBatch

from actor_db.kv.base import KVStore

log = logging.getLogger(__name__)

__all__ = ["ROW_VALUE_BYTES", "FORMAT", "cache_dir", "dataset", "load_into", "row_count", "human_size"]

ROW_VALUE_BYTES = 1000
"""Bytes of each row's random ``v`` value."""

FORMAT = 1
"""Bumped when the table layout changes (invalidates cached files)."""

_LOAD_BATCH_CHUNKS = 4096


def human_size(nbytes: int) -> str:
    """``65536`` → ``"64 KiB"``, ``4194304`` → ``"4 MiB"``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def cache_dir() -> Path:
    """``$ACTOR_DB_BENCH_CACHE`` or ``<tmp>/actor-db-bench``, created if missing."""
    path = Path(os.environ.get("ACTOR_DB_BENCH_CACHE") or Path(tempfile.gettempdir()) / "actor-db-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def row_count(size_bytes: int) -> int:
    """Rows inserted for a database of about ``size_bytes`` bytes (four per page)."""
    return max(8, size_bytes * 4 // CHUNK_SIZE)


def dataset(size_bytes: int) -> Path:
    """The local SQLite file of about ``size_bytes`` bytes (built on first use).

    Rows have ids ``1..row_count(size_bytes)``; the file uses 4096-byte pages and a
    rollback journal mode, so :mod:`vfs` and the naive baseline can open its bytes.
    """
    path = cache_dir() / f"items-v{FORMAT}-{size_bytes}.db"
    if path.exists():
        return path
    started = time.perf_counter()
    partial = path.with_suffix(".building")
    partial.unlink(missing_ok=True)
    con = apsw.Connection(str(partial))
    try:
        con.execute("PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        con.execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "INSERT INTO items (id, v) SELECT i, randomblob(?) FROM c",
            (row_count(size_bytes), ROW_VALUE_BYTES),
        )
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()
    partial.rename(path)
    log.info("built %s (%d bytes) in %.1f s", path, path.stat().st_size, time.perf_counter() - started)
    return path


def load_into(store: KVStore, actor_id: str, path: Path, *, hint: bool = False) -> int:
    """Copy the SQLite file at ``path`` into ``actor_id``'s namespace of ``store``.

    Writes chunk batches and then the meta through ``store.actor(actor_id)``; pass the
    unwrapped store so no latency is injected.

    :param hint: also write the hot-set hint record an import through SQLite leaves
        (``actor-db import`` writes every page through the VFS, which learns every
        B-tree interior page from its type byte): all interior pages, then page 1. A
        raw copy alone leaves no hint (the interior is then learnt as it is read).
    :returns: the file size in bytes.
    """
    kv = store.actor(actor_id)
    per_batch = _LOAD_BATCH_CHUNKS
    limits = kv.limits
    if limits.max_batch_keys is not None:
        per_batch = min(per_batch, limits.max_batch_keys - 1)
    if limits.max_batch_bytes is not None:
        per_batch = min(per_batch, limits.max_batch_bytes // (CHUNK_SIZE + 64) - 1)
    size = 0
    interior: list[int] = []
    with open(path, "rb") as f:
        index = 0
        batch = WriteBatch()
        while True:
            chunk = f.read(CHUNK_SIZE)
            if not chunk:
                break
            assert len(chunk) == CHUNK_SIZE, "SQLite files are whole pages"
            batch.put(chunk_key(FILE_MAIN, index), chunk)
            if hint and vfs_hint.is_interior_page(index, chunk):
                interior.append(index)
            index += 1
            size += len(chunk)
            if len(batch.puts) >= per_batch:
                kv.write(batch)
                batch = WriteBatch()
        batch.put(meta_key(FILE_MAIN), encode_meta(size))
        if hint:
            batch.put(vfs_hint.HINT_KEY, vfs_hint.encode(interior + [0] * (0 not in interior), interior=len(interior)))
        kv.write(batch)
    return size
