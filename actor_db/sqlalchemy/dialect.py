"""The ``actordb`` and ``actordb_async`` drivers of SQLAlchemy's SQLite dialect.

Both are SQLAlchemy's own SQLite dialects (``pysqlite`` and ``aiosqlite``: the same SQL
compiler, type handling and reflection) with the drop-in :mod:`actor_db.dbapi` and the
async :mod:`actor_db.aio` as their DB-API modules.

URL: ``sqlite+actordb:///<database>?kv=<store>&...``

- ``<database>``: an actor id (a bare name: a KV-backed database), or what the stdlib
  takes (``:memory:``, a path to a plain SQLite file: plain SQLite, as with pysqlite).
  An actor id is used as given (pysqlite would make it an absolute path).
- ``kv``: the store, as ``--kv`` / ``$ACTOR_DB_KV`` spell it (``lmdb:PATH``,
  ``memory:``, ``redis://host:port/0?namespace=NS``); omitted: the default store. One
  store object per spec per process (:func:`actor_db.defaults.shared_store`).
- ``vfs`` (``python`` or ``native``), ``timeout`` (seconds), ``readonly``, ``uri``,
  ``detect_types``, ``check_same_thread``: passed to ``actor_db.connect``.

Pooling: every ``connect()`` of the drop-in is a real SQLite connection with the
database shared through the VFS's locks, so a KV-backed or file database gets a
:class:`~sqlalchemy.pool.QueuePool` (async: ``AsyncAdaptedQueuePool``) of connections
usable from any thread, as SQLAlchemy does for pysqlite files; ``:memory:`` keeps
pysqlite's one-connection pools.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import util
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_dbapi, SQLiteDialect_aiosqlite,
)
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine.url import URL

try:  # SQLAlchemy 2.0
    from sqlalchemy.util.concurrency import await_fallback, await_only as _await
except ImportError:  # SQLAlchemy 2.1+: one await_, no async_fallback mode
    from sqlalchemy.util.concurrency import await_ as _await

    await_fallback = None

__all__ = ["ActorDBDialect", "ActorDBAsyncDialect", "connect_arguments"]

_BOOLEAN = ("readonly", "uri", "check_same_thread")


def connect_arguments(url: URL) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` for ``actor_db.connect`` from a ``sqlite+actordb`` URL."""
    from actor_db.defaults import shared_store

    query = dict(url.query)
    kwargs: dict[str, Any] = {}
    spec = query.pop("kv", None)
    if spec:
        kwargs["kv"] = shared_store(spec if isinstance(spec, str) else spec[-1])
    vfs_kind = query.pop("vfs", None)
    if vfs_kind:
        kwargs["vfs_options"] = {"vfs": vfs_kind}
    for name in _BOOLEAN:
        if name in query:
            kwargs[name] = util.asbool(query.pop(name))
    if "timeout" in query:
        kwargs["timeout"] = float(query.pop("timeout"))  # type: ignore[arg-type]
    if "detect_types" in query:
        kwargs["detect_types"] = int(query.pop("detect_types"))  # type: ignore[arg-type]
    if query:
        raise ValueError(f"unknown option(s) in the sqlite+actordb URL: {', '.join(sorted(query))}")
    database = url.database or ":memory:"
    kwargs.setdefault("check_same_thread", database == ":memory:")
    return [database], kwargs


def _load_sqlite_provisioning() -> None:
    """Import SQLAlchemy's SQLite hooks of ``sqlalchemy.testing.provision`` (per-worker
    database names, the attached ``test_schema``), which its test suite needs to run on
    a ``sqlite`` dialect; they are keyed by the backend name, so they serve both drivers."""
    try:
        __import__("sqlalchemy.dialects.sqlite.provision")
    except ImportError:  # pragma: no cover - a SQLAlchemy without its testing package
        pass


class ActorDBDialect(SQLiteDialect_pysqlite):
    """``sqlite+actordb://``: SQLAlchemy's pysqlite dialect on :mod:`actor_db.dbapi`."""

    driver = "actordb"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        from actor_db import dbapi

        return dbapi

    def create_connect_args(self, url: URL) -> Any:
        return connect_arguments(url)

    @classmethod
    def load_provisioning(cls) -> None:
        """SQLAlchemy's SQLite provisioning for its test suite (``sqlalchemy.testing``):
        the default looks for ``actor_db.sqlalchemy.provision``, which does not exist."""
        _load_sqlite_provisioning()


class _AsyncConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's adaptation, with ``isolation_level`` set through :mod:`actor_db.aio`'s
    ordered worker hop instead of aiosqlite's private queue."""

    __slots__ = ()

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        conn = self._connection
        wait = getattr(self, "await_", _await)  # 2.0: per-class (fallback mode); 2.1: one function
        try:
            wait(conn._run(setattr, conn.sync_connection, "isolation_level", value))
        except Exception as error:
            self._handle_exception(error)


class _AsyncFallbackConnection(_AsyncConnection):
    """SQLAlchemy 2.0's ``async_fallback=True`` mode (removed in 2.1)."""

    __slots__ = ()
    await_ = staticmethod(await_fallback) if await_fallback is not None else None


class _AsyncDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API face SQLAlchemy's async engine expects, over :mod:`actor_db.aio`."""

    def __init__(self) -> None:
        import actor_db.aio
        from actor_db import dbapi

        self._module = actor_db.aio
        super().__init__(_AioModule(actor_db.aio, dbapi), dbapi)  # type: ignore[arg-type]

    def connect(self, *arg: Any, **kw: Any) -> Any:
        async_fallback = kw.pop("async_fallback", False)
        creator_fn = kw.pop("async_creator_fn", None)
        connection = creator_fn(*arg, **kw) if creator_fn else self._module.connect(*arg, **kw)
        if util.asbool(async_fallback) and await_fallback is not None:
            return _AsyncFallbackConnection(self, await_fallback(connection))
        return _AsyncConnection(self, _await(connection))


class _AioModule:
    """:mod:`actor_db.aio` with the module attributes aiosqlite's adaptation reads."""

    def __init__(self, aio: Any, dbapi: Any) -> None:
        self.Connection = aio.Connection
        for name in ("DatabaseError", "Error", "IntegrityError", "NotSupportedError", "OperationalError",
                     "ProgrammingError", "sqlite_version", "sqlite_version_info",
                     "PARSE_COLNAMES", "PARSE_DECLTYPES", "Binary"):
            setattr(self, name, getattr(dbapi, name))


class ActorDBAsyncDialect(SQLiteDialect_aiosqlite):
    """``sqlite+actordb_async://``: SQLAlchemy's aiosqlite dialect on :mod:`actor_db.aio`."""

    driver = "actordb_async"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return _AsyncDBAPI()

    def create_connect_args(self, url: URL) -> Any:
        args, kwargs = connect_arguments(url)
        kwargs.pop("check_same_thread", None)  # actor_db.aio runs calls on pool threads
        return args, kwargs

    @classmethod
    def load_provisioning(cls) -> None:
        """As :meth:`ActorDBDialect.load_provisioning`."""
        _load_sqlite_provisioning()
