"""Registration of the C VFS in apsw's SQLite, and the bindings ``xOpen`` picks up.

The same shape as :mod:`vfs.kvvfs` (``ensure_registered``, ``bind``, ``unbind``,
``VFS_NAME``), so :func:`vfs.connect` drives either VFS the same way. The one-open-per-
actor registry is :mod:`vfs.kvvfs`'s (:func:`~vfs.kvvfs.claim`/``release``), shared by both
VFSes: an actor open on one cannot be opened on the other in the same process.

Registration: apsw links SQLite statically and exports none of its symbols, so the C
module is loaded as an SQLite extension on a throwaway apsw connection; its entry point
registers the VFS in apsw's SQLite and stays loaded (``SQLITE_OK_LOAD_PERMANENTLY``).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import apsw

from vfs import kvvfs
from vfs.errors import sqlite_error

from native import _kvvfs  # type: ignore[attr-defined]
from native.file import NativeFile, NativeStats, set_opener

__all__ = ["VFS_NAME", "ensure_registered", "bind", "unbind"]

ffi, lib = _kvvfs.ffi, _kvvfs.lib

VFS_NAME: str = ffi.string(lib.kvn_vfs_name()).decode()
"""Name of the C VFS in apsw's SQLite (``actor-db-native``)."""
_PREFIX: str = ffi.string(lib.kvn_prefix()).decode()
ENTRY_POINT: str = ffi.string(lib.kvn_entry_point()).decode()

_lock = threading.Lock()
_serial = itertools.count(1)
_bindings: dict[int, tuple[str, kvvfs.Binding]] = {}
_registered = False


def ensure_registered() -> str:
    """Load the C module into apsw's SQLite once per process; returns :data:`VFS_NAME`.

    :raises apsw.Error: the library refused the extension (e.g. an older SQLite).
    """
    global _registered
    with _lock:
        if not _registered:
            loader = apsw.Connection(":memory:")
            try:
                loader.enable_load_extension(True)
                loader.load_extension(_kvvfs.__file__, ENTRY_POINT)
            finally:
                loader.close()
            _registered = VFS_NAME in apsw.vfs_names()
            if not _registered:
                raise apsw.CantOpenError(f"actor-db: loading {_kvvfs.__file__} did not register {VFS_NAME}")
    return VFS_NAME


def bind(name: str, binding: kvvfs.Binding) -> str:
    """Register ``binding`` under a new unique file name for the C ``xOpen``.

    Replaces ``binding.stats`` with a :class:`~native.file.NativeStats` (counters in C).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64]
    binding.stats = NativeStats()
    with _lock:
        serial = next(_serial)
        filename = f"{_PREFIX}{serial}:{safe}"
        _bindings[serial] = (filename, binding)
    return filename


def unbind(filename: str) -> None:
    serial = int(filename[len(_PREFIX):].split(":", 1)[0])
    with _lock:
        _bindings.pop(serial, None)


def _open(serial: int, cfile: Any) -> NativeFile:
    """Build the file for ``xOpen`` of bound ``serial`` (called from C)."""
    with _lock:
        entry = _bindings.get(serial)
    if entry is None:
        raise sqlite_error(
            apsw.SQLITE_CANTOPEN,
            "actor-db: no KV is bound to this file name; open KV-backed databases with vfs.connect()",
        )
    filename, binding = entry
    assert isinstance(binding.stats, NativeStats)
    file = NativeFile(binding.kv, binding.preload, binding.options, binding.stats, cfile,
                      on_close=binding.on_close, share=binding.share, seen_generation=binding.seen_generation)
    binding.file = file
    return file


set_opener(_open)
