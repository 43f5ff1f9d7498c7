"""What the drop-in's locking modes cost per transaction (issue 14).

One small table on an LMDB file (durable commits), opened through ``actor_db.connect``
with each ``locking`` mode of :mod:`vfs.locks`, and a stdlib ``sqlite3`` connection on a
local file for reference (``journal_mode=DELETE``, its default). Two groups:

- ``dropin-read``: one read transaction (``SELECT v FROM t WHERE id = ?``, autocommit);
- ``dropin-write``: one write transaction (``UPDATE t SET v = v + 1 WHERE id = ?``).

Round trips are counted per transaction: ``exclusive`` and ``in-process`` 0 per read and
1 per write; ``cross-process`` 1 per read (the check of the KV) and 3 per write (check,
lease, commit). The native VFS is used when built.

Run: ``python -m pytest benchmarks/bench_multi_connection.py --benchmark-json=out.json``.
"""

from __future__ import annotations

import itertools
import pathlib
import sqlite3
from typing import Any, Iterator

import pytest

from actor_db import dbapi
from actor_db.kv import LmdbKV
from benchmarks import backends
from benchmarks.measure import record, run_rounds

ROWS = 1000
ROUNDS = 300
MODES = ["exclusive", "in-process", "cross-process", "stdlib file"]
VFS = "native" if backends.native_available() else "python"


@pytest.fixture(scope="module")
def lmdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LmdbKV]:
    store = LmdbKV(tmp_path_factory.mktemp("bench_multi") / "store")
    con = dbapi.connect("bench", kv=store, vfs_options={"vfs": VFS, "locking": "exclusive"})
    with con:
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)")
        con.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(ROWS)])
    con.close()
    yield store
    store.close()


@pytest.fixture
def connection(request: pytest.FixtureRequest, lmdb: LmdbKV, tmp_path: pathlib.Path) -> Iterator[tuple[Any, Any]]:
    mode = request.node.callspec.params["mode"]
    if mode == "stdlib file":
        con: Any = sqlite3.connect(tmp_path / "local.db", isolation_level=None)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)")
        con.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(ROWS)])
        counter = None
    else:
        con = dbapi.connect("bench", kv=lmdb, isolation_level=None, vfs_options={"vfs": VFS, "locking": mode})
        counter = con.apsw_connection.stats
    con.execute("SELECT sum(v) FROM t").fetchall()  # warm
    try:
        yield con, counter
    finally:
        con.close()


def _count(stats: Any) -> Any:
    return None if stats is None else (lambda: stats.round_trips)


@pytest.mark.parametrize("mode", MODES)
def test_read_transaction(benchmark: Any, connection: tuple[Any, Any], mode: str) -> None:
    benchmark.group = "dropin-read"
    con, stats = connection
    ids = itertools.cycle(range(ROWS))
    run_rounds(benchmark, lambda: con.execute("SELECT v FROM t WHERE id = ?", (next(ids),)).fetchone(),
               rounds=ROUNDS, counter=_count(stats), warmup_rounds=5)
    record(benchmark, locking=mode, vfs=VFS)


@pytest.mark.parametrize("mode", MODES)
def test_write_transaction(benchmark: Any, connection: tuple[Any, Any], mode: str) -> None:
    benchmark.group = "dropin-write"
    con, stats = connection
    ids = itertools.cycle(range(ROWS))
    run_rounds(benchmark, lambda: con.execute("UPDATE t SET v = v + 1 WHERE id = ?", (next(ids),)),
               rounds=ROUNDS, counter=_count(stats), warmup_rounds=5)
    record(benchmark, locking=mode, vfs=VFS)
