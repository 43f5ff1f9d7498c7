"""The Python half of the native VFS: KV work for the C file, on the C file's state.

:class:`NativeFile` is a :class:`vfs.file.KVFile` whose hot state (dirty buffer, staged
set, chunk cache, sizes, read-ahead window, counters) lives in the C struct of
``native/kvvfs.c``. C serves reads, writes, sizes and locks without entering Python; it
calls the ``kvn_py_*`` callbacks below only for KV work, and those run the very same
``KVFile`` methods (commit, redo, roll-forward, refresh, spill, truncate) through
container views of the C state. So the two VFSes share one implementation of the KV
format and of every round trip, and a database written by one opens in the other.

Invariants:

- The C preload mirror holds exactly the chunk-key part of :attr:`KVFile.preload`: it
  is loaded at open and kept current by a :class:`~vfs.preload.PreloadMap` listener, so
  a ``preload.clear()`` by anyone is seen by C before its next read.
- A callback never lets an exception escape into C: it stores the apsw exception (which
  names the KV cause) with ``kvn_set_error`` and returns its SQLite code; C leaves it set
  on the thread as apsw's own Python VFS does, so the user gets that exception.
- While a file is open, :data:`_open_files` keeps its :class:`NativeFile` (and the cffi
  handle C holds) alive; ``xClose`` drops both.

Left out: anything that is not a main database (C hands such files to the default VFS).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import operator
from typing import Any, Callable, Iterable, Iterator, TypeVar, cast

import apsw

from vfs import pragmas
from vfs.errors import sqlite_error
from vfs.file import FileOptions, KVFile, readahead_cap
from vfs.interrupts import as_io_error, is_interrupt
from vfs.locks import DatabaseShare
from vfs.keys import CHUNK_SIZE, MAX_CHUNK_INDEX, SQLITE_PREFIX, chunk_index, chunk_key
from vfs.preload import NOT_LOADED, PreloadMap
from vfs.protocol import KV
from vfs.stats import VFSStats

from native._kvvfs import ffi, lib

log = logging.getLogger(__name__)

__all__ = ["NativeFile", "NativeStats"]

_ZERO_CHUNK = bytes(CHUNK_SIZE)
_INDEX_END = MAX_CHUNK_INDEX + 1
"""Exclusive end of chunk indices (2**32)."""
_CHUNK_SUBSPACE = 1  # vfs.keys: [8, 1, 1, tag, u32 BE index]


class NativeStats(VFSStats):
    """:class:`~vfs.stats.VFSStats` whose hit counters live in C (``kvn_stats``).

    C increments the hit counters (:data:`_C_COUNTERS`) without Python; the others are
    plain attributes that Python increments (a commit adds to three of them: as C
    fields each ``+=`` was a property frame and two cffi field accesses). A
    :meth:`snapshot` is a plain :class:`VFSStats`.
    """

    def __init__(self) -> None:  # no dataclass __init__: the C counters are properties
        self._ptr = ffi.new("kvn_stats *")
        for name in _PY_COUNTERS:
            setattr(self, name, 0)


def _counter(name: str) -> property:
    # attrgetter: the read runs in C (cffi returns a ``long long`` field as an int), so a
    # ``+=`` on the commit path costs no Python frame for the read.
    def set_(self: NativeStats, value: int) -> None:
        setattr(self._ptr, name, value)

    return property(operator.attrgetter(f"_ptr.{name}"), set_, doc=f"C counter ``{name}`` (see VFSStats).")


_C_COUNTERS = ("preload_hits", "cache_hits")
"""The counters C increments itself (``kvnRead``); the rest stay Python attributes."""
_PY_COUNTERS = tuple(f.name for f in dataclasses.fields(VFSStats) if f.name not in _C_COUNTERS)

for _name in _C_COUNTERS:
    setattr(NativeStats, _name, _counter(_name))


def _gil_holding(name: str) -> Callable[[int], int]:
    """C accessor ``int name(kvn_file *)`` called WITHOUT releasing the GIL.

    Every cffi call releases and re-takes the GIL. With pool threads waiting for it
    (KV calls returning), each such call of the busy event-loop thread, which commits
    inline actions, hands the GIL over and waits to get it back: ~10 us per call
    measured under load, and ``len(self._dirty)`` / ``len(self._staged)`` run several
    times per commit. Only for accessors that read one struct field, take no lock
    and cannot block: through ctypes' Python calling convention (``PYFUNCTYPE``),
    which keeps the GIL. The file pointer is passed as an address (:func:`_address`).
    """
    address = int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))
    return ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(address)  # type: ignore[no-any-return]


_dirty_count = _gil_holding("kvn_dirty_count")
_staged_count = _gil_holding("kvn_staged_count")


def _address(cfile: Any) -> int:
    return int(ffi.cast("uintptr_t", cfile))


# ------------------------------------------------------------ views of C state
def _keys(count: Callable[[Any], int], fill: Callable[[Any, Any, int], int], cfile: Any) -> list[int]:
    n = count(cfile)
    if not n:
        return []
    out = ffi.new("uint32_t[]", n)
    k = fill(cfile, out, n)
    return list(out[0:k])


class _DirtyView:
    """``dict[int, writable chunk]`` over C's dirty buffer (values are views into C)."""

    def __init__(self, cfile: Any) -> None:
        self._c = cfile
        self._addr = _address(cfile)

    def get(self, index: int, default: Any = None) -> Any:
        ptr = lib.kvn_dirty_ptr(self._c, index)
        return default if ptr == ffi.NULL else ffi.buffer(ptr, CHUNK_SIZE)

    def __getitem__(self, index: int) -> Any:
        view = self.get(index)
        if view is None:
            raise KeyError(index)
        return view

    def __setitem__(self, index: int, data: bytes | bytearray) -> None:
        if lib.kvn_dirty_write(self._c, index, bytes(data), len(data)) != 0:
            raise MemoryError("native VFS: out of memory for a dirty chunk")

    def __delitem__(self, index: int) -> None:
        lib.kvn_dirty_delete(self._c, index)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and lib.kvn_dirty_ptr(self._c, index) != ffi.NULL

    def __len__(self) -> int:
        return _dirty_count(self._addr)

    def __iter__(self) -> Iterator[int]:
        return iter(_keys(lib.kvn_dirty_count, lib.kvn_dirty_keys, self._c))

    def keys(self) -> list[int]:
        return _keys(lib.kvn_dirty_count, lib.kvn_dirty_keys, self._c)

    def items(self) -> Iterable[tuple[int, Any]]:
        return [(i, self[i]) for i in self.keys()]

    def clear(self) -> None:
        lib.kvn_dirty_clear(self._c)


