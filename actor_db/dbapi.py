"""Drop-in ``sqlite3``: ``import actor_db.dbapi as sqlite3`` over KV-backed pages.

Usage::

    import actor_db.dbapi as sqlite3
    from actor_db.kv import LmdbKV

    con = sqlite3.connect("orders", kv=LmdbKV("./data"))   # kv optional: default store
    con.row_factory = sqlite3.Row
    with con:
        con.execute("INSERT INTO t VALUES (?)", (1,))

``actor_db.connect`` is this module's :func:`connect`.

Route chosen: a facade over ``apsw.Connection``
-----------------------------------------------
The standard library's ``_sqlite3`` links the system ``libsqlite3.so.0`` (3.40.1 here)
and cannot register a VFS from Python. Running the real ``sqlite3`` module on KV pages
would need a C shim (a cffi module ``dlopen``-ing that library and calling
``sqlite3_vfs_register`` with callbacks into :class:`vfs.file.KVFile`) — a second SQLite
library in the process next to apsw's 3.54.1 (a C extension binds to ONE SQLite library
through its API table; two libraries in one process keep separate global state and
locks, and SQLite warns that two copies opening one file can corrupt it), a native
build, and it would still need a fallback
on Pythons whose SQLite is linked statically. This module instead re-implements the
``sqlite3`` semantics in Python over the same apsw connection :func:`vfs.connect`
returns: one SQLite library (apsw's), no native code, portable to every Python apsw
supports. What it re-implements: implicit ``BEGIN`` before INSERT/UPDATE/DELETE/REPLACE
(``isolation_level``), ``commit``/``rollback``/context manager, parameter binding rules
and adapters (``register_adapter``, ``__conform__``), converters (``PARSE_DECLTYPES``,
``PARSE_COLNAMES``), ``text_factory``, ``Row``, ``Blob``, ``rowcount``/``lastrowid``/
``description``, callback error reporting, and the exception mapping CPython uses
(primary result code to class, ``sqlite_errorcode``/``sqlite_errorname`` set).

The exception classes are the standard library's own (``sqlite3.Error`` and friends),
so ``except sqlite3.OperationalError`` works whichever module raised. When the stdlib
``sqlite3`` cannot be imported (no ``_sqlite3``), one warning is logged and this module
defines the same hierarchy itself; nothing else depends on the stdlib SQLite.
``iterdump`` reuses the stdlib's pure-Python ``sqlite3/dump.py`` loaded by path.

Which database a name opens
---------------------------
- ``kv=`` given (a :class:`actor_db.kv.KVStore` or an actor view): the KV-backed
  database of actor ``database`` in that store.
- ``":memory:"``, ``""``, ``uri=True``, bytes/path-like objects, and strings that look
  like paths (contain ``/``, ``.`` or ``:``, or name an existing file): plain SQLite,
  exactly like the stdlib.
- any other bare name (``"orders"``, letters/digits/``-``/``_``): the KV-backed database
  of that actor in the default store (:func:`default_store`: ``$ACTOR_DB_KV`` if set,
  else LMDB in ``./.actor-db``; see :mod:`actor_db.defaults`).
- :func:`set_router` installs a function that may send any name to an actor view
  (the CPython suite runner uses it to put every test database on a KV).

Two connections to one KV-backed database (invariant)
-----------------------------------------------------
:func:`vfs.connect` allows one pager per actor database per process (a second pager
would overwrite the first's commits). Connections opened here on the same actor
database therefore SHARE one underlying apsw connection, reference-counted, with a
re-entrant lock around every SQLite call. A transaction belongs to the connection that
began it: while it is open, another connection's statements wait up to that
connection's ``timeout`` seconds and then raise ``OperationalError("database is
locked")`` (``SQLITE_BUSY``), at once when the owner was last used on the same thread
(waiting could only deadlock). So the second connection never sees nor commits the
first's uncommitted writes. Functions, aggregates and collations registered on one of
them are visible to all (one SQLite connection); authorizer, progress handler and trace
callback are per connection (swapped in when the connection runs a statement).

Left out
--------
- Readers concurrent with another connection's open write transaction on the same
  KV-backed database (real SQLite lets them read the old snapshot; here they wait).
- ``text_factory``/converters on TEXT that is not valid UTF-8 (apsw decodes TEXT
  itself): reported as ``OperationalError``.
- The deprecated ``Connection.__call__`` returns an opaque, unused statement object.
"""

from __future__ import annotations

import collections.abc
import datetime
import importlib.util
import logging
import os
import re
import sys
import sysconfig
import threading
import time
import types
import warnings
from typing import Any, Callable, Hashable, Iterator, Literal

import apsw

import vfs

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Module constants (PEP 249)
# --------------------------------------------------------------------------------------
apilevel = "2.0"
threadsafety = 3  # apsw's SQLite is serialized and every call here holds a lock
paramstyle = "qmark"
version = "2.6.0"
version_info = (2, 6, 0)
sqlite_version: str = apsw.sqlite_lib_version()
sqlite_version_info: tuple[int, ...] = tuple(int(p) for p in sqlite_version.split("."))
PARSE_DECLTYPES = 1
PARSE_COLNAMES = 2

for _name in dir(apsw):
    if _name.startswith("SQLITE_") and isinstance(getattr(apsw, _name), int):
        globals()[_name] = getattr(apsw, _name)
SQLITE_OK = 0
SQLITE_DENY = 1
SQLITE_IGNORE = 2

# --------------------------------------------------------------------------------------
# Exceptions: the stdlib's classes, or the same hierarchy when it is missing
# --------------------------------------------------------------------------------------
try:
    import sqlite3 as _stdlib_sqlite3

    if _stdlib_sqlite3.__name__ != "sqlite3" or _stdlib_sqlite3 is sys.modules.get(__name__):
        raise ImportError("sqlite3 is this module")
    Warning = _stdlib_sqlite3.Warning
    Error = _stdlib_sqlite3.Error
    InterfaceError = _stdlib_sqlite3.InterfaceError
    DatabaseError = _stdlib_sqlite3.DatabaseError
    DataError = _stdlib_sqlite3.DataError
    OperationalError = _stdlib_sqlite3.OperationalError
    IntegrityError = _stdlib_sqlite3.IntegrityError
    InternalError = _stdlib_sqlite3.InternalError
    ProgrammingError = _stdlib_sqlite3.ProgrammingError
    NotSupportedError = _stdlib_sqlite3.NotSupportedError
    STDLIB_EXCEPTIONS = True
