"""The SQLite settings the commit protocol needs, and the guard that keeps them.

The VFS makes a commit atomic by buffering a transaction's page writes and sending
them as one KV batch at the commit's sync. That only holds with:

- ``journal_mode=MEMORY``: SQLite keeps its rollback journal in memory (ROLLBACK and
  statement rollback still work) and writes no journal file; WAL, DELETE, TRUNCATE,
  PERSIST would write a second file that is pointless on top of an atomic batch, and
  OFF would lose ROLLBACK;
- ``synchronous`` at least NORMAL: the sync is the commit point, so OFF would never
  commit;
- ``locking_mode=EXCLUSIVE`` for a ``locking="exclusive"`` open: one pager per database
  (enforced in-process), and SQLite's page cache stays valid across transactions, so
  warm reads cost 0 round trips. Connections that share a database (``"in-process"``,
  ``"cross-process"``) use ``locking_mode=NORMAL``: the VFS implements SQLite's locks.

SQLite sends every ``PRAGMA`` to the VFS as ``SQLITE_FCNTL_PRAGMA`` before acting on it.
:func:`answer` handles ``journal_mode``: the mode cannot change, and SQLite's own rule for
such a database (an in-memory one) is "no error, the row returned is the mode it kept",
so ``PRAGMA journal_mode=WAL`` (or any other value) returns the one row ``memory`` and
changes nothing (the VFS answers the pragma itself; SQLite then names the result column
after the value, ``memory``). :func:`refusal` answers the settings whose change SQLite
itself could report as an error, so ``PRAGMA synchronous=OFF`` or ``PRAGMA
locking_mode=NORMAL`` fails with a clear ``apsw.SQLError`` instead of silently breaking
atomicity. Other pragmas (page_size,
cache_size, user_version, ...) pass through; page sizes 512-65536 all work because
chunks stay 4096 bytes and reads/writes may span or share chunks.
"""

from __future__ import annotations

__all__ = ["OPEN_PRAGMAS", "SHARED_OPEN_PRAGMAS", "JOURNAL_MODE", "answer", "open_pragmas", "refusal"]

OPEN_PRAGMAS: tuple[str, ...] = (
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA journal_mode=MEMORY",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA temp_store=MEMORY",
)
"""Run on every ``locking="exclusive"`` connection right after it opens."""

SHARED_OPEN_PRAGMAS: tuple[str, ...] = ("PRAGMA locking_mode=NORMAL",) + OPEN_PRAGMAS[1:]
"""Run on every connection that shares its database (``locking`` ``"in-process"`` or
``"cross-process"``): SQLite takes and drops its file locks per transaction."""


def open_pragmas(shared: bool) -> tuple[str, ...]:
    """The PRAGMAs a new connection runs (:data:`SHARED_OPEN_PRAGMAS` when ``shared``)."""
    return SHARED_OPEN_PRAGMAS if shared else OPEN_PRAGMAS

JOURNAL_MODE = "memory"
"""The journal mode of every KV-backed database (the one ``PRAGMA journal_mode`` reports)."""

_ALLOWED: dict[str, frozenset[str]] = {
    "synchronous": frozenset({"normal", "full", "extra", "1", "2", "3"}),
    "locking_mode": frozenset({"exclusive"}),
}

_WHY: dict[str, str] = {
    "synchronous": "the sync is the commit point, so synchronous must be NORMAL, FULL or EXTRA",
    "locking_mode": "one pager per database is required, so locking_mode must stay EXCLUSIVE",
}


def answer(name: str, value: str | None) -> str | None:
    """The result row the VFS returns itself for ``PRAGMA name=value``, or ``None`` to let
    SQLite run the pragma.

    ``journal_mode`` set to anything but MEMORY answers ``memory`` (the mode kept, no
    error, nothing changed); reading it, or setting MEMORY, runs normally.
    """
    if name.lower() != "journal_mode" or value is None:
        return None
    if value.strip().strip("'\"").lower() == JOURNAL_MODE:
        return None
    return JOURNAL_MODE


def refusal(name: str, value: str | None, shared: bool = False) -> str | None:
    """The error message for ``PRAGMA name=value``, or ``None`` if it is allowed.

    Reading a setting (``value is None``) is always allowed. On a database shared by
    several connections (``shared``), ``locking_mode`` may be NORMAL or EXCLUSIVE: the
    VFS implements SQLite's file locks, so EXCLUSIVE just keeps them, as on a file.
    """
    key = name.lower()
    if value is None or key not in _ALLOWED or (shared and key == "locking_mode"):
        return None
    if value.strip().strip("'\"").lower() in _ALLOWED[key]:
        return None
    return f"actor-db: PRAGMA {key}={value} is not supported on a KV-backed database: {_WHY[key]}"
