"""``Connection`` and ``connect`` of the drop-in ``sqlite3``."""

from __future__ import annotations

import collections.abc
import logging
import os
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

import apsw

import vfs

from actor_db import walcopy

from . import cursor as _cursor
from . import finalize
from .adaptation import _NOT_GIVEN
from .blob import Blob
from .constants import SQLITE_DENY
from .attach import AttachRouting
from .database import _Database, _open_database
from .dump import _iterdump
from .errors import (DatabaseError, DataError, Error, IntegrityError, InterfaceError, InternalError,
                     NotSupportedError, OperationalError, ProgrammingError, Warning, _CallbackError, _error,
                     _report, _translate)
from .functions import _aggregate_factory, _checked_result

if TYPE_CHECKING:
    from .cursor import Cursor

log = logging.getLogger(__name__)

_PACKAGE = "actor_db.dbapi"

_ISOLATION_LEVELS = ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")


def _check_isolation_level(level: Any) -> str | None:
    if level is None:
        return None
    if not isinstance(level, str):
        raise TypeError("isolation_level must be str or None")
    if str.upper(level) not in _ISOLATION_LEVELS:
        raise ValueError("isolation_level string must be '', 'DEFERRED', 'IMMEDIATE', or 'EXCLUSIVE'")
    return level