class _StagedView:
    """``set[int]`` over C's staged set."""

    def __init__(self, cfile: Any) -> None:
        self._c = cfile
        self._addr = _address(cfile)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and bool(lib.kvn_staged_has(self._c, index))

    def __len__(self) -> int:
        return _staged_count(self._addr)

    def __iter__(self) -> Iterator[int]:
        return iter(_keys(lib.kvn_staged_count, lib.kvn_staged_keys, self._c))

    def add(self, index: int) -> None:
        if lib.kvn_staged_add(self._c, index) != 0:
            raise MemoryError("native VFS: out of memory for the staged set")

    def update(self, indices: Iterable[int]) -> None:
        for index in indices:
            self.add(index)

    def discard(self, index: int) -> None:
        lib.kvn_staged_discard(self._c, index)

    def difference_update(self, indices: Iterable[int]) -> None:
        for index in indices:
            self.discard(index)

    def clear(self) -> None:
        lib.kvn_staged_clear(self._c)


class _CacheView:
    """``lru.LRU[int, bytes]`` over C's chunk cache (same recency rules)."""

    def __init__(self, cfile: Any) -> None:
        self._c = cfile

    def get(self, index: int, default: Any = None) -> Any:
        out = ffi.new("unsigned char[]", CHUNK_SIZE)
        if not lib.kvn_cache_read(self._c, index, out):
            return default
        return bytes(ffi.buffer(out, CHUNK_SIZE))

    def __setitem__(self, index: int, data: bytes) -> None:
        if lib.kvn_cache_put(self._c, index, data, len(data)) != 0:
            raise MemoryError("native VFS: out of memory for the chunk cache")

    def __delitem__(self, index: int) -> None:
        lib.kvn_cache_delete(self._c, index)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and bool(lib.kvn_cache_has(self._c, index))

    def __len__(self) -> int:
        return int(lib.kvn_cache_count(self._c))

    def keys(self) -> list[int]:
        return _keys(lib.kvn_cache_count, lib.kvn_cache_keys, self._c)

    def clear(self) -> None:
        lib.kvn_cache_clear(self._c)


