"""Software prefetch of an awake actor's hot memory at the start of each call.

With thousands of awake actors, the memory a read action touches (the instance, its
lock, gate, runner, SQLite connection and cursor objects, SQLite's ``sqlite3``
connection struct) is no longer in the CPU caches when the actor is called again, and
each object is reached through the one before it, so every cache miss stalls the next:
about 9 µs per read with 10,000 awake actors on the benchmark machine
(``benchmarks/scale.py``'s ``compare``), against a 13 µs read when they fit the caches.

At wake, :func:`actor_lines` records the addresses of those objects' cache lines (64
bytes each) once; at the start of every call, :func:`prefetch` hands them all to the CPU
in one C call (``native._kvvfs``'s ``kvn_prefetch``), so the misses overlap with each
other and with the call's first Python steps instead of queueing.

Invariants:

- Only addresses are kept, never references: an object replaced or freed since the
  wake leaves a stale address, and prefetching it is a wasted load, never a fault or a
  wrong result (a prefetch is a hint to the CPU). Nothing here changes what any call
  computes; :data:`AVAILABLE` is ``False`` without the native extension and everything
  is then a no-op.
- Cost per call: one cffi call and one prefetch instruction per line (about 50 lines;
  roughly 0.2 µs of CPU when everything is already cached).
- Memory: 8 bytes per line, about 0.5 KiB per awake actor.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

__all__ = ["AVAILABLE", "CACHE_LINE", "MAX_LINES_PER_OBJECT", "SQLITE_STRUCT_BYTES", "Lines", "actor_lines",
           "object_lines", "prefetch"]

CACHE_LINE = 64
"""Bytes per CPU cache line (x86-64 and ARMv8 server cores)."""
MAX_LINES_PER_OBJECT = 8
"""At most this many lines per object (its first 512 bytes): the fields a call reads sit
at the start of the objects listed here."""
SQLITE_STRUCT_BYTES = 1024
"""Bytes of SQLite's ``sqlite3`` connection struct prefetched from its start (its
hot fields: flags, mutex, schema and b-tree pointers, statement list)."""

try:
    from native._kvvfs import ffi as _ffi, lib as _lib
    _kvn_prefetch: Any = _lib.kvn_prefetch
    AVAILABLE = True
except (ImportError, AttributeError):  # no native extension (or an older build): prefetch is a no-op
    _ffi = None
    _kvn_prefetch = None
    AVAILABLE = False

Lines = Any
"""What :func:`actor_lines` returns: a cdata ``uint64_t[]`` holding the count of lines
then the lines (one object, so a call reaches the addresses with one load), or ``None``."""


def object_lines(obj: object) -> list[int]:
    """The cache-line addresses of ``obj``'s own memory (``sys.getsizeof`` bytes from
    ``id(obj)``, CPython's address of the object), at most :data:`MAX_LINES_PER_OBJECT`."""
    start = id(obj)
    size = min(max(sys.getsizeof(obj), 1), MAX_LINES_PER_OBJECT * CACHE_LINE)
    first = start - start % CACHE_LINE
    return list(range(first, start + size, CACHE_LINE))[:MAX_LINES_PER_OBJECT]


def actor_lines(objects: Iterable[object], sqlite_pointer: int | None = None) -> Lines:
    """The prefetch list of one awake actor: every line of ``objects`` (``None`` entries
    skipped) and the first :data:`SQLITE_STRUCT_BYTES` of the ``sqlite3`` struct at
    ``sqlite_pointer`` (``apsw.Connection.sqlite3pointer()``). ``None`` when prefetch is
    unavailable."""
    if not AVAILABLE:
        return None
    addresses: list[int] = []
    for obj in objects:
        if obj is not None:
            addresses += object_lines(obj)
    if sqlite_pointer:
        addresses += range(sqlite_pointer, sqlite_pointer + SQLITE_STRUCT_BYTES, CACHE_LINE)
    return _ffi.new("uint64_t[]", [len(addresses)] + addresses)


def prefetch(lines: Lines) -> None:
    """Start loading every line of ``lines`` (from :func:`actor_lines`) into the CPU
    caches, without waiting. ``None``: nothing to do."""
    if lines is not None:
        _kvn_prefetch(lines)
