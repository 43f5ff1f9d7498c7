"""Small differences from the stdlib that tools such as Datasette and sqlite-utils saw,
each checked against the stdlib ``sqlite3`` on a file as the reference."""

from __future__ import annotations

import pathlib
import re
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
