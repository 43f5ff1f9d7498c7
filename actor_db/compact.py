"""Compact an LMDB store: copy it without its free pages, then swap the copy in.

LMDB never shrinks its data file: pages freed by deleted or replaced databases are
reused but not returned to the file system. :func:`compact_lmdb` writes a compacted
copy with LMDB's own ``env.copy(path, compact=True)`` and replaces ``data.mdb`` with it.

Invariants:

- Nobody else uses the store meanwhile. Every process that has an LMDB environment
  open holds a shared ``fcntl`` lock on byte 0 of its ``lock.mdb``; the compaction
  takes that lock exclusively (non-blocking) before it starts, so it refuses a store
  another process has open, and a process that opens the store meanwhile waits in
  LMDB's open until the swap is done. This process must not have it open either.
- Crash-safe swap: the copy is written in a new directory inside the store directory
  (same file system), fsynced, and renamed over ``data.mdb`` (atomic); the directory
  is fsynced. A crash before the rename leaves the old store (and a ``.compact-*``
  directory, removed by the next compaction); after it, the compacted store.
- After the swap the store is opened once in this process with LMDB's locking, which
  rebuilds the lock file's state from the new data file before anyone else may open it.
- A store written before the drivers' value encoding (:mod:`actor_db.kv.codec`; marker
  ``LEGACY`` or none, with actor data) is rewritten instead of copied: every actor value
  encoded (LZ4-compressed when that pays) into the new file, marked ``ENCODED``, in
  write transactions of at most :data:`REWRITE_TXN_BYTES`; the swap is the same.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from actor_db.errors import ActorDBError

log = logging.getLogger(__name__)

__all__ = ["CompactError", "CompactResult", "compact_lmdb", "REWRITE_TXN_BYTES"]

REWRITE_TXN_BYTES = 64 * 1024 * 1024
"""Value bytes per write transaction when a legacy store is rewritten encoded."""


class CompactError(ActorDBError):
    """The store cannot be compacted now (missing, in use); nothing was changed."""


@dataclass(frozen=True)
class CompactResult:
    """Sizes of ``data.mdb`` before and after, bytes."""

    path: str
    bytes_before: int
    bytes_after: int


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_legacy(env: Any) -> bool:
    """Whether the store's actor values are raw (written before value encoding)."""
    from actor_db.kv.codec import LEGACY
    from actor_db.kv.namespace import ACTORS_END, ACTORS_START, VALUE_ENCODING_KEY

    with env.begin() as txn:
        marker = txn.get(VALUE_ENCODING_KEY)
        if marker is not None:
            return bytes(marker) == LEGACY
        cursor = txn.cursor()
        return bool(cursor.set_range(ACTORS_START) and cursor.key() < ACTORS_END)


def _rewrite_encoded(env: Any, work: str) -> None:
    """Copy ``env`` into a new store in directory ``work``, actor values encoded."""
    import lmdb

    from actor_db.kv.codec import ENCODED, AllocationUnit, ValueCodec
    from actor_db.kv.namespace import ACTORS_END, ACTORS_START, VALUE_ENCODING_KEY

    psize = env.stat()["psize"]
    codec = ValueCodec(unit=AllocationUnit(psize, 16))
    out = lmdb.open(work, subdir=True, map_size=max(env.info()["map_size"], 1 << 30), max_dbs=0, sync=False,
                    metasync=False, lock=False)
    try:
        with env.begin() as source:
            pending: list[tuple[bytes, bytes]] = []
            size = 0

            def flush() -> None:
                with out.begin(write=True) as txn:
                    for key, value in pending:
                        txn.put(key, value, append=True)  # keys arrive in order
                pending.clear()

            for key, value in source.cursor():
                if key == VALUE_ENCODING_KEY:
                    value = ENCODED
                elif ACTORS_START <= key < ACTORS_END:
                    value = codec.encode(value)
                pending.append((key, value))
                size += len(value)
                if size >= REWRITE_TXN_BYTES:
                    flush()
                    size = 0
            flush()
            if source.get(VALUE_ENCODING_KEY) is None:
                with out.begin(write=True) as txn:
                    txn.put(VALUE_ENCODING_KEY, ENCODED)
        out.sync(True)
    finally:
        out.close()
    log.info("rewrote the legacy store's values in the value encoding")


def compact_lmdb(path: str | os.PathLike[str]) -> CompactResult:
    """Compact the LMDB store in directory ``path`` in place.

    :raises CompactError: no store there, or another process (or this one) has it open.
    :raises lmdb.Error: the copy failed; the store is unchanged.
    """
    import lmdb

    from actor_db.kv import lmdb as lmdb_driver

    root = os.path.realpath(os.fspath(path))
    data = os.path.join(root, "data.mdb")
    lock = os.path.join(root, "lock.mdb")
    if not os.path.isfile(data):
        raise CompactError(f"no LMDB store at {root} (no data.mdb)")
    if root in getattr(lmdb_driver, "_envs", {}):
        raise CompactError(f"the LMDB store at {root} is open in this process; close it first")
    for stale in os.listdir(root):
        if stale.startswith(".compact-"):
            shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
    before = os.path.getsize(data)
    lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:  # the byte LMDB locks (shared) in every process that has the store open
            fcntl.lockf(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise CompactError(f"the LMDB store at {root} is in use by another process; "
                                   "stop it and run compact again") from None
            raise
        work = tempfile.mkdtemp(prefix=".compact-", dir=root)
        try:
            env = lmdb.open(root, subdir=True, readonly=True, lock=False, max_dbs=0)
            try:
                if _is_legacy(env):
                    _rewrite_encoded(env, work)
                else:
                    env.copy(work, compact=True)
            finally:
                env.close()
            copy = os.path.join(work, "data.mdb")
            _fsync_path(copy)
            os.replace(copy, data)
            _fsync_path(root, directory=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # This process still holds the exclusive lock, so LMDB opens as the first user
        # and resets the lock file from the new data file; closing releases the lock.
        lmdb.open(root, subdir=True, max_dbs=0, lock=True).close()
    finally:
        os.close(lock_fd)
    after = os.path.getsize(data)
    log.info("compacted %s: %d -> %d bytes", root, before, after)
    return CompactResult(root, before, after)