except ImportError as _exc:  # pragma: no cover - exercised on Pythons without _sqlite3
    log.warning("actor_db.dbapi: the standard library sqlite3 module is unavailable (%s); "
                "using actor_db.dbapi's own exception classes (same hierarchy)", _exc)
    STDLIB_EXCEPTIONS = False

    class Warning(Exception):  # type: ignore[no-redef]  # noqa: A001
        """PEP 249 Warning."""

    class Error(Exception):  # type: ignore[no-redef]
        """PEP 249 Error; carries ``sqlite_errorcode`` and ``sqlite_errorname``."""

        sqlite_errorcode: int | None = None
        sqlite_errorname: str | None = None

    class InterfaceError(Error):  # type: ignore[no-redef]
        pass

    class DatabaseError(Error):  # type: ignore[no-redef]
        pass

    class DataError(DatabaseError):  # type: ignore[no-redef]
        pass

    class OperationalError(DatabaseError):  # type: ignore[no-redef]
        pass

    class IntegrityError(DatabaseError):  # type: ignore[no-redef]
        pass

    class InternalError(DatabaseError):  # type: ignore[no-redef]
        pass

    class ProgrammingError(DatabaseError):  # type: ignore[no-redef]
        pass

    class NotSupportedError(DatabaseError):  # type: ignore[no-redef]
        pass

_CLASS_FOR_CODE: dict[int, type[BaseException]] = {
    apsw.SQLITE_INTERNAL: InternalError, apsw.SQLITE_NOTFOUND: InternalError,
    apsw.SQLITE_NOMEM: MemoryError,
    apsw.SQLITE_CORRUPT: DatabaseError,
    apsw.SQLITE_TOOBIG: DataError,
    apsw.SQLITE_CONSTRAINT: IntegrityError, apsw.SQLITE_MISMATCH: IntegrityError,
    apsw.SQLITE_MISUSE: InterfaceError, apsw.SQLITE_RANGE: InterfaceError,
}
for _code in (apsw.SQLITE_ERROR, apsw.SQLITE_PERM, apsw.SQLITE_ABORT, apsw.SQLITE_BUSY,
              apsw.SQLITE_LOCKED, apsw.SQLITE_READONLY, apsw.SQLITE_INTERRUPT, apsw.SQLITE_IOERR,
              apsw.SQLITE_FULL, apsw.SQLITE_CANTOPEN, apsw.SQLITE_PROTOCOL, apsw.SQLITE_EMPTY,
              apsw.SQLITE_SCHEMA):
    _CLASS_FOR_CODE[_code] = OperationalError


def _error(cls: type[Exception], message: str, code: int | None = None) -> Exception:
    """``cls(message)`` with ``sqlite_errorcode``/``sqlite_errorname`` set when ``code`` is."""
    exc = cls(message)
    if code is not None and isinstance(exc, Error):
        exc.sqlite_errorcode = code
        exc.sqlite_errorname = str(apsw.mapping_extended_result_codes.get(code)
                                   or apsw.mapping_result_codes.get(code & 0xFF, "SQLITE_UNKNOWN"))
    return exc


class _CallbackError(Exception):
    """Raised inside a user callback so SQLite aborts; becomes ``cls(message)`` (the stdlib's
    choice: ``OperationalError``, ``DataError`` for too-big results, ``MemoryError``)."""

    def __init__(self, message: str, cls: type[BaseException] | None = None) -> None:
        super().__init__(message)
        self.cls = cls


def _translate(exc: BaseException) -> BaseException:
    """Map an exception raised by apsw to what the stdlib ``sqlite3`` raises."""
    if isinstance(exc, _CallbackError):
        if exc.cls is MemoryError:
            return MemoryError()
        if exc.cls is DataError:
            return _error(DataError, str(exc), apsw.SQLITE_TOOBIG)
        return _error(OperationalError, str(exc))
    if isinstance(exc, apsw.BindingsError):
        text = str(exc)
        m = re.match(r"Incorrect number of bindings supplied\.\s+The current statement uses (\d+) and there are (\d+) supplied", text)
        if m:
            return ProgrammingError(f"Incorrect number of bindings supplied. The current statement uses "
                                    f"{m.group(1)}, and there are {m.group(2)} supplied.")
        m = re.match(r"Binding (\d+) has no name", text)
        if m:
            return ProgrammingError(f"Binding {int(m.group(1)) + 1} has no name, but you supplied a "
                                    "dictionary (which has only names).")
        return ProgrammingError(text)
    if isinstance(exc, apsw.ExecutionCompleteError):
        return ProgrammingError(str(exc))
    if isinstance(exc, apsw.ThreadingViolationError):
        return ProgrammingError(str(exc))
    if isinstance(exc, apsw.ConnectionClosedError):
        return ProgrammingError("Cannot operate on a closed database.")
    if isinstance(exc, apsw.Error):
        code = getattr(exc, "extendedresult", None) or getattr(exc, "result", None)
        primary = getattr(exc, "result", None)
        if primary is None or primary < 0:
            return _error(DatabaseError, str(exc))
        cls = _CLASS_FOR_CODE.get(primary, DatabaseError)
        if cls is MemoryError or not issubclass(cls, Exception):
            return MemoryError(str(exc))
        message = str(exc)
        if primary == apsw.SQLITE_TOOBIG and message in ("", "string or blob too big"):
            message = "string or blob too big"
        return _error(cls, message, code if code is not None else primary)
    if isinstance(exc, UnicodeDecodeError):
        return _error(OperationalError, f"Could not decode to UTF-8: {exc}")
    return exc


