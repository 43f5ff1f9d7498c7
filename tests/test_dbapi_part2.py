"""``actor_db.dbapi``, issue 14's smaller bugs, each on plain (``:memory:``, file) and
KV-backed connections (every driver, both VFSes), checked against the stdlib ``sqlite3``.

- a statement string starting with empty statements (``"; begin"``, ``";;select 1"``);
- ``cursor.description`` of a zero-row ``SELECT *`` after ``ALTER TABLE ... ADD COLUMN``;
- ``backup()`` into a stdlib ``sqlite3.Connection``, and ``restore_from()`` one;
- ``file:...?mode=ro`` URIs and ``readonly=True`` on plain files;
- CPython-suite fixes: a trace callback with an expanded SQL over ``SQLITE_LIMIT_LENGTH``,
  a re-run ``Connection.__init__`` while a cursor still reads the previous database;
- the threading rule's helpers: abandoned cursors/blobs are closed under the lock.
"""

from __future__ import annotations

import gc
import pathlib
import sqlite3 as stdlib_sqlite3
import sys
import threading
from typing import Any, Callable, Iterator

import pytest

import actor_db.dbapi as sqlite3
from actor_db.kv import KVStore

from tests.drivers import DRIVERS, vfs_kinds

KINDS = [("memory", "", ""), ("file", "", "")] + [("kv", driver, vfs) for driver in sorted(DRIVERS)
                                                  for vfs in vfs_kinds()]


