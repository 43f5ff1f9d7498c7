"""``actor_db.dbapi``: the drop-in ``sqlite3`` on KV-backed pages, over every KV driver."""

from __future__ import annotations

import datetime
import sqlite3 as stdlib_sqlite3
import threading
from typing import Any, Callable

import pytest

import actor_db
import actor_db.dbapi as sqlite3
from actor_db.kv import KVStore
from tests.faults import FaultyKV
from tests.helpers import LockSpy


@pytest.fixture
def con(store: KVStore) -> Any:
    c = sqlite3.connect("orders", kv=store)
    yield c
    c.close()


def test_connect_is_reexported_and_kv_backed(store: KVStore) -> None:
    assert actor_db.connect is sqlite3.connect
    c = actor_db.connect("a1", kv=store)
    try:
        assert c.kv_backed
        assert c.apsw_connection.kv_file is not None
        assert c.execute("PRAGMA journal_mode").fetchone() == ("memory",)
    finally:
        c.close()


def test_memory_and_file_paths_stay_plain_sqlite(tmp_path: Any) -> None:
    mem = sqlite3.connect(":memory:")
    path = tmp_path / "plain.db"
    f = sqlite3.connect(str(path))
    try:
        assert not mem.kv_backed and not f.kv_backed
        with f:
            f.execute("create table t(x)")
            f.execute("insert into t values (1)")
    finally:
        mem.close()
        f.close()
    # a real SQLite file, readable by the standard library
    check = stdlib_sqlite3.connect(str(path))
    assert check.execute("select x from t").fetchall() == [(1,)]
    check.close()


def test_bare_name_uses_default_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTOR_DB_KV", f"lmdb:{tmp_path / 'default-store'}")  # the rule: actor_db.defaults
    monkeypatch.setattr(sqlite3, "_default_store", None)
    c = sqlite3.connect("orders")
    try:
        assert c.kv_backed
        assert (tmp_path / "default-store").exists()
        assert not (tmp_path / "orders").exists()
    finally:
        c.close()
        sqlite3._default_store.close()
        monkeypatch.setattr(sqlite3, "_default_store", None)


def test_implicit_transaction_commit_and_rollback(con: Any) -> None:
    con.execute("create table t(x)")
    assert not con.in_transaction
    con.execute("insert into t values (1)")
    assert con.in_transaction  # implicit BEGIN before DML
    con.rollback()
    assert not con.in_transaction
    assert con.execute("select count(*) from t").fetchone() == (0,)
    with con:
        con.execute("insert into t values (2)")
    assert not con.in_transaction
    with pytest.raises(ZeroDivisionError):
        with con:
            con.execute("insert into t values (3)")
            1 / 0
    assert con.execute("select x from t").fetchall() == [(2,)]


def test_autocommit_isolation_level_none(con: Any) -> None:
    con.isolation_level = None
    con.execute("create table t(x)")
    con.execute("insert into t values (1)")
    assert not con.in_transaction
    con.execute("begin")
    con.execute("insert into t values (2)")
    assert con.in_transaction
    con.execute("rollback")
    assert con.execute("select x from t").fetchall() == [(1,)]
    with pytest.raises(ValueError, match="isolation_level string must be"):
        con.isolation_level = "BOGUS"


def test_persistence_across_reopen(store: KVStore, reopen_store: Callable[[], KVStore]) -> None:
    c = sqlite3.connect("persist", kv=store)
    with c:
        c.execute("create table t(x, y)")
        c.executemany("insert into t values (?, ?)", [(i, str(i)) for i in range(100)])
    c.execute("insert into t values (-1, 'uncommitted')")
    c.close()  # the open transaction is discarded
    other = reopen_store()
    try:
        c2 = sqlite3.connect("persist", kv=other)
        assert c2.execute("select count(*), sum(x) from t").fetchone() == (100, 4950)
        assert c2.execute("pragma integrity_check").fetchone() == ("ok",)
        c2.close()
    finally:
        if other is not store:
            other.close()