# --------------------------------------------------------------------------------------
# Adapters and converters
# --------------------------------------------------------------------------------------
class PrepareProtocol:
    """The protocol object adapters are registered for (PEP 246 style)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise TypeError("PrepareProtocol() takes no arguments")


adapters: dict[tuple[type, type], Callable[[Any], Any]] = {}
converters: dict[str, Callable[[bytes], Any]] = {}
_base_type_adapted = False
_callback_tracebacks = False
_BASIC = (int, float, str, bytes, bytearray, memoryview, type(None))


def register_adapter(type_: type, adapter: Callable[[Any], Any], /) -> None:
    """Adapt values of exactly ``type_`` with ``adapter`` before binding."""
    global _base_type_adapted
    if type_ in (int, float, str, bytearray):
        _base_type_adapted = True
    adapters[(type_, PrepareProtocol)] = adapter


def register_converter(typename: str, converter: Callable[[bytes], Any], /) -> None:
    """Convert columns declared (or named ``[typename]``) with ``converter(bytes)``."""
    if not isinstance(typename, str):
        raise TypeError(f"register_converter() argument 1 must be str, not {type(typename).__name__}")
    converters[typename.upper()] = converter


_NOT_GIVEN: Any = object()


def adapt(obj: Any, proto: Any = PrepareProtocol, alt: Any = _NOT_GIVEN, /) -> Any:
    """Adapt ``obj`` like ``sqlite3.adapt``: registered adapter, ``__adapt__``, ``__conform__``."""
    adapter = adapters.get((type(obj), proto))
    if adapter is not None:
        return adapter(obj)
    adapt_method = getattr(proto, "__adapt__", None)
    if adapt_method is not None:
        try:
            adapted = adapt_method(obj)
        except TypeError:
            adapted = None
        if adapted is not None:
            return adapted
    conform = getattr(obj, "__conform__", None)
    if conform is not None:
        try:
            adapted = conform(proto)
        except TypeError:
            adapted = None
        if adapted is not None:
            return adapted
    if alt is not _NOT_GIVEN:
        return alt
    raise ProgrammingError("can't adapt")


def _adapt_date(val: datetime.date) -> str:
    return val.isoformat()


def _adapt_datetime(val: datetime.datetime) -> str:
    return val.isoformat(" ")


def _convert_date(val: bytes) -> datetime.date:
    return datetime.date(*map(int, val.split(b"-")))


def _convert_timestamp(val: bytes) -> datetime.datetime:
    datepart, timepart = val.split(b" ")
    year, month, day = map(int, datepart.split(b"-"))
    timepart_full = timepart.split(b".")
    hours, minutes, seconds = map(int, timepart_full[0].split(b":"))
    microseconds = int("{:0<6.6}".format(timepart_full[1].decode())) if len(timepart_full) == 2 else 0
    return datetime.datetime(year, month, day, hours, minutes, seconds, microseconds)


register_adapter(datetime.date, _adapt_date)
register_adapter(datetime.datetime, _adapt_datetime)
register_converter("date", _convert_date)
register_converter("timestamp", _convert_timestamp)
_base_type_adapted = False

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = memoryview


def DateFromTicks(ticks: float) -> datetime.date:
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:
    return Timestamp(*time.localtime(ticks)[:6])


def complete_statement(statement: str) -> bool:
    """True if ``statement`` holds one or more complete SQL statements."""
    if not isinstance(statement, str):
        raise TypeError(f"complete_statement() argument 'statement' must be str, not {type(statement).__name__}")
    return bool(apsw.complete(statement))


def enable_callback_tracebacks(enable: bool, /) -> None:
    """Report exceptions raised in user callbacks through ``sys.unraisablehook``."""
    global _callback_tracebacks
    _callback_tracebacks = bool(enable)


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


def __getattr__(name: str) -> Any:
    if name == "OptimizedUnicode":
        warnings.warn("OptimizedUnicode is deprecated since Python 3.10; use str",
                      DeprecationWarning, stacklevel=2)
        return str
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _report(exc: BaseException, obj: Any) -> None:
    if _callback_tracebacks:
        sys.unraisablehook(types.SimpleNamespace(
            exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__,
            err_msg="Exception ignored in user-defined callback", object=obj))


# --------------------------------------------------------------------------------------
# KV routing
# --------------------------------------------------------------------------------------
Router = Callable[[str], Any]
"""``router(name) -> actor KV view or None`` (``None``: open ``name`` as plain SQLite)."""

_router: Router | None = None
_default_store: Any = None
_registry_lock = threading.Lock()
_shared: dict[Hashable, "_Database"] = {}
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


# --------------------------------------------------------------------------------------
# The underlying (possibly shared) SQLite connection
# --------------------------------------------------------------------------------------
class _Database:
    """One apsw connection, shared by the facade connections on one KV-backed database.

    Invariants: every SQLite call holds :attr:`lock`; :attr:`owner` is the facade whose
    transaction is open (``None`` when ``raw.in_transaction`` is false or the
    transaction was started by a statement outside any facade).
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

    @property
    def kv_backed(self) -> bool:
        return self.key is not None

    def enter(self, con: Connection) -> None:
        """Called with :attr:`lock` held before ``con`` runs a statement."""
        if self.key is not None and self.owner is not None and self.owner is not con:
            if self.raw.in_transaction:
                deadline = time.monotonic() + con._timeout
                while self.owner is not None and self.owner is not con and self.raw.in_transaction:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.owner_thread == threading.get_ident():
                        raise _error(OperationalError, "database is locked", apsw.SQLITE_BUSY)
                    self.cond.wait(remaining)
            else:
                self.owner = None
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
            if last and self.key is not None and _shared.get(self.key) is self:
                del _shared[self.key]
        if last:
            with self.lock:
                self.closed = True
                self.raw.close(True)


