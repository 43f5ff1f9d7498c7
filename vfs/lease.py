"""The writer lease: one writing process per actor database across processes and hosts.

Connections opened with ``locking="cross-process"`` (the drop-in ``sqlite3`` default)
coordinate through two KV keys next to the database's own keys:

- :data:`LEASE_KEY` = ``[8, 1, 5]``, the lease itself, present while a process writes.
  Its value is a random 16-byte holder id (one per write transaction), the expiry as a
  u64 big-endian count of milliseconds since the Unix epoch, then a short UTF-8 label
  naming the holder (``host:pid``) for error messages.
- :data:`LAST_COMMIT_KEY` = ``[8, 1, 6]``, the holder id of the transaction whose commit
  released the lease last. It makes the outcome of a commit whose reply was lost
  certain: the commit landed if and only if this key holds its holder id or a later
  holder has taken the lease since.

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
   handler retries until ``timeout``, then the user gets ``database is locked`` naming
   the holder. If the database changed since the transaction began, also
   ``SQLITE_BUSY`` (retried as a fresh transaction, it re-reads). An expired lease (its
   holder died or stopped) is taken over with one more conditional write.
4. **While the lease is held**, *every* KV write of the transaction (spills, staging,
   the commit record, every apply batch of a large commit, a rollback's writes) expects
   the lease to still hold this transaction's value, in the same atomic step. A
   :class:`LeaseKeeper` thread renews the lease every third of its time to live while
   the process is alive, so only a process that stops (``SIGSTOP``, a frozen VM, a
   partition longer than the TTL) can lose it. A transaction that lost it can write
   nothing more: its commit fails with an I/O error, nothing of it is applied, and the
   connection drops its caches and re-reads.
5. **Release**: the batch that completes the commit (the commit batch, or the last
   apply batch of a large commit) deletes the lease and writes :data:`LAST_COMMIT_KEY`.
   SQLite's commit phase two (deleting chunks past a shrunk file's end) then expects no
   lease and its own holder id there, so it can never land on a newer state. A rollback
   deletes the lease (1 RT).

So a read transaction costs 1 RT plus its cold chunks, a write transaction 3 RT (begin,
lease, commit). A commit can never land unless its process held the lease from before
its first write to the commit point, and its reads were of the state it commits over:
no acknowledged commit is lost, and no write of a process that lost its lease lands.
Expiry compares wall clocks: hosts must keep their clocks within a small fraction of
the TTL (NTP). An expiry further than :data:`MAX_LEASE_TTL_S` ahead cannot have been
written by a process of this format and counts as expired (a clock far ahead, or a
damaged value), so one bad record never locks a database forever.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import struct
import threading
import time
from typing import Callable, Iterator

from vfs.keys import SQLITE_PREFIX

log = logging.getLogger(__name__)

__all__ = ["LEASE_KEY", "LAST_COMMIT_KEY", "DEFAULT_LEASE_TTL_S", "MAX_LEASE_TTL_S", "new_lease", "renewed",
           "holder_id", "lease_expired", "lease_holder", "describe", "LeaseKeeper", "keeper", "pause_renewals"]

LEASE_KEY = SQLITE_PREFIX + bytes([5])
"""``[8, 1, 5]``: the writer lease of the main database (absent when nobody writes)."""
LAST_COMMIT_KEY = SQLITE_PREFIX + bytes([6])
"""``[8, 1, 6]``: holder id of the transaction whose commit released the lease last."""
DEFAULT_LEASE_TTL_S = 10.0
"""Seconds a writer lease lives if its holder stops renewing it (dies or is paused)."""
MAX_LEASE_TTL_S = 600.0
"""Longest time to live a lease may have; an expiry further ahead counts as expired."""

_EXPIRY = struct.Struct(">Q")
_HOLDER_BYTES = 16
_FIXED = _HOLDER_BYTES + _EXPIRY.size
_MAX_LABEL_BYTES = 64


def _label() -> bytes:
    return f"{socket.gethostname()}:{os.getpid()}".encode("utf-8", "replace")[:_MAX_LABEL_BYTES]


def new_lease(ttl_s: float = DEFAULT_LEASE_TTL_S, now_s: float | None = None) -> bytes:
    """A fresh lease value: a random holder id, the expiry ``ttl_s`` seconds from now and
    this process's ``host:pid`` label."""
    now = time.time() if now_s is None else now_s
    return os.urandom(_HOLDER_BYTES) + _EXPIRY.pack(int((now + ttl_s) * 1000)) + _label()


