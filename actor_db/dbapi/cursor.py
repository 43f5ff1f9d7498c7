"""``Cursor``: statement execution, parameter binding and fetching of the drop-in ``sqlite3``."""

from __future__ import annotations

import collections.abc
import random
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import apsw
from vfs import pragmas
from vfs.errors import changed_during_read

from . import adaptation as _adapt
from . import connection as _connection
from .adaptation import PrepareProtocol, _BASIC, _sql_bytes, adapt, converters
from .constants import PARSE_COLNAMES, PARSE_DECLTYPES
from .database import orphan_raw_of
from .errors import DataError, OperationalError, ProgrammingError, _error, _translate
from . import attach
from .sql import _parse, _Parsed

if TYPE_CHECKING:
    from .connection import Connection
    from .database import _Database

_PACKAGE = "actor_db.dbapi"
_SET_JOURNAL_MODE = re.compile(r"\s*pragma\s+(?:\w+\s*\.\s*)?journal_mode\s*[=(]", re.IGNORECASE)

class Cursor:
    """A DB-API 2.0 cursor with the stdlib ``sqlite3.Cursor`` behaviour.

    Rows are stepped lazily (one SQLite step per row fetched), as in the stdlib.
    """

    _initialized = False

    def __init__(self, connection: Connection, /) -> None:
        if getattr(self, "_busy", False):
            raise ProgrammingError("Recursive use of cursors not allowed.")
        if not isinstance(connection, _connection.Connection):
            raise TypeError(f"Cursor() argument 1 must be {_PACKAGE}.Connection, not {type(connection).__name__}")
        self._connection = connection
        self.arraysize = 1
        self.row_factory: Any = None
        self._description: tuple[tuple[Any, ...], ...] | None = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._raw: apsw.Cursor | None = None
        self._raw_db: _Database | None = None  # the database self._raw runs on
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
        db = self._connection._check()
        if self._busy:
            raise ProgrammingError("Recursive use of cursors not allowed.")
        with db.lock:
            self._reset()
        self._closed = True

    def _reset(self) -> None:
        """Close the apsw cursor (the database lock must be held: see
        ``Connection._close_orphans`` for the threading rule)."""
        raw, self._raw = self._raw, None
        raw_db, self._raw_db = self._raw_db, None
        self._pending = False
        self._next_row = None
        if raw is not None:
            try:
                if raw_db is not None:
                    with raw_db.lock:
                        raw.close(True)
                else:
                    raw.close(True)
            except apsw.Error:
                pass

    def __del__(self) -> None:
        orphan_raw_of(self)

    def setinputsizes(self, sizes: Any, /) -> None:
        """No-op (PEP 249)."""

    def setoutputsize(self, size: Any, column: Any = None, /) -> None:
        """No-op (PEP 249)."""

    # -- binding -------------------------------------------------------------------------
    @staticmethod
    def _bind_value(value: Any, index: int) -> Any:
        if _adapt._base_type_adapted or type(value) not in _BASIC:
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
        with db.lock:
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
        began = False
        retry_until: float | None = None
        while True:
            if parsed.is_dml and con._isolation_level is not None and not raw_con.in_transaction:
                con._run_traced("BEGIN " + con._isolation_level)
                db.owner = con
                db.owner_thread = threading.get_ident()
                began = True
            descriptions: list[Any] = []
            raw = raw_con.cursor()
            raw.exec_trace = con._exec_tracer(descriptions)
            self._raw = raw
            self._raw_db = db
            try:
                raw.execute(parsed.sql, bindings)
                break
            except apsw.BusyError as exc:
                # Another process committed between this transaction's start and its first
                # read: nothing was returned to the caller yet, so run the statement again
                # in a fresh transaction, within ``timeout``, as SQLite's busy handler waits.
                if not changed_during_read(exc) or not (began or not raw_con.in_transaction):
                    raise
                now = time.monotonic()
                retry_until = now + con._timeout if retry_until is None else retry_until
                if now >= retry_until:
                    raise
                if raw_con.in_transaction:
                    con._run_traced("ROLLBACK")
                time.sleep(random.uniform(0.0005, 0.005))
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
            if description:
                # No row: the columns were read before the step, from a statement that
                # may come from apsw's cache and that SQLite re-prepared in the step
                # after a schema change (ALTER TABLE ... ADD COLUMN): read them again.
                description = self._fresh_description(raw_con, parsed.sql, bindings, description)
        if description and len(description) == 1 and description[0][0] == pragmas.JOURNAL_MODE \
                and _SET_JOURNAL_MODE.match(parsed.sql):
            # The VFS answered ``PRAGMA journal_mode=X`` itself, and SQLite names the
            # column after the answer; SQLite's own answer is a column named journal_mode.
            description = (("journal_mode", description[0][1]),)
        self._set_description(description)
        if multiple and self._pending:
            self._reset()
            raise ProgrammingError("executemany() can only execute DML statements.")
        if parsed.is_dml and not self._pending:
            self._rowcount += int(raw_con.changes())
        if not multiple:
            self._lastrowid = int(raw_con.last_insert_rowid())

    @staticmethod
    def _fresh_description(raw_con: apsw.Connection, sql: str, bindings: Any, cached: Any) -> Any:
        """The columns of ``sql`` as prepared now (lock held): prepared without apsw's
        statement cache and not run (the exec tracer aborts before the first step)."""
        found: list[Any] = []

        def probe(cursor: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
            found.append(cursor.get_description())
            return False

        probe_cursor = raw_con.cursor()
        probe_cursor.exec_trace = probe
        try:
            probe_cursor.execute(sql, bindings, can_cache=False)
        except apsw.ExecTraceAbort:
            pass
        except Exception:  # cannot happen for a statement that just ran; keep what we had
            return cached
        finally:
            try:
                probe_cursor.close(True)
            except apsw.Error:
                pass
        return found[0] if found else cached

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
        """The exception to raise for ``exc``; the statement is closed (lock held)."""
        self._reset()
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
            with db.lock:
                self._reset()
            bindings = self._bindings(parameters)
            con = self._connection
            with db.lock:
                con._close_orphans()
                db.enter(con)
                try:
                    self._description = None
                    self._rowcount = 0 if parsed.is_dml else -1
                    if parsed.empty:
                        pass
                    elif (db.attach_routing is not None and parsed.sql[:1] in "aA"
                          and (plan := attach.plan(parsed.sql, bindings, db.attach_routing)) is not None):
                        self._pending = False
                        attach.run(db.raw, plan, db.attach_routing)
                    else:
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
            with db.lock:
                self._reset()
                con = self._connection
                con._close_orphans()
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
        with db.lock:
            limit = db.raw.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, -1)
        if len(sql_script.encode("utf-8")) > limit:
            raise _error(DataError, "query string is too large", apsw.SQLITE_TOOBIG)
        self._enter_busy()
        try:
            con = self._connection
            with db.lock:
                self._reset()
                con._close_orphans()
                db.enter(con)
                raw = None
                try:
                    if db.raw.in_transaction and db.owner in (None, con):
                        con._run_traced("COMMIT")
                    raw = db.raw.cursor()
                    raw.exec_trace = con._exec_tracer([])
                    for _ in raw.execute(sql_script):
                        pass
                except BaseException as exc:
                    raise self._fail(exc) from None
                finally:
                    if raw is not None:
                        try:
                            raw.close(True)
                        except apsw.Error:
                            pass
                        raw = None
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
        if self._raw_db is not None:  # after a re-run Connection.__init__: the old database
            db = self._raw_db
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