def _open_database(database: Any, uri: bool, kv: Any, timeout: float, preload: vfs.PreloadMap | None = None,
                   vfs_options: collections.abc.Mapping[str, Any] | None = None) -> _Database:
    if isinstance(database, (bytes, os.PathLike)):
        database = os.fsdecode(database)
    if not isinstance(database, str):
        raise TypeError(f"expected str, bytes or os.PathLike object, not {type(database).__name__}")
    if "\0" in database:
        raise ValueError("embedded null character")
    view = None
    if kv is not None:
        view = _actor_view(kv, database)
    elif _router is not None:
        view = _router(database)
    if view is None and kv is None and _is_bare_name(database, uri):
        view = default_store().actor(database)
    if view is None:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        if uri:
            flags |= apsw.SQLITE_OPEN_URI
        try:
            raw = apsw.Connection(database, flags=flags)
        except apsw.Error as exc:
            raise _translate(exc) from None
        raw.set_busy_timeout(int(timeout * 1000))
        return _Database(raw, None)
    key = view.identity
    with _registry_lock:
        shared = _shared.get(key)
        if shared is not None and not shared.closed:
            # preload/vfs_options only apply to the open that creates the pager.
            shared.refs += 1
            return shared
        try:
            raw = vfs.connect(view, database or "main.db", preload=preload, **dict(vfs_options or {}))
        except apsw.BusyError as exc:
            raise _error(OperationalError, f"database is locked: {exc}", apsw.SQLITE_BUSY) from exc
        except apsw.Error as exc:
            raise _translate(exc) from exc
        db = _Database(raw, key)
        _shared[key] = db
    log.debug("opened KV-backed database %r (%r)", database, key)
    return db


# --------------------------------------------------------------------------------------
# SQL text helpers
# --------------------------------------------------------------------------------------
def _skip_space_and_comments(sql: str, i: int) -> int:
    """Index of the first character at or after ``i`` that is not whitespace/comment;
    ``-1`` when something that is neither starts an incomplete token (``-``, ``/``)."""
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in " \t\r\n\f\v":
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            return i
    return n


_DML = ("insert", "update", "delete", "replace")


class _Parsed:
    __slots__ = ("sql", "is_dml", "extra", "empty")

    def __init__(self, sql: str, is_dml: bool, extra: bool, empty: bool) -> None:
        self.sql = sql
        self.is_dml = is_dml
        self.extra = extra
        self.empty = empty


_parse_cache: dict[str, _Parsed] = {}


def _parse(sql: str) -> _Parsed:
    """Split ``sql`` into its first statement and whether anything but comments follows."""
    parsed = _parse_cache.get(sql)
    if parsed is not None:
        return parsed
    start = _skip_space_and_comments(sql, 0)
    head = sql[start:start + 7].lower()
    is_dml = head.startswith(_DML)
    first, extra = sql, False
    pos = sql.find(";", start)
    while pos >= 0:
        if apsw.complete(sql[:pos + 1]):
            first = sql[:pos + 1]
            rest = _skip_space_and_comments(sql, pos + 1)
            extra = rest < len(sql)
            break
        pos = sql.find(";", pos + 1)
    parsed = _Parsed(first, is_dml, extra, start >= len(sql))
    if len(_parse_cache) > 512:
        _parse_cache.clear()
    _parse_cache[sql] = parsed
    return parsed