def renewed(value: bytes, ttl_s: float, now_s: float | None = None) -> bytes:
    """``value`` (a lease this process holds) with its expiry moved to ``ttl_s`` from now."""
    now = time.time() if now_s is None else now_s
    return value[:_HOLDER_BYTES] + _EXPIRY.pack(int((now + ttl_s) * 1000)) + value[_FIXED:]


def holder_id(value: bytes) -> bytes:
    """The 16-byte holder id of a lease value (what :data:`LAST_COMMIT_KEY` records)."""
    return value[:_HOLDER_BYTES]


def _expiry_s(value: bytes) -> float | None:
    if len(value) < _FIXED or len(value) > _FIXED + _MAX_LABEL_BYTES:
        return None
    return float(_EXPIRY.unpack_from(value, _HOLDER_BYTES)[0]) / 1000.0


def lease_expired(value: bytes, now_s: float | None = None) -> bool:
    """Whether the lease ``value`` no longer protects a writer: past its expiry, or
    malformed, or expiring more than :data:`MAX_LEASE_TTL_S` from now (no holder of this
    format writes such an expiry)."""
    expiry = _expiry_s(value)
    if expiry is None:
        return True
    now = time.time() if now_s is None else now_s
    if expiry - now > MAX_LEASE_TTL_S + 1.0:
        log.warning("ignoring the writer lease %s: it expires %.0f s from now, past the %.0f s cap "
                    "(a clock far ahead, or a damaged record)", lease_holder(value), expiry - now, MAX_LEASE_TTL_S)
        return True
    return now > expiry


def lease_holder(value: bytes) -> str:
    """A short printable id of the lease's holder, for messages and logs."""
    label = value[_FIXED:_FIXED + _MAX_LABEL_BYTES].decode("utf-8", "replace")
    printable = "".join(ch if ch.isprintable() else "?" for ch in label)
    return value[:4].hex() + (f" held by {printable}" if printable else "")


def describe(value: bytes, now_s: float | None = None) -> str:
    """``"lease 1a2b3c4d held by host:pid, expires in 8.2 s"``, for errors."""
    expiry = _expiry_s(value)
    now = time.time() if now_s is None else now_s
    when = "malformed" if expiry is None else (f"expires in {expiry - now:.1f} s" if expiry >= now
                                              else f"expired {now - expiry:.1f} s ago")
    return f"lease {lease_holder(value)}, {when}"


# ------------------------------------------------------------------ renewals
class LeaseKeeper:
    """One daemon thread that runs lease renewals when they fall due.

    :meth:`schedule` is cheap (a heap push; the thread is woken only when the new entry
    is the earliest), so a write transaction that ends before its first renewal costs
    nothing more. Callbacks run on the keeper thread; one that raises is logged.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._entries: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._paused = 0

    def schedule(self, delay_s: float, callback: Callable[[], None]) -> int:
        """Run ``callback`` in ``delay_s`` seconds; returns a handle for :meth:`cancel`."""
        due = time.monotonic() + delay_s
        with self._cv:
            handle = next(self._ids)
            self._entries[handle] = callback
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (due, handle))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="actor-db-lease-keeper", daemon=True)
                self._thread.start()
            elif earliest is None or due < earliest:
                self._cv.notify()
        return handle

    def cancel(self, handle: int | None) -> None:
        """Forget a scheduled callback (no-op if it already ran)."""
        if handle is not None:
            with self._cv:
                self._entries.pop(handle, None)

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    while self._heap and self._heap[0][1] not in self._entries:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cv.wait(30.0)
                        continue
                    due, handle = self._heap[0]
                    wait = due - time.monotonic()
                    if wait <= 0 and not self._paused:
                        heapq.heappop(self._heap)
                        callback = self._entries.pop(handle)
                        break
                    self._cv.wait(0.05 if self._paused else max(wait, 0.001))
            try:
                callback()
            except Exception:  # a renewal failure must not stop the keeper
                log.exception("a writer lease renewal failed")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every renewal while inside (what a stopped process looks like to others)."""
        with self._cv:
            self._paused += 1
        try:
            yield
        finally:
            with self._cv:
                self._paused -= 1
                self._cv.notify()


keeper = LeaseKeeper()
"""The process's lease keeper."""


def pause_renewals() -> contextlib.AbstractContextManager[None]:
    """Hold every lease renewal of this process while inside (tests: a paused process)."""
    return keeper.paused()
