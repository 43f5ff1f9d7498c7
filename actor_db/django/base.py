"""The ``actor_db.django`` database backend: Django's SQLite backend on the drop-in.

Mapping of what Django's SQLite backend does with files:

- ``NAME`` is an actor id in the store ``OPTIONS["kv"]`` names (``lmdb:PATH``,
  ``memory:``, ``redis://...``, as ``--kv`` spells it; default: the default store). Any
  string is used as the id as it is, a path included (``BASE_DIR / "db.sqlite3"`` becomes
  the actor whose id is that path's text). ``":memory:"`` stays Django's in-memory
  SQLite database.
- The **test database** is the actor ``test_<NAME>`` (or ``TEST["NAME"]``) in the same
  store, created empty for the run and deleted at its end (kept with ``--keepdb``);
  parallel test workers get ``<test name>_<n>``, copied with SQLite's backup API.
- ``OPTIONS["vfs"]``: ``"python"`` or ``"native"``; the other OPTIONS are Django's
  (``timeout``, ``init_command``, ``transaction_mode``).

Every connection is its own SQLite connection; they share the database through the
VFS's locks and, across processes, the KV writer lease, as SQLite files are shared.
"""

from __future__ import annotations

import logging

import datetime
import decimal
import itertools
import re
from collections.abc import Mapping
from typing import Any

from django.db.backends.sqlite3 import base as sqlite_base
from django.db.backends.sqlite3._functions import register as register_functions
from django.utils.asyncio import async_unsafe
from django.utils.dateparse import parse_date, parse_datetime, parse_time

from actor_db import dbapi as Database
from actor_db.django.creation import DatabaseCreation


log = logging.getLogger(__name__)
__all__ = ["DatabaseWrapper", "SQLiteCursorWrapper"]

# Django registers these on the stdlib module; the drop-in keeps its own registry.
Database.register_converter("bool", b"1".__eq__)
Database.register_converter("date", sqlite_base.decoder(parse_date))
Database.register_converter("time", sqlite_base.decoder(parse_time))
Database.register_converter("datetime", sqlite_base.decoder(parse_datetime))
Database.register_converter("timestamp", sqlite_base.decoder(parse_datetime))
Database.register_adapter(decimal.Decimal, str)
Database.register_adapter(datetime.date, sqlite_base.adapt_date)
Database.register_adapter(datetime.datetime, sqlite_base.adapt_datetime)

_FORMAT_QMARK = re.compile(r"(?<!%)%s")


def is_kv_name(name: Any) -> bool:
    """Whether ``NAME`` names an actor (everything but Django's in-memory databases)."""
    return not DatabaseCreation.is_in_memory_db(name)


class SQLiteCursorWrapper(Database.Cursor):
    """Django's ``format``/``pyformat`` parameters turned into SQLite's ``qmark``/``named``
    (what Django's own SQLite cursor wrapper does, on the drop-in's cursor)."""

    def execute(self, query: str, params: Any = None) -> Any:
        if params is None:
            return super().execute(query)
        names = list(params) if isinstance(params, Mapping) else None
        return super().execute(self.convert_query(query, param_names=names), params)

    def executemany(self, query: str, param_list: Any) -> Any:
        peek, param_list = itertools.tee(iter(param_list))
        first = next(peek, None)
        names = list(first) if first and isinstance(first, Mapping) else None
        return super().executemany(self.convert_query(query, param_names=names), param_list)

    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is None:
            return _FORMAT_QMARK.sub("?", query).replace("%%", "%")
        return query % {name: f":{name}" for name in param_names}


class DatabaseWrapper(sqlite_base.DatabaseWrapper):  # type: ignore[misc]
    vendor = "sqlite"
    display_name = "SQLite"  # Django's messages name the SQL dialect, which is SQLite's
    Database = Database
    creation_class = DatabaseCreation

    def get_connection_params(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_connection_params()
        spec = kwargs.pop("kv", None)
        vfs_kind = kwargs.pop("vfs", None)
        name = kwargs["database"]
        if is_kv_name(name):
            kwargs["database"] = str(name)
            kwargs["kv"] = self.store(spec)
            kwargs["uri"] = False
            if vfs_kind:
                kwargs["vfs_options"] = {"vfs": vfs_kind}
        return kwargs

    @staticmethod
    def store(spec: str | None) -> Any:
        """The store ``OPTIONS["kv"]`` names (one per spec per process), else the default."""
        if spec:
            from actor_db.defaults import shared_store

            return shared_store(spec)
        return Database.default_store()

    @async_unsafe
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        conn = Database.connect(**conn_params)
        register_functions(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA legacy_alter_table = OFF")
        for init_command in self.init_commands:
            if init_command := init_command.strip():
                conn.execute(init_command)
        return conn

    @async_unsafe
    def ensure_connection(self) -> None:
        """Connect if needed; a DB-API connection closed behind Django's back (code that
        took ``connection.connection`` and closed it) is replaced by a new one outside a
        transaction, as Django's in-memory SQLite test databases never go away. Inside an
        ``atomic`` block it stays an error: the transaction is gone."""
        conn = self.connection
        if conn is not None and getattr(conn, "_closed", False) and not self.in_atomic_block:
            log.info("the DB-API connection of %r was closed outside Django: reconnecting", self.alias)
            self.connection = None
        super().ensure_connection()

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=SQLiteCursorWrapper)