class Statement:
    """The object the deprecated ``Connection.__call__`` returns (opaque)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Statement:
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__name__}' instances")


class Connection:
    """A DB-API 2.0 connection with the stdlib ``sqlite3.Connection`` behaviour.

    :param database: ``":memory:"``, a file path, or an actor name (see the module doc).
    :param timeout: seconds to wait for a lock another connection holds (SQLite's busy
        timeout, on files and on KV-backed databases alike).
    :param kv: a KV store (or actor view) holding the database; ``None`` decides by name.
    :param preload: a :class:`vfs.PreloadMap` for a KV-backed database (reads it covers
        cost no round trip); ignored for plain SQLite and when other connections of this
        process have the database open (it could predate their commits).
    :param vfs_options: keyword arguments for :func:`vfs.connect` (``vfs``,
        ``cache_chunks``, ``max_dirty_bytes``, ``locking``, ...; ``locking`` defaults to
        ``"cross-process"``, or ``"in-process"`` on a :class:`~actor_db.kv.MemoryKV`).
    :param readonly: open read-only (as does ``mode=ro`` in a ``file:`` URI with
        ``uri=True``); a KV-backed one reads a snapshot taken at open (see
        :mod:`actor_db.dbapi.database`).
    """

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    _db: _Database | None = None
    _initialized = False
    _closed = False

    def __init__(self, database: Any, timeout: float = 5.0, detect_types: int = 0,
                 isolation_level: str | None = "", check_same_thread: bool = True,
                 factory: Any = None, cached_statements: int = 128, uri: bool = False,
                 *, kv: Any = None, preload: vfs.PreloadMap | None = None,
                 vfs_options: collections.abc.Mapping[str, Any] | None = None, readonly: bool = False,
                 history: Any = None) -> None:
        self._initialized = False
        level = _check_isolation_level(isolation_level)
        if history is not None:
            vfs_options = {**(vfs_options or {}), "history": history}
        finalize.run_deferred()  # garbage connections first: their holds must not make this open busy
        db = _open_database(database, bool(uri), kv, float(timeout), preload, vfs_options, bool(readonly))
        if db.kv_backed:
            finalize.start_thread()
        if db.kv_backed and db.attach_routing is None:
            db.attach_routing = AttachRouting(bool(uri), kv, vfs_options, bool(readonly))
        previous = self._db
        self._db = db
        if previous is not None and previous is not db and previous.kv_backed and not self._closed:
            # Re-running __init__: like the stdlib (sqlite3_close_v2 leaves a "zombie" until
            # its statements are finalized), a cursor still reading the previous database
            # keeps reading it; the previous database is released when this connection closes.
            self.__dict__.setdefault("_retired", []).append(previous)
        self._timeout = float(timeout)
        self._detect_types = int(detect_types)
        self._isolation_level = level
        self._check_same_thread = bool(check_same_thread)
        self._thread = threading.get_ident()
        self._closed = False
        self.row_factory: Any = None
        self.text_factory: Any = str
        self._authorizer: Any = None
        self._progress: tuple[Any, int] | None = None
        self._trace: Any = None
        self._orphans: list[Any] = []
        self._initialized = True
        with db.lock:
            if db.active is None:
                db.active = self

    # -- checks -------------------------------------------------------------------------
    def _check(self, *, any_thread: bool = False) -> _Database:
        if not self._initialized or self._db is None:
            raise ProgrammingError("Base Connection.__init__ not called.")
        if self._check_same_thread and not any_thread and threading.get_ident() != self._thread:
            raise ProgrammingError(
                "SQLite objects created in a thread can only be used in that same thread. "
                f"The object was created in thread id {self._thread} and this is thread id "
                f"{threading.get_ident()}.")
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed database.")
        return self._db

    @property
    def kv_backed(self) -> bool:
        """True when the pages live in a KV store (not a file or memory)."""
        return self._check().kv_backed

    @property
    def apsw_connection(self) -> apsw.Connection:
        """The underlying apsw connection (a :class:`vfs.KVConnection` when KV-backed).

        Calling it from a thread while another thread uses this connection can freeze the
        process (see :meth:`_locked`); hold :attr:`database_lock` around such calls."""
        return self._check().raw

    @property
    def database_lock(self) -> Any:
        """The re-entrant lock every SQLite call on :attr:`apsw_connection` holds."""
        return self._check().lock

    # -- the threading rule ---------------------------------------------------------------
    # Every apsw call on the connection (and on its cursors and blobs) runs with
    # ``_Database.lock`` held: apsw enters SQLite's connection mutex for most calls while
    # holding the GIL, and a thread inside a statement holds that mutex while its VFS
    # callback (or a user function) waits for the GIL. A second thread calling apsw
    # outside the lock would then wait for the mutex with the GIL held: the whole process
    # freezes (issue 14). Waiting for the Python lock releases the GIL. The one exception
    # is ``interrupt()``, which SQLite and apsw document as safe from any thread.
    def _close_orphans(self) -> None:
        """Close apsw cursors/blobs whose facade object was garbage-collected (lock held)."""
        orphans = self.__dict__.get("_orphans")
        while orphans:
            obj = orphans.pop()
            try:
                obj.close(True) if isinstance(obj, apsw.Cursor) else obj.close()
            except Exception:  # an error of a statement nobody reads any more
                log.debug("closing an abandoned apsw object failed", exc_info=True)

    def _orphan(self, obj: Any) -> None:
        """Hand over an apsw cursor/blob whose owner is being garbage-collected, possibly
        on a thread that must not wait for the lock: closed under the lock later."""
        orphans = self.__dict__.get("_orphans")
        db = self.__dict__.get("_db")
        if orphans is None or db is None or self._closed:
            return
        lock = db.lock
        owned = getattr(lock, "_is_owned", None)
        # Close at once when no thread uses the connection (a statement left open holds
        # a read lock other connections' commits wait for); defer when the lock is busy
        # or held by this very thread (collection inside one of its callbacks).
        if not (owned is not None and owned()) and lock.acquire(blocking=False):
            try:
                orphans.append(obj)
                self._close_orphans()
            finally:
                lock.release()
        else:
            orphans.append(obj)

    # -- hooks (per connection, installed when it runs a statement) ----------------------
    def _install_hooks(self) -> None:
        """Install this connection's authorizer/progress handler (lock held)."""
        db = self._db
        assert db is not None
        raw = db.raw
        raw.authorizer = self._authorizer_wrapper() if self._authorizer is not None else None
        if self._progress is not None:
            raw.set_progress_handler(self._progress_wrapper(self._progress[0]), self._progress[1])
        else:
            raw.set_progress_handler(None)

    def _authorizer_wrapper(self) -> Callable[..., int]:
        callback = self._authorizer

        def authorizer(*args: Any) -> int:
            try:
                result = callback(*args)
            except Exception as exc:
                _report(exc, callback)
                return SQLITE_DENY
            if not isinstance(result, int) or not -2**31 <= result < 2**31:
                return SQLITE_DENY
            return int(result)
        return authorizer

    @staticmethod
    def _progress_wrapper(callback: Any) -> Callable[[], bool]:
        def progress() -> bool:
            try:
                return bool(callback())
            except Exception as exc:
                _report(exc, callback)
                return True
        return progress

    def _exec_tracer(self, descriptions: list[Any]) -> Callable[..., bool]:
        """An apsw exec tracer: records each statement's columns (before its first step,
        so a SELECT without rows still has a ``description``) and feeds the trace callback
        the expanded SQL, like the stdlib."""

        def tracer(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
            descriptions.append(cursor.get_description())
            if self._trace is not None:
                try:
                    text = cursor.expanded_sql
                except (apsw.TooBigError, apsw.NoMemError, MemoryError):
                    _report(_error(DataError, "Expanded SQL string exceeds the maximum string length"),
                            self._trace)
                    text = sql
                self._call_trace(text if text is not None else sql)
            return True
        return tracer

    def _call_trace(self, sql: str) -> None:
        try:
            self._trace(sql)
        except Exception as exc:
            _report(exc, self._trace)

    def _run_traced(self, sql: str) -> None:
        """Run BEGIN/COMMIT/ROLLBACK on the apsw connection (lock held), traced."""
        assert self._db is not None
        if self._trace is not None:
            self._call_trace(sql)
        self._db.raw.execute(sql)

    def set_authorizer(self, authorizer_callback: Any) -> None:
        """Install (``None``: remove) the authorizer ``callback(action, arg1, arg2, db, trigger)``."""
        db = self._check()
        if authorizer_callback is not None and not callable(authorizer_callback):
            raise TypeError("parameter must be callable")
        self._authorizer = authorizer_callback
        with db.lock:
            if db.active is self:
                self._install_hooks()

    def set_progress_handler(self, progress_handler: Any, n: int) -> None:
        """Call ``progress_handler()`` every ``n`` VM instructions; truthy aborts."""
        db = self._check()
        self._progress = None if progress_handler is None or n <= 0 else (progress_handler, int(n))
        with db.lock:
            if db.active is self:
                self._install_hooks()

    def set_trace_callback(self, trace_callback: Any) -> None:
        """Call ``trace_callback(sql)`` for every statement SQLite runs."""
        db = self._check()
        self._trace = trace_callback
        with db.lock:
            if db.active is self:
                self._install_hooks()

    # -- statements ----------------------------------------------------------------------
    def cursor(self, factory: Any = _NOT_GIVEN) -> Cursor:
        """A new cursor (``factory(self)`` must return a :class:`Cursor`)."""
        self._check()
        factory = _cursor.Cursor if factory is _NOT_GIVEN else factory
        if not callable(factory):
            raise TypeError("factory must be callable")
        cursor: Cursor = factory(self)
        if not issubclass(type(cursor), _cursor.Cursor):
            raise TypeError(f"factory must return a cursor, not {type(cursor).__name__}")
        if self.row_factory is not None:
            cursor.row_factory = self.row_factory
        return cursor

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Cursor:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> Cursor:
        return self.cursor().executescript(sql_script)

    def __call__(self, *args: Any) -> Statement:
        self._check()
        if len(args) != 1:
            raise TypeError(f"Connection() expected 1 argument, got {len(args)}")
        sql = args[0]
        if not isinstance(sql, str):
            raise TypeError("SQL is of wrong type. Must be string.")
        encoded = sql.encode("utf-8")  # the stdlib rejects surrogates here too
        db = self._check()
        with db.lock:
            limit = db.raw.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, -1)
        if len(encoded) > limit:
            raise _error(DataError, "query string is too large", apsw.SQLITE_TOOBIG)
        statement = object.__new__(Statement)
        statement.sql = sql  # type: ignore[attr-defined]
        return statement

    def _run(self, sql: str) -> None:
        """Run one statement with no result rows (BEGIN/COMMIT/ROLLBACK), lock held."""
        db = self._check()
        with db.lock:
            try:
                self._run_traced(sql)
            except BaseException as exc:
                raise _translate(exc) from None

    def commit(self) -> None:
        """Commit this connection's transaction (no-op when none is open)."""
        self._end_transaction("COMMIT")

    def rollback(self) -> None:
        """Roll back this connection's transaction (no-op when none is open)."""
        self._end_transaction("ROLLBACK")

    def _end_transaction(self, sql: str) -> None:
        db = self._check()
        with db.lock:
            if db.raw.in_transaction and db.owner in (None, self):
                db.enter(self)
                try:
                    self._run(sql)
                finally:
                    db.leave(self)

    def close(self) -> None:
        """Close; an open transaction of this connection is rolled back."""
        if not self._initialized or self._db is None:
            raise ProgrammingError("Base Connection.__init__ not called.")
        if self._check_same_thread and threading.get_ident() != self._thread:
            self._check()
        if self._closed:
            return
        db = self._db
        with db.lock:
            self._close_orphans()
            if db.owner is self and db.raw.in_transaction and db.refs > 1:
                try:
                    db.raw.execute("ROLLBACK")
                except apsw.Error:
                    log.exception("rollback at close failed")
            if db.owner is self:
                db.owner = None
                db.cond.notify_all()
            if db.active is self:
                db.active = None
                if db.refs > 1:
                    db.raw.authorizer = None
                    db.raw.set_progress_handler(None)
            self._closed = True
        db.release()
        self._release_retired()

    def _release_retired(self) -> None:
        """Release the databases a re-run ``__init__`` replaced (see ``__init__``)."""
        retired = self.__dict__.get("_retired")
        while retired:
            retired.pop().release()

    def __enter__(self) -> Connection:
        self._check()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.rollback()
                raise
        else:
            self.rollback()
        return False

    # -- properties ----------------------------------------------------------------------
    @property
    def isolation_level(self) -> str | None:
        self._check()
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        db = self._check()
        level = _check_isolation_level(value)
        if level is None:
            with db.lock:
                if db.raw.in_transaction and db.owner in (None, self):
                    self._run("COMMIT")
                    db.leave(self)
        self._isolation_level = level

    @property
    def in_transaction(self) -> bool:
        db = self._check()
        with db.lock:
            return bool(db.raw.in_transaction) and db.owner in (None, self)

    @property
    def total_changes(self) -> int:
        db = self._check()
        with db.lock:
            return int(db.raw.total_changes())

    # -- user functions ------------------------------------------------------------------
    def create_function(self, name: str, narg: int, func: Any, *, deterministic: bool = False) -> None:
        """Register a scalar SQL function ``name`` of ``narg`` arguments (-1: any)."""
        db = self._check()
        if not isinstance(name, str):
            raise TypeError(f"create_function() argument 'name' must be str, not {type(name).__name__}")
        if not isinstance(narg, int):
            raise TypeError("'narg' must be an integer")
        if func is None:
            wrapped = None
        else:
            def wrapped(*args: Any) -> Any:
                try:
                    return _checked_result(func(*args))
                except _CallbackError:
                    raise
                except MemoryError as exc:
                    _report(exc, func)
                    raise _CallbackError("out of memory", MemoryError) from exc
                except OverflowError as exc:
                    _report(exc, func)
                    raise _CallbackError("string or blob too big", DataError) from exc
                except Exception as exc:
                    _report(exc, func)
                    raise _CallbackError("user-defined function raised exception") from exc
        with db.lock:
            try:
                db.raw.create_scalar_function(name, wrapped, narg, deterministic=deterministic)
            except (apsw.Error, ValueError) as exc:
                raise _error(OperationalError, "Error creating function") from exc

    def create_aggregate(self, name: str, n_arg: int, aggregate_class: Any) -> None:
        """Register an aggregate: ``aggregate_class()`` with ``step(*args)`` and ``finalize()``."""
        db = self._check()
        if not isinstance(n_arg, int):
            raise TypeError("'n_arg' must be an integer")
        factory = None if aggregate_class is None else _aggregate_factory(aggregate_class, window=False)
        with db.lock:
            try:
                db.raw.create_aggregate_function(name, factory, n_arg)
            except (apsw.Error, ValueError) as exc:
                raise _error(OperationalError, "Error creating aggregate") from exc

    def create_window_function(self, name: str, num_params: int, aggregate_class: Any, /) -> None:
        """Register an aggregate window function (``step``, ``inverse``, ``value``, ``finalize``)."""
        db = self._check()
        factory = None if aggregate_class is None else _aggregate_factory(aggregate_class, window=True)
        with db.lock:
            try:
                db.raw.create_window_function(name, factory, num_params)
            except (apsw.Error, ValueError) as exc:
                raise _error(ProgrammingError, str(exc)) from exc

    def create_collation(self, name: str, callback: Any, /) -> None:
        """Register (``None``: remove) collation ``name`` ordering with ``callback(a, b)``."""
        db = self._check()
        if not isinstance(name, str):
            raise TypeError(f"create_collation() argument 1 must be str, not {type(name).__name__}")
        if callback is not None and not callable(callback):
            raise TypeError("parameter must be callable")
        wrapped = None
        if callback is not None:
            def wrapped(a: str, b: str) -> int:
                try:
                    result = callback(a, b)
                except Exception as exc:
                    _report(exc, callback)
                    return 0
                if not isinstance(result, int):
                    return 0
                return (result > 0) - (result < 0)
        with db.lock:
            try:
                db.raw.create_collation(name, wrapped)
            except apsw.Error as exc:
                raise _translate(exc) from None

    # -- the rest of the surface ---------------------------------------------------------
    def interrupt(self) -> None:
        """Abort any statement running on this connection's database.

        Deliberately NOT under the database lock: it is meant to be called from another
        thread while a statement runs (holding the lock); ``sqlite3_interrupt`` and apsw's
        ``Connection.interrupt`` are documented as safe to call from any thread."""
        self._check().raw.interrupt()

    def getlimit(self, category: int, /) -> int:
        db = self._check()
        if not 0 <= category <= 11:
            raise ProgrammingError("'category' is out of bounds")
        with db.lock:
            return int(db.raw.limit(category, -1))

    def setlimit(self, category: int, limit: int, /) -> int:
        """Set a run-time limit; return the previous value (negative ``limit``: unchanged)."""
        db = self._check()
        if not 0 <= category <= 11:
            raise ProgrammingError("'category' is out of bounds")
        with db.lock:
            return int(db.raw.limit(category, limit))

    def iterdump(self) -> Iterator[str]:
        """SQL text that recreates the database (the stdlib's ``sqlite3.dump``)."""
        self._check()
        return _iterdump(self)

    def blobopen(self, table: str, column: str, row: int, /, *, readonly: bool = False, name: str = "main") -> Blob:
        """Open the BLOB in ``table.column`` of rowid ``row`` for incremental I/O."""
        db = self._check()
        with db.lock:
            try:
                raw = db.raw.blob_open(name, table, column, row, not readonly)
            except apsw.Error as exc:
                raise _translate(exc) from None
        return Blob._make(self, raw)

    def backup(self, target: Any, *, pages: int = -1, progress: Any = None,
               name: str = "main", sleep: float = 0.250) -> None:
        """Copy database ``name`` into ``target``'s main database (``pages`` per step,
        ``progress(status, remaining, total)`` after each step, ``sleep`` seconds between
        retries of a busy step).

        ``target`` is a connection of this module or a standard-library
        ``sqlite3.Connection``. The stdlib links another SQLite library, so for one the
        pages go through a private temporary file: this database is copied into it in
        one step, then the stdlib's own ``backup`` copies it into ``target`` with
        ``pages``, ``progress`` and ``sleep`` (its progress reports those steps). To copy
        the other way, from a stdlib connection into one of ours, use
        :meth:`restore_from`.
        """
        db = self._check()
        stdlib_type = _stdlib_connection_type()
        if stdlib_type is not None and isinstance(target, stdlib_type):
            self._check_backup_args(progress)
            self._backup_to_stdlib(db, target, pages=pages, progress=progress, name=name, sleep=sleep)
            return
        if not isinstance(target, Connection):
            raise TypeError(f"backup() argument 'target' must be {_PACKAGE}.Connection or sqlite3.Connection, "
                            f"not {type(target).__name__}")
        if target is self:
            raise ValueError("target cannot be the same connection instance")
        tdb = target._check(any_thread=True)  # the stdlib checks only that the target is open
        self._check_backup_args(progress)
        first, second = sorted((db, tdb), key=id)  # one order: a.backup(b) beside b.backup(a)
        with first.lock, second.lock:
            if tdb.raw.in_transaction:
                raise _error(OperationalError, "target is in transaction", apsw.SQLITE_ERROR)
            if tdb.kv_backed and not db.kv_backed and _is_wal(db.raw, name):
                # A WAL-mode file copied as is would leave the actor unopenable (its page 1
                # says WAL): go through a private rollback-mode copy (actor_db.walcopy).
                with tempfile.TemporaryDirectory(prefix="actor-db-backup-") as tmp:
                    try:
                        path = walcopy.rollback_copy(db.raw, tmp, name)
                    except apsw.Error as exc:
                        raise _translate(exc) from None
                    scratch = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
                    try:
                        _backup_raw(tdb.raw, scratch, "main", pages, progress, sleep)
                    finally:
                        scratch.close()
                return
            _backup_raw(tdb.raw, db.raw, name, pages, progress, sleep)

    @staticmethod
    def _check_backup_args(progress: Any) -> None:
        if progress is not None and not callable(progress):
            raise TypeError("progress argument must be a callable")

    def _backup_to_stdlib(self, db: _Database, target: Any, *, pages: int, progress: Any, name: str,
                          sleep: float) -> None:
        if target.in_transaction:  # the stdlib's own check (raises ProgrammingError when closed)
            raise _error(OperationalError, "target is in transaction", apsw.SQLITE_ERROR)
        with tempfile.TemporaryDirectory(prefix="actor-db-backup-") as tmp:
            path = os.path.join(tmp, "copy.db")
            scratch = apsw.Connection(path)
            try:
                with db.lock:
                    _backup_raw(scratch, db.raw, name, -1, None, sleep)
            finally:
                scratch.close()
            source = sys.modules["_sqlite3"].Connection(path)
            try:
                source.backup(target, pages=pages, progress=progress, sleep=sleep)
            finally:
                source.close()

    def restore_from(self, source: Any, *, pages: int = -1, progress: Any = None,
                     name: str = "main", sleep: float = 0.250) -> None:
        """Replace this connection's main database with database ``name`` of ``source``:
        the mirror of :meth:`backup`, for a ``source`` that is a standard-library
        ``sqlite3.Connection`` (whose ``backup`` only takes stdlib targets) or one of
        this module's connections (then the same as ``source.backup(self, ...)``).

        A stdlib source is copied by its own ``backup`` (``pages``, ``progress``,
        ``sleep`` apply to those steps) into a private temporary file, which is then
        copied into this database in one step (on a KV-backed database: one commit).
        """
        db = self._check()
        if isinstance(source, Connection):
            source.backup(self, pages=pages, progress=progress, name=name, sleep=sleep)
            return
        stdlib_type = _stdlib_connection_type()
        if stdlib_type is None or not isinstance(source, stdlib_type):
            raise TypeError(f"restore_from() argument 'source' must be sqlite3.Connection or "
                            f"{_PACKAGE}.Connection, not {type(source).__name__}")
        self._check_backup_args(progress)
        with db.lock:
            if db.raw.in_transaction:
                raise _error(OperationalError, "target is in transaction", apsw.SQLITE_ERROR)
        with tempfile.TemporaryDirectory(prefix="actor-db-restore-") as tmp:
            path = os.path.join(tmp, "copy.db")
            copy = sys.modules["_sqlite3"].Connection(path)
            try:
                source.backup(copy, pages=pages, progress=progress, name=name, sleep=sleep)
            finally:
                copy.close()
            # A WAL-mode source's page 1 came along as is: put the copy in rollback mode,
            # else the KV-backed database could not be opened again (actor_db.walcopy).
            try:
                walcopy.convert_to_rollback(path)
            except apsw.Error as exc:
                raise _translate(exc) from None
            scratch = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
            try:
                with db.lock:
                    if db.raw.in_transaction:
                        raise _error(OperationalError, "target is in transaction", apsw.SQLITE_ERROR)
                    _backup_raw(db.raw, scratch, "main", -1, None, sleep)
            finally:
                scratch.close()

    def serialize(self, *, name: str = "main") -> bytes:
        """The database ``name`` as bytes (``b""`` when it is empty)."""
        db = self._check()
        with db.lock:
            try:
                data = db.raw.serialize(name)
            except apsw.Error as exc:
                raise _translate(exc) from None
        return b"" if data is None else bytes(data)

    def deserialize(self, data: Any, /, *, name: str = "main") -> None:
        """Replace database ``name`` with ``data`` (on a KV-backed one: copied into the KV)."""
        db = self._check()
        view = memoryview(data)
        if not view.c_contiguous:
            raise BufferError("underlying buffer is not C-contiguous")
        payload = view.tobytes()
        with db.lock:
            try:
                if not db.kv_backed or name != "main":
                    db.raw.deserialize(name, payload)
                    return
                # The KV-backed main database must stay on the VFS: load the image into a
                # private memory database and copy its pages over (one KV commit).
                scratch = apsw.Connection(":memory:")
                try:
                    scratch.deserialize("main", walcopy.rollback_image(payload))  # never WAL on the KV
                    scratch.execute("PRAGMA schema_version").fetchall()  # "file is not a database"
                    with db.raw.backup("main", scratch, "main") as backup:
                        backup.step(-1)
                finally:
                    scratch.close()
            except apsw.Error as exc:
                raise _translate(exc) from None

    def enable_load_extension(self, enable: bool, /) -> None:
        db = self._check()
        with db.lock:
            db.raw.enable_load_extension(bool(enable))

    def load_extension(self, name: str, /, *, entrypoint: str | None = None) -> None:
        db = self._check()
        with db.lock:
            try:
                db.raw.load_extension(name, entrypoint)
            except apsw.Error as exc:
                raise _translate(exc) from None

    def __del__(self) -> None:
        try:
            releases: list[Callable[[], None]] = []
            if self._initialized and not self._closed and self._db is not None and self._db.kv_backed:
                self._closed = True
                releases.append(self._db.release)
            retired = self.__dict__.get("_retired")
            while retired:
                releases.append(retired.pop().release)
            for release in releases:
                # (inside a garbage collection the thread may hold a KV driver's lock:
                # release later, outside it; actor_db.dbapi.finalize)
                finalize.defer(release) if finalize.collecting() else release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _stdlib_connection_type() -> type | None:
    """The standard library's ``sqlite3.Connection`` class, if ``_sqlite3`` is loaded
    (a stdlib connection exists only then)."""
    module = sys.modules.get("_sqlite3")
    return getattr(module, "Connection", None) if module is not None else None