def test_row_factory_and_description(con: Any) -> None:
    con.row_factory = sqlite3.Row
    con.execute("create table t(Name text, qty int)")
    con.execute("insert into t values ('apple', 3)")
    cur = con.execute("select name as name, qty from t")
    assert [d[0] for d in cur.description] == ["name", "qty"]
    row = cur.fetchone()
    assert isinstance(row, sqlite3.Row)
    assert row["NAME"] == "apple" and row[1] == 3 and row.keys() == ["name", "qty"]
    assert tuple(row) == ("apple", 3)
    assert con.execute("select 1 where 0").description == (("1", None, None, None, None, None, None),)
    assert con.execute("insert into t values ('pear', 1)").description is None


def test_cursor_rowcount_lastrowid_fetchmany(con: Any) -> None:
    cur = con.cursor()
    cur.execute("create table t(id integer primary key, v)")
    cur.executemany("insert into t(v) values (?)", [(i,) for i in range(5)])
    assert cur.rowcount == 5
    cur.execute("insert into t(v) values (?)", ("x",))
    assert cur.lastrowid == 6
    cur.execute("update t set v = v where id > 2")
    assert cur.rowcount == 4
    cur.execute("select id from t order by id")
    cur.arraysize = 2
    assert cur.fetchmany() == [(1,), (2,)]
    assert [r[0] for r in cur] == [3, 4, 5, 6]
    with pytest.raises(sqlite3.ProgrammingError, match="one statement at a time"):
        cur.execute("select 1; select 2")
    with pytest.raises(sqlite3.ProgrammingError, match="Incorrect number of bindings"):
        cur.execute("select ?", (1, 2))
    assert cur.execute("select :a + :b", {"a": 1, "b": 2}).fetchone() == (3,)


class Point:
    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y


def test_adapters_and_converters(store: KVStore) -> None:
    sqlite3.register_adapter(Point, lambda p: f"{p.x};{p.y}")
    sqlite3.register_converter("point", lambda b: Point(*map(float, b.split(b";"))))
    c = sqlite3.connect("types", kv=store, detect_types=sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES)
    try:
        c.execute("create table t(p point, d date, ts timestamp)")
        now = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
        c.execute("insert into t values (?, ?, ?)", (Point(1, 2.5), now.date(), now))
        p, d, ts = c.execute("select p, d, ts from t").fetchone()
        assert (p.x, p.y) == (1.0, 2.5) and d == now.date() and ts == now
        (q,) = c.execute('select p as "p [point]" from t').fetchone()
        assert isinstance(q, Point)
        c.text_factory = bytes
        assert c.execute("select 'Österreich'").fetchone() == ("Österreich".encode(),)
        with pytest.raises(sqlite3.ProgrammingError, match="not supported"):
            c.execute("select ?", (object(),))
    finally:
        c.close()
        del sqlite3.adapters[(Point, sqlite3.PrepareProtocol)]
        del sqlite3.converters["POINT"]


def test_executescript_iterdump_and_restore(con: Any, store: KVStore) -> None:
    con.execute("create table pending(x)")
    con.execute("insert into pending values (1)")  # open transaction: executescript commits it
    con.executescript("""
        create table t(id integer primary key, name text);
        insert into t(name) values ('a'), ('b');
        create index t_name on t(name);
    """)
    assert not con.in_transaction
    dump = list(con.iterdump())
    assert dump[0] == "BEGIN TRANSACTION;" and dump[-1] == "COMMIT;"
    copy = sqlite3.connect("copy", kv=store)
    try:
        copy.executescript("\n".join(dump))
        assert copy.execute("select name from t order by id").fetchall() == [("a",), ("b",)]
        assert copy.execute("select x from pending").fetchall() == [(1,)]
    finally:
        copy.close()


def test_backup_serialize_deserialize(con: Any, store: KVStore) -> None:
    with con:
        con.execute("create table t(x)")
        con.executemany("insert into t values (?)", [(i,) for i in range(50)])
    target = sqlite3.connect("backup-target", kv=store)
    mem = sqlite3.connect(":memory:")
    try:
        steps: list[int] = []
        con.backup(target, pages=1, progress=lambda status, remaining, total: steps.append(remaining))
        assert steps and steps[-1] == 0
        assert target.execute("select count(*) from t").fetchone() == (50,)
        image = con.serialize()
        mem.deserialize(image)
        assert mem.execute("select sum(x) from t").fetchone() == (1225,)
        target.execute("drop table t")
        target.commit()
        target.deserialize(image)  # KV-backed: pages copied into the KV, still on the VFS
        assert target.kv_backed
        assert target.execute("select count(*) from t").fetchone() == (50,)
        with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
            target.deserialize(b"\0\1\3")
    finally:
        target.close()
        mem.close()


