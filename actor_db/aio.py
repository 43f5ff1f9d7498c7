"""An asyncio API for KV-backed SQLite, shaped like aiosqlite.

Usage::

    import actor_db.aio

    async with actor_db.aio.connect("orders", kv=store) as db:
        await db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        async with db.execute("SELECT x FROM t") as cursor:
            async for row in cursor:
                ...
        await db.commit()

Every call runs the drop-in :mod:`actor_db.dbapi` connection's work on a worker thread
and resolves an asyncio future with the result, so the event loop never blocks on SQLite
or on a KV round trip. Unlike aiosqlite, there is no thread per connection: all
connections share one bounded pool (:class:`actor_db.runtime.pool.ThreadPool`, at most
``$ACTOR_DB_AIO_THREADS`` threads, 32 by default), so thousands of open connections cost
no OS threads while idle.

Invariants:

- A connection's calls run one at a time and in the order they were made (a FIFO queue
  per connection, drained by one pool thread at a time): ``await db.execute(a); await
  db.execute(b)`` runs ``a`` before ``b``, as with aiosqlite's per-connection queue. The
  queue is not tied to an event loop: one connection may be used from several loops
  (in several threads), as aiosqlite allows.
- A result reaches its future through ``loop.call_soon_threadsafe`` and only if the
  future is not done yet: a cancelled ``await`` never breaks the worker thread; the
  SQLite call it started still completes (the dbapi connection's own lock keeps it
  ordered with the next call).
- A connection that is never closed warns with :class:`ResourceWarning` when collected.

Errors are the drop-in's, i.e. the standard library's ``sqlite3`` exception classes,
re-exported here as aiosqlite does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import warnings
from typing import Any, AsyncIterator, Callable, Generator, Generic, Iterable, TypeVar

from actor_db import dbapi
from actor_db.dbapi import (
    DatabaseError, DataError, Error, IntegrityError, InterfaceError, InternalError, NotSupportedError,
    OperationalError, ProgrammingError, Row, Warning,
)
from actor_db.runtime.pool import ThreadPool

log = logging.getLogger(__name__)

__all__ = ["connect", "Connection", "Cursor", "Row", "Error", "DatabaseError", "DataError", "IntegrityError",
           "InterfaceError", "InternalError", "NotSupportedError", "OperationalError", "ProgrammingError",
           "Warning"]

T = TypeVar("T")

_pool_lock = threading.Lock()
_shared_pool: ThreadPool | None = None


def _pool() -> ThreadPool:
    """The process-wide pool every :class:`Connection` runs its SQLite work on."""
    global _shared_pool
    with _pool_lock:
        if _shared_pool is None:
            _shared_pool = ThreadPool(int(os.environ.get("ACTOR_DB_AIO_THREADS", "32")), name="actor-db-aio")
        return _shared_pool


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
             exc: BaseException | None) -> None:
    """Hand a result to ``future`` on its loop; nothing if that loop is closed (its
    awaiting task is gone with it)."""
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:  # the loop was closed meanwhile
        log.debug("dropped a result for a closed event loop")


class _JobQueue:
    """One connection's jobs, run in order on the shared pool, one thread at a time.

    It holds no reference to its :class:`Connection`: a pool thread still finishing a
    drain after the last job handed its result over must not keep the connection alive,
    or ``del db`` right after an ``await`` would not finalize it at once (its
    ``ResourceWarning`` would come later, from the pool thread, as aiosqlite's
    ``test_emits_warning_when_left_open`` saw under load)."""

    __slots__ = ("_jobs", "_lock", "_draining")

    def __init__(self) -> None:
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._lock = threading.Lock()
        self._draining = False

    def put(self, job: Callable[[], None]) -> None:
        """Queue ``job``; start a drain on the pool if none runs."""
        with self._lock:
            self._jobs.append(job)
            start = not self._draining
            self._draining = True
        if start:
            _pool().submit(self._drain)

    def _drain(self) -> None:
        """Run queued jobs in order until the queue is empty."""
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                job = self._jobs.popleft()
            job()
            del job  # (its closure holds the result until the next one)


class _Result(Generic[T]):
    """What ``execute``-like calls return: await it for the cursor, or use it in
    ``async with`` to have the cursor closed at the end (aiosqlite's contract)."""

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._value: Any = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> T:
        self._value = await self._coro
        return self._value  # type: ignore[no-any-return]

    async def __aexit__(self, *exc: Any) -> None:
        if isinstance(self._value, Cursor):
            await self._value.close()


class Cursor:
    """An async cursor over a :class:`actor_db.dbapi.Cursor`."""

    def __init__(self, connection: Connection, cursor: dbapi.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor
        self.iter_chunk_size = connection.iter_chunk_size

    async def execute(self, sql: str, parameters: Any = None) -> Cursor:
        """Run one statement (``parameters``: a sequence for ``?``, a mapping for ``:name``)."""
        await self._connection._run(self._cursor.execute, sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        await self._connection._run(self._cursor.executemany, sql, parameters)
        return self

    async def executescript(self, sql_script: str) -> Cursor:
        await self._connection._run(self._cursor.executescript, sql_script)
        return self

    async def fetchone(self) -> Any:
        return await self._connection._run(self._cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self._cursor.arraysize if size is None else size
        return await self._connection._run(self._cursor.fetchmany, size)  # type: ignore[no-any-return]

    async def fetchall(self) -> list[Any]:
        return await self._connection._run(self._cursor.fetchall)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._connection._run(self._cursor.close)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        """Rows, fetched ``iter_chunk_size`` at a time (one worker hop per chunk)."""
        while True:
            rows = await self.fetchmany(self.iter_chunk_size)
            if not rows:
                return
            for row in rows:
                yield row

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid  # type: ignore[no-any-return]

    @property
    def arraysize(self) -> int:
        return int(self._cursor.arraysize)

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def row_factory(self) -> Any:
        return self._cursor.row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        self._cursor.row_factory = factory

    @property
    def connection(self) -> Connection:
        return self._connection


class Connection:
    """An async connection; open it with ``await`` or ``async with`` (see :func:`connect`)."""

    def __init__(self, connector: Callable[[], dbapi.Connection], iter_chunk_size: int) -> None:
        self._connector = connector
        self._connection: dbapi.Connection | None = None
        self._jobs = _JobQueue()
        """A pool thread is running this connection's queued jobs."""
        self._closed = False
        """``close``/``stop`` was called."""
        self._gone = False
        """The close has run: calls now fail with ``ValueError("Connection closed")``."""
        self.iter_chunk_size = iter_chunk_size

    # ------------------------------------------------------------- plumbing
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a pool thread, after this connection's earlier calls.

        :raises ValueError: ``Connection closed``: the connection's close already ran
            (aiosqlite's error for it; a call queued before the close gets the drop-in's
            ``ProgrammingError`` instead).
        """
        if self._gone:
            raise ValueError("Connection closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, never lost
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)

        self._enqueue(job)
        return await future

    def _enqueue(self, job: Callable[[], None]) -> None:
        """Queue ``job`` after this connection's earlier ones; start a drain if none runs."""
        self._jobs.put(job)

    @property
    def _conn(self) -> dbapi.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    async def _open(self) -> Connection:
        if self._connection is None:
            self._connection = await self._run(self._connector)
        return self

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._open().__await__()

    async def __aenter__(self) -> Connection:
        return await self._open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def _running(self) -> bool:
        """Open and not closed (aiosqlite's attribute of the same name)."""
        return self._connection is not None and not self._closed

    def __del__(self) -> None:
        if self._connection is not None and not self._closed:
            warnings.warn(f"{self!r} was deleted before being closed", ResourceWarning, stacklevel=1)
            try:
                self._connection.close()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    # ------------------------------------------------------------ statements
    def cursor(self) -> _Result[Cursor]:
        async def make() -> Cursor:
            return Cursor(self, await self._run(self._conn.cursor))
        return _Result(make())

    def execute(self, sql: str, parameters: Any = None) -> _Result[Cursor]:
        """``await db.execute(...)`` or ``async with db.execute(...) as cursor``."""
        async def run() -> Cursor:
            raw = await self._run(self._conn.execute, sql, () if parameters is None else parameters)
            return Cursor(self, raw)
        return _Result(run())

    def executemany(self, sql: str, parameters: Iterable[Any]) -> _Result[Cursor]:
        async def run() -> Cursor:
            return Cursor(self, await self._run(self._conn.executemany, sql, parameters))
        return _Result(run())

    def executescript(self, sql_script: str) -> _Result[Cursor]:
        async def run() -> Cursor:
            return Cursor(self, await self._run(self._conn.executescript, sql_script))
        return _Result(run())

    async def execute_insert(self, sql: str, parameters: Any = None) -> Any:
        """Run an INSERT and return ``(last_insert_rowid(),)`` (one worker hop)."""
        def run() -> Any:
            self._conn.execute(sql, () if parameters is None else parameters)
            return self._conn.execute("SELECT last_insert_rowid()").fetchone()
        return await self._run(run)

    async def execute_fetchall(self, sql: str, parameters: Any = None) -> list[Any]:
        """Run a statement and return all its rows (one worker hop)."""
        def run() -> list[Any]:
            return self._conn.execute(sql, () if parameters is None else parameters).fetchall()
        return await self._run(run)

    async def commit(self) -> None:
        await self._run(self._conn.commit)

    async def rollback(self) -> None:
        await self._run(self._conn.rollback)

    async def close(self) -> None:
        """Close the connection (idempotent); an open transaction is rolled back."""
        if self._connection is None or self._closed:
            return
        self._closed = True
        try:
            await self._run(self._connection.close)
        finally:
            self._gone = True

    def stop(self) -> asyncio.Future[None] | None:
        """Close the connection without waiting (aiosqlite's ``stop``): the close is queued
        after the calls already made; returns a future of it when called inside a running
        event loop, else ``None``. Prefer ``await close()`` or ``async with``."""
        connection = self._connection
        if connection is None or self._closed:
            return None
        self._closed = True
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None

        def close() -> None:
            try:
                connection.close()
            except BaseException as exc:
                if future is None or loop is None:
                    log.warning("closing %r failed: %s", self, exc)
                else:
                    _deliver(loop, future, None, exc)
            else:
                if future is not None and loop is not None:
                    _deliver(loop, future, None, None)
            finally:
                self._gone = True

        self._enqueue(close)
        return future

    def interrupt(self) -> None:
        """Abort the running statement (safe from any thread: no hop)."""
        self._conn.interrupt()

    async def set_authorizer(self, authorizer_callback: Callable[..., int] | None) -> None:
        """Install (or, with ``None``, remove) an authorizer, as ``sqlite3.Connection.set_authorizer``."""
        await self._run(self._conn.set_authorizer, authorizer_callback)

    async def create_function(self, name: str, num_params: int, func: Callable[..., Any], *,
                              deterministic: bool = False) -> None:
        await self._run(lambda: self._conn.create_function(name, num_params, func, deterministic=deterministic))

    async def set_trace_callback(self, handler: Callable[[str], Any] | None) -> None:
        await self._run(self._conn.set_trace_callback, handler)

    async def set_progress_handler(self, handler: Callable[[], Any] | None, n: int) -> None:
        await self._run(self._conn.set_progress_handler, handler, n)

    async def enable_load_extension(self, value: bool) -> None:
        await self._run(self._conn.enable_load_extension, value)

    async def load_extension(self, path: str) -> None:
        await self._run(self._conn.load_extension, path)

    async def iterdump(self) -> AsyncIterator[str]:
        """The SQL text that recreates the database, statement by statement."""
        lines = await self._run(lambda: list(self._conn.iterdump()))
        for line in lines:
            yield line

    async def backup(self, target: Connection | Any, *, pages: int = -1, progress: Callable[..., Any] | None = None,
                     name: str = "main", sleep: float = 0.250) -> None:
        """Copy this database into ``target`` (an async or a sync connection)."""
        raw_target = target._conn if isinstance(target, Connection) else target
        await self._run(lambda: self._conn.backup(raw_target, pages=pages, progress=progress, name=name,
                                                  sleep=sleep))

    # ------------------------------------------------------------ properties
    @property
    def in_transaction(self) -> bool:
        return bool(self._conn.in_transaction)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value

    @property
    def row_factory(self) -> Any:
        return self._conn.row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        self._conn.row_factory = factory

    @property
    def text_factory(self) -> Any:
        return self._conn.text_factory

    @text_factory.setter
    def text_factory(self, factory: Any) -> None:
        self._conn.text_factory = factory

    @property
    def total_changes(self) -> int:
        return int(self._conn.total_changes)

    @property
    def sync_connection(self) -> dbapi.Connection:
        """The underlying drop-in :class:`actor_db.dbapi.Connection` (for libraries that
        need a DB-API connection, e.g. SQLAlchemy's async adaptation)."""
        return self._conn


def connect(database: Any, *, iter_chunk_size: int = 64, **kwargs: Any) -> Connection:
    """An async connection to ``database``, opened on ``await`` or ``async with``.

    ``database`` and ``kwargs`` are :func:`actor_db.dbapi.connect`'s (``kv=``, ``uri=``,
    ``timeout=``, ``readonly=``, ``vfs_options=``, ...); ``check_same_thread`` is always
    ``False`` (calls run on pool threads, one at a time).

    :param iter_chunk_size: rows fetched per worker hop by ``async for row in cursor``.

    As in aiosqlite, ``database`` may also be any other object: its ``str()`` is the name.
    """
    if not isinstance(database, (str, bytes, os.PathLike)):
        database = str(database)
    kwargs["check_same_thread"] = False
    return Connection(lambda: dbapi.connect(database, **kwargs), iter_chunk_size)
