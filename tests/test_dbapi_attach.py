"""ATTACH on a KV-backed drop-in connection maps the name as ``connect`` would.

Every driver and both VFSes: the attached actor's database is the KV one (its writes
commit to the KV and survive), a ``file:`` URI is read as one with ``uri=True``
(``mode=ro`` refuses writes), parameters and quoted schema names work, memory and
temporary databases stay SQLite's own, and a plain path stays a plain file.
"""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

import pytest

import actor_db
from actor_db import dbapi
from actor_db.dbapi import routing
from actor_db.kv import KVStore


def _connect(name: str, store: KVStore, vfs_kind: str, **kwargs: Any) -> Any:
    return actor_db.connect(name, kv=store, vfs_options={"vfs": vfs_kind}, **kwargs)


def _seed(store: KVStore, vfs_kind: str, actor: str, rows: list[int]) -> None:
    con = _connect(actor, store, vfs_kind)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
    con.commit()
    con.close()


def _rows(store: KVStore, vfs_kind: str, actor: str) -> list[int]:
    con = _connect(actor, store, vfs_kind)
    try:
        return [r[0] for r in con.execute("SELECT x FROM t ORDER BY x")]
    finally:
        con.close()


def test_attach_opens_the_actor_database_and_its_writes_commit(store: KVStore, vfs_kind: str) -> None:
    _seed(store, vfs_kind, "orders", [1, 2])
    con = _connect("app", store, vfs_kind)
    con.execute("ATTACH 'orders' AS o")
    assert con.execute("SELECT count(*) FROM o.t").fetchone() == (2,)
    files = {row[1]: row[2] for row in con.execute("PRAGMA database_list")}
    assert files["o"].startswith("actor-db")  # the KV-backed database, not a file on disk
    assert con.execute("PRAGMA o.journal_mode").fetchone() == ("memory",)
    con.execute("INSERT INTO o.t VALUES (3)")
    con.commit()
    con.execute("DETACH o")
    con.close()
    assert _rows(store, vfs_kind, "orders") == [1, 2, 3]


def test_attach_forms_parameters_and_quoted_names(store: KVStore, vfs_kind: str) -> None:
    _seed(store, vfs_kind, "orders", [5])
    con = _connect("app", store, vfs_kind)
    con.execute("ATTACH DATABASE ? AS \"two words\";", ("orders",))
    con.execute("/* comment */ attach :name as [x]", {"name": "orders"})
    assert con.execute('SELECT x FROM "two words".t').fetchall() == [(5,)]
    assert con.execute("SELECT x FROM x.t").fetchall() == [(5,)]
    con.close()


def test_attach_reads_an_identifier_as_the_file_name_as_sqlite_does(store: KVStore, vfs_kind: str) -> None:
    """SQLite takes an identifier where ATTACH expects the file name as that name
    (``"suite.db"``, ``[x]``, a bare word: SQLAlchemy's test provisioning writes
    ``ATTACH DATABASE "..._test_schema.db" AS test_schema``); so does the mapping."""
    _seed(store, vfs_kind, "s.db", [1])
    _seed(store, vfs_kind, "plain", [2])
    con = _connect("app", store, vfs_kind)
    con.execute('ATTACH DATABASE "s.db" AS q')
    con.execute("ATTACH plain AS b")
    con.execute("ATTACH [s.db] AS k")
    files = {row[1]: row[2] for row in con.execute("PRAGMA database_list")}
    assert all(files[schema].startswith("actor-db") for schema in ("q", "b", "k")), files
    assert con.execute("SELECT q.t.x, b.t.x, k.t.x FROM q.t, b.t, k.t").fetchall() == [(1, 2, 1)]
    con.close()


def test_uri_connection_reads_attach_uris_and_honours_mode_ro(store: KVStore, vfs_kind: str) -> None:
    _seed(store, vfs_kind, "orders", [7])
    con = _connect("file:app?mode=rwc", store, vfs_kind, uri=True)
    con.execute("ATTACH 'file:orders?mode=ro' AS r")
    assert con.execute("SELECT x FROM r.t").fetchall() == [(7,)]
    with pytest.raises(dbapi.OperationalError, match="readonly"):
        con.execute("INSERT INTO r.t VALUES (8)")
    con.close()
    assert _rows(store, vfs_kind, "orders") == [7]


