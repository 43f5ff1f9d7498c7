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

Modules (one concept each; every public name, and the private ones tests reach into,
is importable from ``actor_db.dbapi``):

- :mod:`~actor_db.dbapi.connection`: ``Connection``, ``connect``;
  :mod:`~actor_db.dbapi.cursor`: ``Cursor``; :mod:`~actor_db.dbapi.row`: ``Row``;
  :mod:`~actor_db.dbapi.blob`: ``Blob``.
- :mod:`~actor_db.dbapi.adaptation`: adapters, converters, PEP 249 type constructors.
- :mod:`~actor_db.dbapi.errors`: the exception classes, translation from apsw, callback
  error reporting.
- :mod:`~actor_db.dbapi.routing`: which database a name opens (URI / KV routing, the
  default store); :mod:`~actor_db.dbapi.database`: the underlying (possibly shared)
  SQLite connection and its invariant for two connections to one KV-backed database.
- :mod:`~actor_db.dbapi.sql` (SQL text helpers), :mod:`~actor_db.dbapi.functions`
  (user functions and aggregates), :mod:`~actor_db.dbapi.dump` (``iterdump``),
  :mod:`~actor_db.dbapi.constants` (PEP 249 and ``SQLITE_*`` constants).

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

import logging
import sys
import types
import warnings
from typing import Any

import apsw

import vfs

from . import adaptation as _adapt_module
from . import dump as _dump_module_owner
from . import errors as _errors_module
from . import routing as _routing_module
from .adaptation import (_BASIC, _NOT_GIVEN, Binary, Date, DateFromTicks, PrepareProtocol, Time, TimeFromTicks,
                    Timestamp, TimestampFromTicks, _adapt_date, _adapt_datetime, _convert_date,
                    _convert_timestamp, _sql_bytes, adapt, adapters, converters, register_adapter,
                    register_converter)
from .blob import Blob
from .connection import _ISOLATION_LEVELS, Connection, Statement, _check_isolation_level, connect
from .constants import (PARSE_COLNAMES, PARSE_DECLTYPES, SQLITE_DENY, SQLITE_IGNORE, SQLITE_OK, apilevel,
                        paramstyle, sqlite_version, sqlite_version_info, threadsafety, version, version_info)
from .cursor import Cursor, _NamedBindings
from .database import _Database, _open_database, enable_shared_cache
from .dump import _iterdump
from .errors import (_CLASS_FOR_CODE, STDLIB_EXCEPTIONS, DatabaseError, DataError, Error, IntegrityError,
                     InterfaceError, InternalError, NotSupportedError, OperationalError, ProgrammingError,
                     Warning, _CallbackError, _error, _report, _translate, enable_callback_tracebacks)
from .functions import _aggregate_factory, _checked_result
from .routing import _BARE_NAME, Router, _actor_view, _is_bare_name, _registry_lock, default_store, set_router
from .row import Row
from .sql import _DML, _parse, _parse_cache, _Parsed, _skip_space_and_comments, complete_statement

from . import constants as _constants  # noqa: E402  (after the named imports: same module)

log = logging.getLogger(__name__)

for _name in dir(_constants):
    if _name.startswith("SQLITE_"):
        globals()[_name] = getattr(_constants, _name)
del _name

# The classes keep the module name they had before the split (reprs, error messages).
for _cls in (Connection, Cursor, Row, Blob, PrepareProtocol, Statement, _Database, _Parsed, _CallbackError,
             _NamedBindings):
    _cls.__module__ = __name__
del _cls

# Module state that functions rebind lives in its submodule; reading or assigning it
# here (``actor_db.dbapi._default_store = None``) reads or assigns the submodule's.
_FORWARDED: dict[str, types.ModuleType] = {
    "_router": _routing_module,
    "_default_store": _routing_module,
    "_base_type_adapted": _adapt_module,
    "_callback_tracebacks": _errors_module,
    "_dump_module": _dump_module_owner,
}


_INITIAL: dict[str, Any] = {name: getattr(owner, name) for name, owner in _FORWARDED.items()}
"""Each forwarded variable's value at import (what deleting it restores)."""


def __getattr__(name: str) -> Any:
    owner = _FORWARDED.get(name)
    if owner is not None:
        return getattr(owner, name)
    if name == "OptimizedUnicode":
        warnings.warn("OptimizedUnicode is deprecated since Python 3.10; use str",
                      DeprecationWarning, stacklevel=2)
        return str
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Module(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        owner = _FORWARDED.get(name)
        if owner is not None:
            setattr(owner, name, value)
        else:
            super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        owner = _FORWARDED.get(name)
        if owner is not None:  # e.g. monkeypatch's undo: back to the value at import
            setattr(owner, name, _INITIAL[name])
        else:
            super().__delattr__(name)


sys.modules[__name__].__class__ = _Module

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
