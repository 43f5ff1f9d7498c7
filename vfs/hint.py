"""The hot-set hint: which chunks an actor's database needs at wake, kept in the KV.

While a database is open, the VFS records what SQLite reads and writes
(:class:`HotSet`): the chunks read most recently, every B-tree interior page it has
seen (known from each page's type byte as SQLite reads or writes it, so the set stays
current as commits split and merge pages), and the pages of the schema table. A small
*hint record* lists them (:func:`rank`): ALL interior pages first, then the schema's
leaf pages (what the startup itself reads), then leaves by recency (most recent first),
bounded by the SQLite preload budget. It lives at :data:`HINT_KEY` (``[8, 1, 4]``,
beside the redo keys and outside RivetKit's meta and chunk keys) and is written only
inside a commit batch that happens anyway, or when the owner closes the database
(sleep) and the hint changed: never a round trip on the query path.

The next startup preload asks for "the chunks listed in the hint record" inside its
single KV call (:class:`~vfs.protocol.HintSpec`): the listed interior pages are charged
to their own allowance (``HintSpec.interior_max_bytes``, outside the range's budget and
the preload total), the others to the SQLite budget, then the lowest chunks fill what
is left. So after a wake a query for ANY key costs at most one leaf per B-tree it
touches, and a query repeating the last workload costs nothing. A missing, stale,
truncated or corrupt hint costs at most round trips, never correctness: every value
still comes from the same KV snapshot, and a hinted chunk that does not exist is simply
absent.

Record formats (big-endian), anything else decodes as no hint:

- version 2: ``u8 version (=2)``, ``u32 count``, ``u32 interior``, then ``count`` x
  ``u32 chunk index``; the first ``interior`` indices are B-tree interior pages;
- version 1 (written before interior pages had their own allowance): ``u8 version
  (=1)``, ``u32 count``, then ``count`` x ``u32 chunk index`` (no interior part).
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple, Sequence

from vfs.keys import SQLITE_PREFIX

__all__ = ["HINT_KEY", "HINT_VERSION", "MAX_HINT_CHUNKS", "RECENT_CAPACITY", "HOT_SET_CAPACITY",
           "DEFAULT_INTERIOR_MAX_BYTES", "Hint", "encode", "decode", "decode_hint", "HotSet", "rank",
           "changed_materially", "is_interior_page", "page_type"]

HINT_KEY = SQLITE_PREFIX + bytes([4])
"""Key of the hint record, relative to the actor: ``[8, 1, 4]``."""
HINT_VERSION = 2
MAX_HINT_CHUNKS = 65536
"""Most indices a hint may list (a longer record is corrupt and ignored); also the most
interior pages a :class:`HotSet` tracks."""
RECENT_CAPACITY = 512
"""Distinct recently read chunks a :class:`HotSet` tracks (the native VFS uses the same
number): when full, the least recent half is dropped at once."""
HOT_SET_CAPACITY = RECENT_CAPACITY
"""Former name of :data:`RECENT_CAPACITY`."""
DEFAULT_INTERIOR_MAX_BYTES = 8 * 1024 * 1024
"""Default allowance for the hinted B-tree interior pages in a wake's preload (bytes):
0.3-0.5% of a database is interior (721 pages, 2.8 MiB, at 0.94 GiB with ~200-byte
rows and an index), so 8 MiB covers databases of about 2 GiB."""
_HEAD_V1 = struct.Struct(">BI")
_HEAD = struct.Struct(">BII")
_INTERIOR_PAGE_TYPES = (2, 5)
"""B-tree page header flags: interior index (2) and interior table (5) pages."""
_PAGE_SIZE = 4096


class Hint(NamedTuple):
    """A decoded hint record: the listed chunk indices, the first ``interior`` of them
    B-tree interior pages."""

    indices: list[int]
    interior: int


def encode(indices: Sequence[int], interior: int = 0) -> bytes:
    """The record listing ``indices`` (in priority order), the first ``interior`` of
    them B-tree interior pages."""
    assert 0 <= interior <= len(indices)
    return _HEAD.pack(HINT_VERSION, len(indices), interior) + struct.pack(f">{len(indices)}I", *indices)


def decode_hint(value: bytes | None) -> Hint | None:
    """The record's indices and interior count, or ``None`` when missing or malformed."""
    if value is None or len(value) < _HEAD_V1.size:
        return None
    version, count = _HEAD_V1.unpack_from(value)
    if count > MAX_HINT_CHUNKS:
        return None
    if version == 1 and len(value) == _HEAD_V1.size + 4 * count:
        return Hint(list(struct.unpack_from(f">{count}I", value, _HEAD_V1.size)), 0)
    if version == 2 and len(value) == _HEAD.size + 4 * count:
        interior = _HEAD.unpack_from(value)[2]
        if interior > count:
            return None
        return Hint(list(struct.unpack_from(f">{count}I", value, _HEAD.size)), interior)
    return None


