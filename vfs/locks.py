"""SQLite's file locks for a KV-backed database opened by several connections.

SQLite's pager asks its VFS for five lock levels (``os_unix.c`` semantics):
NONE (0) < SHARED (1) < RESERVED (2) < PENDING (3) < EXCLUSIVE (4). Any number of
connections may hold SHARED (readers); one may hold RESERVED (the writer, while it
builds its transaction; readers go on); PENDING stops new SHARED locks so the writer
is not starved; EXCLUSIVE (no other lock at all) is what a commit needs. A request
that conflicts fails at once with ``SQLITE_BUSY``; SQLite's busy handler
(``busy_timeout``) retries it, so a reader waits out a commit instead of failing.

:class:`DatabaseShare` is that lock table for the connections of ONE process on one
actor database (one per KV identity), plus what they must share to stay coherent:

- a **commit log**: every commit made through one of its files appends a
  :class:`CommitNote` (the chunks it wrote, the new size) and bumps
  :attr:`DatabaseShare.generation`. A file taking SHARED after such commits applies the
  notes it missed to its own preload and chunk cache (no round trip), so its next read
  of page 1 shows SQLite the new change counter and the pager drops its page cache.
  A note whose chunks are unknown (a failed commit, a large commit through the redo
  range, a change seen in the KV) makes the file drop everything it derived from the
  KV and re-read the meta;
- for ``locking="cross-process"``: the last KV state this process knows
  (:attr:`DatabaseShare.kv_state`: meta, page 1 and commit record) and the **writer
  lease** (see :mod:`vfs.lease`).

Invariants: :attr:`DatabaseShare.mu` is held only for bookkeeping, never across a KV
call or an SQLite call (:attr:`DatabaseShare.lease_mu` spans one KV write at most); a file is in :attr:`DatabaseShare.levels` only while it holds
SHARED or more; at most one file holds RESERVED or more.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import Any, Hashable, Literal

import apsw

from vfs.errors import sqlite_error

log = logging.getLogger(__name__)

__all__ = ["LOCK_NONE", "LOCK_SHARED", "LOCK_RESERVED", "LOCK_PENDING", "LOCK_EXCLUSIVE", "Locking",
           "LOCKING_MODES", "CommitNote", "KVState", "DatabaseShare", "claim", "release", "is_open",
           "note_busy", "last_busy_reason"]

LOCK_NONE, LOCK_SHARED, LOCK_RESERVED, LOCK_PENDING, LOCK_EXCLUSIVE = 0, 1, 2, 3, 4

Locking = Literal["exclusive", "in-process", "cross-process"]
LOCKING_MODES: tuple[str, ...] = ("exclusive", "in-process", "cross-process")
"""``exclusive``: one connection per actor database in this process, SQLite's
``locking_mode=EXCLUSIVE`` (the actor runtime: warm reads cost nothing). ``in-process``:
any number of connections in this process, SQLite's file locks through
:class:`DatabaseShare`; no other process may write. ``cross-process``: the same, and
other processes or hosts may open it too: each transaction validates against the KV and
writers take the KV writer lease (:mod:`vfs.lease`)."""

MAX_NOTES = 64
"""Commit notes kept per database; a file further behind re-reads everything."""
MAX_NOTE_BYTES = 16 * 1024 * 1024
"""Chunk bytes the notes may keep alive; older notes are dropped past it."""

KVState = tuple  # (meta, chunk 0, commit record, history head, history bases values), each bytes or None


@dataclass(frozen=True)
class CommitNote:
    """What one commit (or one observed change) did to the committed database.

    :ivar generation: :attr:`DatabaseShare.generation` after it.
    :ivar chunks: chunk index -> its new committed value (``CHUNK_SIZE`` bytes), or
        ``None`` when unknown: whoever applies the note drops every chunk it holds.
    :ivar size: the committed file size in bytes afterwards (``None``: unknown, re-read
        the meta).
    :ivar truncate_from: first chunk the commit deleted, if it shrank the file.
    """

    generation: int
    chunks: dict[int, bytes] | None
    size: int | None
    truncate_from: int | None = None

    @property
    def nbytes(self) -> int:
        return 0 if self.chunks is None else len(self.chunks) * 4096


def _busy(message: str) -> apsw.Error:
    return sqlite_error(apsw.SQLITE_BUSY, f"actor-db: {message}")


class DatabaseShare:
    """The lock table and commit log of one actor database in this process (see the
    module docstring). Files are identified by ``id(file)``."""

    def __init__(self, identity: Hashable, locking: str) -> None:
        self.identity = identity
        self.locking = locking
        self.history: Any = None
        """The database's :class:`vfs.history.History`, shared by this process's connections
        (its head moves with each of their commits)."""
        self.mu = threading.Lock()
        self.levels: dict[int, int] = {}
        self.files = 0
        """Open files (the share is dropped with the last)."""
        self.generation = 0
        self.notes: collections.deque[CommitNote] = collections.deque()
        self._note_bytes = 0
        self.kv_state: KVState | None = None
        """cross-process: (meta, chunk 0, commit record) as this process last saw or
        wrote them; ``None``: unknown (the next transaction reads them)."""
        self.lease_value: bytes | None = None
        """cross-process: the writer lease value this process wrote, while it holds it."""
        self.lease_holder: int | None = None
        """The file whose transaction holds the writer lease."""
        self.lease_mu = threading.Lock()
        """cross-process: held around every KV write made under the lease and around each
        renewal, so a write always expects the lease's current value (it may be held
        across that one KV call: nothing else waits for it but renewals)."""
        self.lease_renewal: int | None = None
        """The :data:`vfs.lease.keeper` handle of the next renewal, while the lease is held."""

    @property
    def cross_process(self) -> bool:
        return self.locking == "cross-process"

    # ---------------------------------------------------------------- locks
    def lock(self, fid: int, level: int) -> int:
        """Raise ``fid``'s lock to ``level`` and return the level it held before, or raise
        ``apsw.BusyError`` (SQLite's busy handler retries). EXCLUSIVE is reached through
        PENDING, which stays set when readers still hold SHARED, so that no new reader
        starts meanwhile."""
        with self.mu:
            held = self.levels.get(fid, LOCK_NONE)
            if level <= held:
                return held
            top = max((lv for f, lv in self.levels.items() if f != fid), default=LOCK_NONE)
            if level == LOCK_SHARED:
                if top >= LOCK_PENDING:
                    raise _busy("a commit is in progress on another connection")
                self.levels[fid] = LOCK_SHARED
                return held
            if top >= LOCK_RESERVED:
                raise _busy("another connection is writing this database")
            if level == LOCK_RESERVED:
                self.levels[fid] = LOCK_RESERVED
                return held
            self.levels[fid] = LOCK_PENDING
            if top >= LOCK_SHARED:
                raise _busy("other connections are reading this database")
            self.levels[fid] = LOCK_EXCLUSIVE
            return held

    def unlock(self, fid: int, level: int) -> None:
        """Lower ``fid``'s lock to ``level`` (SHARED or NONE)."""
        with self.mu:
            if level <= LOCK_NONE:
                self.levels.pop(fid, None)
            elif fid in self.levels:
                self.levels[fid] = min(self.levels[fid], level)

    def reserved(self) -> bool:
        """Whether any connection holds RESERVED or more (``xCheckReservedLock``)."""
        with self.mu:
            return any(lv >= LOCK_RESERVED for lv in self.levels.values())

    # ------------------------------------------------------------ commit log
    def join_point(self) -> tuple[int, bool]:
        """For a file about to read the KV to open: ``(the generation its state will
        reflect at least, whether it is the only open file)``."""
        with self.mu:
            return self.generation, self.files <= 1

    def notes_since(self, generation: int) -> tuple[int, list[CommitNote] | None]:
        """``(current generation, the notes after generation)``; ``None`` for the notes
        when some were dropped (too far behind: re-read everything)."""
        with self.mu:
            current = self.generation
            if generation == current:
                return current, []
            if not self.notes or self.notes[0].generation > generation + 1:
                return current, None
            return current, [n for n in self.notes if n.generation > generation]

    def record(self, chunks: dict[int, bytes] | None, size: int | None, truncate_from: int | None = None) -> int:
        """Append a note for a commit (or a change) and return the new generation."""
        with self.mu:
            self.generation += 1
            note = CommitNote(self.generation, chunks, size, truncate_from)
            self.notes.append(note)
            self._note_bytes += note.nbytes
            while len(self.notes) > MAX_NOTES or (self._note_bytes > MAX_NOTE_BYTES and len(self.notes) > 1):
                self._note_bytes -= self.notes.popleft().nbytes
            return self.generation

    def observe(self, state: KVState) -> bool:
        """cross-process: the KV holds ``state``; if that is not what this process last
        knew, record an unknown change (every file re-reads) and return ``True``."""
        with self.mu:
            if self.kv_state == state:
                return False
            known = self.kv_state
        self.record(None, None)
        with self.mu:
            self.kv_state = state
        log.debug("%r changed in the KV since this process last looked (%s)", self.identity,
                  "first look" if known is None else "another writer")
        return True


# ------------------------------------------------------------- the registry
_lock = threading.RLock()
"""Guards the registry. Re-entrant: the garbage collector may close a dropped
connection (and so call :func:`release`) on the thread that is inside :func:`claim`;
such a release is deferred until the claim is done (:data:`_claiming`)."""
_claiming = threading.local()
_shares: dict[Hashable, DatabaseShare] = {}
_exclusive: dict[Hashable, str] = {}


def claim(identity: Hashable, filename: str, locking: str = "exclusive") -> DatabaseShare | None:
    """Register an open of the actor database ``identity`` by ``filename``.

    ``exclusive`` opens are alone (``None`` is returned); the others join the
    database's :class:`DatabaseShare` (same ``locking`` for all of them).

    :raises apsw.BusyError: the database is already open in this process in a way that
        excludes this open.
    :raises ValueError: unknown ``locking``.
    """
    if locking not in LOCKING_MODES:
        raise ValueError(f"locking must be one of {', '.join(LOCKING_MODES)}, not {locking!r}")
    with _lock:
        _claiming.pending = pending = []
        try:
            return _claim_locked(identity, filename, locking)
        finally:
            _claiming.pending = None
            for args in pending:  # connections the garbage collector closed meanwhile
                _release_locked(*args)


def _claim_locked(identity: Hashable, filename: str, locking: str) -> DatabaseShare | None:
    holder = _exclusive.get(identity)
    share = _shares.get(identity)
    if holder is not None or (share is not None and locking == "exclusive"):
        raise sqlite_error(
            apsw.SQLITE_BUSY,
            f"actor-db: the database of {identity!r} is already open in this process "
            f"({holder or f'{share.files} connection(s), locking={share.locking}'}); "  # type: ignore[union-attr]
            "close that connection first (locking='exclusive' allows one connection per actor database)",
        )
    if locking == "exclusive":
        _exclusive[identity] = filename
        return None
    if share is None:
        share = _shares[identity] = DatabaseShare(identity, locking)
    elif share.locking != locking:
        raise sqlite_error(
            apsw.SQLITE_BUSY,
            f"actor-db: the database of {identity!r} is open in this process with locking={share.locking!r}; "
            f"a connection with locking={locking!r} cannot join it",
        )
    share.files += 1
    return share


def release(identity: Hashable, filename: str, share: DatabaseShare | None = None) -> None:
    """Undo :func:`claim` (for an exclusive open, only if ``filename`` still holds it)."""
    with _lock:
        pending = getattr(_claiming, "pending", None)
        if pending is not None:  # re-entered from inside claim() (garbage collection)
            pending.append((identity, filename, share))
            return
        _release_locked(identity, filename, share)


def _release_locked(identity: Hashable, filename: str, share: DatabaseShare | None) -> None:
    if share is None:
        if _exclusive.get(identity) == filename:
            del _exclusive[identity]
        return
    share.files -= 1
    if share.files <= 0 and _shares.get(identity) is share:
        del _shares[identity]


def is_open(identity: Hashable) -> bool:
    """Whether a connection of this process has the actor database ``identity`` open."""
    with _lock:
        return identity in _exclusive or identity in _shares


# ------------------------------------------------------- why a lock was busy
_busy_reasons = threading.local()


def note_busy(reason: str | None) -> None:
    """Record on this thread why the last lock request was refused (``None``: it was not).

    SQLite's busy handler retries a refused lock and finally reports only ``database is
    locked``; the drop-in adds this reason (e.g. which process holds the writer lease)."""
    _busy_reasons.reason = reason


def last_busy_reason() -> str | None:
    """The reason :func:`note_busy` recorded last on this thread, if any."""
    return getattr(_busy_reasons, "reason", None)
