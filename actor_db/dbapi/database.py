"""The underlying SQLite connection of one drop-in ``sqlite3`` connection.

Several connections to one KV-backed database (invariant)
---------------------------------------------------------
Every :func:`~actor_db.dbapi.connect` opens its OWN apsw connection, as the stdlib does
on a file: ATTACHed databases, temp tables, PRAGMAs and functions are per connection.
They share the database through the VFS's implementation of SQLite's file locks
(:mod:`vfs.locks`, ``locking_mode=NORMAL``): any number of readers run while one writer
builds its transaction; a commit waits for readers to finish and readers wait out a
commit, each up to the connection's ``timeout`` (set as SQLite's ``busy_timeout``), then
``OperationalError("database is locked")``. A transaction sees every commit made before
it began, in this process and (``locking="cross-process"``, the default for stores other
processes can open: LMDB, Redis) in others: :mod:`vfs.lease` validates each
transaction against the KV and gives writers a KV writer lease, so no acknowledged
commit is lost. A :class:`~actor_db.kv.MemoryKV` lives in one process, so its
databases use ``locking="in-process"`` (no KV round trip for the locks). Pass
``vfs_options={"locking": ...}`` to choose.

Every apsw call on the connection runs with :attr:`_Database.lock` held, so threads
sharing one connection (``check_same_thread=False``) never wait for SQLite's connection
mutex while holding the GIL.

Read-only connections
---------------------
``readonly=True``, or ``mode=ro`` / ``immutable=1`` in a ``file:`` URI with ``uri=True``. On plain SQLite:
``SQLITE_OPEN_READONLY``. On a KV-backed database: :func:`vfs.connect` with
``readonly=True`` (it never writes to the KV, not even to recover), sharing the database
like a writable connection, so **each read transaction sees the latest commit**, as the
stdlib's read-only connections do. A database that does not exist cannot be opened
read-only (``unable to open database file``). When this process has the database open
exclusively (an awake actor's own connection), the read-only connection reads a pinned
snapshot of the actor instead (``ActorKV.snapshot``: one committed state as of the
open, its own identity, released when the connection closes). A write raises
``OperationalError("attempt to write a readonly database")`` (``SQLITE_READONLY``), as
in the stdlib. ``preload`` is ignored for it.
"""

from __future__ import annotations

import collections.abc
import logging
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable, Hashable

import apsw

import vfs

from . import routing
from .errors import OperationalError, _error, _translate
from .routing import (_actor_view, _is_bare_name, _is_bare_uri, _parse_uri, _registry_lock, default_store, is_true,
                      shared_memory, shared_memory_name)

if TYPE_CHECKING:
    from .attach import AttachRouting
    from .connection import Connection

log = logging.getLogger(__name__)


class _Database:
    """The apsw connection of one facade connection (see the module docstring).

    Invariants: every SQLite call holds :attr:`lock`; :attr:`owner` is the facade whose
    transaction is open (``None`` when ``raw.in_transaction`` is false or the
    transaction was started by a statement outside any facade, e.g. a function).
    """

    def __init__(self, raw: apsw.Connection, key: Hashable | None) -> None:
        self.raw = raw
        self.key = key
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.refs = 1
        self.owner: Connection | None = None
        self.owner_thread = 0
        self.active: Connection | None = None
        self.closed = False
        self.on_close: Callable[[], None] | None = None  # after the apsw connection closed
        self.attach_routing: AttachRouting | None = None  # KV-backed: how ATTACH maps names

    @property
    def kv_backed(self) -> bool:
        return self.key is not None

    def enter(self, con: Connection) -> None:
        """Called with :attr:`lock` held before ``con`` runs a statement."""
        if self.active is not con:
            self.active = con
            con._install_hooks()

    def leave(self, con: Connection) -> None:
        """Called with :attr:`lock` held after ``con`` ran a statement."""
        if self.closed:
            return
        if self.raw.in_transaction:
            if self.owner is None:
                self.owner = con
            if self.owner is con:
                self.owner_thread = threading.get_ident()
        elif self.owner is not None:
            self.owner = None
            self.cond.notify_all()

    def release(self) -> None:
        """Drop one reference; close the apsw connection with the last one."""
        with _registry_lock:
            self.refs -= 1
            last = self.refs <= 0
        if last:
            with self.lock:
                self.closed = True
                try:
                    self.raw.close(True)
                finally:
                    if self.on_close is not None:
                        self.on_close()