@pytest.fixture(params=KINDS, ids=lambda k: "-".join(x for x in k if x))
def opener(request: pytest.FixtureRequest, tmp_path: pathlib.Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """``opener(module, **kwargs)``: a connection of ``module`` (ours or the stdlib) on
    one kind of database; for ``kv`` the stdlib gets a file (its closest equivalent)."""
    kind, driver, vfs_kind = request.param
    factory = None
    store: KVStore | None = None
    if kind == "kv":
        factory = DRIVERS[driver](tmp_path_factory.mktemp(driver))
        store = factory.open()
    opened: list[Any] = []

    def open_(module: Any = sqlite3, **kwargs: Any) -> Any:
        if kind == "memory":
            con = module.connect(":memory:", **kwargs)
        elif kind == "file" or module is stdlib_sqlite3:
            con = module.connect(str(tmp_path / f"{module.__name__}.db"), **kwargs)
        else:
            con = module.connect("part2", kv=store, vfs_options={"vfs": vfs_kind}, **kwargs)
            assert con.kv_backed
        opened.append(con)
        return con

    try:
        yield open_
    finally:
        for con in opened:
            con.close()
        if store is not None:
            store.close()
        if factory is not None:
            factory.cleanup()


# -- leading empty statements ------------------------------------------------------------
@pytest.mark.parametrize("sql", ["; begin", ";;select 1", "  ;  select 1 ; ", "/* c */ ; -- c\n select 2",
                                 ";", " ; ; ", "; insert into t values (1)"])
def test_leading_empty_statements_are_skipped_like_the_stdlib(opener: Callable[..., Any], sql: str) -> None:
    results = []
    for module in (stdlib_sqlite3, sqlite3):
        con = opener(module)
        con.execute("create table if not exists t (x)")
        con.commit()
        cur = con.execute(sql)
        results.append((cur.fetchall(), cur.description, cur.rowcount, con.in_transaction))
        con.rollback()
    assert results[0] == results[1]


@pytest.mark.parametrize("sql", ["select 1; ;", "; select 1; select 2"])
def test_a_second_statement_is_still_refused(opener: Callable[..., Any], sql: str) -> None:
    con = opener()
    with pytest.raises(sqlite3.ProgrammingError, match="one statement at a time"):
        con.execute(sql)


def test_begin_after_an_empty_statement_opens_a_transaction(opener: Callable[..., Any]) -> None:
    con = opener()
    con.execute("create table t (x)")
    con.commit()
    con.execute("; begin")
    assert con.in_transaction
    con.execute("insert into t values (1)")
    con.rollback()
    assert con.execute("select count(*) from t").fetchone() == (0,)


# -- description after a schema change ----------------------------------------------------
def test_description_of_empty_select_star_follows_add_column(opener: Callable[..., Any]) -> None:
    con = opener()
    con.execute("create table t (a)")
    assert [d[0] for d in con.execute("select * from t").description] == ["a"]
    con.execute("alter table t add column b")
    assert [d[0] for d in con.execute("select * from t").description] == ["a", "b"]
    assert [d[0] for d in con.execute("select * from t where a = ?", (1,)).description] == ["a", "b"]
    con.execute("alter table t rename column a to z")
    cur = con.cursor()
    cur.execute("select * from t")
    assert [d[0] for d in cur.description] == ["z", "b"]
    assert cur.fetchall() == []
    con.execute("insert into t values (1, 2)")
    assert [d[0] for d in con.execute("select * from t").description] == ["z", "b"]


def test_description_after_another_connection_changes_the_schema(store: KVStore, vfs_kind: str) -> None:
    options = {"vfs": vfs_kind}
    a = sqlite3.connect("schema", kv=store, vfs_options=options)
    b = sqlite3.connect("schema", kv=store, vfs_options=options)
    try:
        a.execute("create table t (a)")
        a.commit()
        assert [d[0] for d in b.execute("select * from t").description] == ["a"]
        a.execute("alter table t add column b")
        a.commit()
        assert [d[0] for d in b.execute("select * from t").description] == ["a", "b"]
    finally:
        a.close()
        b.close()


def test_empty_select_runs_user_function_as_often_as_the_stdlib(opener: Callable[..., Any]) -> None:
    """Reading the fresh columns of a zero-row result prepares the statement, never runs it."""
    counts = []
    for module in (stdlib_sqlite3, sqlite3):
        con = opener(module)
        calls: list[int] = []
        con.create_function("f", 0, lambda: calls.append(1) or 1)
        con.execute("create table if not exists t (a)")
        con.execute("delete from t")
        con.execute("insert into t values (1)")
        con.execute("insert into t values (2)")
        cur = con.execute("select f() as x, * from t where f() = 2")
        assert [d[0] for d in cur.description] == ["x", "a"]
        assert cur.fetchall() == []
        counts.append(len(calls))
        con.rollback()
    assert counts[0] == counts[1] == 2


# -- backup with the stdlib ------------------------------------------------------------------
def _fill(con: Any, n: int = 200) -> None:
    con.execute("create table t (id integer primary key, payload text)")
    con.executemany("insert into t values (?, ?)", [(i, "p" * 500) for i in range(n)])
    con.commit()


def test_backup_into_a_stdlib_connection(opener: Callable[..., Any], tmp_path: pathlib.Path) -> None:
    source = opener()
    _fill(source)
    steps: list[tuple[int, int, int]] = []
    for target in (stdlib_sqlite3.connect(":memory:"), stdlib_sqlite3.connect(str(tmp_path / "copy.db"))):
        steps.clear()
        source.backup(target, pages=5, progress=lambda *a: steps.append(a))
        assert target.execute("select count(*), sum(length(payload)) from t").fetchone() == (200, 100000)
        assert target.execute("pragma integrity_check").fetchone() == ("ok",)
        assert len(steps) > 1 and steps[-1][1] == 0  # stepped 5 pages at a time
        assert steps[0][0] == stdlib_sqlite3.SQLITE_OK and steps[-1][0] == stdlib_sqlite3.SQLITE_DONE
        target.close()
    # what landed in the file is a real database file
    check = stdlib_sqlite3.connect(str(tmp_path / "copy.db"))
    assert check.execute("select count(*) from t").fetchone() == (200,)
    check.close()


def test_backup_into_stdlib_refuses_a_target_in_transaction(opener: Callable[..., Any]) -> None:
    source = opener()
    _fill(source, 3)
    target = stdlib_sqlite3.connect(":memory:")
    target.execute("create table x (y)")
    target.execute("insert into x values (1)")
    with pytest.raises(sqlite3.OperationalError, match="target is in transaction"):
        source.backup(target)
    target.close()
    with pytest.raises(sqlite3.ProgrammingError):
        source.backup(target)  # closed
    with pytest.raises(TypeError):
        source.backup(object())  # type: ignore[arg-type]


def test_backup_of_an_attached_database_by_name(opener: Callable[..., Any], tmp_path: pathlib.Path) -> None:
    source = opener()
    source.execute(f"attach '{tmp_path / 'side.db'}' as side")
    source.execute("create table side.s (v)")
    source.execute("insert into side.s values ('attached')")
    source.commit()
    target = stdlib_sqlite3.connect(":memory:")
    source.backup(target, name="side")
    assert target.execute("select v from s").fetchall() == [("attached",)]
    target.close()


def test_restore_from_a_stdlib_connection(opener: Callable[..., Any]) -> None:
    source = stdlib_sqlite3.connect(":memory:")
    _fill(source, 150)
    target = opener()
    target.execute("create table old (x)")
    target.commit()
    steps: list[Any] = []
    target.restore_from(source, pages=3, progress=lambda *a: steps.append(a))
    assert target.execute("select count(*), sum(length(payload)) from t").fetchone() == (150, 75000)
    assert target.execute("select count(*) from sqlite_master where name = 'old'").fetchone() == (0,)
    assert target.execute("pragma integrity_check").fetchone() == ("ok",)
    assert len(steps) > 1 and steps[-1][1] == 0
    with target:
        target.execute("insert into t values (1000, 'after')")
    assert target.execute("select count(*) from t").fetchone() == (151,)
    source.close()


def test_restore_from_one_of_ours_is_backup(opener: Callable[..., Any]) -> None:
    source = sqlite3.connect(":memory:")
    _fill(source, 10)
    target = opener()
    target.restore_from(source)
    assert target.execute("select count(*) from t").fetchone() == (10,)
    source.close()


def test_restore_from_checks_its_arguments(opener: Callable[..., Any]) -> None:
    target = opener()
    source = stdlib_sqlite3.connect(":memory:")
    with pytest.raises(TypeError, match="progress argument must be a callable"):
        target.restore_from(source, progress="no")
    with pytest.raises(TypeError, match="restore_from"):
        target.restore_from(object())
    target.execute("create table t (x)")
    target.execute("insert into t values (1)")
    with pytest.raises(sqlite3.OperationalError, match="target is in transaction"):
        target.restore_from(source)
    target.rollback()
    source.close()


def test_restore_from_kv_backed_survives_reopen(store: KVStore, vfs_kind: str,
                                                reopen_store: Callable[[], KVStore]) -> None:
    source = stdlib_sqlite3.connect(":memory:")
    _fill(source, 50)
    target = sqlite3.connect("restored", kv=store, vfs_options={"vfs": vfs_kind})
    target.restore_from(source)
    target.close()
    source.close()
    other = reopen_store()
    try:
        again = sqlite3.connect("restored", kv=other, vfs_options={"vfs": vfs_kind})
        assert again.execute("select count(*) from t").fetchone() == (50,)
        again.close()
    finally:
        if other is not store:
            other.close()


# -- read-only plain files ------------------------------------------------------------------
@pytest.mark.parametrize("how", ["uri", "readonly", "both"])
def test_read_only_plain_file(tmp_path: pathlib.Path, how: str) -> None:
    path = tmp_path / "ro.db"
    w = sqlite3.connect(str(path))
    with w:
        w.execute("create table t (x)")
        w.execute("insert into t values (1)")
    w.close()
    if how == "uri":
        r = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    elif how == "readonly":
        r = sqlite3.connect(str(path), readonly=True)
    else:
        r = sqlite3.connect(f"file:{path}?mode=ro", uri=True, readonly=True)
    try:
        assert not r.kv_backed
        assert r.execute("select x from t").fetchall() == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database") as info:
            r.execute("insert into t values (2)")
        assert info.value.sqlite_errorcode == sqlite3.SQLITE_READONLY
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.execute("create table u (y)")
    finally:
        r.close()
    # and the stdlib agrees
    s = stdlib_sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(stdlib_sqlite3.OperationalError, match="attempt to write a readonly database"):
        s.execute("insert into t values (2)")
    s.close()


def test_read_only_uri_of_a_missing_file_fails_like_the_stdlib(tmp_path: pathlib.Path) -> None:
    uri = f"file:{tmp_path / 'missing.db'}?mode=ro"
    with pytest.raises(stdlib_sqlite3.OperationalError) as theirs:
        stdlib_sqlite3.connect(uri, uri=True)
    with pytest.raises(sqlite3.OperationalError) as ours:
        sqlite3.connect(uri, uri=True)
    assert str(ours.value) == str(theirs.value)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(str(tmp_path / "missing2.db"), readonly=True)
    assert not (tmp_path / "missing2.db").exists()


# -- CPython-suite fixes ----------------------------------------------------------------------
def test_trace_of_an_expanded_sql_over_the_length_limit(opener: Callable[..., Any]) -> None:
    con = opener()
    traced: list[str] = []
    reported: list[Any] = []
    con.set_trace_callback(traced.append)
    limit = 128
    previous = con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
    old_hook = sys.unraisablehook
    sys.unraisablehook = reported.append
    sqlite3.enable_callback_tracebacks(True)
    try:
        assert con.execute("select 1 as a where a = ?", ("a" * limit,)).fetchall() == []
        assert con.execute("select 1 as a where a = ?", ("a",)).fetchall() == []
    finally:
        sqlite3.enable_callback_tracebacks(False)
        sys.unraisablehook = old_hook
        con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, previous)
    assert traced == ["select 1 as a where a = ?", "select 1 as a where a = 'a'"]
    assert any(isinstance(r.exc_value, sqlite3.DataError) for r in reported)


