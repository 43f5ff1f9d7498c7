"""Commits: round trips and time per write transaction on a warm connection.

Operations (each round is one committed transaction on an open, warm connection to a
database of ~1 MiB of ``items`` rows):

- ``update-1-row``: ``UPDATE items SET v = ? WHERE id = ?`` (1000-byte value);
- ``insert-100-rows``: one transaction inserting 100 rows of 100 bytes;
- ``insert-1MiB`` / ``insert-10MiB``: one row holding a 1 MiB / 10 MiB blob.

Rows: ``ours`` (no batch limit), ``ours, RivetKit limits`` (128 keys / 976 KiB per
batch: big commits go through the redo log), the native VFS and Redis when present,
the ``naive KV VFS`` (a put per page write, plus its rollback journal) and a ``local
file`` (apsw defaults: rollback journal, ``synchronous=FULL``, so each commit fsyncs;
``locking_mode=EXCLUSIVE``). RivetKit's published 1 MiB figure is added by the report
as a reference row.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator

import apsw
import pytest

import vfs
from vfs.protocol import KVLimits

from actor_db.kv import MemoryKV
from benchmarks import backends, naive_vfs
from benchmarks.datasets import dataset, load_into, row_count
from benchmarks.kvlatency import LatencyKV
from benchmarks.measure import record, run_rounds
from benchmarks.reference import RIVETKIT_LIMITS
from benchmarks.settings import MIB, settings

S = settings()
BASE_SIZE = MIB
OPERATIONS = ["update-1-row", "insert-100-rows"] + [name for name, _ in S.commit_sizes]
BLOB_BYTES = dict(S.commit_sizes)

BACKENDS = ["ours", "ours, RivetKit limits", "naive KV VFS", "local file"]
if backends.native_available():
    BACKENDS.insert(2, "ours (native VFS)")
if backends.redis_available():
    BACKENDS.insert(2, "ours on Redis")


class _Target:
    """An open connection to a fresh copy of the base database, on one backend."""

    def __init__(self, backend: str, request: pytest.FixtureRequest, actor_id: str) -> None:
        self.backend = backend
        self.store: Any = None
        self.tmpdir: str | None = None
        base = dataset(BASE_SIZE)
        if backend == "local file":
            self.tmpdir = tempfile.mkdtemp(prefix="actor-db-bench-commit-")
            path = os.path.join(self.tmpdir, "db.sqlite")
            shutil.copyfile(base, path)
            self.con: apsw.Connection = apsw.Connection(path)
            self.con.execute("PRAGMA locking_mode=EXCLUSIVE")
        else:
            if backend == "ours on Redis":
                self.store = request.getfixturevalue("redis_store")
                load_into(self.store, actor_id, base)
            else:
                limits = KVLimits(**RIVETKIT_LIMITS) if backend == "ours, RivetKit limits" else None
                inner = MemoryKV(limits)
                load_into(inner, actor_id, base)
                self.store = LatencyKV(inner, 0.0)
            kv = self.store.actor(actor_id)
            if backend == "naive KV VFS":
                self.con = naive_vfs.connect(kv, actor_id)
            else:
                self.con = vfs.connect(kv, vfs="native" if backend == "ours (native VFS)" else "python")
        self.con.execute("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        self.con.execute("SELECT sum(length(v)) FROM items").fetchall()  # warm SQLite's page cache
        if isinstance(self.store, LatencyKV):
            self.store.latency_s = S.latency_s

    def round_trips(self) -> int:
        return int(self.store.round_trips)

    def close(self) -> None:
        self.con.close()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _operation(name: str, con: apsw.Connection) -> Callable[[], None]:
    ids = itertools.cycle(range(1, row_count(BASE_SIZE) + 1, 7))
    value = os.urandom(1000)
    small = [(os.urandom(100),) for _ in range(100)]
    if name == "update-1-row":
        return lambda: con.execute("UPDATE items SET v = ? WHERE id = ?", (value, next(ids))) and None
    if name == "insert-100-rows":
        def insert_rows() -> None:
            with con:  # one transaction
                con.executemany("INSERT INTO items (v) VALUES (?)", small)
        return insert_rows
    blob = os.urandom(BLOB_BYTES[name])
    return lambda: con.execute("INSERT INTO blobs (b) VALUES (?)", (blob,)) and None


CASES = [pytest.param(op, backend, id=f"{op}-{backend}") for op in OPERATIONS for backend in BACKENDS]


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[_Target]:
    op, backend = request.node.callspec.params["operation"], request.node.callspec.params["backend"]
    t = _Target(backend, request, f"commit-{op}")
    yield t
    t.close()


@pytest.mark.benchmark(group="commits")
@pytest.mark.parametrize(("operation", "backend"), CASES)
def test_commit(benchmark: Any, target: _Target, operation: str, backend: str) -> None:
    rounds = S.commit_rounds[operation]
    if backend == "naive KV VFS" and operation == "insert-10MiB":
        rounds = 1  # ~2,600 sequential puts per round: one round says enough
    record(benchmark, backend=backend, operation=operation,
           latency_ms=S.latency_s * 1000.0 if isinstance(target.store, LatencyKV) else None,
           payload_bytes=BLOB_BYTES.get(operation, 1000 if operation == "update-1-row" else 100 * 100))
    counter = None if backend == "local file" else target.round_trips
    run_rounds(benchmark, _operation(operation, target.con), rounds=rounds, counter=counter)
    if backend != "local file" and backend != "naive KV VFS":
        stats = target.con.stats  # type: ignore[attr-defined]
        record(benchmark, large_commits=stats.large_commits, commits=stats.commits)
    assert target.con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