def route(database: str, uri: bool, kv: Any) -> tuple[Any, str, bool]:
    """``(actor view or None, name, read-only)`` for ``database`` as ``connect`` maps it
    (:mod:`actor_db.dbapi.routing`): ``None`` is plain SQLite; ``name`` is the actor
    name (a URI's path); read-only when a URI says ``mode=ro`` or ``immutable=1`` (SQLite
    refuses writes to an immutable database). No KV round trip."""
    name = database
    parsed = _parse_uri(database) if uri else None
    readonly = False
    if parsed is not None:
        name = parsed[0]
        readonly = parsed[1].get("mode") == "ro" or is_true(parsed[1].get("immutable"))
    view = None
    if kv is not None:
        view = _actor_view(kv, name)
    elif routing._router is not None:
        view = routing._router(database)
    if view is None and kv is None and (_is_bare_name(database, uri)
                                        or (parsed is not None and _is_bare_uri(*parsed))):
        view = default_store().actor(name)
    return view, name, readonly


def _open_database(database: Any, uri: bool, kv: Any, timeout: float, preload: vfs.PreloadMap | None = None,
                   vfs_options: collections.abc.Mapping[str, Any] | None = None,
                   readonly: bool = False) -> _Database:
    if isinstance(database, (bytes, os.PathLike)):
        database = os.fsdecode(database)
    if not isinstance(database, str):
        raise TypeError(f"expected str, bytes or os.PathLike object, not {type(database).__name__}")
    if "\0" in database:
        raise ValueError("embedded null character")
    view, name, ro = route(database, uri, kv)
    readonly = readonly or ro
    if view is None:
        flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        if uri:
            shared = shared_memory_name(database)
            if shared is not None:
                return _open_shared_memory(shared, timeout)
            flags |= apsw.SQLITE_OPEN_URI
        try:
            raw = apsw.Connection(database, flags=flags)
        except apsw.Error as exc:
            raise _translate(exc) from None
        raw.set_busy_timeout(int(timeout * 1000))
        return _Database(raw, None)
    if readonly:
        return _open_readonly(view, name, timeout, vfs_options)
    options = dict(vfs_options or {})
    options.setdefault("locking", "in-process" if getattr(view, "instant_writes", False) else "cross-process")
    options.setdefault("timeout", timeout)
    try:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | (apsw.SQLITE_OPEN_URI if uri else 0)
        raw = vfs.connect(view, database or "main.db", preload=preload, flags=flags, **options)
    except apsw.BusyError as exc:
        raise _error(OperationalError, f"database is locked: {exc}", apsw.SQLITE_BUSY) from exc
    except apsw.Error as exc:
        raise _translate(exc) from exc
    raw.set_busy_timeout(int(timeout * 1000))
    log.debug("opened KV-backed database %r (%r, locking=%s)", database, view.identity, options["locking"])
    return _Database(raw, view.identity)


def _open_shared_memory(name: str, timeout: float) -> _Database:
    """A shared in-memory database (:mod:`actor_db.dbapi.routing`): actor ``name`` of the
    process's private store, released (and deleted with its last connection) on close."""
    view = shared_memory.acquire(name)
    try:
        raw = vfs.connect(view, "main.db", locking="in-process", timeout=timeout)
    except BaseException as exc:
        shared_memory.release(name)
        if isinstance(exc, apsw.Error):
            raise _translate(exc) from exc
        raise
    raw.set_busy_timeout(int(timeout * 1000))
    db = _Database(raw, view.identity)
    db.on_close = lambda: shared_memory.release(name)
    return db


