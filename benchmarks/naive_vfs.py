"""The naive KV VFS baseline: the before-picture of preloading and batched commits.

What a straightforward port of a file to a KV looks like, and what RivetKit's SQLite
VFS did before its preload and batch-atomic work:

- every page read is one KV ``get`` per chunk it touches (no preload, no chunk cache,
  no read-ahead: only SQLite's own page cache sits above it);
- every page write is one KV ``put`` per chunk (a write that covers part of a chunk
  first reads the chunk: one more ``get``);
- SQLite runs with its defaults (``journal_mode=DELETE``, ``synchronous=FULL``,
  ``locking_mode=NORMAL``), so a commit writes the rollback journal to the KV, syncs,
  writes the pages, and deletes the journal; each transaction checks for a hot journal
  (``xAccess``: one ``get``) and re-reads the database header's change counter;
- the file size is read from the meta once at open and kept in memory; a sync or a
  truncate that changed it writes the meta (one ``put``).

It stores files in the same on-KV format as :mod:`vfs` (:mod:`vfs.keys`: chunk keys
and meta records, the journal under file tag 1), so it opens the very same actor data
as the real VFS. Left out on purpose: locking (one process, one connection per actor),
crash safety beyond what SQLite's journal gives, any batching.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any

import apsw

from vfs.keys import CHUNK_SIZE, FILE_JOURNAL, FILE_MAIN, chunk_key, chunk_range, decode_meta, encode_meta, meta_key
from vfs.protocol import KV, WriteBatch

log = logging.getLogger(__name__)

__all__ = ["NAIVE_VFS_NAME", "NaiveKVVFS", "NaiveFile", "connect"]

NAIVE_VFS_NAME = "naive-kv"
_PREFIX = "naive-kv:"
_JOURNAL_SUFFIX = "-journal"

_lock = threading.Lock()
_serial = itertools.count(1)
_bindings: dict[str, KV] = {}
_registered: NaiveKVVFS | None = None


class NaiveFile:
    """One file (main database or its journal) as chunks in the KV; no caching.

    :ivar size: the file size in bytes (read from the meta at open, then tracked).
    """

    def __init__(self, kv: KV, tag: int) -> None:
        self.kv = kv
        self.tag = tag
        raw = kv.get_many([meta_key(tag)])[0]
        self.size = 0 if raw is None else decode_meta(raw)
        self._meta_size = self.size

    def _get(self, index: int) -> bytes:
        value = self.kv.get_many([chunk_key(self.tag, index)])[0]
        return value if value is not None else bytes(CHUNK_SIZE)

    def xRead(self, amount: int, offset: int) -> bytes:
        end = min(offset + amount, self.size)
        out = bytearray()
        pos = offset
        while pos < end:
            index, within = divmod(pos, CHUNK_SIZE)
            take = min(CHUNK_SIZE - within, end - pos)
            out += self._get(index)[within:within + take]  # one round trip per chunk
            pos += take
        return bytes(out)  # short read past the end: apsw zero-fills

    def xWrite(self, data: bytes, offset: int) -> None:
        pos, view = offset, memoryview(data)
        while view:
            index, within = divmod(pos, CHUNK_SIZE)
            take = min(CHUNK_SIZE - within, len(view))
            if take == CHUNK_SIZE:
                chunk = bytes(view[:take])
            else:  # partial chunk: read-modify-write
                old = bytearray(self._get(index) if index * CHUNK_SIZE < self.size else bytes(CHUNK_SIZE))
                old[within:within + take] = view[:take]
                chunk = bytes(old)
            batch = WriteBatch()
            batch.put(chunk_key(self.tag, index), chunk)
            self.kv.write(batch)  # one round trip per chunk written
            view = view[take:]
            pos += take
        self.size = max(self.size, offset + len(data))

    def xTruncate(self, newsize: int) -> None:
        batch = WriteBatch()
        first = -(-newsize // CHUNK_SIZE)
        start, end = chunk_range(self.tag, first)
        batch.delete_range(start, end)
        batch.put(meta_key(self.tag), encode_meta(newsize))
        self.kv.write(batch)
        self.size = self._meta_size = newsize

    def xSync(self, flags: int) -> None:
        if self.size != self._meta_size:
            batch = WriteBatch()
            batch.put(meta_key(self.tag), encode_meta(self.size))
            self.kv.write(batch)
            self._meta_size = self.size

    def xFileSize(self) -> int:
        return self.size

    def xLock(self, level: int) -> None:
        pass

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xSectorSize(self) -> int:
        return CHUNK_SIZE

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xClose(self) -> None:
        pass


def _split(filename: str) -> tuple[str, int]:
    if filename.endswith(_JOURNAL_SUFFIX):
        return filename[: -len(_JOURNAL_SUFFIX)], FILE_JOURNAL
    return filename, FILE_MAIN


class NaiveKVVFS(apsw.VFS):
    """The baseline VFS (registered once per process under :data:`NAIVE_VFS_NAME`)."""

    def __init__(self) -> None:
        super().__init__(NAIVE_VFS_NAME, base="")

    def _kv(self, filename: str) -> tuple[KV | None, int]:
        main, tag = _split(filename)
        with _lock:
            return _bindings.get(main), tag

    def xOpen(self, name: Any, flags: list[int]) -> Any:
        filename = name.filename() if isinstance(name, apsw.URIFilename) else name
        if not (isinstance(filename, str) and filename.startswith(_PREFIX)):
            return super().xOpen(name, flags)
        kv, tag = self._kv(filename)
        if kv is None:
            raise apsw.CantOpenError(f"naive-kv: no KV bound to {filename}")
        flags[1] = flags[0]
        return NaiveFile(kv, tag)

    def xAccess(self, pathname: str, flags: int) -> bool:
        if not pathname.startswith(_PREFIX):
            return bool(super().xAccess(pathname, flags))
        kv, tag = self._kv(pathname)
        if kv is None:
            return False
        if tag == FILE_MAIN:
            return True
        return kv.get_many([meta_key(tag)])[0] is not None  # the hot-journal check: one get

    def xDelete(self, filename: str, syncdir: bool) -> None:
        if not filename.startswith(_PREFIX):
            super().xDelete(filename, syncdir)
            return
        kv, tag = self._kv(filename)
        if kv is None:
            return
        batch = WriteBatch()
        batch.delete(meta_key(tag))
        batch.delete_range(*chunk_range(tag))
        kv.write(batch)

    def xFullPathname(self, name: str) -> str:
        return name if name.startswith(_PREFIX) else str(super().xFullPathname(name))


def connect(kv: KV, label: str = "naive") -> apsw.Connection:
    """Open the database stored in ``kv`` through the naive baseline VFS.

    The binding lasts as long as the process (the baseline is for benchmarks only).

    :param kv: an actor-scoped KV view (the same data :func:`vfs.connect` reads).
    :param label: part of the SQLite file name, for diagnostics.
    """
    global _registered
    with _lock:
        if _registered is None:
            _registered = NaiveKVVFS()
        filename = f"{_PREFIX}{next(_serial)}:{label}"
        _bindings[filename] = kv
    con = apsw.Connection(filename, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE, vfs=NAIVE_VFS_NAME)
    con.execute("PRAGMA page_size=4096")  # for a new database; a no-op on an existing one
    return con
