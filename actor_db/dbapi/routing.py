"""Which database a name opens (URI / KV routing, the default store).

- ``kv=`` given (a :class:`actor_db.kv.KVStore` or an actor view): the KV-backed
  database of actor ``database`` in that store.
- ``":memory:"``, ``""``, ``uri=True``, bytes/path-like objects, and strings that look
  like paths (contain ``/``, ``.`` or ``:``, or name an existing file): plain SQLite,
  exactly like the stdlib.
- any other bare name (``"orders"``, letters/digits/``-``/``_``): the KV-backed database
  of that actor in the default store (:func:`default_store`: ``$ACTOR_DB_KV`` if set,
  else LMDB in ``./.actor-db``; see :mod:`actor_db.defaults`).
- ``uri=True`` with a ``file:`` URI: plain SQLite (SQLite reads the URI), except that
  the URI's path is the actor name when ``kv=`` is given, and a path that is a bare
  name (as above, and no ``vfs=`` parameter) is that actor in the default store.
- :func:`set_router` installs a function that may send any name to an actor view
  (the CPython suite runner uses it to put every test database on a KV); it gets the
  name exactly as given (a URI included).

Read-only opens: ``mode=ro`` or ``immutable=1`` in a ``file:`` URI (with ``uri=True``) or
``readonly=True`` (see :func:`actor_db.dbapi.database._open_database`).

Shared in-memory URIs (``file:NAME?mode=memory&cache=shared``, ``file::memory:?cache=shared``)
name one database for every connection of the process in the stdlib. apsw's SQLite is
built without shared cache (``SQLITE_OMIT_SHARED_CACHE``), so such a URI opens actor
``NAME`` of a private in-process :class:`~actor_db.kv.MemoryKV` instead
(:data:`shared_memory`), emptied once its last connection has closed (before the next
open), as SQLite frees a shared-cache memory database. Its connections share it through the VFS's file locks:
readers run while a writer's transaction is open and see the last commit (SQLite's
``memdb`` VFS, the other candidate, refuses every reader while a write transaction is
open, which Datasette's internal database, whose writer leaves its transaction open
between tasks, cannot live with; the shared cache locks per table instead).
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from typing import Any, Callable

Router = Callable[[str], Any]
"""``router(name) -> actor KV view or None`` (``None``: open ``name`` as plain SQLite)."""

_router: Router | None = None
_default_store: Any = None
_registry_lock = threading.Lock()
_BARE_NAME = re.compile(r"[A-Za-z0-9_\-]+\Z")


def set_router(router: Router | None) -> Router | None:
    """Install ``router`` (consulted for every name without ``kv=``); return the old one."""
    global _router
    old, _router = _router, router
    return old


def default_store() -> Any:
    """The default KV store, opened once per process on first use.

    The rule of :mod:`actor_db.defaults` (the same for the CLI and ``Registry()``):
    ``$ACTOR_DB_KV`` if set, else LMDB in ``./.actor-db`` (``$ACTOR_DB_PATH`` is a
    deprecated alias for ``$ACTOR_DB_KV=lmdb:PATH``).
    """
    global _default_store
    with _registry_lock:
        if _default_store is None:
            from actor_db.defaults import open_default_store

            _default_store = open_default_store()
        return _default_store


def _actor_view(kv: Any, name: str) -> Any:
    """An actor view for ``kv``: a store (has ``actor``) or already a view."""
    if hasattr(kv, "actor") and callable(kv.actor):
        return kv.actor(name)
    if hasattr(kv, "get_many") and hasattr(kv, "identity"):
        return kv
    raise TypeError(f"kv must be an actor_db.kv.KVStore or an actor KV view, not {type(kv).__name__}")


def _is_bare_name(database: Any, uri: bool) -> bool:
    return (not uri and isinstance(database, str) and bool(_BARE_NAME.match(database))
            and not os.path.exists(database))


def _parse_uri(database: str) -> tuple[str, dict[str, str]] | None:
    """``(path, query parameters)`` of a ``file:`` URI (percent-decoded, like SQLite;
    the fragment dropped), or ``None`` when ``database`` is not one."""
    if not database.startswith("file:"):
        return None
    rest = database[5:].split("#", 1)[0]
    path, _, query = rest.partition("?")
    if path.startswith("//"):  # an authority: SQLite accepts "" and "localhost" only
        slash = path.find("/", 2)
        path = path[slash:] if slash >= 0 else ""
    params: dict[str, str] = {}
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            params[urllib.parse.unquote(key)] = urllib.parse.unquote(value)
    return urllib.parse.unquote(path), params


def is_true(value: str | None) -> bool:
    """A URI boolean parameter as SQLite reads it (``sqlite3_uri_boolean``): ``1``,
    ``yes``, ``true``, ``on`` (any case) or another non-zero number."""
    if value is None:
        return False
    if value.lower() in ("yes", "true", "on"):
        return True
    try:
        return int(value) != 0
    except ValueError:
        return False


def shared_memory_name(database: str) -> str | None:
    """The name of the shared in-memory database a URI opens (module docstring): its path
    for ``file:NAME?mode=memory&cache=shared`` (``:memory:`` for ``file::memory:?cache=shared``),
    or ``None`` when ``database`` is not one (no ``cache=shared``, not in memory, or a
    ``vfs=`` of its own)."""
    parsed = _parse_uri(database)
    if parsed is None:
        return None
    path, params = parsed
    if params.get("cache") != "shared" or "vfs" in params:
        return None
    if params.get("mode") != "memory" and path not in ("", ":memory:"):
        return None
    return path or ":memory:"


class SharedMemory:
    """The shared in-memory databases of this process: actors of one private
    :class:`~actor_db.kv.MemoryKV`, each emptied once its last connection has closed (the
    lifetime of a shared-cache in-memory database). Thread-safe.

    Invariants: ``counts[name]`` is the number of open connections to ``name``; a name
    that is in neither ``counts`` nor ``doomed`` has no keys in the store; a name in
    ``doomed`` (its last connection closed) is emptied before anyone opens it again.

    :meth:`release` runs when a connection closes, which may be a garbage collection at
    any allocation of any thread, also inside :meth:`acquire` or inside the store's own
    lock: so it only updates this registry (under a reentrant lock) and makes no KV call;
    :meth:`acquire`, an ordinary open, empties the doomed databases.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._store: Any = None
        self.counts: dict[str, int] = {}
        self.doomed: set[str] = set()

    def acquire(self, name: str) -> Any:
        """The actor view of ``name``, counted as one more open connection."""
        with self._lock:
            if self._store is None:
                from actor_db.kv import MemoryKV

                self._store = MemoryKV()
            while self.doomed:
                doomed = self.doomed.pop()
                if doomed not in self.counts:
                    self._store.actor(doomed).delete_all()
            self.counts[name] = self.counts.get(name, 0) + 1
            return self._store.actor(name)

    def release(self, name: str) -> None:
        """One connection to ``name`` closed; after the last one the database is doomed
        (emptied by the next :meth:`acquire`). No KV call (class docstring)."""
        with self._lock:
            left = self.counts.get(name, 0) - 1
            if left > 0:
                self.counts[name] = left
                return
            self.counts.pop(name, None)
            self.doomed.add(name)


shared_memory = SharedMemory()
"""The process's shared in-memory databases (:class:`SharedMemory`)."""


def _is_bare_uri(path: str, params: dict[str, str]) -> bool:
    """Whether a ``file:`` URI names an actor of the default store (its path is a bare
    name that is not an existing file, and it asks for no other VFS nor memory)."""
    return (bool(_BARE_NAME.match(path)) and not os.path.exists(path) and "vfs" not in params
            and params.get("mode") != "memory")
