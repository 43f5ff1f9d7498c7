"""Tools go through the drop-in's writer lease (issue 29, item 3).

A drop-in connection (``locking="cross-process"``) holding ``BEGIN IMMEDIATE`` + an
insert holds the actor's writer lease. ``import``, ``rm`` and a writing ``shell`` must
then wait for its commit or refuse (one line, nothing written): never overwrite its
transaction. Every driver in-process (``actor_db.ops``), LMDB and Redis through the
real console script in a subprocess (the memory store lives in one process only).
"""

from __future__ import annotations

import pathlib
import sqlite3
import subprocess
import threading
from typing import Any, Iterator

import pytest

import actor_db
from vfs.lease import LEASE_KEY, lease_expired, lease_holder
from vfs.protocol import WriteBatch

from actor_db.errors import FencedError, KVConditionFailedError, WriterBusyError
from actor_db.kv import KVStore
from actor_db.ops import check_integrity, import_database, remove_actor
from actor_db.ops.lease import writer_lease
from tests.cli_support import assert_one_line_error, make_sqlite_file, run_cli
from tests.drivers import DRIVERS, DriverFactory
from tests.faults import ForwardingKV


def _dropin(store: KVStore, vfs_kind: str, timeout: float = 5.0) -> Any:
    con = actor_db.connect("x", kv=store, timeout=timeout, check_same_thread=False,
                           vfs_options={"locking": "cross-process", "vfs": vfs_kind})
    con.execute("CREATE TABLE t (a)")
    con.commit()
    return con


def _rows(store: KVStore) -> list[tuple[Any, ...]]:
    con = actor_db.connect("x", kv=store, vfs_options={"locking": "cross-process"})
    try:
        return sorted(con.execute("SELECT a FROM t").fetchall())
    finally:
        con.close()


@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "src.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (a)")
    con.execute("INSERT INTO t VALUES ('imported')")
    con.commit()
    con.close()
    return path


def test_import_and_rm_refuse_while_a_dropin_writes(store: KVStore, vfs_kind: str, source: pathlib.Path) -> None:
    con = _dropin(store, vfs_kind)
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t VALUES ('dropin')")
    before = store.actor("x").get_many([LEASE_KEY])[0]
    assert before is not None and not lease_expired(before)  # the drop-in holds the lease
    with pytest.raises(WriterBusyError, match="writer lease") as caught:
        import_database(source, store.actor("x"), force=True, lease_timeout_s=0.05)
    assert caught.value.holder == lease_holder(before)
    with pytest.raises(WriterBusyError):
        remove_actor(store.actor("x"), lease_timeout_s=0.05)
    assert store.actor("x").get_many([LEASE_KEY])[0] == before  # nothing written, its lease intact
    con.commit()  # the drop-in's transaction was never cut: it commits
    assert _rows(store) == [("dropin",)]
    assert check_integrity(store.actor("x")) == ["ok"]
    # An open connection of THIS process: the import refuses too (no lease to wait for).
    with pytest.raises(WriterBusyError, match="open in this process"):
        import_database(source, store.actor("x"), force=True, lease_timeout_s=0.05)
    con.close()
    # With the lease free, the tools run, and leave no lease behind.
    import_database(source, store.actor("x"), force=True, lease_timeout_s=0.05)
    assert _rows(store) == [("imported",)]
    assert store.actor("x").get_many([LEASE_KEY])[0] is None
    remove_actor(store.actor("x"), lease_timeout_s=0.05)
    assert store.actor("x").scan(b"", b"", limit=1) == []


class _SignalOnHeldLease:
    """A view that sets ``seen`` once a read of the lease key returned a live lease."""

    store = None  # no store to bypass it through: the lease's reads come here too

    def __init__(self, view: Any) -> None:
        self._view = view
        self.seen = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)

    def get_many(self, keys: Any) -> list[bytes | None]:
        values: list[bytes | None] = self._view.get_many(keys)
        if LEASE_KEY in keys and values[list(keys).index(LEASE_KEY)] is not None:
            self.seen.set()
        return values


def test_import_waits_for_the_lease_holder(store: KVStore, source: pathlib.Path) -> None:
    """The import waits (it does not refuse at once) while another writer holds the
    lease, and runs as soon as the holder releases it."""
    view = _SignalOnHeldLease(store.actor("x"))
    holder_done: list[BaseException | None] = []

    def hold_until_waited_for() -> None:
        try:
            with writer_lease(store.actor("x"), timeout_s=0.05) as other:
                started.set()
                assert view.seen.wait(30)  # the import read this live lease and is waiting
                other.write(_put(WriteBatch(), b"\x01", b"holder"))
            holder_done.append(None)
        except BaseException as exc:  # reported by the assertion below
            holder_done.append(exc)
            started.set()

    started = threading.Event()
    thread = threading.Thread(target=hold_until_waited_for)
    thread.start()
    try:
        assert started.wait(30)
        result = import_database(source, view, force=True, lease_timeout_s=30)
    finally:
        thread.join(30)
    assert holder_done == [None]  # the holder's write landed first
    assert result.pages == 2
    assert _rows(store) == [("imported",)]
    assert store.actor("x").get_many([b"\x01", LEASE_KEY]) == [b"holder", None]
    assert check_integrity(store.actor("x")) == ["ok"]


def test_dropin_writers_wait_for_a_tool_holding_the_lease(store: KVStore, vfs_kind: str) -> None:
    con = _dropin(store, vfs_kind, timeout=0.05)
    with writer_lease(store.actor("x"), timeout_s=0.05):
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            con.execute("INSERT INTO t VALUES ('blocked')")
        con.rollback()
    con.execute("INSERT INTO t VALUES ('later')")
    con.commit()
    assert _rows(store) == [("later",)]
    con.close()