def test_an_identifier_as_the_attach_name_is_that_name(store: KVStore, vfs_kind: str,
                                                      tmp_path: pathlib.Path) -> None:
    """SQLite reads an identifier in ATTACH's file position (``"x"``, ``[x]``, `` `x` ``, a
    bare word) as the string ``x`` (Datasette's crossdb: ``ATTACH DATABASE "file:..?mode=ro"
    AS [name]``): the drop-in maps it as ``connect`` would, the stdlib opens that file."""
    _seed(store, vfs_kind, "orders", [9])
    plain = tmp_path / "orders.db"
    seed = sqlite3.connect(plain)
    seed.execute("CREATE TABLE t (x INTEGER)")
    seed.execute("INSERT INTO t VALUES (9)")
    seed.commit()
    seed.close()
    con = _connect("file:app?mode=rwc", store, vfs_kind, uri=True)
    reference = sqlite3.connect(f"file:{tmp_path / 'app.db'}", uri=True)
    try:
        for n, (ours, theirs) in enumerate([('"file:orders?mode=ro"', f'"file:{plain}?mode=ro"'),
                                            ("[orders]", f"[{plain}]"), ("`orders`", f"`{plain}`"),
                                            ("orders", None)]):
            for c, name in ((con, ours), (reference, theirs)):
                if name is None:
                    continue
                c.execute(f"ATTACH DATABASE {name} AS [s{n}];")
                assert c.execute(f"SELECT x FROM s{n}.t").fetchall() == [(9,)], name
        with pytest.raises(dbapi.OperationalError, match="readonly"):
            con.execute("INSERT INTO s0.t VALUES (10)")
    finally:
        con.close()
        reference.close()
    assert _rows(store, vfs_kind, "orders") == [9]


def test_memory_and_temporary_attachments_stay_sqlite_own(store: KVStore, vfs_kind: str) -> None:
    con = _connect("app", store, vfs_kind)
    con.execute("ATTACH ':memory:' AS m")
    con.execute("ATTACH '' AS tmp")
    con.execute("CREATE TABLE m.a (x)")
    files = {row[1]: row[2] for row in con.execute("PRAGMA database_list")}
    assert files["m"] == "" and files["tmp"] == ""
    con.close()
    assert store.actor(":memory:").scan(b"", b"\xff" * 8) == []  # no actor was made of it


def test_attach_errors_are_sqlite_errors_and_release_the_database(store: KVStore, vfs_kind: str) -> None:
    _seed(store, vfs_kind, "orders", [1])
    con = _connect("app", store, vfs_kind)
    con.execute("ATTACH 'orders' AS o")
    with pytest.raises(dbapi.OperationalError, match="already in use"):
        con.execute("ATTACH 'orders' AS o")
    with pytest.raises(dbapi.OperationalError, match="no such table"):
        con.execute("SELECT * FROM o.missing")
    con.execute("BEGIN")
    con.execute("ATTACH 'other' AS p")  # inside a transaction, as SQLite allows
    con.execute("CREATE TABLE p.u (y)")
    con.rollback()
    con.execute("DETACH o")
    con.execute("DETACH p")
    con.close()
    other = _connect("orders", store, vfs_kind)  # nothing is left claimed
    other.execute("INSERT INTO t VALUES (2)")
    other.commit()
    other.close()
    assert _rows(store, vfs_kind, "orders") == [1, 2]


def test_router_sends_attach_where_it_sends_connect(store: KVStore, tmp_path: pathlib.Path) -> None:
    """The CPython-suite / Datasette harness routes every name to an actor: ATTACH of a
    path then reaches the same KV database ``connect(path)`` opens, never the disk."""
    path = str(tmp_path / "data.db")
    old = routing.set_router(lambda name: store.actor(name))
    try:
        first = actor_db.connect(path)
        first.execute("CREATE TABLE t (x)")
        first.execute("INSERT INTO t VALUES (42)")
        first.commit()
        first.close()
        main = actor_db.connect(str(tmp_path / "main.db"))
        main.execute("ATTACH ? AS d", (path,))
        assert main.execute("SELECT x FROM d.t").fetchall() == [(42,)]
        main.close()
    finally:
        routing.set_router(old)
    assert not pathlib.Path(path).exists()


def test_plain_connection_attach_is_unchanged(tmp_path: pathlib.Path) -> None:
    other = tmp_path / "other.db"
    plain = sqlite3.connect(other)
    plain.execute("CREATE TABLE t (x)")
    plain.execute("INSERT INTO t VALUES (1)")
    plain.commit()
    plain.close()
    con = actor_db.connect(str(tmp_path / "main.db"))
    con.execute("ATTACH ? AS o", (str(other),))
    assert con.execute("SELECT x FROM o.t").fetchall() == [(1,)]
    con.close()
