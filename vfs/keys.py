"""Every key the VFS stores, built in one place (DESIGN.md section 2).

All keys are relative to one actor's namespace. Layout, byte for byte::

    [8, 1, 0, tag]                      meta of file ``tag``: u16 LE version, u64 LE size
    [8, 1, 1, tag, u32 BE chunk index]  chunk of file ``tag`` (CHUNK_SIZE bytes)
    [8, 1, 2, tag, u32 BE chunk index]  staged chunk of a large transaction (redo log)
    [8, 1, 3]                           commit record of a large transaction
    [8, 1, 7, ...]                      history of the database (:mod:`vfs.history`)

Subspaces 0 and 1 are RivetKit's SQLite layout. Subspaces 2 and 3 are ours: they only
exist while a transaction larger than one atomic batch commits (see :mod:`vfs.redo`).
Big-endian chunk indices make a range scan return a file in offset order.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "CHUNK_SIZE", "SQLITE_PREFIX", "FILE_MAIN", "FILE_JOURNAL", "FILE_WAL", "FILE_SHM",
    "meta_key", "chunk_key", "chunk_range", "chunk_index", "staged_key", "staged_range",
    "COMMIT_RECORD_KEY", "encode_meta", "decode_meta", "CorruptMetaError", "SQLITE_RANGE_END",
    "HISTORY_PREFIX", "HISTORY_RANGE", "HISTORY_HEAD_KEY", "HISTORY_BASES_KEY", "history_entry_key",
    "history_entry_range", "history_delta_key", "history_delta_range", "history_base_key", "history_base_range",
    "history_seq",
]

CHUNK_SIZE: Final = 4096
"""Bytes per chunk; one 4096-byte SQLite page is one chunk."""

SQLITE_SUBSPACE: Final = 8
SCHEMA_VERSION: Final = 1
SQLITE_PREFIX: Final = bytes([SQLITE_SUBSPACE, SCHEMA_VERSION])
SQLITE_RANGE_END: Final = bytes([SQLITE_SUBSPACE, SCHEMA_VERSION + 1])
"""Exclusive end of every key the VFS owns."""

_META: Final = 0
_CHUNK: Final = 1
_STAGED: Final = 2
_COMMIT_RECORD: Final = 3

FILE_MAIN: Final = 0
FILE_JOURNAL: Final = 1
FILE_WAL: Final = 2
FILE_SHM: Final = 3

META_VERSION: Final = 1
_META_STRUCT: Final = struct.Struct("<HQ")
_INDEX: Final = struct.Struct(">I")
MAX_CHUNK_INDEX: Final = 0xFFFF_FFFF

COMMIT_RECORD_KEY: Final = SQLITE_PREFIX + bytes([_COMMIT_RECORD])


class CorruptMetaError(ValueError):
    """A meta value is not the 10-byte ``<u16 version><u64 size>`` record."""


def meta_key(tag: int) -> bytes:
    """Key of file ``tag``'s meta record: ``[8, 1, 0, tag]``."""
    return SQLITE_PREFIX + bytes([_META, tag])


def chunk_key(tag: int, index: int) -> bytes:
    """Key of chunk ``index`` (offset ``index * CHUNK_SIZE``) of file ``tag``.

    >>> chunk_key(FILE_MAIN, 256)
    b'\\x08\\x01\\x01\\x00\\x00\\x00\\x01\\x00'
    """
    assert 0 <= index <= MAX_CHUNK_INDEX, index
    return SQLITE_PREFIX + bytes([_CHUNK, tag]) + _INDEX.pack(index)


def chunk_index(key: bytes) -> int:
    """Inverse of :func:`chunk_key` (also accepts staged keys)."""
    assert len(key) == 8 and key[:2] == SQLITE_PREFIX, key
    return int(_INDEX.unpack_from(key, 4)[0])


def chunk_range(tag: int, first_index: int = 0) -> tuple[bytes, bytes]:
    """``[start, end)`` of file ``tag``'s chunks from ``first_index`` on.

    The end is ``[8, 1, 1, tag + 1]``, as DESIGN.md fixes it for range deletes.
    """
    return chunk_key(tag, first_index), SQLITE_PREFIX + bytes([_CHUNK, tag + 1])