def test_a_lost_lease_refuses_the_operation_writes(store: KVStore) -> None:
    """If the lease is taken over (a stall past its time to live), no later write of the
    operation lands: each is conditional on the lease."""
    with writer_lease(store.actor("y"), timeout_s=0.05) as leased:
        leased.write(_put(WriteBatch(), b"\x01", b"mine"))
        thief = WriteBatch()
        thief.put(LEASE_KEY, b"\x00" * 24)  # an expired lease of another holder, taken over
        store.actor("y").write(thief)
        with pytest.raises(KVConditionFailedError):
            leased.write(_put(WriteBatch(), b"\x01", b"late"))
    assert store.actor("y").get_many([b"\x01"]) == [b"mine"]


def _put(batch: Any, key: bytes, value: bytes) -> Any:
    batch.put(key, value)
    return batch


# ---------------------------------------------------------------------------- the console script
@pytest.fixture(params=["lmdb", "redis"], ids=str)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KVStore, str]]:
    """A store this process writes through and the ``--kv`` spec of the same data."""
    factory: DriverFactory = DRIVERS[request.param](tmp_path_factory.mktemp(request.param))
    store = factory.open()
    if request.param == "lmdb":
        spec = f"lmdb:{factory.tmp / 'store'}"
    else:
        spec = f"{factory.url()}?namespace={factory.namespace}"  # type: ignore[attr-defined]
    try:
        yield store, spec
    finally:
        store.close()
        factory.cleanup()


def test_cli_writers_refuse_while_a_dropin_writes_then_run(shared: tuple[KVStore, str], tmp_path: pathlib.Path,
                                                           source: pathlib.Path) -> None:
    store, spec = shared
    con = _dropin(store, "python")
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t VALUES ('dropin')")
    shell = run_cli("--kv", spec, "shell", "x", "--timeout", "0.2", "-c", "INSERT INTO t VALUES ('shell')",
                    cwd=tmp_path)
    assert_one_line_error(shell, "database is locked", "writer lease")
    imported = run_cli("--kv", spec, "import", "--force", "--timeout", "0.2", str(source), "x", cwd=tmp_path)
    assert_one_line_error(imported, "writer lease", "nothing was written")
    removed = run_cli("--kv", spec, "rm", "-y", "--timeout", "0.2", "x", cwd=tmp_path)
    assert_one_line_error(removed, "writer lease")
    # A shell that only reads runs meanwhile (a snapshot: the last commit, no lease).
    read = run_cli("--kv", spec, "shell", "x", "-c", "SELECT count(*) FROM t", cwd=tmp_path)
    assert (read.returncode, read.stdout.strip()) == (0, "0"), read
    con.commit()
    con.close()
    assert _rows(store) == [("dropin",)]  # no tool row lost its commit, none overwrote it
    ok = run_cli("--kv", spec, "shell", "x", "-c", "INSERT INTO t VALUES ('shell')", cwd=tmp_path)
    assert ok.returncode == 0, ok
    assert _rows(store) == [("dropin",), ("shell",)]
    assert check_integrity(store.actor("x")) == ["ok"]


def test_cli_import_waits_for_a_dropin_commit(shared: tuple[KVStore, str], tmp_path: pathlib.Path,
                                              source: pathlib.Path) -> None:
    """``import --force`` started while a drop-in transaction is open: the drop-in's
    commit succeeds and the import then replaces the database whole (never a mix)."""
    from tests.cli_support import console_script

    store, spec = shared
    con = _dropin(store, "python")
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO t VALUES ('dropin')")
    proc = subprocess.Popen([console_script(), "--kv", spec, "import", "--force", "--timeout", "60", str(source),
                             "x"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        con.commit()  # before or while the import waits for the lease: either way it lands
        con.close()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert _rows(store) == [("imported",)]
    assert check_integrity(store.actor("x")) == ["ok"]


class _TakenBackAt(ForwardingKV):
    """An actor view whose actor is taken back by another owner (as a runtime's wake
    would) just before its ``at``-th write."""

    def __init__(self, store: KVStore, actor: str, at: int) -> None:
        super().__init__(store.actor(actor))
        self.store, self.actor_id, self.at, self.writes = store, actor, at, 0

    def acquire_ownership(self) -> int:
        return self.inner.acquire_ownership()  # type: ignore[attr-defined,no-any-return]

    def _around(self, call: Any, batch: WriteBatch | None) -> Any:
        if batch is not None:
            self.writes += 1
            if self.writes == self.at:
                self.store.actor(self.actor_id).acquire_ownership()
        return call()


@pytest.mark.parametrize("at", [1, 3])
def test_import_onto_an_actor_a_runtime_takes_back_is_one_clear_error(store: KVStore, tmp_path: pathlib.Path,
                                                                       at: int) -> None:
    """Issue 29 item 6: it was a traceback ending in ``SystemError: ... apsw.Backup``."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    make_sqlite_file(old, rows=10)
    make_sqlite_file(new, rows=400)
    import_database(old, store.actor("owned"))
    view = _TakenBackAt(store, "owned", at)
    with pytest.raises(FencedError, match="took it back during the import; nothing was imported"):
        import_database(new, view, force=True, max_dirty_bytes=64 * 1024)
    con = actor_db.connect("owned", kv=store)
    assert con.execute("SELECT count(*) FROM users").fetchone() == (10,)  # the old database, whole
    con.close()
    assert store.actor("owned").get_many([LEASE_KEY]) == [None]  # the lease went back though fenced
