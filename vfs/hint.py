"""The hot-set hint: which chunks an actor's database needs at wake, kept in the KV.

While a database is open, the VFS records which chunks SQLite reads (:class:`HotSet`).
A small *hint record* lists the hottest ones, B-tree interior pages first, then by how
often they were read, bounded by the SQLite preload budget. It lives at
:data:`HINT_KEY` (``[8, 1, 4]``, beside the redo keys and outside RivetKit's meta and
chunk keys) and is written only inside a commit batch that happens anyway, or when the
owner closes the database (sleep) and the set changed materially: never a round trip on
the query path.

The next startup preload asks for "the chunks listed in the hint record" inside its
single KV call (:class:`~vfs.protocol.PrefixBudget` ``hint``): hinted chunks first, then
the lowest chunks as before, within the same budget. A missing, stale, truncated or
corrupt hint costs at most round trips, never correctness: every value still comes from
the same KV snapshot, and a hinted chunk that does not exist is simply absent.

Record format (big-endian): ``u8 version (=1)``, ``u32 count``, then ``count`` x
``u32 chunk index``. Anything else decodes as no hint.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

from vfs.keys import SQLITE_PREFIX

__all__ = ["HINT_KEY", "HINT_VERSION", "MAX_HINT_CHUNKS", "HOT_SET_CAPACITY", "encode", "decode", "HotSet",
           "rank", "changed_materially", "is_interior_page"]

HINT_KEY = SQLITE_PREFIX + bytes([4])
"""Key of the hint record, relative to the actor: ``[8, 1, 4]``."""
HINT_VERSION = 1
MAX_HINT_CHUNKS = 65536
"""Most indices a hint may list (a longer record is corrupt and ignored)."""
HOT_SET_CAPACITY = 256
"""Distinct chunks a :class:`HotSet` tracks (the native VFS uses the same number)."""
_HEAD = struct.Struct(">BI")
_INTERIOR_PAGE_TYPES = (2, 5)
"""B-tree page header flags: interior index (2) and interior table (5) pages."""


def encode(indices: Sequence[int]) -> bytes:
    """The record listing ``indices`` (in priority order)."""
    return _HEAD.pack(HINT_VERSION, len(indices)) + struct.pack(f">{len(indices)}I", *indices)


def decode(value: bytes | None) -> list[int] | None:
    """The indices a record lists, or ``None`` when it is missing or malformed."""
    if value is None or len(value) < _HEAD.size:
        return None
    version, count = _HEAD.unpack_from(value)
    if version != HINT_VERSION or count > MAX_HINT_CHUNKS or len(value) != _HEAD.size + 4 * count:
        return None
    return list(struct.unpack_from(f">{count}I", value, _HEAD.size))


def is_interior_page(chunk_index: int, data: bytes | bytearray | memoryview, offset: int = 0) -> bool:
    """Whether the page at the start of chunk ``chunk_index`` is a B-tree interior page,
    given ``data`` holding the chunk's bytes from ``offset`` (page 1's header byte sits
    after the 100-byte database header)."""
    at = (100 if chunk_index == 0 else 0) - offset
    return 0 <= at < len(data) and data[at] in _INTERIOR_PAGE_TYPES


class HotSet:
    """Chunks SQLite read since the database was opened: up to
    :data:`HOT_SET_CAPACITY` distinct ones with a read count and an interior-page flag.

    When full, a newly read interior page replaces the least read leaf (ties: the
    highest index); a new leaf is not tracked. Same rule as the native VFS (C), so both
    VFSes write the same hints.
    """

    def __init__(self, capacity: int = HOT_SET_CAPACITY) -> None:
        self.capacity = capacity
        self.entries: dict[int, list[int]] = {}
        """chunk index -> [reads, interior (0/1)]"""
        self.inserts = 0
        """Chunks newly tracked since open (a cheap "did the set change" signal)."""

    def record(self, index: int, interior: bool) -> None:
        entry = self.entries.get(index)
        if entry is not None:
            entry[0] += 1
            entry[1] |= interior
            return
        if len(self.entries) < self.capacity:
            self.entries[index] = [1, int(interior)]
            self.inserts += 1
            return
        if not interior:
            return
        leaves = [(e[0], -i) for i, e in self.entries.items() if not e[1]]
        if not leaves:
            return
        count, negative = min(leaves)
        del self.entries[-negative]
        self.entries[index] = [1, 1]
        self.inserts += 1

    def items(self) -> list[tuple[int, int, bool]]:
        """``(index, reads, interior)`` of every tracked chunk."""
        return [(i, e[0], bool(e[1])) for i, e in self.entries.items()]


def rank(entries: Iterable[tuple[int, int, bool]], max_chunks: int, end_chunk: int) -> list[int]:
    """The hint: interior pages first, then by reads (most first), ties by index; only
    chunks below ``end_chunk`` (the file's end); at most ``max_chunks``."""
    ordered = sorted((e for e in entries if e[0] < end_chunk), key=lambda e: (not e[2], -e[1], e[0]))
    return [e[0] for e in ordered[:max_chunks]]


def changed_materially(old: Sequence[int] | None, new: Sequence[int]) -> bool:
    """Whether ``new`` is worth a write over ``old`` (``None``: nothing persisted): at
    least 4 chunks, or a tenth of the hint, came or went."""
    if not new:
        return False
    if old is None:
        return True
    diff = len(set(old).symmetric_difference(new))
    return diff >= max(4, len(new) // 10)
