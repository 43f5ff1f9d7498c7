"""A drop-in connection the garbage collector finalizes releases its database safely.

A connection in a reference cycle is finalized by a garbage collection, which may start
at any allocation, also one made while the thread holds a KV driver's lock. Its release
is deferred past the collection (``actor_db.dbapi.finalize``) and runs before the next
``connect``, so it neither deadlocks nor leaves the database held.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import actor_db
from actor_db.dbapi import finalize
from actor_db.kv import KVStore

ROOT = Path(__file__).resolve().parent.parent


def _connect(store: KVStore, vfs_kind: str, locking: str) -> Any:
    return actor_db.connect("collected", kv=store, vfs_options={"vfs": vfs_kind, "locking": locking})


def _drop_in_a_cycle(con: Any) -> None:
    cycle: list[Any] = [con]
    cycle.append(cycle)


@pytest.mark.parametrize("locking", ["exclusive", "cross-process"])
def test_a_connection_collected_in_a_cycle_releases_its_database_for_the_next_connect(
        store: KVStore, vfs_kind: str, locking: str) -> None:
    con = _connect(store, vfs_kind, locking)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.execute("INSERT INTO t VALUES (2)")  # an open write transaction: rolled back, never committed
    _drop_in_a_cycle(con)
    del con
    gc.collect()  # finalized during the collection: its release is deferred, not run there
    again = _connect(store, vfs_kind, locking)  # runs the deferred release first: not busy
    again.execute("INSERT INTO t VALUES (3)")
    again.commit()
    assert [r[0] for r in again.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
    again.close()


def test_a_finalizer_inside_a_collection_defers_and_outside_releases_at_once() -> None:
    seen: list[bool] = []

    class Probe:
        def __del__(self) -> None:
            seen.append(finalize.collecting())

    probe = Probe()
    del probe  # reference count: finalized in this code, not by a collection
    cyclic: list[Any] = [Probe()]
    cyclic.append(cyclic)
    del cyclic
    gc.collect()
    assert seen == [False, True]
    assert not finalize.collecting()


_HELD_LOCK = textwrap.dedent("""
    import gc
    import actor_db
    from actor_db.kv import MemoryKV

    kv = MemoryKV()
    con = actor_db.connect("a", kv=kv, vfs_options={"locking": "cross-process"})
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.execute("INSERT INTO t VALUES (1)")  # holds the writer lease: its release is a KV write
    cycle = [con]
    cycle.append(cycle)
    del con, cycle
    with kv._lock:  # a collection that starts while the store's lock is held, as at an allocation
        gc.collect()
    again = actor_db.connect("a", kv=kv, vfs_options={"locking": "cross-process"})
    again.execute("INSERT INTO t VALUES (2)")
    again.commit()
    print(again.execute("SELECT x FROM t").fetchall())
""")


def test_a_collection_while_the_store_lock_is_held_does_not_deadlock() -> None:
    """Before the deferral the collection's finalizer gave the lease back through the KV
    and waited forever on the lock its own thread held (this child hung)."""
    try:
        done = subprocess.run([sys.executable, "-c", _HELD_LOCK], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the garbage-collected connection's release deadlocked on the store's lock")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[(2,)]"
