"""pytest plugin: Datasette's tests with ``sqlite3`` replaced by :mod:`actor_db.dbapi`.

Loaded by ``tests/run_datasette_suite.py --target actor_db`` as ``-p datasette_shim``
(with this directory on ``PYTHONPATH``, so that it loads before Datasette is imported,
in the main process and in every xdist worker). At import it puts :mod:`actor_db.dbapi`
in ``sys.modules`` as ``sqlite3`` and installs a router (:func:`actor_db.dbapi.set_router`)
that sends the databases the tests open to actors of one KV store per process
(``$DATASETTE_SHIM_DRIVER``: ``memory``, the default, or ``lmdb`` in a temporary
directory), so that ``sqlite3.connect(path)`` opens the KV database of that path:

- a path (or the path of a ``file:`` URI) in an existing directory → the actor
  ``file:<absolute path>``; when the file does not exist, the actor's keys are deleted
  first (unless a connection has it open: the file was unlinked, a new database starts)
  and, for a read-write open, an empty marker file is created so that Datasette's
  ``os.path.exists`` / ``click.Path(exists=True)`` checks hold. A read-only open
  (``mode=ro``, ``immutable=1``) creates nothing: a missing database raises
  ``unable to open database file``, as with the stdlib;
- a file that exists and is not empty was written by something else (a copy, a file the
  tests bring): plain SQLite, as with the stdlib;
- ``":memory:"`` → a fresh actor per connection (memory databases are private);
- ``mode=memory`` URIs (Datasette's shared in-memory databases, ``_internal``), ``vfs=``
  URIs, directories and paths in missing directories → plain SQLite.

Invariant: the same path always maps to the same actor within one process; nothing in
this module changes how the drop-in itself behaves.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import actor_db.dbapi as dbapi
from actor_db.dbapi.routing import _parse_uri
from actor_db.kv import LmdbKV, MemoryKV

log = logging.getLogger(__name__)

_TRUE = {"1", "yes", "true", "on"}


def _is_open(view: Any) -> bool:
    import vfs.kvvfs

    return bool(vfs.kvvfs.is_open(view.identity))


class PathRouter:
    """Maps the names Datasette's tests open to actors of one store (module docstring)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.serial = itertools.count(1)
        self.kv_opens = 0

    def __call__(self, name: str) -> Any:
        readonly = False
        parsed = _parse_uri(name)
        path = name
        if parsed is not None:
            path, params = parsed
            if params.get("mode") == "memory" or "vfs" in params or path in ("", ":memory:"):
                return None
            readonly = params.get("mode") == "ro" or params.get("immutable", "").lower() in _TRUE
        if path == ":memory:":
            self.kv_opens += 1
            return self.store.actor(f"memory-{next(self.serial)}")
        if not path:
            return None
        path = os.path.abspath(path)
        if os.path.isdir(path) or not os.path.isdir(os.path.dirname(path)):
            return None
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return None  # a real SQLite file (or not a database at all): the stdlib's behaviour
        view = self.store.actor("file:" + path)
        if not os.path.exists(path):
            if not _is_open(view):
                view.delete_all()
            if not readonly:
                open(path, "wb").close()
        self.kv_opens += 1
        return view


def _store() -> Any:
    driver = os.environ.get("DATASETTE_SHIM_DRIVER", "memory")
    if driver == "memory":
        return MemoryKV()
    if driver == "lmdb":
        directory = tempfile.mkdtemp(prefix="datasette-shim-lmdb-")
        store = LmdbKV(os.path.join(directory, "store"))

        def _cleanup() -> None:
            store.close()
            shutil.rmtree(directory, ignore_errors=True)

        atexit.register(_cleanup)
        return store
    raise ValueError(f"DATASETTE_SHIM_DRIVER must be memory or lmdb, not {driver!r}")


ROUTER = PathRouter(_store())
dbapi.set_router(ROUTER)
sys.modules["sqlite3"] = dbapi  # type: ignore[assignment]
log.debug("sqlite3 is actor_db.dbapi for this run (driver %s)", os.environ.get("DATASETTE_SHIM_DRIVER", "memory"))


def pytest_report_header(config: Any) -> str:
    """One header line saying which sqlite3 the tests get."""
    return f"sqlite3 = actor_db.dbapi (KV-backed, {type(ROUTER.store).__name__})"