def _sql_bytes(value: Any) -> bytes:
    """The bytes SQLite's ``sqlite3_column_blob`` would give for a column value."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


# --------------------------------------------------------------------------------------
# Row
# --------------------------------------------------------------------------------------
class Row:
    """A result row indexable by position and (case-insensitively) by column name."""

    __slots__ = ("_description", "_data")

    def __init__(self, cursor: Cursor, data: tuple[Any, ...], /) -> None:
        if not issubclass(type(cursor), Cursor):
            raise TypeError(f"Row() argument 1 must be {__name__}.Cursor, not {type(cursor).__name__}")
        if not isinstance(data, tuple):
            raise TypeError(f"Row() argument 2 must be tuple, not {type(data).__name__}")
        self._description = cursor.description
        self._data = data

    def keys(self) -> list[str]:
        return [] if self._description is None else [d[0] for d in self._description]

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            folded = key.casefold() if key.isascii() else key
            for i, d in enumerate(self._description or ()):
                name = d[0]
                if name == key or (name.isascii() and name.casefold() == folded):
                    return self._data[i]
            raise IndexError("No item with that key")
        if isinstance(key, slice):
            return self._data[key]
        if hasattr(key, "__index__"):
            return self._data[key]
        raise IndexError("Index must be int or string")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self._description == other._description and self._data == other._data

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__

    def __hash__(self) -> int:
        return hash(self._description) ^ hash(self._data)

    def __repr__(self) -> str:
        return f"<{__name__}.Row object at {id(self):#x}>"


collections.abc.Sequence.register(Row)


# --------------------------------------------------------------------------------------
# Blob
# --------------------------------------------------------------------------------------
class Blob:
    """Incremental I/O on one BLOB value (``Connection.blobopen``)."""

    _connection: Connection
    _raw: apsw.Blob | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Blob:
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__name__}' instances")

    @classmethod
    def _make(cls, connection: Connection, raw: apsw.Blob) -> Blob:
        self = object.__new__(cls)
        self._connection = connection
        self._raw = raw
        return self

    def _blob(self) -> apsw.Blob:
        self._connection._check()
        if self._raw is None:
            raise ProgrammingError("Cannot operate on a closed blob.")
        return self._raw

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._connection._check().lock:
            try:
                return fn(*args)
            except apsw.Error as exc:
                raise _translate(exc) from None

    def close(self) -> None:
        """Close the blob (idempotent); a pending error of a refused write is dropped."""
        self._connection._check()
        if self._raw is not None:
            raw, self._raw = self._raw, None
            with self._connection._check().lock:
                try:
                    raw.close(True)
                except apsw.Error:
                    log.debug("blob close reported an earlier error", exc_info=True)

    __iter__ = None  # like the stdlib's Blob: not iterable, no sequence protocol

    def __len__(self) -> int:
        return int(self._blob().length())

    def tell(self) -> int:
        return int(self._blob().tell())

    def seek(self, offset: int, origin: int = os.SEEK_SET, /) -> None:
        blob = self._blob()
        length, pos = blob.length(), blob.tell()
        if origin == os.SEEK_SET:
            base = 0
        elif origin == os.SEEK_CUR:
            base = pos
        elif origin == os.SEEK_END:
            base = length
        else:
            raise ValueError("'origin' should be os.SEEK_SET, os.SEEK_CUR, or os.SEEK_END")
        target = base + offset
        if target > 2**31 - 1:
            raise OverflowError("seek offset results in overflow")
        if target < 0 or target > length:
            raise ValueError("offset out of blob range")
        self._call(blob.seek, target)

    def read(self, length: int = -1, /) -> bytes:
        blob = self._blob()
        remaining = blob.length() - blob.tell()
        if length < 0 or length > remaining:
            length = remaining
        return bytes(self._call(blob.read, length))

    def write(self, data: Any, /) -> None:
        blob = self._blob()
        view = memoryview(data)
        if view.nbytes > blob.length() - blob.tell():
            raise ValueError("data longer than blob")
        self._call(blob.write, view.tobytes())

    def _readat(self, offset: int, length: int) -> bytes:
        blob = self._blob()
        pos = blob.tell()
        try:
            self._call(blob.seek, offset)
            return bytes(self._call(blob.read, length))
        finally:
            blob.seek(pos)

    def _writeat(self, offset: int, data: bytes) -> None:
        blob = self._blob()
        pos = blob.tell()
        try:
            self._call(blob.seek, offset)
            self._call(blob.write, data)
        finally:
            blob.seek(pos)

    def _index(self, index: Any) -> int:
        if not hasattr(index, "__index__"):
            raise TypeError("Blob indices must be integers")
        i = index.__index__()
        n = len(self)
        if i < 0:
            i += n
        if i >= 2**63:
            raise IndexError("cannot fit 'int' into an index-sized integer")
        if i < 0 or i >= n:
            raise IndexError("Blob index out of range")
        return int(i)

    def __getitem__(self, key: Any) -> Any:
        self._blob()
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._readat(start, max(0, stop - start)) if stop > start else b""
            data = self._readat(0, len(self))
            return data[start:stop:step]
        return self._readat(self._index(key), 1)[0]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._blob()
        if not isinstance(key, slice) and not hasattr(key, "__index__"):
            raise TypeError("Blob indices must be integers")
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            view = memoryview(value)
            if not view.contiguous:
                raise BufferError("underlying buffer is not C-contiguous")
            data = view.tobytes()
            count = len(range(start, stop, step))
            if len(data) != count:
                raise IndexError("Blob slice assignment is wrong size")
            if count == 0:
                return
            if step == 1:
                self._writeat(start, data)
            else:
                current = bytearray(self._readat(0, len(self)))
                current[start:stop:step] = data
                self._writeat(0, bytes(current))
            return
        if not isinstance(value, int):
            raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
        i = self._index(key)
        if not 0 <= value <= 255:
            raise ValueError("byte must be in range(0, 256)")
        self._writeat(i, bytes((value,)))

    def __delitem__(self, key: Any) -> None:
        raise TypeError("Blob doesn't support item deletion" if not isinstance(key, slice)
                        else "Blob doesn't support slice deletion")

    def __enter__(self) -> Blob:
        self._blob()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self._blob()
        self.close()
        return False


# --------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------
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
    :param timeout: seconds to wait for a lock (plain SQLite busy timeout; on a shared
        KV-backed database, for another connection's transaction to end).
    :param kv: a KV store (or actor view) holding the database; ``None`` decides by name.
    :param preload: a :class:`vfs.PreloadMap` for a KV-backed database (reads it covers
        cost no round trip); ignored for plain SQLite and when the database is already
        open in this process (the connection then shares that pager).
    :param vfs_options: keyword arguments for :func:`vfs.connect` (``vfs``,
        ``cache_chunks``, ``max_dirty_bytes``, ...); same scope as ``preload``.
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
                 vfs_options: collections.abc.Mapping[str, Any] | None = None) -> None:
        self._initialized = False
        level = _check_isolation_level(isolation_level)
        db = _open_database(database, bool(uri), kv, float(timeout), preload, vfs_options)
        previous = self._db
        self._db = db
        if previous is not None and previous is not db and previous.kv_backed:
            previous.release()
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
        self._initialized = True
        if db.active is None:
            db.active = self

    # -- checks -------------------------------------------------------------------------
    def _check(self) -> _Database:
        if not self._initialized or self._db is None:
            raise ProgrammingError("Base Connection.__init__ not called.")
        if self._check_same_thread and threading.get_ident() != self._thread:
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
        """The underlying apsw connection (a :class:`vfs.KVConnection` when KV-backed)."""
        return self._check().raw

    # -- hooks (per connection, installed when it runs a statement) ----------------------
    def _install_hooks(self) -> None:
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
                except (apsw.TooBigError, MemoryError):
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
        factory = Cursor if factory is _NOT_GIVEN else factory
        if not callable(factory):
            raise TypeError("factory must be callable")
        cursor: Cursor = factory(self)
        if not issubclass(type(cursor), Cursor):
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
        if len(encoded) > self._db.raw.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, -1):  # type: ignore[union-attr]
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
        db = self._check()
        with db.lock:
            if db.raw.in_transaction and db.owner in (None, self):
                db.enter(self)
                try:
                    self._run("COMMIT")
                finally:
                    db.leave(self)

    def rollback(self) -> None:
        """Roll back this connection's transaction (no-op when none is open)."""
        db = self._check()
        with db.lock:
            if db.raw.in_transaction and db.owner in (None, self):
                db.enter(self)
                try:
                    self._run("ROLLBACK")
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
        return bool(db.raw.in_transaction) and db.owner in (None, self)

    @property
    def total_changes(self) -> int:
        return int(self._check().raw.total_changes())

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
        """Abort any statement running on this connection's database."""
        self._check().raw.interrupt()

    def getlimit(self, category: int, /) -> int:
        db = self._check()
        if not 0 <= category <= 11:
            raise ProgrammingError("'category' is out of bounds")
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

    def backup(self, target: Connection, *, pages: int = -1, progress: Any = None,
               name: str = "main", sleep: float = 0.250) -> None:
        """Copy database ``name`` into ``target`` (``pages`` per step, ``progress(status, remaining, total)``)."""
        db = self._check()
        if not isinstance(target, Connection):
            raise TypeError(f"backup() argument 'target' must be {__name__}.Connection, not {type(target).__name__}")
        if target is self:
            raise ValueError("target cannot be the same connection instance")
        tdb = target._check()
        if progress is not None and not callable(progress):
            raise TypeError("progress argument must be a callable")
        if pages == 0:
            pages = -1
        if tdb.raw.in_transaction:
            raise _error(OperationalError, "target is in transaction", apsw.SQLITE_ERROR)
        with db.lock, tdb.lock:
            try:
                backup = tdb.raw.backup("main", db.raw, name)
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
                    scratch.deserialize("main", payload)
                    scratch.execute("PRAGMA schema_version").fetchall()  # "file is not a database"
                    with db.raw.backup("main", scratch, "main") as backup:
                        backup.step(-1)
                finally:
                    scratch.close()
            except apsw.Error as exc:
                raise _translate(exc) from None

    def enable_load_extension(self, enable: bool, /) -> None:
        self._check().raw.enable_load_extension(bool(enable))

    def load_extension(self, name: str, /, *, entrypoint: str | None = None) -> None:
        db = self._check()
        with db.lock:
            try:
                db.raw.load_extension(name, entrypoint)
            except apsw.Error as exc:
                raise _translate(exc) from None

    def __del__(self) -> None:
        try:
            if self._initialized and not self._closed and self._db is not None and self._db.kv_backed:
                self._closed = True
                self._db.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _checked_result(value: Any) -> Any:
    """A UDF result SQLite can store, or raise like the stdlib (unsupported type)."""
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, str):
        if not value.isascii():
            value.encode("utf-8")  # surrogates: the stdlib reports the UnicodeEncodeError
        return value
    if isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        view = memoryview(value)
        if not view.c_contiguous:
            raise BufferError("underlying buffer is not C-contiguous")
        return view.tobytes()
    raise _CallbackError("user-defined function raised exception")


