"""The writer lease: one writing process per actor database across processes and hosts.

Connections opened with ``locking="cross-process"`` (the drop-in ``sqlite3`` default)
coordinate through one KV key, :data:`LEASE_KEY` = ``[8, 1, 5]``, next to the database's
own keys. Its value is 24 bytes: a random 16-byte holder id (one per transaction), then
the expiry as a u64 big-endian count of milliseconds since the Unix epoch.

The protocol, in round trips (RT), for a transaction of a connection in this mode:

1. **Begin (SHARED lock)**: one read of the meta, page 1 and the commit record (1 RT).
   If they differ from what this process last saw, another process committed: every
   connection of this process drops the chunks it cached and re-reads the meta, and
   SQLite, reading page 1's new change counter, drops its page cache. No stale page is
   read. Free while another connection of this process holds the lease (no other
   process can commit then).
2. **Reads**: each live chunk fetch also reads those three keys in the same call; if
   they changed, a commit of another process landed during this read transaction, and
   the read fails with ``SQLITE_BUSY`` (``database is locked``) rather than mixing
   pages of two states. Reads from the cache cost nothing.
3. **First write (RESERVED lock)**: one conditional write (1 RT) puts the lease,
   expecting no lease and the meta, page 1 and record the transaction began with. If a
   live lease of another process is there, the lock is ``SQLITE_BUSY``: SQLite's busy
   handler retries until ``timeout``, then the user gets ``database is locked``. If the
   database changed since the transaction began, also ``SQLITE_BUSY`` (retried as a
   fresh transaction, it re-reads). An expired lease (its holder died) is taken over
   with one more conditional write.
4. **Commit**: the commit's one atomic batch expects the lease to still be this
   transaction's and deletes it (no extra RT). A rollback deletes it (1 RT).

So a read transaction costs 1 RT plus its cold chunks, a write transaction 3 RT (begin,
lease, commit). A commit can never land unless its process held the lease from before
its first write to the commit point, and its reads were of the state it commits over:
no acknowledged commit is lost. A transaction open longer than the lease's time to live
(:data:`DEFAULT_LEASE_TTL_S`) may lose the lease to another process; its commit then
fails with an I/O error and nothing of it is applied. Expiry compares wall clocks:
hosts must keep their clocks within a small fraction of the TTL (NTP).
"""

from __future__ import annotations

import os
import struct
import time

from vfs.keys import SQLITE_PREFIX

__all__ = ["LEASE_KEY", "DEFAULT_LEASE_TTL_S", "new_lease", "lease_expired", "lease_holder"]

LEASE_KEY = SQLITE_PREFIX + bytes([5])
"""``[8, 1, 5]``: the writer lease of the main database (absent when nobody writes)."""
DEFAULT_LEASE_TTL_S = 10.0
"""Seconds a writer lease lives if its holder never commits, rolls back nor returns."""

_EXPIRY = struct.Struct(">Q")
_HOLDER_BYTES = 16


def new_lease(ttl_s: float = DEFAULT_LEASE_TTL_S, now_s: float | None = None) -> bytes:
    """A fresh lease value: a random holder id and the expiry ``ttl_s`` seconds from now."""
    now = time.time() if now_s is None else now_s
    return os.urandom(_HOLDER_BYTES) + _EXPIRY.pack(int((now + ttl_s) * 1000))


def lease_expired(value: bytes, now_s: float | None = None) -> bool:
    """Whether the lease ``value`` has expired (a malformed value counts as expired:
    it cannot belong to a live holder of this format)."""
    if len(value) != _HOLDER_BYTES + _EXPIRY.size:
        return True
    (expiry_ms,) = _EXPIRY.unpack_from(value, _HOLDER_BYTES)
    now = time.time() if now_s is None else now_s
    return now * 1000 > expiry_ms


def lease_holder(value: bytes) -> str:
    """A short printable id of the lease's holder, for messages and logs."""
    return value[:4].hex()
