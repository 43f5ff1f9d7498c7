"""An LMDB store never crosses ``fork()``: the child gets a clear error, the parent is unharmed.

Before: a forked child's read transactions on the inherited environment took LMDB reader
slots under the parent's pid that were never freed, so after a few hundred reads every
process of the store failed with ``MDB_READERS_FULL``, the parent included (Django's
``--parallel`` test runner and gunicorn's ``--preload`` fork like that).
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable

import pytest

import actor_db.dbapi as dbapi
from actor_db.kv import LmdbKV

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")


def _in_child(body: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_is_refused_and_the_parent_keeps_working(tmp_path: pathlib.Path) -> None:
    store = LmdbKV(tmp_path / "store")
    con = dbapi.connect("a", kv=store)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()

    def child() -> int:
        refused = 0
        for _ in range(300):  # more reads than LMDB has reader slots by default
            try:
                store.actor("a").get_many([b"x"])
            except Exception as exc:
                refused += "before this process was forked" in str(exc)
        try:
            LmdbKV(tmp_path / "store")
        except Exception as exc:
            refused += "before this process was forked" in str(exc)
        return 0 if refused == 301 else 1

    assert _in_child(child) == 0
    con.execute("INSERT INTO t VALUES (2)")
    con.commit()
    assert con.execute("SELECT count(*) FROM t").fetchone() == (2,)
    con.close()
    store.close()


def test_a_child_opens_the_store_itself_when_the_parent_closed_it_before_forking(tmp_path: pathlib.Path) -> None:
    store = LmdbKV(tmp_path / "store")
    con = dbapi.connect("a", kv=store)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    store.close()

    def child() -> int:
        own = LmdbKV(tmp_path / "store")
        c = dbapi.connect("a", kv=own)
        for i in range(50):
            c.execute("INSERT INTO t VALUES (?)", (i,))
            c.commit()
        c.close()
        own.close()
        return 0

    assert _in_child(child) == 0
    store = LmdbKV(tmp_path / "store")
    con = dbapi.connect("a", kv=store)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (50,)
    con.close()
    store.close()
