"""A writer that outlives its lease never destroys another process's acknowledged
commit (issue: leases that expire mid-transaction, and the apply phase of a large
commit).

"Another process" is :class:`tests.faults.OtherProcessView` (same keys, its own
identity, so its own lock table and lease); a pause of the first process is a plain
sleep with lease renewal switched off (:func:`vfs.lease.pause_renewals`), which is what
SIGSTOP does to a real process. Real processes with SIGSTOP run in
``tests/test_lease_chaos.py``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Iterator

import pytest

from vfs import lease
from vfs.file import FileOptions
from vfs.keys import COMMIT_RECORD_KEY
from vfs.protocol import KVLimits, WriteBatch

from actor_db import dbapi
from actor_db.kv import KVStore
from tests.faults import ForwardingKV, OtherProcessView

_names = itertools.count()
TTL = 0.4


def _connect(kv: Any, name: str, vfs_kind: str, **options: Any) -> dbapi.Connection:
    con = dbapi.connect(name, kv=kv, timeout=10, vfs_options={"vfs": vfs_kind, "locking": "cross-process",
                                                            "lease_ttl_s": TTL, **options})
    assert isinstance(con, dbapi.Connection)
    return con


@pytest.fixture
def paused_renewals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if hasattr(lease, "pause_renewals"):
        with lease.pause_renewals():
            yield
    else:
        yield


def _rows(store: KVStore, name: str, vfs_kind: str) -> list[Any]:
    con = _connect(OtherProcessView(store.actor(name)), name, vfs_kind)
    try:
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
        return con.execute("select x from t order by x").fetchall()
    finally:
        con.close()


def test_a_transaction_that_outlives_its_lease_cannot_undo_a_later_commit(
        store: KVStore, vfs_kind: str, paused_renewals: None) -> None:
    name = f"outlive-{next(_names)}"
    a = _connect(store.actor(name), name, vfs_kind)
    b = _connect(OtherProcessView(store.actor(name)), name, vfs_kind)
    try:
        with a:
            a.execute("create table t(x)")
        a.execute("begin immediate")
        a.execute("insert into t values (1)")          # a holds the lease ...
        time.sleep(TTL * 1.5)                          # ... and pauses past its expiry
        with b:
            b.execute("insert into t values (2)")      # b takes the expired lease: acknowledged
        with pytest.raises(dbapi.Error):
            a.commit()                                 # a lost the lease: refused
        a.rollback()
        assert _rows(store, name, vfs_kind) == [(2,)]  # b's commit is intact, a's never applied
        # a recovers: its next transaction re-reads and commits on top of b's.
        with a:
            a.execute("insert into t values (3)")
        assert a.execute("select x from t order by x").fetchall() == [(2,), (3,)]
        assert _rows(store, name, vfs_kind) == [(2,), (3,)]
    finally:
        a.close()
        b.close()


def test_a_live_transaction_renews_its_lease(store: KVStore, vfs_kind: str) -> None:
    name = f"renew-{next(_names)}"
    a = _connect(store.actor(name), name, vfs_kind)
    b = _connect(OtherProcessView(store.actor(name)), name, vfs_kind, )
    b.close()
    b = dbapi.connect(name, kv=OtherProcessView(store.actor(name)), timeout=0.05,
                      vfs_options={"vfs": vfs_kind, "locking": "cross-process", "lease_ttl_s": TTL})
    try:
        with a:
            a.execute("create table t(x)")
        a.execute("begin immediate")
        a.execute("insert into t values (1)")
        deadline = time.monotonic() + TTL * 4
        while time.monotonic() < deadline:             # four lease lifetimes: a keeps renewing
            with pytest.raises(dbapi.OperationalError, match="database is locked"):
                b.execute("insert into t values (2)")
            b.rollback()
            time.sleep(TTL / 4)
        a.commit()
        assert _rows(store, name, vfs_kind) == [(1,)]
    finally:
        a.close()
        b.close()


class PauseBeforeApply(ForwardingKV):
    """Runs ``pause()`` once, before the first apply batch of a large commit (a batch
    that puts chunk keys while the commit record is committed), like a SIGSTOP there."""

    def __init__(self, inner: Any, pause: Callable[[], None]) -> None:
        super().__init__(inner, KVLimits(max_batch_keys=8))
        self.pause = pause
        self.record_written = False
        self.paused = False

    def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
        if batch is not None and self.record_written and not self.paused:
            self.paused = True
            self.pause()
        result = call()
        if batch is not None and COMMIT_RECORD_KEY in batch.puts and batch.puts[COMMIT_RECORD_KEY][:2] == b"\x01\x00":
            self.record_written = True
        return result


def test_a_late_apply_phase_never_lands_on_a_newer_state(store: KVStore, vfs_kind: str,
                                                          paused_renewals: None) -> None:
    name = f"apply-{next(_names)}"
    seed = _connect(store.actor(name), name, vfs_kind)
    with seed:
        seed.execute("create table t(x)")
        seed.execute("create table big(b)")
    seed.close()
    acknowledged: list[int] = []

    def other_process_commits() -> None:
        time.sleep(TTL * 1.5)
        b = _connect(OtherProcessView(store.actor(name)), name, vfs_kind)
        try:
            with b:
                b.execute("insert into t values (2)")
                b.execute("delete from big")
            acknowledged.append(2)
        finally:
            b.close()

    view = PauseBeforeApply(store.actor(name), other_process_commits)
    a = _connect(view, name, vfs_kind)
    try:
        try:
            with a:
                a.execute("insert into t values (1)")
                a.execute("insert into big with recursive n(i) as (select 1 union all select i + 1 from n where i < 40) select randomblob(3000) from n")
        except dbapi.Error:
            pass  # durable at its commit point either way: b rolled it forward
        assert view.paused and acknowledged == [2]
    finally:
        a.close()
    rows = _rows(store, name, vfs_kind)
    assert rows == [(1,), (2,)]  # a's transaction (committed before b's) and b's, both whole


def test_the_locked_error_names_the_holder(store: KVStore, vfs_kind: str) -> None:
    name = f"named-{next(_names)}"
    a = _connect(store.actor(name), name, vfs_kind)
    b = dbapi.connect(name, kv=OtherProcessView(store.actor(name)), timeout=0.05,
                      vfs_options={"vfs": vfs_kind, "locking": "cross-process"})
    try:
        with a:
            a.execute("create table t(x)")
        a.execute("begin immediate")
        with pytest.raises(dbapi.OperationalError, match=r"database is locked.*held by .+:\d+, expires in"):
            b.execute("insert into t values (2)")
        b.rollback()
        a.rollback()
    finally:
        a.close()
        b.close()


def test_a_lease_expiring_past_the_cap_never_locks_the_database(store: KVStore, vfs_kind: str) -> None:
    name = f"far-{next(_names)}"
    con = _connect(store.actor(name), name, vfs_kind)
    try:
        with con:
            con.execute("create table t(x)")
        batch = WriteBatch()
        batch.put(lease.LEASE_KEY, lease.new_lease(ttl_s=10 * 365 * 86400.0))  # a damaged or far-ahead record
        store.actor(name).write(batch)
        with con:
            con.execute("insert into t values (1)")  # taken over at once, not "locked" forever
        assert con.execute("select count(*) from t").fetchone() == (1,)
    finally:
        con.close()


def test_lease_values() -> None:
    value = lease.new_lease(ttl_s=5.0, now_s=1000.0)
    assert not lease.lease_expired(value, now_s=1004.0)
    assert lease.lease_expired(value, now_s=1005.5)
    again = lease.renewed(value, 5.0, now_s=1004.0)
    assert lease.holder_id(again) == lease.holder_id(value) and not lease.lease_expired(again, now_s=1008.0)
    assert lease.lease_expired(b"short")
    assert lease.lease_expired(lease.new_lease(ttl_s=lease.MAX_LEASE_TTL_S + 60, now_s=0.0), now_s=0.0)
    assert "expires in 4.0 s" in lease.describe(value, now_s=1001.0)
    with pytest.raises(ValueError, match="lease_ttl_s"):
        FileOptions(lease_ttl_s=lease.MAX_LEASE_TTL_S + 1)


def test_a_release_the_garbage_collector_runs_inside_a_claim_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector may close a dropped connection (``locks.release``) on the thread
    that is inside ``locks.claim``: the release waits until the claim is done."""
    from vfs import locks

    old = locks.claim(("gc-test", "old"), "old-file", "in-process")
    assert old is not None
    real_init = locks.DatabaseShare.__init__

    def init_then_collect(self: Any, *args: Any) -> None:
        real_init(self, *args)
        locks.release(("gc-test", "old"), "old-file", old)  # what a collected connection's xClose does

    monkeypatch.setattr(locks.DatabaseShare, "__init__", init_then_collect)
    new = locks.claim(("gc-test", "new"), "new-file", "in-process")
    monkeypatch.undo()
    assert new is not None and not locks.is_open(("gc-test", "old")) and locks.is_open(("gc-test", "new"))
    locks.release(("gc-test", "new"), "new-file", new)
    assert not locks.is_open(("gc-test", "new"))