def _aggregate_factory(cls: Any, *, window: bool) -> Callable[[], Any]:
    """An apsw aggregate/window factory around a stdlib-style aggregate class.

    The instance is created at the first ``step`` (so an aggregate over no rows yields
    NULL without instantiating, as in the stdlib); errors are reported with ``cls`` as the
    unraisable object and become the stdlib's messages.
    """

    def call(instance: Any, method: str, *args: Any) -> Any:
        try:
            fn = getattr(instance, method)
        except AttributeError as exc:
            _report(exc, cls)
            raise _CallbackError(f"user-defined aggregate's '{method}' method not defined") from exc
        try:
            return fn(*args)
        except Exception as exc:
            _report(exc, cls)
            raise _CallbackError(f"user-defined aggregate's '{method}' method raised error") from exc

    def factory() -> Any:
        state: list[Any] = []

        def instance() -> Any:
            if not state:
                try:
                    state.append(cls())
                except Exception as exc:
                    _report(exc, cls)
                    raise _CallbackError("user-defined aggregate's '__init__' method raised error") from exc
            return state[0]

        def step(_ctx: Any, *args: Any) -> None:
            call(instance(), "step", *args)

        def final(_ctx: Any) -> Any:
            if not state and not window:
                return None
            if window:
                # SQLite does not propagate a window function's xFinal error (the stdlib
                # documents this): report it and return NULL.
                try:
                    return _checked_result(call(instance(), "finalize"))
                except (_CallbackError, OverflowError, BufferError):
                    return None
            result = call(instance(), "finalize")
            try:
                return _checked_result(result)
            except OverflowError:
                raise _CallbackError("string or blob too big", DataError) from None
            except (_CallbackError, BufferError):
                raise _CallbackError("user-defined aggregate's 'finalize' method raised error") from None

        if not window:
            return (None, step, final)

        def value(_ctx: Any) -> Any:
            try:
                return _checked_result(call(instance(), "value"))
            except OverflowError:
                raise _CallbackError("string or blob too big", DataError) from None
            except BufferError:
                raise _CallbackError("user-defined aggregate's 'value' method raised error") from None

        def inverse(_ctx: Any, *args: Any) -> None:
            call(instance(), "inverse", *args)

        return (None, step, final, value, inverse)

    return factory