def _open_readonly(view: Any, name: str, timeout: float,
                   vfs_options: collections.abc.Mapping[str, Any] | None) -> _Database:
    """A read-only KV-backed database (see the module docstring): shared like a writable
    one, so each read transaction sees the latest commit; a pinned snapshot when the
    database is open exclusively in this process (an awake actor's own connection).

    :raises OperationalError: ``unable to open database file`` when no database is stored
        under ``view`` (the stdlib's answer for a missing file opened read-only).
    """
    options = {k: v for k, v in (vfs_options or {}).items() if k != "history"}  # a reader records nothing
    options.setdefault("locking", "in-process" if getattr(view, "instant_writes", False) else "cross-process")
    options.setdefault("timeout", timeout)
    try:
        raw = vfs.connect(view, name or "main.db", readonly=True, **options)
    except apsw.BusyError:
        return _open_snapshot(view, name, vfs_options)
    except apsw.Error as exc:
        raise _translate(exc) from exc
    if raw.kv_file.committed_size == 0:
        raw.close()
        raise _error(OperationalError, "unable to open database file", apsw.SQLITE_CANTOPEN)
    raw.set_busy_timeout(int(timeout * 1000))
    log.debug("opened KV-backed database %r read-only (%r, locking=%s)", name, view.identity, options["locking"])
    return _Database(raw, view.identity)


def _open_snapshot(view: Any, name: str, vfs_options: collections.abc.Mapping[str, Any] | None) -> _Database:
    """A read-only database of its own on a pinned snapshot of ``view`` (one committed
    state, as of the open): for a database this process has open exclusively."""
    from actor_db.kv.base import ActorKV
    from actor_db.kv.snapshot import read_snapshot

    snapshot = None
    target = view
    if isinstance(view, ActorKV):
        try:
            snapshot = read_snapshot(view, pinned=True)
        except Exception as exc:
            raise _error(OperationalError, f"unable to open database file: {exc}", apsw.SQLITE_CANTOPEN) from exc
        target = snapshot
    options = {k: v for k, v in (vfs_options or {}).items() if k not in ("locking", "timeout", "history")}
    try:
        raw = vfs.connect(target, name or "main.db", readonly=True, **options)
    except BaseException as exc:
        if snapshot is not None:
            snapshot.close()
        if isinstance(exc, apsw.BusyError):
            raise _error(OperationalError, f"database is locked: {exc}", apsw.SQLITE_BUSY) from exc
        if isinstance(exc, apsw.Error):
            raise _translate(exc) from exc
        raise
    db = _Database(raw, target.identity)
    if snapshot is not None:
        db.on_close = snapshot.close
    log.debug("opened KV-backed database %r read-only on a snapshot (%r)", name, target.identity)
    return db


def enable_shared_cache(enable: int) -> None:
    """Deprecated in SQLite; kept for compatibility (warns, like the stdlib)."""
    warnings.warn("enable_shared_cache is deprecated and will be removed in Python 3.12. "
                  "Shared cache is strongly discouraged by the SQLite 3 documentation. "
                  "If shared cache must be used, open the database in URI mode using the "
                  "cache=shared query parameter.", DeprecationWarning, stacklevel=2)
    try:
        apsw.enable_shared_cache(bool(enable))
    except Exception:  # apsw's SQLite may be built without shared cache: nothing to enable
        log.debug("shared cache is not available in apsw's SQLite")


def orphan_raw_of(owner: Any) -> None:
    """``__del__`` of a cursor or blob: hand its apsw object (``owner._raw``) to its
    connection (``owner._connection``), which closes it under the database lock: garbage
    collection may run on any thread, also one that must not wait for that lock."""
    raw = owner.__dict__.get("_raw")
    if raw is None:
        return
    owner._raw = None
    connection = owner.__dict__.get("_connection")
    try:
        if connection is not None:
            connection._orphan(raw)
    except Exception:  # pragma: no cover - interpreter shutdown
        pass