def test_reinit_keeps_a_cursor_reading_the_previous_kv_database(store: KVStore, vfs_kind: str) -> None:
    options = {"vfs": vfs_kind}
    cx = sqlite3.connect("reinit-a", kv=store, vfs_options=options)
    cu = cx.cursor()
    cu.execute("create table foo (bar)")
    cu.executemany("insert into foo values (?)", [(str(v),) for v in range(4)])
    cu.execute("select bar from foo")
    assert [r[0] for r in cu.fetchmany(2)] == ["0", "1"]
    cx.__init__("reinit-b", kv=store, vfs_options=options)
    cx.execute("create table foo (bar)")
    cx.executemany("insert into foo values (?)", [(v,) for v in "abcd"])
    assert [r[0] for r in cu.fetchall()] == ["2", "3"]  # the old database, still open
    assert [r[0] for r in cx.execute("select bar from foo")] == list("abcd")
    cx.close()
    again = sqlite3.connect("reinit-a", kv=store, vfs_options=options)
    try:  # the uncommitted rows of the replaced database were rolled back at close
        assert again.execute("select count(*) from foo").fetchone() == (0,)
    finally:
        again.close()


# -- the threading rule -------------------------------------------------------------------------
def test_abandoned_cursor_is_closed_under_the_lock(opener: Callable[..., Any]) -> None:
    con = opener(check_same_thread=False)
    con.execute("create table t (x)")
    con.executemany("insert into t values (?)", [(i,) for i in range(10)])
    con.commit()
    # collected while another thread holds the lock (runs a statement): handed over
    cur = con.execute("select x from t")
    assert cur.fetchone() == (0,)
    raw = cur._raw
    collected = threading.Event()
    holder_done = threading.Event()

    def holder() -> None:
        with con.database_lock:
            collected.wait(30)
        holder_done.set()

    thread = threading.Thread(target=holder)
    thread.start()
    while thread.is_alive() and con.database_lock.acquire(blocking=False):
        con.database_lock.release()  # until the holder has the lock
    del cur
    gc.collect()
    assert con._orphans == [raw]  # not closed on the collecting thread beside the holder
    collected.set()
    thread.join(30)
    assert holder_done.is_set()
    con.execute("select 1").fetchall()
    assert con._orphans == []
    with pytest.raises(Exception):
        next(raw)  # closed
    # collected while nobody holds the lock: closed at once
    cur = con.execute("select x from t")
    raw = cur._raw
    del cur
    gc.collect()
    assert con._orphans == []
    with pytest.raises(Exception):
        next(raw)


