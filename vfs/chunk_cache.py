"""The process-wide chunk cache: one LRU of committed chunks for every KV-backed database.

Every open database file in the process shares ONE least-recently-used cache of chunks
(4096 bytes each) bounded by a byte budget, so a busy actor can keep its whole database
warm while idle actors hold nothing. The native VFS keeps its entries in C (served
without entering Python) and the Python VFS in :class:`ChunkCache`; both obey the same
budget (each implementation holds at most the budget).

Invariants:

- Entries are committed chunk values only (what the KV holds), keyed by the open file
  (one file per actor and store per process, so this is the (store, actor, chunk) key);
  a commit puts the chunks it wrote, a failed KV call clears the file's entries.
- A file's entries are dropped when it closes: another process may write the actor
  before the next open, so they could be stale.
- A file may also cap its own share (``vfs.connect(cache_chunks=N)``); ``0`` disables
  caching for that file.

Settings: :func:`configure` in code, or the environment variable ``ACTOR_DB_CACHE_BYTES``
(bytes, with an optional ``K``/``M``/``G`` suffix, read at import), default
:data:`DEFAULT_BUDGET_BYTES`. :func:`stats` reports bytes held, hits, misses and evictions
(the runtime's metrics and Prometheus exporter publish them).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from lru import LRU

from vfs.keys import CHUNK_SIZE

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BUDGET_BYTES", "ENV_VAR", "CacheStats", "ChunkCache", "FileChunkCache", "configure",
           "budget_bytes", "stats", "shared"]

DEFAULT_BUDGET_BYTES = 128 * 1024 * 1024
"""Default byte budget of the process-wide chunk cache (32,768 chunks)."""
ENV_VAR = "ACTOR_DB_CACHE_BYTES"
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_bytes(text: str) -> int:
    """``"268435456"``, ``"256M"``, ``"1G"``, ``"512k"`` -> bytes.

    :raises ValueError: not a non-negative integer with an optional K/M/G suffix.
    """
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = raw[-1:] if raw[-1:] in ("K", "M", "G") else ""
    number = raw[:-1] if suffix else raw
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a byte count (e.g. 268435456, 256M, 1G)")
    return int(number) * _SUFFIXES[suffix]


@dataclass(frozen=True)
class CacheStats:
    """The shared chunk cache, both VFS implementations together.

    :ivar bytes: bytes of chunks held now.
    :ivar budget_bytes: the byte budget (per implementation).
    :ivar entries: chunks held now.
    :ivar hits: lookups answered, since the process started.
    :ivar misses: lookups that went to the KV (or the preload).
    :ivar evictions: chunks dropped to stay within the budget or a file's cap.
    """

    bytes: int
    budget_bytes: int
    entries: int
    hits: int
    misses: int
    evictions: int


class ChunkCache:
    """The Python VFS's process-wide LRU (see the module docstring).

    :param budget_bytes: most bytes of chunks held (0 disables caching).
    """

    def __init__(self, budget_bytes: int) -> None:
        self._lock = threading.RLock()
        self._budget_chunks = max(budget_bytes // CHUNK_SIZE, 0)
        self._lru: LRU[tuple[int, int], bytes] = LRU(max(self._budget_chunks, 1), callback=self._evicted)
        self._files: dict[int, FileChunkCache] = {}
        self._serial = itertools.count(1)
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def budget_chunks(self) -> int:
        """The budget in chunks."""
        return self._budget_chunks

    def resize(self, budget_bytes: int) -> None:
        """Change the budget; shrinking evicts the least recent chunks at once."""
        with self._lock:
            self._budget_chunks = max(budget_bytes // CHUNK_SIZE, 0)
            if self._budget_chunks == 0:
                for view in list(self._files.values()):
                    view.clear()
            self._lru.set_size(max(self._budget_chunks, 1))

    def _evicted(self, key: tuple[int, int], value: bytes) -> None:
        # Called by lru-dict (under self._lock: every insert holds it) for the least
        # recent entry when the budget is exceeded.
        self.evictions += 1
        view = self._files.get(key[0])
        if view is not None:
            view._forget(key[1])

    def open_file(self, cap_chunks: int | None) -> FileChunkCache:
        """A new file's view (``cap_chunks``: its own cap, ``None`` for the budget only)."""
        with self._lock:
            view = FileChunkCache(self, next(self._serial), cap_chunks)
            self._files[view.owner] = view
            return view

    def _close_file(self, view: FileChunkCache) -> None:
        with self._lock:
            view.clear()
            self._files.pop(view.owner, None)

    def totals(self) -> tuple[int, int, int, int, int]:
        """``(entries, budget_chunks, hits, misses, evictions)``."""
        with self._lock:
            return len(self._lru), self._budget_chunks, self.hits, self.misses, self.evictions


