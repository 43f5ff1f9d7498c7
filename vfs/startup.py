"""What a startup preload must ask for so that opening a database costs no round trip."""

from __future__ import annotations

from vfs.hint import DEFAULT_INTERIOR_MAX_BYTES, HINT_KEY
from vfs.keys import COMMIT_RECORD_KEY, FILE_JOURNAL, FILE_MAIN, HISTORY_BASES_KEY, HISTORY_HEAD_KEY, chunk_key, \
    chunk_range, meta_key
from vfs.protocol import HintSpec, KeyRange, PrefixBudget

__all__ = ["DEFAULT_SQLITE_PRELOAD_BYTES", "DEFAULT_INTERIOR_MAX_BYTES", "sqlite_preload_keys",
           "sqlite_preload_ranges"]

DEFAULT_SQLITE_PRELOAD_BYTES = 768 * 1024
"""RivetKit's default budget for SQLite chunks in the preload (192 chunks)."""


def sqlite_preload_keys() -> tuple[bytes, ...]:
    """Exact keys the VFS reads when it opens: the main meta, the commit record and the
    rollback journal's meta and first chunk (whether another SQLite VFS, RivetKit's,
    left a hot journal: :mod:`vfs.journal`), and the history's head and bases records
    (:mod:`vfs.history`: the next commit's sequence number)."""
    return (meta_key(FILE_MAIN), COMMIT_RECORD_KEY, meta_key(FILE_JOURNAL), chunk_key(FILE_JOURNAL, 0),
            HISTORY_HEAD_KEY, HISTORY_BASES_KEY)


def sqlite_preload_ranges(max_bytes: int = DEFAULT_SQLITE_PRELOAD_BYTES, *, use_hint: bool = True,
                          interior_max_bytes: int = DEFAULT_INTERIOR_MAX_BYTES) -> tuple[PrefixBudget, ...]:
    """The main database's chunks within ``max_bytes`` (0 disables): first those the
    hot-set hint record lists (:mod:`vfs.hint`), then the lowest ones, in the same call.

    :param use_hint: ``False`` preloads only the lowest chunks (the behaviour before
        hints; benchmarks compare the two).
    :param interior_max_bytes: the cap on the hinted B-tree interior pages (bytes),
        charged outside ``max_bytes`` and the request's total (0: they share
        ``max_bytes`` with the other chunks). A database's interior is ~0.5% of it.
    """
    if interior_max_bytes < 0:
        raise ValueError(f"interior_max_bytes must be >= 0, not {interior_max_bytes!r}")
    start, end = chunk_range(FILE_MAIN)
    hint = HintSpec(HINT_KEY, chunk_key(FILE_MAIN, 0)[:-4], interior_max_bytes) if use_hint else None
    return (PrefixBudget(KeyRange(start, end), max_bytes, partial=True, hint=hint),)