def test_blobopen(con: Any) -> None:
    with con:
        con.execute("create table t(b blob)")
        con.execute("insert into t values (zeroblob(10))")
    with con.blobopen("t", "b", 1) as blob:
        blob.write(b"hello")
        blob[5:10] = b"world"
        assert len(blob) == 10 and blob[0] == ord("h")
        blob.seek(0)
        assert blob.read() == b"helloworld"
    con.commit()
    assert con.execute("select b from t").fetchone() == (b"helloworld",)
    with pytest.raises(sqlite3.OperationalError, match="no such"):
        con.blobopen("t", "nope", 1)


def test_user_functions_aggregates_windows_collations(con: Any) -> None:
    con.create_function("double", 1, lambda x: x * 2, deterministic=True)
    con.create_function("boom", 0, lambda: 1 / 0)

    class Sum:
        def __init__(self) -> None:
            self.total = 0

        def step(self, v: int) -> None:
            self.total += v

        def inverse(self, v: int) -> None:
            self.total -= v

        def value(self) -> int:
            return self.total

        def finalize(self) -> int:
            return self.total

    con.create_aggregate("mysum", 1, Sum)
    con.create_window_function("winsum", 1, Sum)
    con.create_collation("reverse", lambda a, b: (a < b) - (a > b))
    con.execute("create table t(x int, s text)")
    con.executemany("insert into t values (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    assert con.execute("select double(x) from t order by x").fetchall() == [(2,), (4,), (6,)]
    assert con.execute("select mysum(x) from t").fetchone() == (6,)
    assert con.execute("select mysum(x) from t where 0").fetchone() == (None,)
    assert con.execute(
        "select winsum(x) over (order by x rows between 1 preceding and current row) from t"
    ).fetchall() == [(1,), (3,), (5,)]
    assert con.execute("select s from t order by s collate reverse").fetchall() == [("c",), ("b",), ("a",)]
    with pytest.raises(sqlite3.OperationalError, match="user-defined function raised exception"):
        con.execute("select boom()")


def test_authorizer_progress_trace(con: Any) -> None:
    con.execute("create table secret(x)")
    con.set_authorizer(lambda action, a, b, db, trig: sqlite3.SQLITE_DENY if a == "secret" else sqlite3.SQLITE_OK)
    with pytest.raises(sqlite3.DatabaseError, match="prohibited|not authorized"):
        con.execute("select * from secret")
    con.set_authorizer(None)
    traced: list[str] = []
    con.set_trace_callback(traced.append)
    con.execute("insert into secret values (?)", (7,))
    con.commit()
    con.set_trace_callback(None)
    assert traced == ["BEGIN ", "insert into secret values (7)", "COMMIT"]
    con.set_progress_handler(lambda: 1, 1)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        con.execute("select count(*) from secret")
    con.set_progress_handler(None, 0)


def test_errors_are_stdlib_classes_with_codes(con: Any) -> None:
    assert sqlite3.Error is stdlib_sqlite3.Error and sqlite3.STDLIB_EXCEPTIONS
    con.execute("create table t(x integer check (x > 0) unique)")
    with pytest.raises(stdlib_sqlite3.IntegrityError) as info:
        con.execute("insert into t values (-1)")
    assert info.value.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_CHECK
    assert info.value.sqlite_errorname == "SQLITE_CONSTRAINT_CHECK"
    with pytest.raises(sqlite3.OperationalError, match="no such table") as info2:
        con.execute("select * from nope")
    assert info2.value.sqlite_errorcode == sqlite3.SQLITE_ERROR
    # the VFS's pragma guard comes through as OperationalError
    with pytest.raises(sqlite3.OperationalError, match="synchronous"):
        con.execute("PRAGMA synchronous=OFF")
    con.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        con.execute("select 1")


def test_kv_failure_is_operational_error_and_recovers(store: KVStore) -> None:
    faulty = FaultyKV(store.actor("faulty"))
    c = sqlite3.connect("faulty", kv=faulty)
    try:
        with c:
            c.execute("create table t(x)")
        faulty.down = True
        with pytest.raises(sqlite3.OperationalError):
            with c:
                c.execute("insert into t values (1)")
        faulty.down = False
        assert not c.in_transaction
        with c:
            c.execute("insert into t values (2)")
        assert c.execute("select x from t").fetchall() == [(2,)]
    finally:
        c.close()


def _round_trips(con: Any) -> tuple[int, int, int]:
    """KV round trips of a warm SELECT, a warm 1-row UPDATE transaction, and an UPDATE
    rolled back (after a warm-up of each)."""
    with con:
        con.execute("create table t(id integer primary key, n int)")
        con.execute("insert into t values (1, 0)")
    stats = con.apsw_connection.stats
    con.execute("select n from t").fetchall()
    before = stats.snapshot()
    assert con.execute("select n from t where id = 1").fetchone() == (0,)
    select = (stats - before).round_trips
    before = stats.snapshot()
    with con:
        con.execute("update t set n = n + 1 where id = 1")
    update = (stats - before).round_trips
    assert (stats - before).commits == 1
    before = stats.snapshot()
    con.execute("update t set n = 100")
    con.rollback()
    rollback = (stats - before).round_trips
    assert con.execute("select n from t").fetchone() == (1,)
    return select, update, rollback


def test_round_trips_through_dbapi(con: Any, store: KVStore) -> None:
    """In-process locking (MemoryKV): warm SELECT 0, UPDATE 1 (one atomic batch),
    ROLLBACK 0. Cross-process locking (LMDB, Redis; vfs.lease): each transaction checks
    the KV (1), a write takes the lease (1) and commits with it (1); a rollback gives
    the lease back (1)."""
    expected = (0, 1, 0) if store.instant_writes else (1, 3, 3)
    assert _round_trips(con) == expected


def test_exclusive_locking_keeps_the_actor_fast_path(store: KVStore) -> None:
    """``locking="exclusive"``: one connection per actor database, warm reads free."""
    c = sqlite3.connect("solo", kv=store, vfs_options={"locking": "exclusive"})
    try:
        assert _round_trips(c) == (0, 1, 0)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            sqlite3.connect("solo", kv=store)
    finally:
        c.close()


def test_two_connections_are_two_sqlite_connections(store: KVStore) -> None:
    a = sqlite3.connect("shared", kv=store, timeout=0)
    b = sqlite3.connect("shared", kv=store, timeout=0)
    try:
        assert a.apsw_connection is not b.apsw_connection  # each connect() is a real connection
        with a:
            a.execute("create table t(x)")
            a.execute("insert into t values (1)")
        assert b.execute("select x from t").fetchall() == [(1,)]
        a.execute("insert into t values (2)")  # a's write transaction is open
        assert a.in_transaction and not b.in_transaction
        assert b.execute("select x from t").fetchall() == [(1,)]  # a reader runs meanwhile
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as info:
            b.execute("insert into t values (9)")  # one writer at a time
        assert info.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
        b.commit()  # must not commit a's transaction
        assert a.in_transaction
        a.rollback()
        assert b.execute("select x from t").fetchall() == [(1,)]
        b.execute("insert into t values (3)")
        b.close()  # closing rolls back b's own transaction, a keeps working
        assert a.execute("select x from t").fetchall() == [(1,)]
    finally:
        a.close()
    c = sqlite3.connect("shared", kv=store)  # all closed: reopens cleanly
    assert c.execute("select count(*) from t").fetchone() == (1,)
    c.close()


def test_writer_waits_for_a_reader_in_another_thread(store: KVStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit needs every reader gone: it waits (busy_timeout) instead of failing."""
    spy = LockSpy(monkeypatch)
    a = sqlite3.connect("waiting", kv=store, timeout=30, check_same_thread=False)
    b = sqlite3.connect("waiting", kv=store, check_same_thread=False)
    try:
        assert a.execute("pragma busy_timeout").fetchone() == (30000,)
        with a:
            a.execute("create table t(x)")
        b.execute("begin")
        assert b.execute("select count(*) from t").fetchone() == (0,)  # b holds SHARED
        a.execute("insert into t values (1)")
        done = threading.Event()

        def writer() -> None:
            a.commit()  # waits for b's read transaction
            done.set()

        worker = threading.Thread(target=writer)
        worker.start()
        spy.wait_for(a, 2)  # its EXCLUSIVE lock refused, retried: waiting for b
        assert not done.is_set()
        b.commit()
        worker.join(timeout=30)
        assert done.is_set()
        assert b.execute("select count(*) from t").fetchone() == (1,)
    finally:
        a.close()
        b.close()


def test_uninitialised_and_wrong_thread(con: Any) -> None:
    raw = sqlite3.Connection.__new__(sqlite3.Connection)
    with pytest.raises(sqlite3.ProgrammingError, match="__init__ not called"):
        raw.cursor()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            con.execute("select 1")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.ProgrammingError)


def test_works_without_the_stdlib_sqlite3() -> None:
    """Where ``import sqlite3`` fails, one warning is logged and the facade still works."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING, format='%(name)s %(message)s')\n"
        "sys.modules['sqlite3'] = None\n"
        "import actor_db.dbapi as d\n"
        "from actor_db.kv import MemoryKV\n"
        "c = d.connect('x', kv=MemoryKV())\n"
        "c.execute('create table t(x unique)'); c.execute('insert into t values (1)')\n"
        "try:\n"
        "    c.execute('insert into t values (1)')\n"
        "except d.IntegrityError as e:\n"
        "    print('raised', e.sqlite_errorname, d.STDLIB_EXCEPTIONS, len(list(c.iterdump())))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["raised", "SQLITE_CONSTRAINT_UNIQUE", "False", "4"]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("actor_db.dbapi")]
    assert len(warnings) == 1 and "standard library sqlite3 module is unavailable" in warnings[0]


@pytest.mark.parametrize("mode", ["WAL", "wal", "DELETE", "OFF", "TRUNCATE", "PERSIST", "MEMORY", "'wal'"])
def test_journal_mode_set_returns_memory_without_error(store: KVStore, vfs_kind: str, mode: str) -> None:
    """SQLite's rule for a database whose journal mode cannot change: no error, the row
    returned is the mode it kept (apps that set WAL on connect run unchanged)."""
    c = sqlite3.connect("jm", kv=store, vfs_options={"vfs": vfs_kind})
    try:
        assert c.apsw_connection.kv_file is not None
        assert c.execute(f"PRAGMA journal_mode={mode}").fetchone() == ("memory",)
        assert c.execute(f"PRAGMA main.journal_mode={mode}").fetchall() == [("memory",)]
        assert c.execute("PRAGMA journal_mode").fetchone() == ("memory",)
        with c:
            c.execute("create table t(x)")
            c.execute("insert into t values (1)")
        c.execute("insert into t values (2)")
        c.rollback()  # the in-memory journal still rolls back
        assert c.execute("select x from t").fetchall() == [(1,)]
    finally:
        c.close()
    c = sqlite3.connect("jm", kv=store)
    try:
        assert c.execute("select x from t").fetchall() == [(1,)]
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        c.close()


def _actor_items(store: KVStore, name: str) -> list[tuple[bytes, bytes]]:
    return store.actor(name).scan(b"", b"")


@pytest.mark.parametrize("how", ["readonly", "uri"])
def test_read_only_connection(store: KVStore, vfs_kind: str, how: str) -> None:
    """``readonly=True`` and ``file:NAME?mode=ro`` URIs: reads work, every write is the
    stdlib's ``OperationalError: attempt to write a readonly database``, nothing reaches
    the KV, and the process's writable connection keeps working beside it."""
    options = {"vfs": vfs_kind}
    w = sqlite3.connect("ro", kv=store, vfs_options=options)
    with w:
        w.execute("create table t(x)")
        w.execute("insert into t values (1)")
    before = _actor_items(store, "ro")
    if how == "readonly":
        r = actor_db.connect("ro", kv=store, readonly=True, vfs_options=options)
    else:
        r = actor_db.connect("file:ro?mode=ro", uri=True, kv=store, vfs_options=options)
    try:
        assert r.kv_backed and r.apsw_connection is not w.apsw_connection
        assert r.execute("select x from t").fetchall() == [(1,)]
        for statement in ("insert into t values (2)", "create table u(y)", "delete from t"):
            with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database") as info:
                r.execute(statement)
            assert info.value.sqlite_errorname.startswith("SQLITE_READONLY")
            r.rollback()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.executescript("insert into t values (2);")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            with r:
                r.execute("update t set x = 5")
        assert not r.in_transaction
        # the writable connection is not blocked by the read-only one
        with w:
            w.execute("insert into t values (3)")
        assert w.execute("select x from t order by x").fetchall() == [(1,), (3,)]
        # each read transaction of the read-only connection sees the latest commit (stdlib)
        assert r.execute("select x from t order by x").fetchall() == [(1,), (3,)]
        with w:
            w.execute("insert into t values (4)")
        assert r.execute("select count(*) from t").fetchone() == (3,)
        with w:
            w.execute("delete from t where x = 4")
    finally:
        r.close()
    after = sqlite3.connect("ro", kv=store, readonly=True, vfs_options=options)
    try:
        assert after.execute("select x from t order by x").fetchall() == [(1,), (3,)]
    finally:
        after.close()
    w.close()
    r2 = sqlite3.connect("ro", kv=store, readonly=True)
    r2.close()
    assert _actor_items(store, "ro") != before  # the writer's commit, and only it, changed the KV
    c = sqlite3.connect("ro", kv=store)
    try:
        assert c.execute("select x from t order by x").fetchall() == [(1,), (3,)]
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        c.close()


def test_a_missing_database_cannot_be_opened_read_only(store: KVStore) -> None:
    for how in ({"readonly": True}, {"uri": True}):
        name = "file:absent?mode=ro" if how.get("uri") else "absent"
        with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
            sqlite3.connect(name, kv=store, **how)
    assert _actor_items(store, "absent") == []


def test_read_only_connections_write_nothing_to_the_kv(store: KVStore) -> None:
    w = sqlite3.connect("ro2", kv=store)
    with w:
        w.execute("create table t(x)")
        w.executemany("insert into t values (?)", [(i,) for i in range(200)])
    w.close()
    before = _actor_items(store, "ro2")
    cons = [sqlite3.connect("ro2", kv=store, readonly=True) for _ in range(3)]  # own connections, no conflict
    try:
        assert len({id(c.apsw_connection) for c in cons}) == 3
        for c in cons:
            assert c.execute("select count(*) from t").fetchone() == (200,)
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                c.execute("delete from t")
    finally:
        for c in cons:
            c.close()
    assert _actor_items(store, "ro2") == before


def test_read_only_uri_of_a_bare_name_uses_the_default_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTOR_DB_KV", f"lmdb:{tmp_path / 'default-store'}")
    monkeypatch.setattr(sqlite3, "_default_store", None)
    monkeypatch.chdir(tmp_path)
    try:
        w = actor_db.connect("orders")
        with w:
            w.execute("create table t(x)")
            w.execute("insert into t values ('a')")
        r = actor_db.connect("file:orders?mode=ro", uri=True)
        try:
            assert r.kv_backed
            assert r.execute("select x from t").fetchall() == [("a",)]
            with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
                r.execute("insert into t values ('b')")
        finally:
            r.close()
        w.close()
        assert not (tmp_path / "orders").exists()
    finally:
        if sqlite3._default_store is not None:
            sqlite3._default_store.close()
        monkeypatch.setattr(sqlite3, "_default_store", None)


def test_read_only_plain_file_like_the_stdlib(tmp_path: Any) -> None:
    path = tmp_path / "plain.db"
    with stdlib_sqlite3.connect(str(path)) as f:
        f.execute("create table t(x)")
    for r in (sqlite3.connect(str(path), readonly=True),
              sqlite3.connect(f"file:{path}?mode=ro", uri=True)):
        try:
            assert not r.kv_backed
            with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
                r.execute("insert into t values (1)")
        finally:
            r.close()