def staged_key(tag: int, index: int) -> bytes:
    """Key under which a large transaction stages chunk ``index`` of file ``tag``."""
    return SQLITE_PREFIX + bytes([_STAGED, tag]) + _INDEX.pack(index)


def staged_range() -> tuple[bytes, bytes]:
    """``[start, end)`` of every staged chunk of every file."""
    return SQLITE_PREFIX + bytes([_STAGED]), SQLITE_PREFIX + bytes([_STAGED + 1])


def encode_meta(size: int) -> bytes:
    """The 10-byte meta value for a file of ``size`` bytes."""
    return _META_STRUCT.pack(META_VERSION, size)


def decode_meta(value: bytes) -> int:
    """File size in bytes from a meta value.

    :raises CorruptMetaError: wrong length or unknown version.
    """
    if len(value) != _META_STRUCT.size:
        raise CorruptMetaError(f"meta value has {len(value)} bytes, expected {_META_STRUCT.size}")
    version, size = _META_STRUCT.unpack(value)
    if version != META_VERSION:
        raise CorruptMetaError(f"meta format version {version} is not supported (expected {META_VERSION})")
    return int(size)


_HISTORY: Final = 7
_SEQ: Final = struct.Struct(">Q")
HISTORY_PREFIX: Final = SQLITE_PREFIX + bytes([_HISTORY])
"""``[8, 1, 7]``: every key of the database's history (:mod:`vfs.history`)."""
HISTORY_RANGE: Final = (HISTORY_PREFIX, SQLITE_PREFIX + bytes([_HISTORY + 1]))
"""``[start, end)`` of the whole history (one range delete drops it)."""
HISTORY_HEAD_KEY: Final = HISTORY_PREFIX + b"\x00"
"""``[8, 1, 7, 0]``: the history head (last sequence number, byte counters, retention)."""
HISTORY_BASES_KEY: Final = HISTORY_PREFIX + b"\x01"
"""``[8, 1, 7, 1]``: the list of base images (sequence number, time, where stored)."""
_ENTRY: Final = HISTORY_PREFIX + b"\x02"
_DELTA: Final = HISTORY_PREFIX + b"\x03"
_BASE: Final = HISTORY_PREFIX + b"\x04"


def history_entry_key(seq: int) -> bytes:
    """``[8, 1, 7, 2, u64 BE seq]``: the record of commit ``seq`` (time, size)."""
    return _ENTRY + _SEQ.pack(seq)


def history_entry_range(first: int, end: int | None = None) -> tuple[bytes, bytes]:
    """``[start, end)`` of the commit records ``first <= seq < end`` (``None``: all after)."""
    return _ENTRY + _SEQ.pack(first), (_ENTRY + _SEQ.pack(end)) if end is not None else _DELTA


def history_delta_key(seq: int, index: int) -> bytes:
    """``[8, 1, 7, 3, u64 BE seq, u32 BE index]``: chunk ``index`` as commit ``seq`` wrote it."""
    return _DELTA + _SEQ.pack(seq) + _INDEX.pack(index)


def history_delta_range(first: int, end: int | None = None) -> tuple[bytes, bytes]:
    """``[start, end)`` of the changed chunks of commits ``first <= seq < end``."""
    return _DELTA + _SEQ.pack(first), (_DELTA + _SEQ.pack(end)) if end is not None else _BASE


def history_base_key(seq: int, index: int) -> bytes:
    """``[8, 1, 7, 4, u64 BE seq, u32 BE index]``: chunk ``index`` of the base image at ``seq``."""
    return _BASE + _SEQ.pack(seq) + _INDEX.pack(index)


def history_base_range(first: int, end: int | None = None) -> tuple[bytes, bytes]:
    """``[start, end)`` of the base images' chunks at ``first <= seq < end``."""
    return _BASE + _SEQ.pack(first), (_BASE + _SEQ.pack(end)) if end is not None else HISTORY_RANGE[1]


def history_seq(key: bytes) -> tuple[int, int]:
    """``(seq, index)`` of a delta or base chunk key (index -1 for an entry key)."""
    assert key[:3] == HISTORY_PREFIX and len(key) in (12, 16), key
    seq = int(_SEQ.unpack_from(key, 4)[0])
    return seq, int(_INDEX.unpack_from(key, 12)[0]) if len(key) == 16 else -1
