"""The SQLite settings the commit protocol needs, and the guard that keeps them.

The VFS makes a commit atomic by buffering a transaction's page writes and sending
them as one KV batch at the commit's sync. That only holds with:

- ``journal_mode=MEMORY``: SQLite keeps its rollback journal in memory (ROLLBACK and
  statement rollback still work) and writes no journal file; WAL, DELETE, TRUNCATE,
  PERSIST would write a second file that is pointless on top of an atomic batch, and
  OFF would lose ROLLBACK;
- ``synchronous`` at least NORMAL: the sync is the commit point, so OFF would never
  commit;
- ``locking_mode=EXCLUSIVE``: one pager per database (enforced in-process), and
  SQLite's page cache stays valid across transactions, so warm reads cost 0 round trips.

SQLite sends every ``PRAGMA`` to the VFS as ``SQLITE_FCNTL_PRAGMA`` before acting on it;
:func:`refusal` answers it, so a user's ``PRAGMA journal_mode=WAL`` fails with a clear
``apsw.SQLError`` instead of silently breaking atomicity. Other pragmas (page_size,
cache_size, user_version, ...) pass through; page sizes 512-65536 all work because
chunks stay 4096 bytes and reads/writes may span or share chunks.
"""

from __future__ import annotations

__all__ = ["OPEN_PRAGMAS", "refusal"]

OPEN_PRAGMAS: tuple[str, ...] = (
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA journal_mode=MEMORY",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA temp_store=MEMORY",
)
"""Run on every connection right after it opens."""

_ALLOWED: dict[str, frozenset[str]] = {
    "journal_mode": frozenset({"memory"}),
    "synchronous": frozenset({"normal", "full", "extra", "1", "2", "3"}),
    "locking_mode": frozenset({"exclusive"}),
}

_WHY: dict[str, str] = {
    "journal_mode": "commits are made atomic by the VFS's one-batch commit, which needs journal_mode=MEMORY",
    "synchronous": "the sync is the commit point, so synchronous must be NORMAL, FULL or EXTRA",
    "locking_mode": "one pager per database is required, so locking_mode must stay EXCLUSIVE",
}


def refusal(name: str, value: str | None) -> str | None:
    """The error message for ``PRAGMA name=value``, or ``None`` if it is allowed.

    Reading a setting (``value is None``) is always allowed.
    """
    key = name.lower()
    if value is None or key not in _ALLOWED:
        return None
    if value.strip().strip("'\"").lower() in _ALLOWED[key]:
        return None
    return f"actor-db: PRAGMA {key}={value} is not supported on a KV-backed database: {_WHY[key]}"
