"""Native VFS vs Python VFS vs apsw on a local file (issue 5).

Database: ~20 MiB (10x SQLite's page cache at ``cache_size=-2000``), table
``t(id INTEGER PRIMARY KEY, pad BLOB)`` of 1000-byte rows. Every backend runs with the
same SQLite settings: ``cache_size=-2000``, ``locking_mode=EXCLUSIVE``. The KV-backed
rows use an in-memory KV (so the VFS itself is measured, not a network) and a chunk
cache large enough to hold the whole database ("warm": every KV read was done before
the measured rounds, so each SQLite page-cache miss is a chunk-cache hit).

Groups: ``native-point`` (1000 random point SELECTs), ``native-scan`` (full-table scan),
``native-commit-1`` and ``native-commit-1000`` (one transaction of 1 / 1000 inserts).
Run: ``python -m pytest benchmarks/bench_native.py --benchmark-json=out.json``; the
ratios in reports are computed from that JSON.
"""

from __future__ import annotations

import pathlib
import random
from typing import Any, Iterator

import apsw
import pytest

import vfs
from actor_db.kv import MemoryKV
from benchmarks import backends

ROWS = 20_000
ROW_BYTES = 1000
CACHE_PRAGMA = "PRAGMA cache_size=-2000"
CHUNK_CACHE = 8192  # chunks (32 MiB): holds the whole database

BACKENDS = ["apsw-file", "python"] + (["native"] if backends.native_available() else [])


def _fill(con: apsw.Connection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pad BLOB)")
    if con.execute("SELECT count(*) FROM t").fetchone()[0] == 0:
        rng = random.Random(1)
        with con:
            con.executemany("INSERT INTO t(id, pad) VALUES(?, ?)", ((i, rng.randbytes(ROW_BYTES)) for i in range(1, ROWS + 1)))


@pytest.fixture(scope="module")
def kv_store() -> MemoryKV:
    store = MemoryKV()
    con = vfs.connect(store.actor("bench"), vfs="python")
    _fill(con)
    con.close()
    return store


@pytest.fixture(scope="module")
def file_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("bench_native") / "local.db"
    con = apsw.Connection(str(path))
    con.execute("PRAGMA page_size=4096")
    _fill(con)
    con.close()
    return path


@pytest.fixture(params=BACKENDS)
def con(request: pytest.FixtureRequest, kv_store: MemoryKV, file_path: pathlib.Path) -> Iterator[apsw.Connection]:
    if request.param == "apsw-file":
        c = apsw.Connection(str(file_path))
        c.execute("PRAGMA locking_mode=EXCLUSIVE")
    else:
        c = vfs.connect(kv_store.actor("bench"), vfs=request.param, cache_chunks=CHUNK_CACHE)
    c.execute(CACHE_PRAGMA)
    c.execute("SELECT sum(length(pad)) FROM t").fetchall()  # warm the chunk cache / OS cache
    try:
        yield c
    finally:
        c.close()


def _points(c: apsw.Connection, ids: list[int]) -> int:
    n = 0
    for i in ids:
        n += len(c.execute("SELECT pad FROM t WHERE id=?", (i,)).fetchone()[0])
    return n


@pytest.mark.benchmark(group="native-point")
def test_point_selects(benchmark: Any, con: apsw.Connection) -> None:
    ids = random.Random(2).sample(range(1, ROWS + 1), 1000)
    assert benchmark(_points, con, ids) == 1000 * ROW_BYTES


@pytest.mark.benchmark(group="native-scan")
def test_full_scan(benchmark: Any, con: apsw.Connection) -> None:
    def scan() -> int:
        return int(con.execute("SELECT sum(length(pad)) FROM t").fetchone()[0])

    assert benchmark(scan) == ROWS * ROW_BYTES


@pytest.mark.benchmark(group="native-commit-1")
def test_commit_one_row(benchmark: Any, con: apsw.Connection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS w(id INTEGER PRIMARY KEY, v TEXT)")
    payload = "x" * 100

    def commit() -> None:
        with con:
            con.execute("INSERT INTO w(v) VALUES(?)", (payload,))

    benchmark(commit)


@pytest.mark.benchmark(group="native-commit-1000")
def test_commit_thousand_rows(benchmark: Any, con: apsw.Connection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS w(id INTEGER PRIMARY KEY, v TEXT)")
    rows = [("x" * 100,)] * 1000

    def commit() -> None:
        with con:
            con.executemany("INSERT INTO w(v) VALUES(?)", rows)

    benchmark.pedantic(commit, rounds=30, iterations=1)
