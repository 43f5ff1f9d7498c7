"""All offset/chunk arithmetic in one helper.

A file is a sequence of ``CHUNK_SIZE``-byte chunks. SQLite's page size may be anything
from 512 to 65536 bytes, so one read or write may cover part of one chunk, several
whole chunks, or pieces of both.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

from vfs.keys import CHUNK_SIZE

__all__ = ["Span", "spans", "chunk_count"]


class Span(NamedTuple):
    """The part of one chunk that a byte range covers."""

    chunk: int
    """Chunk index."""
    start: int
    """First byte within the chunk."""
    end: int
    """Byte after the last within the chunk (``start < end <= CHUNK_SIZE``)."""
    buffer_offset: int
    """Where this piece starts within the caller's buffer."""


def spans(offset: int, amount: int) -> Iterator[Span]:
    """The chunk pieces covering bytes ``[offset, offset + amount)``, in order."""
    assert offset >= 0 and amount >= 0, (offset, amount)
    pos = offset
    stop = offset + amount
    while pos < stop:
        index, start = divmod(pos, CHUNK_SIZE)
        end = min(CHUNK_SIZE, start + (stop - pos))
        yield Span(index, start, end, pos - offset)
        pos += end - start


def chunk_count(size: int) -> int:
    """Chunks needed to hold a file of ``size`` bytes."""
    return -(-size // CHUNK_SIZE)
