"""Several drop-in connections to one KV-backed database: each is a real SQLite
connection, sharing the database through SQLite's file locks (:mod:`vfs.locks`) and,
across processes, the KV writer lease (:mod:`vfs.lease`).

Every test runs on every KV driver and both VFSes. A MemoryKV lives in one process, so
its connections use ``locking="in-process"``; the others ``"cross-process"`` (the
drop-in's defaults). "Another process" in-process is :class:`tests.faults.OtherProcessView`
(same keys, its own identity, so its own lock table); real processes are spawned for
the increment test.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sqlite3 as stdlib
import subprocess
import sys
import threading
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfs import lease
from vfs.keys import COMMIT_RECORD_KEY, HISTORY_BASES_KEY, HISTORY_HEAD_KEY, chunk_key, meta_key
from vfs.protocol import WriteBatch

from actor_db import dbapi
from actor_db.kv import KVStore
from tests.drivers import DRIVERS, DriverFactory, LmdbFactory, RedisFactory
from tests.faults import ForwardingKV, OtherProcessView
from tests.helpers import LockSpy

ROOT = pathlib.Path(__file__).resolve().parent.parent
_names = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _locking(store: KVStore) -> str:
    return "in-process" if store.instant_writes else "cross-process"


def _connect(kv: Any, name: str, vfs_kind: str, locking: str, **kwargs: Any) -> dbapi.Connection:
    con = dbapi.connect(name, kv=kv, vfs_options={"vfs": vfs_kind, "locking": locking}, **kwargs)
    assert isinstance(con, dbapi.Connection)
    return con


class CommitGate(ForwardingKV):
    """Holds every commit batch (one that puts the meta) until :attr:`release` is set,
    after announcing it in :attr:`entered`."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.entered = threading.Event()
        self.release = threading.Event()

    def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
        if batch is not None and meta_key(0) in batch.puts:
            self.entered.set()
            assert self.release.wait(60), "the test never released the commit"
        return call()


@pytest.mark.parametrize("connections", [2, 8])
def test_readers_run_while_a_writer_holds_a_transaction(store: KVStore, vfs_kind: str, connections: int) -> None:
    name = _name("readers")
    cons = [_connect(store, name, vfs_kind, _locking(store), timeout=0) for _ in range(connections)]
    writer, readers = cons[0], cons[1:]
    try:
        assert len({id(c.apsw_connection) for c in cons}) == connections
        with writer:
            writer.execute("create table t(x)")
            writer.execute("insert into t values (1)")
        writer.execute("insert into t values (2)")  # an open write transaction
        for reader in readers:
            assert reader.execute("select count(*) from t").fetchone() == (1,)
        with pytest.raises(dbapi.OperationalError, match="database is locked"):
            readers[0].execute("insert into t values (3)")  # one writer at a time
        readers[0].rollback()
        writer.commit()
        for reader in readers:  # the next transaction sees the commit
            assert reader.execute("select sum(x) from t").fetchone() == (3,)
        with readers[-1]:
            readers[-1].execute("update t set x = x * 10")
        assert writer.execute("select sum(x) from t").fetchone() == (30,)
    finally:
        for c in cons:
            c.close()


