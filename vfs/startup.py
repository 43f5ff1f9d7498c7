"""What a startup preload must ask for so that opening a database costs no round trip."""

from __future__ import annotations

from vfs.keys import COMMIT_RECORD_KEY, FILE_MAIN, chunk_range, meta_key
from vfs.protocol import KeyRange, PrefixBudget

__all__ = ["DEFAULT_SQLITE_PRELOAD_BYTES", "sqlite_preload_keys", "sqlite_preload_ranges"]

DEFAULT_SQLITE_PRELOAD_BYTES = 768 * 1024
"""RivetKit's default budget for SQLite chunks in the preload (192 chunks)."""


def sqlite_preload_keys() -> tuple[bytes, ...]:
    """Exact keys the VFS reads when it opens: the main meta and the commit record."""
    return (meta_key(FILE_MAIN), COMMIT_RECORD_KEY)


def sqlite_preload_ranges(max_bytes: int = DEFAULT_SQLITE_PRELOAD_BYTES) -> tuple[PrefixBudget, ...]:
    """The main database's chunks, lowest first, within ``max_bytes`` (0 disables)."""
    start, end = chunk_range(FILE_MAIN)
    return (PrefixBudget(KeyRange(start, end), max_bytes, partial=True),)