def test_abandoned_blob_is_closed(opener: Callable[..., Any]) -> None:
    con = opener()
    con.execute("create table b (id integer primary key, data blob)")
    con.execute("insert into b values (1, zeroblob(16))")
    con.commit()
    blob = con.blobopen("b", "data", 1)
    blob.write(b"abc")
    del blob
    gc.collect()
    assert con._orphans == []
    assert con.execute("select substr(data, 1, 3) from b").fetchone() == (b"abc",)


def test_interrupt_from_another_thread(opener: Callable[..., Any]) -> None:
    """``interrupt`` does not take the database lock (the statement it stops holds it)."""
    con = opener(check_same_thread=False)
    started = threading.Event()

    def progress() -> int:
        started.set()
        return 0

    con.set_progress_handler(progress, 1000)
    interrupter = threading.Thread(target=lambda: (started.wait(30), con.interrupt()))
    interrupter.start()
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        con.execute("with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c")
    interrupter.join(30)
    assert not interrupter.is_alive()
    assert con.execute("select 1").fetchone() == (1,)


def test_connection_state_reads_hold_the_lock(opener: Callable[..., Any]) -> None:
    """``in_transaction``, ``total_changes``, ``getlimit`` wait for a statement running on
    another thread instead of calling apsw beside it."""
    con = opener(check_same_thread=False)
    con.execute("create table t (x)")
    con.commit()
    lock = con.database_lock
    seen: list[Any] = []
    with lock:  # as a thread inside a statement would
        reader = threading.Thread(target=lambda: seen.append((con.in_transaction, con.total_changes,
                                                              con.getlimit(sqlite3.SQLITE_LIMIT_LENGTH))))
        reader.start()
        reader.join(0.2)
        assert reader.is_alive() and seen == []  # waiting for the lock, not inside apsw
    reader.join(30)
    assert seen and seen[0][0] is False