# --------------------------------------------------------------------------------------
# Cursor
# --------------------------------------------------------------------------------------
class Cursor:
    """A DB-API 2.0 cursor with the stdlib ``sqlite3.Cursor`` behaviour.

    Rows are stepped lazily (one SQLite step per row fetched), as in the stdlib.
    """

    _initialized = False

    def __init__(self, connection: Connection, /) -> None:
        if getattr(self, "_busy", False):
            raise ProgrammingError("Recursive use of cursors not allowed.")
        if not isinstance(connection, Connection):
            raise TypeError(f"Cursor() argument 1 must be {__name__}.Connection, not {type(connection).__name__}")
        self._connection = connection
        self.arraysize = 1
        self.row_factory: Any = None
        self._description: tuple[tuple[Any, ...], ...] | None = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._raw: apsw.Cursor | None = None
        self._pending = False
        self._next_row: tuple[Any, ...] | None = None
        self._busy = False
        self._converters: list[Any] | None = None
        self._closed = False
        self._initialized = True

    # -- read-only attributes ------------------------------------------------------------
    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def description(self) -> tuple[tuple[Any, ...], ...] | None:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._lastrowid

    def _check(self) -> _Database:
        if not self._initialized:
            raise ProgrammingError("Base Cursor.__init__ not called.")
        db = self._connection._check()
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        return db

    def close(self) -> None:
        if not self._initialized:
            raise ProgrammingError("Base Cursor.__init__ not called.")
        self._connection._check()
        if self._busy:
            raise ProgrammingError("Recursive use of cursors not allowed.")
        self._reset()
        self._closed = True

    def _reset(self) -> None:
        raw, self._raw = self._raw, None
        self._pending = False
        self._next_row = None
        if raw is not None:
            try:
                raw.close(True)
            except apsw.Error:
                pass

    def setinputsizes(self, sizes: Any, /) -> None:
        """No-op (PEP 249)."""

    def setoutputsize(self, size: Any, column: Any = None, /) -> None:
        """No-op (PEP 249)."""

    # -- binding -------------------------------------------------------------------------
    @staticmethod
    def _bind_value(value: Any, index: int) -> Any:
        if _base_type_adapted or type(value) not in _BASIC:
            value = adapt(value, PrepareProtocol, value)
        if value is None or type(value) in (str, float, bytes):
            return value
        if isinstance(value, int):
            if not -2**63 <= value < 2**63:
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
            return int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            view = memoryview(value)
            if not view.c_contiguous:
                raise BufferError("underlying buffer is not C-contiguous")
            return view.tobytes()
        try:
            return bytes(memoryview(value))
        except TypeError:
            raise ProgrammingError(f"Error binding parameter {index}: type '{type(value).__name__}' "
                                   "is not supported") from None

    def _bindings(self, parameters: Any) -> Any:
        if isinstance(parameters, dict):
            return _NamedBindings(parameters, self._bind_value)
        if isinstance(parameters, (tuple, list)) or (
                hasattr(type(parameters), "__getitem__") and not isinstance(parameters, collections.abc.Mapping)
                and not isinstance(parameters, (str, bytes))):
            try:
                n = len(parameters)
            except TypeError:
                raise ProgrammingError("parameters are of unsupported type") from None
            return tuple(self._bind_value(parameters[i], i + 1) for i in range(n))
        raise ProgrammingError("parameters are of unsupported type")

    # -- execution -----------------------------------------------------------------------
    def _prepare_sql(self, sql: Any, db: _Database, what: str = "execute") -> _Parsed:
        if not isinstance(sql, str):
            raise TypeError(f"{what}() argument 1 must be str, not {type(sql).__name__}")
        if "\0" in sql:
            raise ProgrammingError("the query contains a null character")
        limit = db.raw.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, -1)
        if len(sql) > limit or len(sql.encode("utf-8")) > limit:
            raise _error(DataError, "query string is too large", apsw.SQLITE_TOOBIG)
        parsed = _parse(sql)
        if parsed.extra:
            raise ProgrammingError("You can only execute one statement at a time.")
        return parsed

    def _enter_busy(self) -> None:
        if self._busy:
            raise ProgrammingError("Recursive use of cursors not allowed.")
        self._busy = True

    def _execute_one(self, db: _Database, parsed: _Parsed, bindings: Any, multiple: bool) -> None:
        """Run one statement up to its first row (stdlib: one ``sqlite3_step``); lock held."""
        con = self._connection
        raw_con = db.raw
        if parsed.is_dml and con._isolation_level is not None and not raw_con.in_transaction:
            con._run_traced("BEGIN " + con._isolation_level)
            db.owner = con
            db.owner_thread = threading.get_ident()
        descriptions: list[Any] = []
        raw = raw_con.cursor()
        raw.exec_trace = con._exec_tracer(descriptions)
        self._raw = raw
        raw.execute(parsed.sql, bindings)
        if descriptions:
            self._set_description(descriptions[-1])
        try:
            self._next_row = next(raw)
            self._pending = True
            # ``description`` (not the cached ``get_description()``) is fresh even when
            # SQLite re-prepared the statement after a schema change.
            description = tuple((d[0], d[1]) for d in raw.description)
        except StopIteration:
            self._pending = False
            self._raw = None
            description = descriptions[-1] if descriptions else ()
        self._set_description(description)
        if multiple and self._pending:
            self._reset()
            raise ProgrammingError("executemany() can only execute DML statements.")
        if parsed.is_dml and not self._pending:
            self._rowcount += int(raw_con.changes())
        if not multiple:
            self._lastrowid = int(raw_con.last_insert_rowid())

    def _set_description(self, description: Any) -> None:
        detect = self._connection._detect_types
        if not description:
            self._description = None
            self._converters = None
            return
        names = []
        convs: list[Any] = []
        any_converter = False
        for name, decltype in description:
            converter = None
            if detect & PARSE_COLNAMES:
                m = re.search(r"\[([^\]]*)\]", name)
                if m:
                    converter = converters.get(m.group(1).upper())
                lb = name.find("[")
                if lb >= 0:
                    name = name[:lb - 1] if lb > 0 and name[lb - 1] == " " else name[:lb]
            if converter is None and detect & PARSE_DECLTYPES and decltype:
                key = re.split(r"[ (]", decltype, maxsplit=1)[0].upper()
                converter = converters.get(key)
            any_converter = any_converter or converter is not None
            convs.append(converter)
            names.append((name, None, None, None, None, None, None))
        self._description = tuple(names)
        self._converters = convs if any_converter else None

    def _decode_error(self, exc: UnicodeDecodeError) -> Exception:
        names = [d[0] for d in self._description or ()]
        column = names[0] if len(names) == 1 else "?"
        text = bytes(exc.object).decode("utf-8", "replace")
        return _error(OperationalError, f"Could not decode to UTF-8 column '{column}' with text '{text}'")

    def _fail(self, exc: BaseException) -> BaseException:
        self._raw = None
        self._pending = False
        self._next_row = None
        if isinstance(exc, UnicodeDecodeError):
            return self._decode_error(exc)
        return _translate(exc)

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        """Run one SQL statement with ``parameters`` (sequence for ``?``, dict for ``:name``)."""
        db = self._check()
        self._enter_busy()
        try:
            parsed = self._prepare_sql(sql, db)
            self._reset()
            bindings = self._bindings(parameters)
            con = self._connection
            with db.lock:
                db.enter(con)
                try:
                    self._description = None
                    self._rowcount = 0 if parsed.is_dml else -1
                    if not parsed.empty:
                        self._execute_one(db, parsed, bindings, multiple=False)
                except BaseException as exc:
                    raise self._fail(exc) from None
                finally:
                    db.leave(con)
        finally:
            self._busy = False
        return self

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Cursor:
        """Run one DML statement for each parameter set in ``seq_of_parameters``."""
        db = self._check()
        self._enter_busy()
        try:
            parsed = self._prepare_sql(sql, db, "executemany")
            self._reset()
            iterator = iter(seq_of_parameters)
            con = self._connection
            self._description = None
            self._rowcount = 0 if parsed.is_dml else -1
            if not parsed.is_dml and not parsed.empty:
                raise ProgrammingError("executemany() can only execute DML statements.")
            with db.lock:
                db.enter(con)
                try:
                    for parameters in iterator:
                        bindings = self._bindings(parameters)
                        if not parsed.empty:
                            self._execute_one(db, parsed, bindings, multiple=True)
                except BaseException as exc:
                    raise self._fail(exc) from None
                finally:
                    db.leave(con)
        finally:
            self._busy = False
        return self

    def executescript(self, sql_script: str, /) -> Cursor:
        """Commit any open transaction, then run every statement of ``sql_script``."""
        db = self._check()
        if not isinstance(sql_script, str):
            raise TypeError(f"executescript() argument 1 must be str, not {type(sql_script).__name__}")
        if "\0" in sql_script:
            raise ValueError("embedded null character")
        limit = db.raw.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, -1)
        if len(sql_script.encode("utf-8")) > limit:
            raise _error(DataError, "query string is too large", apsw.SQLITE_TOOBIG)
        self._enter_busy()
        try:
            self._reset()
            con = self._connection
            with db.lock:
                db.enter(con)
                try:
                    if db.raw.in_transaction and db.owner in (None, con):
                        con._run_traced("COMMIT")
                    raw = db.raw.cursor()
                    raw.exec_trace = con._exec_tracer([])
                    for _ in raw.execute(sql_script):
                        pass
                    raw.close()
                except BaseException as exc:
                    raise self._fail(exc) from None
                finally:
                    db.leave(con)
            self._description = None
        finally:
            self._busy = False
        return self

    # -- fetching ------------------------------------------------------------------------
    def _convert(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        text_factory = self._connection.text_factory
        convs = self._converters
        if text_factory is str and convs is None:
            return row
        out = []
        for i, value in enumerate(row):
            converter = convs[i] if convs is not None else None
            if converter is not None:
                # The stdlib hands NULL and zero-length values over as None (no call).
                out.append(None if value is None or value == b"" or value == ""
                           else converter(_sql_bytes(value)))
            elif isinstance(value, str) and text_factory is not str:
                raw = value.encode("utf-8", "surrogatepass")
                out.append(raw if text_factory is bytes else text_factory(raw))
            else:
                out.append(value)
        return tuple(out)

    def _fetch_row(self) -> Any:
        """The next row with converters and row factory applied, or ``None``.

        Like the stdlib, the statement is stepped past the returned row before it is
        returned, so ``rowcount`` of ``UPDATE ... RETURNING`` is final after the last row.
        """
        db = self._check()
        if not self._pending or self._raw is None:
            return None
        self._enter_busy()
        try:
            row = self._next_row
            assert row is not None
            converted = self._convert(row)
            con = self._connection
            with db.lock:
                try:
                    self._next_row = next(self._raw)
                except StopIteration:
                    self._pending = False
                    self._raw = None
                    self._next_row = None
                    if self._rowcount >= 0:
                        self._rowcount = int(db.raw.changes())
                    db.leave(con)
                except BaseException as exc:
                    db.leave(con)
                    raise self._fail(exc) from None
        finally:
            self._busy = False
        if self.row_factory is not None:
            return self.row_factory(self, converted)
        return converted

    def fetchone(self) -> Any:
        """The next row, or ``None`` when the result is exhausted."""
        return self._fetch_row()

    def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` (default :attr:`arraysize`) more rows."""
        n = self.arraysize if size is None else size
        rows = []
        while n > 0:
            row = self._fetch_row()
            if row is None:
                break
            rows.append(row)
            n -= 1
        return rows

    def fetchall(self) -> list[Any]:
        """All remaining rows."""
        rows: list[Any] = []
        while True:
            row = self._fetch_row()
            if row is None:
                return rows
            rows.append(row)

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> Any:
        row = self._fetch_row()
        if row is None:
            raise StopIteration
        return row


class _NamedBindings(collections.abc.Mapping):  # type: ignore[type-arg]
    """A mapping view that adapts each value when apsw looks a name up."""

    def __init__(self, source: dict[str, Any], bind: Callable[[Any, int], Any]) -> None:
        self._source = source
        self._bind = bind

    def __getitem__(self, key: str) -> Any:
        try:
            value = self._source[key]
        except KeyError:
            raise ProgrammingError(f"You did not supply a value for binding parameter :{key}.") from None
        return self._bind(value, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


# --------------------------------------------------------------------------------------
# iterdump: the stdlib's own dump.py, loaded by path (it only uses the DB-API surface)
# --------------------------------------------------------------------------------------
_dump_module: Any = None


def _iterdump(connection: Connection) -> Iterator[str]:
    global _dump_module
    if _dump_module is None:
        path = os.path.join(sysconfig.get_paths()["stdlib"], "sqlite3", "dump.py")
        spec = importlib.util.spec_from_file_location("_actor_db_sqlite3_dump", path)
        if spec is None or spec.loader is None or not os.path.exists(path):
            raise NotSupportedError(f"iterdump needs the standard library's sqlite3/dump.py ({path} not found)")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _dump_module = module
    return _dump_module._iterdump(connection)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------
# connect
# --------------------------------------------------------------------------------------
def connect(database: Any, timeout: float = 5.0, detect_types: int = 0,
            isolation_level: str | None = "", check_same_thread: bool = True,
            factory: Any = Connection, cached_statements: int = 128, uri: bool = False,
            *, kv: Any = None, preload: vfs.PreloadMap | None = None,
            vfs_options: collections.abc.Mapping[str, Any] | None = None) -> Any:
    """Open a database like ``sqlite3.connect``; ``kv=`` (or a bare name) makes it KV-backed.

    As in the stdlib, the arguments are passed on to ``factory`` as given.

    :param database: ``":memory:"``, a file path, or an actor name (see the module doc).
    :param kv: a :class:`actor_db.kv.KVStore` (or an actor view) to hold the database.
    :param preload: the startup :class:`vfs.PreloadMap` of a KV-backed database (e.g. one
        ``kv.preload(...)`` call, 1 round trip); its reads then cost 0 round trips.
    :param vfs_options: extra keyword arguments for :func:`vfs.connect` (``vfs``,
        ``cache_chunks``, ``max_dirty_bytes``, ...). Both apply only when this call opens
        the KV-backed database (not when it shares one already open in this process).
    :param factory: the connection class (a :class:`Connection` subclass).
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


__all__ = [
    "connect", "Connection", "Cursor", "Row", "Blob", "PrepareProtocol",
    "Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
    "register_adapter", "register_converter", "adapt", "adapters", "converters",
    "complete_statement", "enable_callback_tracebacks", "enable_shared_cache",
    "PARSE_DECLTYPES", "PARSE_COLNAMES", "apilevel", "threadsafety", "paramstyle",
    "sqlite_version", "sqlite_version_info", "version", "version_info",
    "Date", "Time", "Timestamp", "DateFromTicks", "TimeFromTicks", "TimestampFromTicks", "Binary",
    "set_router", "default_store",
]