def decode(value: bytes | None) -> list[int] | None:
    """The indices a record lists, or ``None`` when it is missing or malformed."""
    found = decode_hint(value)
    return None if found is None else found.indices


def page_type(chunk_index: int, data: bytes | bytearray | memoryview, start: int = 0,
              end: int | None = None) -> int | None:
    """The B-tree page type byte of the page at the start of chunk ``chunk_index``
    (``data``: the whole chunk), when ``[start, end)`` (the bytes SQLite read or wrote)
    covers it (page 1's sits after the 100-byte database header); else ``None``."""
    at = 100 if chunk_index == 0 else 0
    stop = len(data) if end is None else min(end, len(data))
    return data[at] if start <= at < stop else None


def is_interior_page(chunk_index: int, data: bytes | bytearray | memoryview) -> bool:
    """Whether the page at the start of chunk ``chunk_index`` (``data``: the whole
    chunk) is a B-tree interior page."""
    return page_type(chunk_index, data) in _INTERIOR_PAGE_TYPES


def _schema_children(page1: bytes | bytearray | memoryview) -> list[int]:
    """Chunk indices of the children of page 1 when it is an interior table page (the
    schema table spans more than one page), else ``[]``."""
    hdr = 100
    if len(page1) < _PAGE_SIZE or page1[hdr] != 5:
        return []
    cells = int.from_bytes(page1[hdr + 3:hdr + 5], "big")
    pages = [int.from_bytes(page1[hdr + 8:hdr + 12], "big")]
    for i in range(min(cells, (_PAGE_SIZE - hdr - 12) // 2)):
        at = int.from_bytes(page1[hdr + 12 + 2 * i:hdr + 14 + 2 * i], "big")
        if at + 4 <= _PAGE_SIZE:
            pages.append(int.from_bytes(page1[at:at + 4], "big"))
    return [p - 1 for p in pages if p > 1]


_NO_CHUNKS: frozenset[int] = frozenset()


class HotSet:
    """What SQLite read and wrote since the database was opened (same rules as the
    native VFS's ``kvn_hot`` in C, so both VFSes write the same hints):

    - ``recent``: up to :data:`RECENT_CAPACITY` distinct chunks read, least recent
      first; a read moves a chunk to the end; when full, the least recent half is
      dropped before the new chunk is added;
    - ``interior``: chunks whose page was last seen (read with its type byte, or
      written) as a B-tree interior page; a page seen as anything else leaves it (at
      most :data:`MAX_HINT_CHUNKS`);
    - ``schema``: the children of page 1 as last seen (the schema table's other pages,
      which every open reads).

    Invariant: a chunk is in ``interior`` iff the last observation of its type byte
    said interior (or the hint it was seeded from did, and nothing was seen since).

    (Every open database has one, the native VFS's too, which keeps its own in C: until
    something is recorded it holds no container the garbage collector tracks: ``recent``
    holds only ints, ``interior`` is an empty frozenset and ``schema`` an empty tuple
    until they get their first element.)
    """

    def __init__(self, capacity: int = RECENT_CAPACITY) -> None:
        self.capacity = capacity
        self.recent: dict[int, None] = {}
        """chunk index -> None, in order of last read (least recent first)."""
        self.interior: set[int] | frozenset[int] = _NO_CHUNKS
        self.schema: Sequence[int] = ()
        self._page1_counter = b""
        self.inserts = 0
        """Chunks newly tracked since open (a cheap "did the set change" signal)."""

    def record(self, index: int, data: bytes | bytearray | memoryview | None = None, start: int = 0,
               end: int = _PAGE_SIZE) -> None:
        """A read of bytes ``[start, end)`` of chunk ``index`` (``data``: the whole
        chunk); when they cover the page's type byte it updates ``interior``."""
        recent = self.recent
        if index in recent:
            del recent[index]
        else:
            if len(recent) >= self.capacity:
                for old in list(recent)[:len(recent) - self.capacity // 2]:
                    del recent[old]
            self.inserts += 1
        recent[index] = None
        if data is not None:
            self.observe(index, data, start, end)

    def observe(self, index: int, data: bytes | bytearray | memoryview, start: int = 0,
                end: int = _PAGE_SIZE) -> None:
        """Bytes ``[start, end)`` of chunk ``index`` (``data``: the whole chunk) were read
        or written; page 1 read or written whole also gives the schema's pages."""
        kind = page_type(index, data, start, end)
        if kind is None:
            return
        interior = self.interior
        if kind in _INTERIOR_PAGE_TYPES:
            if index not in interior and len(interior) < MAX_HINT_CHUNKS:
                self._interior().add(index)
                self.inserts += 1
        elif index in interior:
            self._interior().discard(index)
        if index == 0 and start == 0 and end >= _PAGE_SIZE <= len(data) and data[24:28] != self._page1_counter:
            # Parsed again only when page 1's change counter moved (every statement
            # reads page 1; the schema changes only with a commit).
            self._page1_counter = bytes(data[24:28])
            self.schema = _schema_children(data)

    def seed_interior(self, indices: Iterable[int]) -> None:
        """Interior pages known from the hint the database was opened with."""
        for index in indices:
            if len(self.interior) >= MAX_HINT_CHUNKS:
                break
            self._interior().add(index)

    def _interior(self) -> set[int]:
        """``interior``, made a set at its first element."""
        interior = self.interior
        if not isinstance(interior, set):
            interior = self.interior = set(interior)
        return interior

    def items(self) -> tuple[list[int], list[int], list[int]]:
        """``(recent, most recent first; interior, ascending; schema)``."""
        return list(reversed(self.recent)), sorted(self.interior), list(self.schema)


def rank(recent: Sequence[int], interior: Iterable[int], schema: Sequence[int], max_chunks: int,
         max_interior_chunks: int, end_chunk: int) -> Hint:
    """The hint: every interior page (those in ``recent`` first, most recent first: the
    last workload's paths survive a short allowance; then ascending), at most
    ``max_interior_chunks``, then page 1 and the schema's other pages, then ``recent``
    (most recent first), without repeats, at most ``max_chunks`` after the interior
    part; only chunks below ``end_chunk`` (the file's end)."""
    inside = {i for i in interior if i < end_chunk}
    first = [i for i in recent if i in inside]
    inner = (first + sorted(inside.difference(first)))[:max(max_interior_chunks, 0)]
    seen = set(inner)
    rest: list[int] = []
    for index in (0, *schema, *recent):
        if len(rest) >= max_chunks:
            break
        if index < end_chunk and index not in seen:
            seen.add(index)
            rest.append(index)
    return Hint(inner + rest, len(inner))


def changed_materially(old: Sequence[int] | None, new: Sequence[int], *, exact: bool = False) -> bool:
    """Whether ``new`` is worth a write over ``old`` (``None``: nothing persisted): at
    least 4 chunks, or a tenth of the hint, came or went; with ``exact`` (an owner's
    close), any difference at all."""
    if not new:
        return False
    if old is None:
        return True
    diff = len(set(old).symmetric_difference(new))
    return diff > 0 if exact else diff >= max(4, len(new) // 10)
