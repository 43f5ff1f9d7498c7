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
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

from actor_db.errors import ActorDBError

log = logging.getLogger(__name__)

__all__ = ["CompactError", "CompactResult", "compact_lmdb"]


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
