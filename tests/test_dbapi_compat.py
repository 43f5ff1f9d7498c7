"""Small differences from the stdlib that tools such as Datasette and sqlite-utils saw,
each checked against the stdlib ``sqlite3`` on a file as the reference."""

from __future__ import annotations

import pathlib
import gc
import re
import threading
from typing import Any
import sqlite3 as stdlib

import actor_db
import actor_db.dbapi as sqlite3
from actor_db.kv import KVStore


def test_row_repr_is_the_stdlib_text(store: KVStore, tmp_path: pathlib.Path) -> None:
    for con in (actor_db.connect("rows", kv=store), stdlib.connect(tmp_path / "rows.db")):
        con.row_factory = sqlite3.Row if isinstance(con, sqlite3.Connection) else stdlib.Row
        row = con.execute("select 1 as one").fetchone()
        assert re.fullmatch(r"<sqlite3\.Row object at 0x[0-9a-f]+>", repr(row)), repr(row)
        con.close()


def test_setting_journal_mode_answers_in_a_journal_mode_column(store: KVStore, tmp_path: pathlib.Path) -> None:
    con = actor_db.connect("journal", kv=store)
    reference = stdlib.connect(":memory:")  # also a database whose journal mode cannot become WAL
    try:
        for sql in ("PRAGMA journal_mode=WAL", "pragma main.journal_mode = 'wal'", "PRAGMA journal_mode(delete)",
                    "PRAGMA journal_mode"):
            ours, theirs = con.execute(sql), reference.execute(sql)
            assert [d[0] for d in ours.description] == [d[0] for d in theirs.description] == ["journal_mode"]
            assert ours.fetchall() == theirs.fetchall() == [("memory",)]
    finally:
        con.close()
        reference.close()


def test_a_read_only_connection_sees_each_later_commit(store: KVStore, vfs_kind: str) -> None:
    writer = actor_db.connect("latest", kv=store, vfs_options={"vfs": vfs_kind})
    with writer:
        writer.execute("create table t(x)")
    reader = actor_db.connect("file:latest?mode=ro", uri=True, kv=store, vfs_options={"vfs": vfs_kind})
    try:
        for i in range(3):
            with writer:
                writer.execute("insert into t values (?)", (i,))
            assert reader.execute("select count(*) from t").fetchone() == (i + 1,)
    finally:
        reader.close()
        writer.close()


def _shares(connect: Any, uri: str) -> list[Any]:
    """What a second connection to ``uri`` sees of a table the first one wrote, from
    another thread (Datasette's ``_internal`` database: one writer, readers in threads)."""
    first = connect(uri, uri=True, check_same_thread=False)
    with first:
        first.execute("create table t(x)")
        first.execute("insert into t values (1)")
    seen: list[Any] = []

    def read() -> None:
        second = connect(uri, uri=True, check_same_thread=False)
        try:
            seen.append(second.execute("select x from t").fetchall())
        except Exception as exc:  # noqa: BLE001 - the answer is compared with the stdlib's
            seen.append(f"{type(exc).__name__}: {exc}")
        finally:
            second.close()

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive()
    first.close()
    return seen


