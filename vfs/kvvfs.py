"""The apsw VFS that routes actor databases to :class:`vfs.file.KVFile`.

One VFS named :data:`VFS_NAME` is registered per process. :func:`vfs.connect` binds a
KV view to a fresh, unique file name (:func:`bind`) just before opening it; ``xOpen``
picks that binding up. Anything else SQLite opens through this VFS (temporary files,
which ``temp_store=MEMORY`` mostly avoids) goes to the default VFS.

Invariant: an actor database opened with ``locking="exclusive"`` has exactly one open
file in this process (:func:`claim`): two such pagers would each believe they own the
file (``locking_mode=EXCLUSIVE``) and overwrite each other's commits, so a second open
is refused. Opens with another ``locking`` share a :class:`vfs.locks.DatabaseShare`
(SQLite's file locks and a commit log) instead.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Hashable

import apsw

from vfs import interrupts, locks
from vfs.errors import sqlite_error
from vfs.file import FileOptions, KVFile
from vfs.preload import PreloadMap
from vfs.protocol import KV
from vfs.stats import VFSStats

__all__ = ["VFS_NAME", "KVVFS", "Binding", "bind", "claim", "release", "ensure_registered"]

VFS_NAME = "actor-db"
_PREFIX = "actor-db:"


@dataclass
class Binding:
    """What ``xOpen`` needs to open one KV-backed main database."""

    kv: KV
    preload: PreloadMap
    options: FileOptions
    stats: VFSStats = field(default_factory=VFSStats)
    file: KVFile | None = None
    share: locks.DatabaseShare | None = None
    seen_generation: int = 0
    """The share's generation before the preload was read (see :func:`vfs.connect`)."""
    on_close: Any = None
    """Called once when SQLite closes the file (releases the open's claim)."""


_lock = threading.Lock()
_serial = itertools.count(1)
_bindings: dict[str, Binding] = {}
_open: dict[Hashable, str] = {}


def bind(name: str, binding: Binding) -> str:
    """Register ``binding`` under a new unique SQLite file name and return the name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
    filename = f"{_PREFIX}{next(_serial)}:{safe}"
    with _lock:
        _bindings[filename] = binding
    return filename


def unbind(filename: str) -> None:
    with _lock:
        _bindings.pop(filename, None)


def claim(identity: Hashable, filename: str, locking: str = "exclusive") -> locks.DatabaseShare | None:
    """Mark the actor database ``identity`` open by ``filename`` (:func:`vfs.locks.claim`).

    :raises apsw.BusyError: it is already open in this process in a way that excludes
        this open (any open, for ``locking="exclusive"``).
    """
    return locks.claim(identity, filename, locking)


def release(identity: Hashable, filename: str, share: locks.DatabaseShare | None = None) -> None:
    """Undo :func:`claim`."""
    locks.release(identity, filename, share)


def is_open(identity: Hashable) -> bool:
    return locks.is_open(identity)


class KVVFS(apsw.VFS):
    """The VFS; constructing it registers it with apsw's SQLite."""

    def __init__(self) -> None:
        super().__init__(VFS_NAME, base="")

    def xOpen(self, name: Any, flags: list[int]) -> Any:
        filename = name.filename() if isinstance(name, apsw.URIFilename) else name
        if not (isinstance(filename, str) and filename.startswith(_PREFIX)):
            return super().xOpen(name, flags)
        if not flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            raise sqlite_error(
                apsw.SQLITE_CANTOPEN,
                f"actor-db: {filename} is not a main database; KV-backed databases keep "
                "their journal in memory and have no journal, WAL or shm files",
            )
        with _lock:
            binding = _bindings.get(filename)
        if binding is None:
            raise sqlite_error(
                apsw.SQLITE_CANTOPEN,
                f"actor-db: no KV is bound to {filename}; open KV-backed databases with vfs.connect()",
            )
        file = KVFile(binding.kv, binding.preload, binding.options, binding.stats,
                      on_close=binding.on_close, share=binding.share, seen_generation=binding.seen_generation)
        binding.file = file
        flags[1] = flags[0]
        interrupts.file_opened()  # SIGINT inside the file's methods becomes an I/O error
        file.sigint_scope = True
        return file

    def xSleep(self, microseconds: int) -> int:
        """SQLite's busy handler sleeps here between lock retries: sleep WITHOUT the GIL
        (apsw's inherited xSleep keeps it, starving the very thread that holds the lock)."""
        time.sleep(microseconds / 1e6)
        return microseconds

    def xAccess(self, pathname: str, flags: int) -> bool:
        if pathname.startswith(_PREFIX):
            # No journal/WAL file ever exists; the main db "exists" while bound.
            with _lock:
                return pathname in _bindings
        return bool(super().xAccess(pathname, flags))

    def xDelete(self, filename: str, syncdir: bool) -> None:
        if filename.startswith(_PREFIX):
            return
        super().xDelete(filename, syncdir)

    def xFullPathname(self, name: str) -> str:
        if name.startswith(_PREFIX):
            return name
        return str(super().xFullPathname(name))


_vfs: KVVFS | None = None


def ensure_registered() -> KVVFS:
    """Register the VFS once per process and return it."""
    global _vfs
    with _lock:
        if _vfs is None:
            _vfs = KVVFS()
        return _vfs


interrupts.register(KVVFS.xOpen, apsw.SQLITE_CANTOPEN)
interrupts.register(KVVFS.xAccess, apsw.SQLITE_IOERR_ACCESS)
