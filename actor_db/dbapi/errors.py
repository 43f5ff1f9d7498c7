"""Exceptions of the drop-in ``sqlite3`` and the translation of apsw's errors.

The exception classes are the standard library's own (``sqlite3.Error`` and friends),
so ``except sqlite3.OperationalError`` works whichever module raised. When the stdlib
``sqlite3`` cannot be imported (no ``_sqlite3``), one warning is logged and this module
defines the same hierarchy itself; nothing else depends on the stdlib SQLite.

:func:`_translate` maps an apsw exception to the class CPython uses (primary result code
to class, ``sqlite_errorcode``/``sqlite_errorname`` set); :func:`_report` is the callback
error reporting of :func:`enable_callback_tracebacks`.
"""

from __future__ import annotations

import logging
import re
import sys
import types
from typing import Any

import apsw
from vfs.locks import last_busy_reason

log = logging.getLogger(__name__)

_PACKAGE = "actor_db.dbapi"

try:
    import sqlite3 as _stdlib_sqlite3

    if _stdlib_sqlite3.__name__ != "sqlite3" or _stdlib_sqlite3 is sys.modules.get(_PACKAGE):
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
    if isinstance(exc, apsw.ExtensionLoadingError):  # the stdlib: SQLite's message, OperationalError
        return _error(OperationalError, str(exc).removeprefix("ExtensionLoadingError: "), apsw.SQLITE_ERROR)
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
        if primary == apsw.SQLITE_BUSY and message == "database is locked":
            reason = last_busy_reason()  # SQLite's busy handler kept only its generic text
            if reason:
                message = f"database is locked ({reason})"
        return _error(cls, message, code if code is not None else primary)
    if isinstance(exc, UnicodeDecodeError):
        return _error(OperationalError, f"Could not decode to UTF-8: {exc}")
    return exc


_callback_tracebacks = False


def enable_callback_tracebacks(enable: bool, /) -> None:
    """Report exceptions raised in user callbacks through ``sys.unraisablehook``."""
    global _callback_tracebacks
    _callback_tracebacks = bool(enable)


def _report(exc: BaseException, obj: Any) -> None:
    if _callback_tracebacks:
        sys.unraisablehook(types.SimpleNamespace(
            exc_type=type(exc), exc_value=exc, exc_traceback=exc.__traceback__,
            err_msg="Exception ignored in user-defined callback", object=obj))