def _c_field(name: str) -> property:
    # attrgetter: the read runs in C (cffi returns ``long long``/``int`` fields as ints).
    def set_(self: NativeFile, value: int) -> None:
        setattr(self._c, name, value)

    return property(operator.attrgetter(f"_c.{name}"), set_)


_raw_alloc = ffi.new_allocator(should_clear_after_alloc=False)
"""Allocates C buffers that are overwritten whole at once (no zero-fill)."""
_SNAPSHOT_CHUNKS = 8
"""Initial capacity in chunks of a file's commit snapshot buffers (they grow on demand)."""
_SNAPSHOT_KEEP_CHUNKS = 256
"""Largest snapshot capacity in chunks (1 MiB) kept after a commit; larger ones are freed."""
_HEADER_BYTES = 100
"""Bytes of SQLite's database header (KVFile._declared_size reads offsets < 100)."""


# ------------------------------------------------------------------ the file
class NativeFile(KVFile):
    """An actor's main database served by the C VFS (see the module docstring).

    :param cfile: the ``kvn_file *`` SQLite allocated for this open.
    Other parameters as :class:`vfs.file.KVFile`; the open costs the same round trip.
    """

    _size = _c_field("size")
    _committed_size = _c_field("committed_size")
    _low_water = _c_field("low_water")
    _next_sequential = _c_field("next_sequential")
    _stream_end = _c_field("stream_end")
    _readahead = _c_field("readahead")
    lock_level = _c_field("lock_level")

    def __init__(
        self,
        kv: KV,
        preload: PreloadMap,
        options: FileOptions,
        stats: NativeStats,
        cfile: Any,
        on_close: Callable[[], None] | None = None,
        share: DatabaseShare | None = None,
        seen_generation: int = 0,
    ) -> None:
        self._c = cfile
        self._caddr = _address(cfile)
        self._stale = True
        self._snapshot_noted = False
        self._record: Any = None
        self._handle = ffi.new_handle(self)
        lib.kvn_setup(cfile, self._handle, stats._ptr, -1 if options.cache_chunks is None else options.cache_chunks,
                      readahead_cap(kv.limits, options.readahead_max_chunks), options.max_dirty_bytes)
        self._chunk_prefix = SQLITE_PREFIX + bytes([_CHUNK_SUBSPACE, 0])
        # Buffers of _dirty_snapshot, reused by every commit (capacity in chunks).
        self._snap_cap: int
        self._snap_indices: Any
        self._snap_out: Any
        self._snap_buf: Any
        self._new_snapshot_buffers(_SNAPSHOT_CHUNKS)
        super().__init__(kv, preload, options, stats, on_close, share, seen_generation)
        cfile.shared_locks = int(share is not None)
        self._listener = self._preload_changed
        preload.add_listener(self._listener)
        self._preload_changed(b"", None)

    # The flags C checks before every operation (KVFile._ensure_ready's condition).
    @property
    def _meta_stale(self) -> bool:
        return self._stale

    @_meta_stale.setter
    def _meta_stale(self, value: bool) -> None:
        self._stale = value
        self._c.not_ready = int(value or self._record is not None)

    @property
    def _pending_record(self) -> Any:
        return self._record

    @_pending_record.setter
    def _pending_record(self, value: Any) -> None:
        self._record = value
        self._c.not_ready = int(self._stale or value is not None)

    def _set_tail_flag(self, pending: bool) -> None:
        self._c.tail_pending = int(pending)

    def _hot_items(self) -> tuple[list[int], list[int], list[int]]:
        return self._hot_list(0), self._hot_list(1), self._hot_list(2)

    def _hot_list(self, which: int) -> list[int]:
        n = lib.kvn_hot_capacity()
        while True:
            out = ffi.new("uint32_t[]", max(n, 1))
            k = lib.kvn_hot_list(self._c, which, out, n)
            if k < 0:
                raise MemoryError("native VFS: out of memory for the hot set")
            if k <= n:
                return list(out[0:k])
            n = k

    def _hot_seed(self, indices: list[int]) -> None:
        if indices and lib.kvn_hot_seed(self._c, indices, len(indices)) != 0:
            raise MemoryError("native VFS: out of memory for the hot set")

    def _note_written(self, chunks: dict[int, bytes]) -> None:
        # A commit's chunks were noted in C by kvn_dirty_snapshot; a spill's go one by one.
        if self._snapshot_noted:
            self._snapshot_noted = False
            return
        for index, data in chunks.items():
            lib.kvn_hot_note(self._c, index, data)

    def _hot_inserts(self) -> int:
        return int(self._c.hot_inserts)  # a struct field: no C call (cffi calls release the GIL)

    def _new_state(self, options: FileOptions) -> tuple[Any, Any, Any]:
        cache = _CacheView(self._c) if options.cache_chunks != 0 else None
        return cache, _DirtyView(self._c), _StagedView(self._c)

    def _has_pending_changes(self) -> bool:
        # KVFile's test on C's counters and fields directly (no view object in between).
        c, addr = self._c, self._caddr
        return bool(_dirty_count(addr) or _staged_count(addr) or c.size != c.committed_size
                    or c.low_water != c.committed_size)

    def _has_staged(self) -> bool:
        return _staged_count(self._caddr) != 0

    def _dirty_chunk(self, index: int, whole: bool) -> Any:
        # KVFile creates a bytearray and edits it after storing it; here the chunk is
        # created in C first and edited in place through a view of C memory.
        buf = self._dirty.get(index)
        if buf is None:
            base = _ZERO_CHUNK if whole else bytes(self._chunks([index])[index])
            self._dirty[index] = bytearray(base)
            buf = self._dirty.get(index)
        return buf

    # ------------------------------------------------------------------ commit
    # KVFile.commit's hooks, each one C call instead of one per chunk or per field.
    def _dirty_snapshot(self) -> dict[int, bytes]:
        # One C call copies every dirty chunk into buffers kept across commits (grown
        # when a commit has more chunks); a slice of a cffi buffer is one bytes copy.
        self._snapshot_noted = True  # C noted the chunks' page types in the hot set
        n = lib.kvn_dirty_snapshot(self._c, self._snap_indices, self._snap_out, self._snap_cap)
        if n > self._snap_cap:
            self._new_snapshot_buffers(max(n, 2 * self._snap_cap))
            n = lib.kvn_dirty_snapshot(self._c, self._snap_indices, self._snap_out, self._snap_cap)
        if n < 0:
            raise MemoryError("native VFS: out of memory for the commit's dirty snapshot")
        indices, buf = self._snap_indices, self._snap_buf
        if n == 1:  # (the usual small commit: no comprehension)
            return {indices[0]: buf[0:CHUNK_SIZE]}
        snapshot = {indices[j]: buf[j * CHUNK_SIZE:(j + 1) * CHUNK_SIZE] for j in range(n)}
        if self._snap_cap > _SNAPSHOT_KEEP_CHUNKS:  # a large commit: do not hold its size
            self._new_snapshot_buffers(_SNAPSHOT_CHUNKS)
        return snapshot

    def _new_snapshot_buffers(self, chunks: int) -> None:
        self._snap_cap = chunks
        self._snap_indices = _raw_alloc("uint32_t[]", chunks)
        self._snap_out = _raw_alloc("unsigned char[]", chunks * CHUNK_SIZE)
        self._snap_buf = ffi.buffer(self._snap_out)

    def _cache_committed(self, dirty: dict[int, bytes]) -> None:
        # C's dirty buffer still holds exactly the snapshot ``dirty`` was taken from.
        assert len(dirty) == _dirty_count(self._caddr)
        if self._cache is not None and lib.kvn_cache_put_dirty(self._c) != 0:
            raise MemoryError("native VFS: out of memory for the chunk cache")

    def _preload_committed(self, puts: list[tuple[bytes, bytes]]) -> None:
        # The Python map learns the values; C's mirror takes the chunks from the dirty
        # buffer in one call (no listener round per chunk: _preload_changed would forget,
        # look up, cover and copy each one through Python).
        self.preload.update_many(puts, mirrored_by=self._listener)
        if lib.kvn_preload_put_dirty(self._c) != 0:
            raise MemoryError("native VFS: out of memory for the preload")

    def _reset_after_commit(self) -> None:
        lib.kvn_commit_done(self._c)

    def _size_from_header(self) -> int | None:
        ptr = lib.kvn_dirty_ptr(self._c, 0)
        return None if ptr == ffi.NULL else self._declared_size(ffi.buffer(ptr, _HEADER_BYTES)[:])

    # ----------------------------------------------------- preload mirroring
    def _first_index(self, bound: bytes | None) -> int:
        """Smallest chunk index whose key is ``>= bound`` (``_INDEX_END`` if none)."""
        prefix = self._chunk_prefix
        if bound is None:
            return _INDEX_END
        if bound <= prefix:
            return 0
        if not bound.startswith(prefix):
            return _INDEX_END  # bound is past every key with this prefix
        rest = bound[len(prefix):]
        if len(rest) <= 4:
            return int.from_bytes(rest.ljust(4, b"\x00"), "big")
        return min(int.from_bytes(rest[:4], "big") + 1, _INDEX_END)

    def _preload_changed(self, start: bytes, end: bytes | None) -> None:
        """Re-mirror the preload's chunk entries with keys in ``[start, end)``."""
        if end is not None and end <= self._chunk_prefix:
            return  # every key in the range sorts before the chunk keys (a commit's meta)
        lo, hi = self._first_index(start), self._first_index(end)
        if lo >= hi:
            return
        c = self._c
        lib.kvn_preload_forget_range(c, lo, hi)
        if hi == lo + 1:  # one key (a commit's write-through): no scan of the map
            found = self.preload.lookup(chunk_key(self._tag, lo))
            if found is not NOT_LOADED and (not isinstance(found, bytes) or len(found) == CHUNK_SIZE):
                lib.kvn_preload_cover(c, lo, hi)
                if isinstance(found, bytes):
                    lib.kvn_preload_put(c, lo, found, len(found))
            return
        for r in self.preload.covered_ranges():
            a = max(self._first_index(r.start), lo)
            b = min(self._first_index(r.end), hi)
            if a < b:
                lib.kvn_preload_cover(c, a, b)
        key_end = chunk_key(self._tag, hi) if hi < _INDEX_END else SQLITE_PREFIX + bytes([_CHUNK_SUBSPACE, 1])
        for key, value in self.preload.items(chunk_key(self._tag, lo), key_end):
            index = chunk_index(key)
            if len(value) == CHUNK_SIZE:
                lib.kvn_preload_put(c, index, value, len(value))
            else:  # not mirrored: C reads it live, and the read checks it (KVFile._read_chunks)
                lib.kvn_preload_forget_range(c, index, index + 1)

    # -------------------------------------------------- work C asks Python for
    def native_fetch(self, n: int, indices: Any, staged: Any, out: Any) -> None:
        """Read ``n`` chunks in ONE KV call into ``out`` (KVFile._fetch's KV part):
        checked, padded, read through a pending large commit, as the Python VFS does."""
        values = self._read_chunks([indices[j] for j in range(n)], [bool(staged[j]) for j in range(n)])
        ffi.memmove(out, b"".join(values), n * CHUNK_SIZE)

    def native_file_control(self, op: int, name: str | None, value: str | None) -> tuple[int, str]:
        """``(0 not handled | 1 handled | 2 refused | 3 answered, message)`` for an
        xFileControl (3: a PRAGMA whose result row is ``message``)."""
        if op == apsw.SQLITE_FCNTL_PRAGMA:
            assert name is not None
            answer = pragmas.answer(name, value)
            if answer is not None:
                return 3, answer
            message = pragmas.refusal(name, value, shared=self._share is not None)
            return (0, "") if message is None else (2, message)
        if op == apsw.SQLITE_FCNTL_COMMIT_PHASETWO and self._tail_from is not None:
            self._drop_tail()
            if not self._has_pending_changes():
                return 1, ""
        if op == apsw.SQLITE_FCNTL_COMMIT_PHASETWO and self._has_pending_changes():
            log.warning("changes after the commit's sync; committing them separately")
            try:
                self.commit()
            except apsw.Error as exc:
                log.error("post-sync commit failed; will re-read the KV: %s", exc)
            return 1, ""
        return 0, ""

    def native_close(self) -> None:
        self.preload.remove_listener(self._listener)
        try:
            self.xClose()
        finally:
            _open_files.discard(self)

    def fail(self, exc: BaseException, code: int) -> int:
        """Hand ``exc`` to C to re-raise after SQLite unwinds; returns the SQLite code."""
        if is_interrupt(exc):  # an I/O error for SQLite, still the interrupt for the caller
            exc = as_io_error(exc, code, "native VFS's call into Python")
        elif not isinstance(exc, apsw.Error):
            wrapped = sqlite_error(code, f"actor-db native VFS: {type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        code = int(getattr(exc, "extendedresult", 0) or getattr(exc, "result", 0) or code)
        # id() is the object's address in CPython (apsw is CPython-only); C takes a reference.
        lib.kvn_set_error(self._c, ffi.cast("void *", id(exc)))
        return code


_open_files: set[NativeFile] = set()
"""Open files (keeps each NativeFile and the handle C holds alive until xClose)."""

_opener: Callable[[int, Any], NativeFile] | None = None
"""Set by :mod:`native.registry`: builds the NativeFile for a bound serial."""


def set_opener(opener: Callable[[int, Any], NativeFile]) -> None:
    global _opener
    _opener = opener


# --------------------------------------------------------- extern "Python" hooks
_Hook = TypeVar("_Hook", bound=Callable[..., int])


def _extern(error: int) -> Callable[[_Hook], _Hook]:
    """``ffi.def_extern``, typed: ``error`` is returned to C if the hook itself raises
    (it never should: each hook catches everything and reports it through ``fail``;
    only a signal handler's exception landing before the hook's ``try`` gets here)."""
    return cast(Callable[[_Hook], _Hook], ffi.def_extern(error=error, onerror=_hook_escaped))


def _hook_escaped(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """cffi's ``onerror``: the hook's call fails with its ``error`` code (SQLite sees an
    I/O error and rolls back), logged here instead of cffi's raw traceback on stderr
    (a Ctrl-C's ``KeyboardInterrupt`` can land between a hook's entry and its ``try``)."""
    log.warning("a native VFS call was ended by %s (%s): it failed with an I/O error", exc_type.__name__, exc)


@_extern(apsw.SQLITE_CANTOPEN)
def kvn_py_open(serial: int, cfile: Any) -> int:
    try:
        assert _opener is not None, "native.registry did not install the opener"
        file = _opener(serial, cfile)
    except BaseException as exc:
        if not isinstance(exc, apsw.Error):
            wrapped = sqlite_error(apsw.SQLITE_CANTOPEN, f"actor-db native VFS: {type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        lib.kvn_set_error(cfile, ffi.cast("void *", id(exc)))
        return int(getattr(exc, "extendedresult", 0) or apsw.SQLITE_CANTOPEN)
    _open_files.add(file)
    return 0


def _guarded(handle: Any, code: int, call: Callable[[NativeFile], object]) -> int:
    """Run one C->Python hook: 0 on success, else the error is parked for C (``fail``)."""
    file: NativeFile = ffi.from_handle(handle)
    try:
        call(file)
        return 0
    except BaseException as exc:
        return file.fail(exc, code)


@_extern(apsw.SQLITE_IOERR)
def kvn_py_ensure_ready(handle: Any) -> int:
    return _guarded(handle, apsw.SQLITE_IOERR_READ, lambda f: f._ensure_ready())


@_extern(apsw.SQLITE_IOERR_READ)
def kvn_py_fetch(handle: Any, n: int, indices: Any, staged: Any, out: Any) -> int:
    return _guarded(handle, apsw.SQLITE_IOERR_READ, lambda f: f.native_fetch(n, indices, staged, out))


@_extern(apsw.SQLITE_IOERR_WRITE)
def kvn_py_spill(handle: Any) -> int:
    return _guarded(handle, apsw.SQLITE_IOERR_WRITE, lambda f: f._spill())


@_extern(apsw.SQLITE_IOERR_FSYNC)
def kvn_py_sync(handle: Any, flags: int) -> int:
    return _guarded(handle, apsw.SQLITE_IOERR_FSYNC, lambda f: f.xSync(flags))


@_extern(apsw.SQLITE_IOERR_TRUNCATE)
def kvn_py_truncate(handle: Any, size: int) -> int:
    return _guarded(handle, apsw.SQLITE_IOERR_TRUNCATE, lambda f: f.xTruncate(size))


@_extern(apsw.SQLITE_IOERR_CLOSE)
def kvn_py_close(handle: Any) -> int:
    file: NativeFile = ffi.from_handle(handle)
    try:
        file.native_close()
        return 0
    except BaseException as exc:
        # SQLite ignores xClose's result; the failure must still be visible.
        log.error("actor-db native VFS: closing the database failed: %s", exc)
        return int(apsw.SQLITE_IOERR_CLOSE)


@_extern(apsw.SQLITE_IOERR_LOCK)
def kvn_py_lock(handle: Any, op: int, level: int, out: Any) -> int:
    file: NativeFile = ffi.from_handle(handle)
    try:
        if op == 0:
            file.xLock(level)
        elif op == 1:
            file.xUnlock(level)
        else:
            out[0] = int(file.xCheckReservedLock())
        return 0
    except apsw.BusyError:
        return int(apsw.SQLITE_BUSY)  # not an error to raise: SQLite's busy handler retries
    except BaseException as exc:
        return file.fail(exc, apsw.SQLITE_IOERR_LOCK if op == 0 else apsw.SQLITE_IOERR_UNLOCK)


@_extern(0)
def kvn_py_file_control(handle: Any, op: int, name: Any, value: Any, msg: Any, msglen: int) -> int:
    file: NativeFile = ffi.from_handle(handle)
    try:
        result, message = file.native_file_control(
            op,
            None if name == ffi.NULL else ffi.string(name).decode("utf-8", "replace"),
            None if value == ffi.NULL else ffi.string(value).decode("utf-8", "replace"),
        )
    except BaseException as exc:  # a bug in the guard: refuse rather than crash
        result, message = 2, f"actor-db native VFS: {type(exc).__name__}: {exc}"
    if result in (2, 3):
        raw = message.encode("utf-8")[: msglen - 1]
        ffi.memmove(msg, raw + b"\x00", len(raw) + 1)
    return result