def test_a_reader_waits_out_a_commit_up_to_its_timeout(store: KVStore, vfs_kind: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spy = LockSpy(monkeypatch)
    name = _name("waits")
    locking = _locking(store)
    setup = _connect(store, name, vfs_kind, locking)
    with setup:
        setup.execute("create table t(x)")
    gate = CommitGate(store.actor(name))
    writer = _connect(gate, name, vfs_kind, locking, check_same_thread=False)
    impatient = _connect(store, name, vfs_kind, locking, timeout=0.2)
    patient = _connect(store, name, vfs_kind, locking, timeout=60, check_same_thread=False)
    try:
        writer.execute("insert into t values (1)")
        committer = threading.Thread(target=writer.commit)
        committer.start()
        assert gate.entered.wait(30)  # the commit holds EXCLUSIVE, its batch in flight
        with pytest.raises(dbapi.OperationalError, match="database is locked") as info:
            impatient.execute("select count(*) from t")
        assert info.value.sqlite_errorcode & 0xFF == dbapi.SQLITE_BUSY
        assert spy.of(impatient) >= 2  # SQLite's busy handler retried (it waited), then gave up
        result: list[Any] = []
        reader = threading.Thread(target=lambda: result.append(patient.execute("select count(*) from t").fetchone()))
        reader.start()
        spy.wait_for(patient, 3)  # refused, retrying: waiting for the commit
        assert not result
        gate.release.set()
        committer.join(30)
        reader.join(30)
        assert result == [(1,)]  # and then sees it
    finally:
        gate.release.set()
        for c in (setup, writer, impatient, patient):
            c.close()


class CommitAfterPreload(ForwardingKV):
    """Runs :attr:`then` right after its preload call returned: a commit of another
    connection lands between the new connection's startup read and its open."""

    then: Callable[[], None] | None = None

    def preload(self, request: Any) -> Any:
        found = super().preload(request)
        if self.then is not None:
            self.then()
        return found


def test_a_commit_during_another_connections_open_is_seen(store: KVStore, vfs_kind: str) -> None:
    name = _name("opening")
    locking = _locking(store)
    a = _connect(store, name, vfs_kind, locking)
    opening = CommitAfterPreload(store.actor(name))
    others: list[dbapi.Connection] = []
    try:
        with a:
            a.execute("create table t(x)")
        for i in range(5):
            def commit(i: int = i) -> None:
                with a:
                    a.execute("insert into t values (?)", (i,))
            opening.then = commit
            b = _connect(opening, name, vfs_kind, locking)
            others.append(b)
            for con in others:  # every connection, the new one too, sees every commit
                assert con.execute("select count(*) from t").fetchone() == (i + 1,)
    finally:
        opening.then = None
        for con in [a, *others]:
            con.close()


def test_connection_state_is_per_connection(store: KVStore, vfs_kind: str, tmp_path: pathlib.Path) -> None:
    name = _name("state")
    a = _connect(store, name, vfs_kind, _locking(store))
    b = _connect(store, name, vfs_kind, _locking(store))
    try:
        for con in (a, b):  # a pool that ATTACHes on every new connection
            con.execute("attach database ? as aux", (str(tmp_path / "aux.db"),))
        a.execute("create temp table scratch(x)")
        with pytest.raises(dbapi.OperationalError, match="no such table"):
            b.execute("select * from scratch")
        a.execute("pragma read_uncommitted = 1")
        assert b.execute("pragma read_uncommitted").fetchone() == (0,)
        a.execute("pragma cache_size = 123")
        assert b.execute("pragma cache_size").fetchone() != (123,)
        a.create_function("twice", 1, lambda x: 2 * x)
        with pytest.raises(dbapi.OperationalError, match="no such function"):
            b.execute("select twice(1)")
        b.execute("create table t(x)")
        b.executemany("insert into t values (?)", [(i,) for i in range(50)])
        b.commit()
        open_statement = b.execute("select x from t")
        open_statement.fetchone()  # b has a statement running
        a.create_function("twice", 1, lambda x: 2 * x + 0)  # re-registering on a still works
        assert a.execute("select twice(21)").fetchone() == (42,)
        assert len(open_statement.fetchall()) == 49
    finally:
        a.close()
        b.close()


def test_an_app_that_sets_wal_and_writes_from_threads(store: KVStore, vfs_kind: str) -> None:
    """Each thread connects, sets ``journal_mode=WAL`` (answered ``memory``, no error) and
    writes in ``with con:`` blocks; no hang, no lost row."""
    name = _name("wal-app")
    setup = _connect(store, name, vfs_kind, _locking(store))
    assert setup.execute("pragma journal_mode=wal").fetchone() == ("memory",)
    with setup:
        setup.execute("create table t(thread, i)")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            con = _connect(store, name, vfs_kind, _locking(store), timeout=60)
            try:
                assert con.execute("pragma journal_mode=WAL").fetchone() == ("memory",)
                for i in range(25):
                    with con:
                        con.execute("insert into t values (?, ?)", (n, i))
            finally:
                con.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a writer thread hung"
    assert not errors, errors
    assert setup.execute("select count(*), count(distinct thread) from t").fetchone() == (150, 6)
    setup.close()


# ------------------------------------------------------------- across processes
def test_another_process_commit_is_seen_and_never_mixed(store: KVStore, vfs_kind: str) -> None:
    name = _name("xproc")
    a = _connect(store.actor(name), name, vfs_kind, "cross-process", timeout=0)
    # b caches no chunk and few pages, so its reads below really go to the KV.
    b = dbapi.connect(name, kv=OtherProcessView(store.actor(name)), timeout=0,
                      vfs_options={"vfs": vfs_kind, "locking": "cross-process", "cache_chunks": 0})
    b.execute("pragma cache_size = 10")
    try:
        with a:
            a.execute("create table t(id integer primary key, pad)")
            a.executemany("insert into t values (?, randomblob(1000))", [(i,) for i in range(400)])
        assert b.execute("select count(*) from t").fetchone() == (400,)
        with a:
            a.execute("delete from t where id >= 200")
        assert b.execute("select count(*) from t").fetchone() == (200,)  # its next transaction
        b.execute("begin")
        assert b.execute("select count(*) from t where id < 10").fetchone() == (10,)
        with a:  # another process commits in the middle of b's read transaction
            a.execute("update t set pad = randomblob(1000)")
        with pytest.raises(dbapi.OperationalError, match="database is locked|another process committed"):
            b.execute("select sum(length(pad)) from t").fetchone()  # pages b must fetch now
        b.rollback()
        assert b.execute("select count(*), sum(length(pad)) from t").fetchone() == (200, 200_000)
        assert b.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        a.close()
        b.close()


class KeyLog(OtherProcessView):
    """Another process's view that records the keys of every read call."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.read_keys: list[list[bytes]] = []

    def get_many(self, keys: Any) -> Any:
        self.read_keys.append(list(keys))
        return super().get_many(keys)


def test_after_another_process_commits_the_meta_is_read_once(store: KVStore, vfs_kind: str) -> None:
    """The transaction's check already read the meta, page 1 and the record: reloading
    after the change costs no second read of them."""
    name = _name("once")
    a = _connect(store.actor(name), name, vfs_kind, "cross-process")
    log = KeyLog(store.actor(name))
    b = _connect(log, name, vfs_kind, "cross-process")
    try:
        with a:
            a.execute("create table t(x)")
        assert b.execute("select count(*) from t").fetchone() == (0,)
        with a:
            a.execute("insert into t values (1)")
        log.read_keys.clear()
        assert b.execute("select count(*) from t").fetchone() == (1,)
        # The check, then one fetch of chunks (which re-reads the three keys to verify);
        # no separate re-read of the meta in between.
        assert len(log.read_keys) == 2, log.read_keys
        # (the history's head and bases ride along: a writer's reload needs them, vfs.history)
        assert log.read_keys[0] == [meta_key(0), chunk_key(0, 0), COMMIT_RECORD_KEY, HISTORY_HEAD_KEY,
                                    HISTORY_BASES_KEY]
        assert any(k.startswith(chunk_key(0, 0)[:4]) for k in log.read_keys[1][5:])
    finally:
        a.close()
        b.close()


def test_one_writer_across_processes(store: KVStore, vfs_kind: str) -> None:
    name = _name("lease")
    a = _connect(store.actor(name), name, vfs_kind, "cross-process")
    b = _connect(OtherProcessView(store.actor(name)), name, vfs_kind, "cross-process", timeout=0.3)
    try:
        with a:
            a.execute("create table t(x)")
        a.execute("insert into t values (1)")  # a holds the writer lease
        with pytest.raises(dbapi.OperationalError, match="database is locked"):
            b.execute("insert into t values (2)")
        b.rollback()
        a.commit()
        with b:
            b.execute("insert into t values (2)")
        assert a.execute("select sum(x) from t").fetchone() == (3,)
        assert store.actor(name).get_many([lease.LEASE_KEY]) == [None]  # released with the commits
    finally:
        a.close()
        b.close()


def test_a_dead_holders_lease_is_taken_over_when_it_expires(store: KVStore, vfs_kind: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    expired = lease.lease_expired

    def checked(value: bytes, now_s: float | None = None) -> bool:
        seen.append(expired(value, now_s))
        return seen[-1]

    monkeypatch.setattr(lease, "lease_expired", checked)
    name = _name("dead")
    con = _connect(store.actor(name), name, vfs_kind, "cross-process", timeout=30)
    try:
        with con:
            con.execute("create table t(x)")
        batch = WriteBatch()
        batch.put(lease.LEASE_KEY, lease.new_lease(ttl_s=0.5))  # a process that died holding it
        store.actor(name).write(batch)
        with con:
            con.execute("insert into t values (1)")  # waits for the expiry, then takes over
        assert False in seen and seen[-1] is True  # refused while live, taken once expired
        assert con.execute("select count(*) from t").fetchone() == (1,)
        assert store.actor(name).get_many([lease.LEASE_KEY]) == [None]  # and released by the commit
    finally:
        con.close()


def _store_spec(driver: DriverFactory) -> list[Any]:
    if isinstance(driver, RedisFactory):
        return ["redis-cluster" if driver.cluster else "redis", driver.url(), driver.namespace]
    assert isinstance(driver, LmdbFactory)
    return ["lmdb", str(driver.tmp / "store")]


@pytest.fixture(params=[name for name in sorted(DRIVERS) if name != "memory"], ids=str)
def shared_driver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    """The drivers several processes can share (every one but the in-process MemoryKV)."""
    factory = DRIVERS[request.param](tmp_path_factory.mktemp(request.param))
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_never_lose_an_acknowledged_commit(shared_driver: DriverFactory, vfs_kind: str,
                                                     processes: int) -> None:
    """Each worker process does committed increments through its own ``connect()``:
    the counter equals the number of acknowledged commits, every time."""
    driver = shared_driver
    store = driver.open()
    name = _name("counter")
    con = _connect(store, name, vfs_kind, "cross-process")
    with con:
        con.execute("create table counter(n)")
        con.execute("insert into counter values (0)")
        con.execute("create table log(worker, i)")
    con.close()
    spec = {"store": _store_spec(driver), "name": name, "vfs": vfs_kind, "increments": 40, "timeout": 20.0}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.multi_process_worker", json.dumps({**spec, "worker": n})],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(processes)]
    results = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    acknowledged = sum(r["acknowledged"] for r in results)
    con = _connect(store, name, vfs_kind, "cross-process")
    try:
        assert con.execute("select n from counter").fetchone() == (acknowledged,)
        assert con.execute("select count(*) from log").fetchone() == (acknowledged,)
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        con.close()
        store.close()
    assert acknowledged >= processes  # every worker got through at least once


# ----------------------------------------------------- the stdlib as the oracle
_OPS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(
    ["begin", "begin immediate", "insert", "update", "select", "commit", "rollback"])), min_size=1, max_size=30)


def _run(con: Any, op: str, n: int) -> Any:
    sql = {"begin": "begin", "begin immediate": "begin immediate", "insert": f"insert into t values ({n})",
           "update": "update t set x = x + 1", "select": "select count(*), total(x) from t",
           "commit": "commit", "rollback": "rollback"}[op]
    try:
        return ("ok", con.execute(sql).fetchall())
    except Exception as exc:  # the stdlib's and the drop-in's classes differ only in module
        message = str(exc)
        return ("error", type(exc).__name__, "locked" if "locked" in message else message)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=_OPS)
def test_interleaved_connections_match_the_stdlib_on_a_file(store: KVStore, vfs_kind: str,
                                                            tmp_path_factory: pytest.TempPathFactory,
                                                            ops: list[tuple[int, str]]) -> None:
    """Statements of three connections, interleaved at random, give the same results
    (and the same "database is locked" refusals) as three stdlib connections on a file.

    The stdlib connections run the settings every KV-backed connection runs at open
    (journal in memory, ``synchronous=NORMAL``, temp store in memory): the same pager
    configuration, and, like ours, they read the schema when they open."""
    name = _name("oracle")
    path = tmp_path_factory.mktemp("oracle") / "db.sqlite"
    ours = [_connect(store, name, vfs_kind, _locking(store), timeout=0, isolation_level=None) for _ in range(3)]
    theirs = [stdlib.connect(path, timeout=0, isolation_level=None) for _ in range(3)]
    for con in theirs:
        for pragma in ("journal_mode=MEMORY", "synchronous=NORMAL", "temp_store=MEMORY"):
            con.execute(f"PRAGMA {pragma}")
    try:
        ours[0].execute("create table t(x)")
        theirs[0].execute("create table t(x)")
        for step, (who, op) in enumerate(ops):
            assert _run(ours[who], op, step) == _run(theirs[who], op, step), (step, who, op)
        for a, b in zip(ours, theirs):
            assert a.in_transaction == b.in_transaction
    finally:
        for c in ours + theirs:
            c.close()