def test_shared_cache_memory_uris_share_one_database_as_in_the_stdlib() -> None:
    """``file:NAME?mode=memory&cache=shared`` (and ``file::memory:?cache=shared``) is one
    database for every connection of the process while one is open, as in the stdlib,
    although apsw's SQLite is built without shared cache (the drop-in opens an actor of a
    private in-process store instead, deleted with the last connection)."""
    for uri in ("file:_internal_ds27?mode=memory&cache=shared", "file::memory:?cache=shared"):
        assert _shares(sqlite3.connect, uri) == _shares(stdlib.connect, uri) == [[(1,)]], uri
    # the database lives while a connection holds it, as in the stdlib
    for connect in (sqlite3.connect, stdlib.connect):
        uri = "file:ds27_lifetime?mode=memory&cache=shared"
        con = connect(uri, uri=True)
        con.execute("create table t(x)")
        con.close()
        again = connect(uri, uri=True)
        assert again.execute("select count(*) from sqlite_master").fetchone() == (0,)
        again.close()
    # a reader of another table is not held up by a write transaction left open (Datasette's
    # internal database: its writer thread commits only with the next `with conn:` task)
    for connect in (sqlite3.connect, stdlib.connect):
        uri = "file:ds27_open_writer?mode=memory&cache=shared"
        writer = connect(uri, uri=True, timeout=0.5)
        writer.executescript("create table t(x); create table u(y); insert into u values (7);")
        writer.execute("insert into t values (1)")
        assert writer.in_transaction
        reader = connect(uri, uri=True, timeout=0.5)
        assert reader.execute("select y from u").fetchall() == [(7,)], connect
        writer.commit()
        assert reader.execute("select x from t").fetchall() == [(1,)], connect
        reader.close()
        writer.close()
    # without cache=shared, each connection has its own memory database
    for connect in (sqlite3.connect, stdlib.connect):
        a = connect("file:ds27_private?mode=memory", uri=True)
        a.execute("create table t(x)")
        b = connect("file:ds27_private?mode=memory", uri=True)
        assert b.execute("select count(*) from sqlite_master").fetchone() == (0,)
        a.close()
        b.close()


def test_an_immutable_uri_opens_read_only(store: KVStore, tmp_path: pathlib.Path) -> None:
    """``immutable=1`` (Datasette's immutable databases) cannot be written, in the stdlib
    (``attempt to write a readonly database``) and on a KV-backed database alike."""
    writer = actor_db.connect("frozen", kv=store)
    with writer:
        writer.execute("create table t(x)")
    writer.close()
    path = tmp_path / "frozen.db"
    plain = stdlib.connect(path)
    plain.execute("create table t(x)")
    plain.close()
    for con, errors in ((actor_db.connect("file:frozen?immutable=1", uri=True, kv=store), sqlite3),
                        (stdlib.connect(f"file:{path}?immutable=1", uri=True), stdlib)):
        assert con.execute("select count(*) from t").fetchone() == (0,)
        try:
            con.execute("insert into t values (1)")
            con.commit()
            raise AssertionError("an immutable database took a write")
        except errors.OperationalError as exc:
            assert str(exc) == "attempt to write a readonly database"
        finally:
            con.close()


def test_a_shared_memory_connection_freed_by_garbage_collection_during_an_open(monkeypatch: Any) -> None:
    """A shared in-memory connection left unclosed in a reference cycle (Datasette's
    per-thread read connections) is closed by whichever garbage collection frees it,
    also one that runs inside another open of a shared in-memory database on the same
    thread: that open completes (the registry's lock is reentrant and its release makes no
    KV call; with a plain lock the open deadlocked there)."""
    from actor_db.dbapi import routing

    uri = "file:ds27_gc?mode=memory&cache=shared"
    keep = sqlite3.connect(uri, uri=True)
    keep.execute("create table t(x)")
    leaked = sqlite3.connect(uri, uri=True)
    leaked.cycle = leaked  # type: ignore[attr-defined]  # only the cyclic collector frees it
    del leaked
    store = routing.shared_memory._store
    real_actor = store.actor

    def actor_collecting(name: str) -> Any:
        gc.collect()  # what any allocation inside the open may trigger
        return real_actor(name)

    monkeypatch.setattr(store, "actor", actor_collecting)
    opened: list[Any] = []
    opener = threading.Thread(target=lambda: opened.append(sqlite3.connect(uri, uri=True, check_same_thread=False)),
                              daemon=True)
    opener.start()
    opener.join(timeout=20)
    assert not opener.is_alive(), "the open deadlocked in the garbage collection"
    monkeypatch.setattr(store, "actor", real_actor)
    assert routing.shared_memory.counts["ds27_gc"] == 2  # keep and the new one; the leaked one released
    assert opened[0].execute("select count(*) from sqlite_master").fetchone() == (1,)  # the same database
    opened[0].close()
    keep.close()
    assert "ds27_gc" not in routing.shared_memory.counts and "ds27_gc" in routing.shared_memory.doomed
    again = sqlite3.connect(uri, uri=True)  # a new database: the last one was freed
    assert again.execute("select count(*) from sqlite_master").fetchone() == (0,)
    again.close()