def _is_wal(raw: apsw.Connection, name: str) -> bool:
    try:
        return walcopy.is_wal(raw, name)
    except apsw.Error as exc:
        raise _translate(exc) from None


def _backup_raw(target: apsw.Connection, source: apsw.Connection, name: str, pages: int, progress: Any,
                sleep: float) -> None:
    """SQLite's online backup of ``source``'s database ``name`` into ``target``'s main
    database, stepped like the stdlib (both connections' locks held by the caller)."""
    if pages == 0:
        pages = -1
    try:
        backup = target.backup("main", source, name)
    except apsw.Error as exc:
        raise _translate(exc) from None
    try:
        while True:
            try:
                done = backup.step(pages)
            except (apsw.BusyError, apsw.LockedError):
                time.sleep(sleep)
                continue
            if progress is not None:
                progress(apsw.SQLITE_DONE if done else apsw.SQLITE_OK, backup.remaining, backup.page_count)
            if done:
                break
    except apsw.Error as exc:
        raise _translate(exc) from None
    finally:
        backup.finish()


def connect(database: Any, timeout: float = 5.0, detect_types: int = 0,
            isolation_level: str | None = "", check_same_thread: bool = True,
            factory: Any = Connection, cached_statements: int = 128, uri: bool = False,
            *, kv: Any = None, preload: vfs.PreloadMap | None = None,
            vfs_options: collections.abc.Mapping[str, Any] | None = None, readonly: bool = False,
            history: Any = None) -> Any:
    """Open a database like ``sqlite3.connect``; ``kv=`` (or a bare name) makes it KV-backed.

    As in the stdlib, the arguments are passed on to ``factory`` as given.

    :param database: ``":memory:"``, a file path, or an actor name (see the module doc).
    :param kv: a :class:`actor_db.kv.KVStore` (or an actor view) to hold the database.
    :param preload: the startup :class:`vfs.PreloadMap` of a KV-backed database (e.g. one
        ``kv.preload(...)`` call, 1 round trip); its reads then cost 0 round trips.
    :param vfs_options: extra keyword arguments for :func:`vfs.connect` (``vfs``,
        ``cache_chunks``, ``max_dirty_bytes``, ``locking``, ...; see
        :mod:`actor_db.dbapi.database` for the ``locking`` default).
    :param readonly: open read-only, like ``mode=ro`` in a ``file:`` URI with
        ``uri=True``: writes raise ``OperationalError("attempt to write a readonly
        database")``. A KV-backed read-only connection has its own pager on a snapshot
        taken at open: it reads the database as committed then (later commits are not
        seen; reopen to see them) and never writes to the KV.
    :param factory: the connection class (a :class:`Connection` subclass).
    :param history: a KV-backed database's history (``docs/history.md``), as
        ``vfs.connect(history=)``: ``None`` (default) keeps recording a history the
        database has (with its stored retention), ``True`` (7 days), a ``timedelta``,
        ``HistoryOptions``, or ``False`` (drops it at the next commit).
    :raises OperationalError: the database cannot be opened (``sqlite_errorcode`` set).
    """
    raise AssertionError("replaced below")  # pragma: no cover


def _connect(*args: Any, **kwargs: Any) -> Any:
    factory = kwargs.get("factory", args[5] if len(args) > 5 else Connection)
    return factory(*args, **kwargs)


_connect.__doc__ = connect.__doc__
_connect.__name__ = _connect.__qualname__ = "connect"
setattr(_connect, "__signature__", __import__("inspect").signature(connect))
connect = _connect  # noqa: F811
