"""Warm reads: queries per second on an open connection, as a ratio to a local file.

The database (``warm_db_size``, 16 MiB in a full run) is larger than SQLite's default
page cache (2,000 KiB), so queries keep going down to the VFS: this measures what the
VFS adds per page read. "Warm" means the connection has read the whole table once; our
VFS's chunk cache is sized to hold the database, so warm queries make 0 round trips
(counted). Queries:

- ``point-select``: ``SELECT length(v) FROM items WHERE id = ?`` on random ids;
- ``range-scan``: ``SELECT count(*), sum(length(v)) FROM items WHERE id BETWEEN ? AND ?``
  over ``warm_scan_rows`` consecutive rows (10,000 in a full run, ~2,500 pages).

Rows: ``ours`` (Python VFS), the native VFS when built, the ``naive KV VFS`` (its pages
come from SQLite's page cache or one KV get each) and the ``local file`` (apsw,
``locking_mode=EXCLUSIVE``, OS page cache warm).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from typing import Any, Iterator

import apsw
import pytest

import vfs

from actor_db.kv import MemoryKV
from benchmarks import backends, naive_vfs
from benchmarks.datasets import dataset, load_into, row_count
from benchmarks.kvlatency import LatencyKV
from benchmarks.measure import record, run_rounds
from benchmarks.settings import settings

S = settings()
POINT = "SELECT length(v) FROM items WHERE id = ?"
SCAN = "SELECT count(*), sum(length(v)) FROM items WHERE id BETWEEN ? AND ?"
ROWS = row_count(S.warm_db_size)

BACKENDS = ["ours", "naive KV VFS", "local file"]
if backends.native_available():
    BACKENDS.insert(1, "ours (native VFS)")
QUERIES = ["point-select", "range-scan"]
CASES = [pytest.param(q, b, id=f"{q}-{b}") for q in QUERIES for b in BACKENDS]


@pytest.fixture
def connection(request: pytest.FixtureRequest) -> Iterator[tuple[apsw.Connection, Any]]:
    """A warm connection on the backend under test and its store (``None``: local)."""
    backend = request.node.callspec.params["backend"]
    path = dataset(S.warm_db_size)
    tmpdir = None
    store: Any = None
    if backend == "local file":
        tmpdir = tempfile.mkdtemp(prefix="actor-db-bench-warm-")
        local = os.path.join(tmpdir, "db.sqlite")
        shutil.copyfile(path, local)
        con = apsw.Connection(local)
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
    else:
        inner = MemoryKV()
        size = load_into(inner, "warm", path)
        store = LatencyKV(inner, 0.0)
        kv = store.actor("warm")
        if backend == "naive KV VFS":
            con = naive_vfs.connect(kv, "warm")
        else:
            con = vfs.connect(kv, vfs="native" if backend == "ours (native VFS)" else "python",
                              cache_chunks=size // vfs.CHUNK_SIZE + 64)
    con.execute("SELECT count(*), sum(length(v)) FROM items").fetchall()  # warm every cache
    if store is not None:
        store.latency_s = S.latency_s
    yield con, store
    con.close()
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.benchmark(group="warm-reads")
@pytest.mark.parametrize(("query", "backend"), CASES)
def test_warm_read(benchmark: Any, connection: tuple[apsw.Connection, Any], query: str, backend: str) -> None:
    con, store = connection
    rng = random.Random(7)
    if query == "point-select":
        rounds = S.warm_point_rounds if backend != "naive KV VFS" else max(10, S.warm_point_rounds // 10)

        def run() -> None:
            assert con.execute(POINT, (rng.randint(1, ROWS),)).fetchone()[0] == 1000
    else:
        rounds = S.warm_scan_rounds if backend != "naive KV VFS" else 2
        span = S.warm_scan_rows

        def run() -> None:
            first = rng.randint(1, ROWS - span + 1)
            count, total = con.execute(SCAN, (first, first + span - 1)).fetchone()
            assert count == span and total == span * 1000

    record(benchmark, backend=backend, query=query, db_bytes=dataset(S.warm_db_size).stat().st_size,
           latency_ms=S.latency_s * 1000.0 if store is not None else None,
           rows_per_query=1 if query == "point-select" else S.warm_scan_rows)
    counter = None if store is None else (lambda: int(store.round_trips))
    warmup = 0 if backend == "naive KV VFS" and query == "range-scan" else min(10, rounds)
    run_rounds(benchmark, run, rounds=rounds, counter=counter, warmup_rounds=warmup)