class FileChunkCache:
    """One open file's view of the shared cache: the mapping ``index -> chunk`` that
    :class:`vfs.file.KVFile` uses as its chunk cache (``get`` and assignment make an
    entry most recent, ``in`` does not)."""

    def __init__(self, shared: ChunkCache, owner: int, cap_chunks: int | None) -> None:
        self._shared = shared
        self.owner = owner
        self._indices: set[int] = set()
        self._order: LRU[int, None] | None = (
            LRU(cap_chunks, callback=self._over_cap) if cap_chunks is not None else None)

    def _over_cap(self, index: int, _: None) -> None:
        # The file's own cap: drop its least recent chunk from the shared cache too.
        self._shared.evictions += 1
        self._indices.discard(index)
        self._shared._lru.pop((self.owner, index), None)

    def _forget(self, index: int) -> None:
        self._indices.discard(index)
        if self._order is not None:
            self._order.pop(index, None)

    def get(self, index: int, default: bytes | None = None) -> bytes | None:
        shared = self._shared
        with shared._lock:
            value = shared._lru.get((self.owner, index))
            if value is None:
                shared.misses += 1
                return default
            shared.hits += 1
            if self._order is not None:
                self._order.get(index)
            return value

    def __getitem__(self, index: int) -> bytes:
        value = self.get(index)
        if value is None:
            raise KeyError(index)
        return value

    def __setitem__(self, index: int, data: bytes) -> None:
        shared = self._shared
        with shared._lock:
            if shared._budget_chunks == 0:
                return
            self._indices.add(index)
            shared._lru[(self.owner, index)] = bytes(data)
            if self._order is not None:
                self._order[index] = None

    def __delitem__(self, index: int) -> None:
        with self._shared._lock:
            self._shared._lru.pop((self.owner, index), None)
            self._forget(index)

    def __contains__(self, index: object) -> bool:
        return index in self._indices

    def __len__(self) -> int:
        return len(self._indices)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._indices))

    def keys(self) -> list[int]:
        return list(self._indices)

    def clear(self) -> None:
        with self._shared._lock:
            lru = self._shared._lru
            for index in list(self._indices):
                lru.pop((self.owner, index), None)
            self._indices.clear()
            if self._order is not None:
                self._order.clear()

    def close(self) -> None:
        """Drop every entry and leave the shared cache (the file closed)."""
        self._shared._close_file(self)


def _initial_budget() -> int:
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return DEFAULT_BUDGET_BYTES
    try:
        return parse_bytes(raw)
    except ValueError as exc:
        log.warning("ignoring %s=%r (%s); using %d bytes", ENV_VAR, raw, exc, DEFAULT_BUDGET_BYTES)
        return DEFAULT_BUDGET_BYTES


_budget = _initial_budget()
shared = ChunkCache(_budget)
"""The Python VFS's process-wide cache."""


def _native_lib() -> Any:
    import native

    if not native.AVAILABLE:
        return None
    from native._kvvfs import lib

    return lib


def _apply_native(budget: int) -> None:
    lib = _native_lib()
    if lib is not None:
        lib.kvn_cache_configure(budget // CHUNK_SIZE)


def configure(max_bytes: int) -> None:
    """Set the byte budget of the process-wide chunk cache (both VFSes); shrinking
    evicts at once. ``0`` disables caching (every miss of SQLite's own page cache then
    reads the preload or the KV).

    :raises ValueError: a negative budget.
    """
    global _budget
    if max_bytes < 0:
        raise ValueError(f"the chunk cache budget must be >= 0 bytes, not {max_bytes}")
    _budget = max_bytes
    shared.resize(max_bytes)
    _apply_native(max_bytes)
    log.debug("chunk cache budget: %d bytes", max_bytes)


def budget_bytes() -> int:
    """The current byte budget."""
    return _budget


def stats() -> CacheStats:
    """Totals of the shared cache, both VFS implementations together."""
    entries, budget_chunks, hits, misses, evictions = shared.totals()
    lib = _native_lib()
    if lib is not None:
        from native._kvvfs import ffi

        out = ffi.new("long long[5]")
        lib.kvn_cache_totals(out)
        entries += out[0]
        hits += out[2]
        misses += out[3]
        evictions += out[4]
    return CacheStats(entries * CHUNK_SIZE, budget_chunks * CHUNK_SIZE, entries, hits, misses, evictions)


_apply_native(_budget)
