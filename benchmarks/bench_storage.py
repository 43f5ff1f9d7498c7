"""Storage cost of the durable drivers' value encoding (:mod:`actor_db.kv.codec`).

Per dataset, the SQLite file is imported with ``actor_db.cli.import_database`` (as
``actor-db import`` does) into a fresh store, once with ``compress=True`` (the default)
and once with ``compress=False`` (values stored raw: the same pages per chunk as before
the encoding existed, one tag byte more per value). Recorded in ``extra_info``:

- LMDB: ``store_file_bytes`` (``data.mdb`` after the import: LMDB never shrinks, so
  this is the import's peak) and ``store_used_bytes`` (pages in use after it: branch +
  leaf + overflow, from ``env.stat()``), each also per database byte;
- Redis: ``used_memory_bytes``, the growth of the server's ``used_memory`` over the
  import (a fresh namespace; dropped afterwards), per database byte.

Datasets: ``text`` (an application-like table of words drawn from a 5,000-word
vocabulary, with an index) and ``blob`` (:func:`benchmarks.datasets.dataset`: rows of
1,000 random bytes, incompressible). 100 MiB each in a full run
(``ACTOR_DB_BENCH_STORAGE_MIB`` overrides), 4 MiB with ``--bench-quick``. These are
benchmarks only: the test suite checks a 4 MiB text import (tests/test_value_encoding.py).

The cost of decoding: ``warm-read`` (random point selects on a warm connection whose
chunk cache holds the database: no decoding; and with a 64-chunk cache, so most pages
are read from the store and decoded) and ``cold-wake`` (one preload call, open, first
query, as in :mod:`benchmarks.bench_cold_start`). Each compares a compressed and a raw
store of the same data in the SAME rounds, alternating which goes first, and records
both medians (wall and thread-CPU time) in ``extra_info``: on a shared machine, two
separate benchmarks would compare two different loads.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import vfs
from vfs.protocol import PreloadRequest

from actor_db.kv import LmdbKV
from benchmarks import backends
from benchmarks.datasets import cache_dir, dataset
from benchmarks.measure import record, run_rounds
from benchmarks.settings import MIB, settings

S = settings()
SIZE = 4 * MIB if S.quick else int(os.environ.get("ACTOR_DB_BENCH_STORAGE_MIB", "100")) * MIB
READ_SIZE = 4 * MIB if S.quick else 16 * MIB
TEXT_FORMAT = 1
PRELOAD = PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges())
POINT = "SELECT length(body) FROM docs WHERE id = ?"


def text_dataset(size: int) -> Path:
    """A text-heavy SQLite file of about ``size`` bytes (built once, cached)."""
    path = cache_dir() / f"text-v{TEXT_FORMAT}-{size}.db"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    rng = random.Random(1)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(5000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like, as words in text
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA page_size=4096")
    con.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, body TEXT, author TEXT, created TEXT)")
    con.execute("CREATE INDEX docs_author ON docs(author, created)")
    while tmp.stat().st_size < size:
        batch = []
        for _ in range(500):
            words = rng.choices(vocab, weights, k=rng.randint(20, 200))
            batch.append((" ".join(words[:6]).title(), " ".join(words), rng.choice(vocab[:300]),
                          f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"))
        with con:
            con.executemany("INSERT INTO docs(title, body, author, created) VALUES (?, ?, ?, ?)", batch)
    con.close()
    tmp.rename(path)
    return path


def source(kind: str, size: int) -> Path:
    return text_dataset(size) if kind == "text" else dataset(size)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="actor-db-bench-storage-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _redis(redis_store: Any, compress: bool) -> Any:
    from actor_db.kv import RedisKV

    return RedisKV(redis_store.url, namespace=f"storage-{uuid.uuid4().hex[:8]}", compress=compress,
                   check_persistence=False)


STORE_CASES = [pytest.param(driver, kind, compress, id=f"{driver}-{kind}-{'lz4' if compress else 'raw'}")
               for driver in ("lmdb", "redis") for kind in ("text", "blob") for compress in (True, False)]


@pytest.mark.benchmark(group="storage-import")
@pytest.mark.parametrize(("driver", "kind", "compress"), STORE_CASES)
def test_store_bytes(benchmark: Any, request: pytest.FixtureRequest, workdir: Path, driver: str, kind: str,
                     compress: bool) -> None:
    """Import once (timed) and record what the store costs per database byte."""
    path = source(kind, SIZE)
    db_bytes = path.stat().st_size
    record(benchmark, driver=driver, dataset=kind, compress=compress, db_bytes=db_bytes)
    with contextlib.ExitStack() as stack:
        if driver == "lmdb":
            store: Any = stack.enter_context(LmdbKV(workdir / "store", compress=compress))
        else:  # a server of its own: used_memory counts this import only
            server = stack.enter_context(backends.redis_server())
            store = stack.enter_context(_redis(server, compress))
        _measure_import(benchmark, store, path, db_bytes, driver, workdir)


def _measure_import(benchmark: Any, store: Any, path: Path, db_bytes: int, driver: str, workdir: Path) -> None:
    """Import ``path`` once (timed) and record the store's cost per database byte."""
    from actor_db.cli import import_database

    before = int(store.client.info("memory")["used_memory"]) if driver == "redis" else 0
    benchmark.pedantic(lambda: import_database(path, store.actor("imported")), rounds=1, iterations=1)
    if driver == "lmdb":
        stat = store._env.stat()
        used = (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]
        file_bytes = os.path.getsize(workdir / "store" / "data.mdb")
        record(benchmark, store_used_bytes=used, store_file_bytes=file_bytes,
               used_per_db_byte=round(used / db_bytes, 3), file_per_db_byte=round(file_bytes / db_bytes, 3),
               overflow_pages=stat["overflow_pages"], leaf_pages=stat["leaf_pages"], entries=stat["entries"])
    else:
        grown = int(store.client.info("memory")["used_memory"]) - before
        record(benchmark, used_memory_bytes=grown, used_memory_per_db_byte=round(grown / db_bytes, 3))


@pytest.fixture
def pair(request: pytest.FixtureRequest, workdir: Path) -> Iterator[tuple[dict[bool, Any], int]]:
    """Two stores of the case's driver, compressed (``True``) and raw (``False``), each
    holding the text dataset of ``READ_SIZE`` as actor ``reads``; and its row count."""
    from actor_db.cli import import_database

    driver = request.node.callspec.params["driver"]
    path = text_dataset(READ_SIZE)
    stores: dict[bool, Any] = {}
    try:
        for compress in (False, True):
            if driver == "lmdb":
                stores[compress] = LmdbKV(workdir / f"store-{compress}", compress=compress, durable=False)
            else:
                stores[compress] = _redis(request.getfixturevalue("redis_store"), compress)
            import_database(path, stores[compress].actor("reads"), check=False)
        with sqlite3.connect(path) as con:
            count = int(con.execute("SELECT count(*) FROM docs").fetchone()[0])
        yield stores, count
    finally:
        for store in stores.values():
            if driver == "redis":
                store.drop_namespace()
                store.client.delete(store.value_encoding_key)
            store.close()


def interleaved(benchmark: Any, raw: Any, packed: Any, *, rounds: int, setup: Any = None) -> None:
    """Time ``raw()`` and ``packed()`` in the same rounds, in alternating order (raw first
    in even rounds, packed first in odd ones), so the machine's load and each call's
    position hit both alike. ``setup()`` (untimed) runs before each call. Records each
    one's median wall and thread-CPU time (``raw_*``, ``lz4_*``, µs); the benchmark's
    own stats time a whole round (both calls, with the setups)."""
    times: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    calls = {False: raw, True: packed}
    n = [0]

    def one(compressed: bool) -> None:
        if setup is not None:
            setup()
        wall, cpu = time.perf_counter(), time.thread_time()
        calls[compressed]()
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        times[compressed][0].append(wall)
        times[compressed][1].append(cpu)

    def round_() -> None:
        first = n[0] % 2 == 1
        n[0] += 1
        one(first)
        one(not first)

    for _ in range(4):  # warm both paths (caches, lazily built state)
        round_()
    for walls, cpus in times.values():
        walls.clear()
        cpus.clear()
    benchmark.pedantic(round_, rounds=rounds, iterations=1)
    if setup is not None:
        setup()

    def median_us(values: list[float]) -> float:
        return round(statistics.median(values) * 1e6, 1)

    record(benchmark, raw_wall_median_us=median_us(times[False][0]), lz4_wall_median_us=median_us(times[True][0]),
           raw_cpu_median_us=median_us(times[False][1]), lz4_cpu_median_us=median_us(times[True][1]))


READ_CASES = [pytest.param(driver, cache, id=f"{driver}-{cache}")
              for driver in ("lmdb", "redis") for cache in ("cache-holds-db", "cache-64-chunks")]


@pytest.mark.benchmark(group="storage-warm-read")
@pytest.mark.parametrize(("driver", "cache"), READ_CASES)
def test_warm_read(benchmark: Any, pair: tuple[dict[bool, Any], int], driver: str, cache: str) -> None:
    """Random point selects, compressed store timed, raw store interleaved."""
    stores, count = pair
    chunks = READ_SIZE // vfs.CHUNK_SIZE + 64 if cache == "cache-holds-db" else 64
    cons = {}
    for compress, store in stores.items():
        con = vfs.connect(store.actor("reads"), cache_chunks=chunks)
        con.execute("PRAGMA cache_size=-256")  # SQLite's own cache small: reads reach the VFS
        con.execute("SELECT count(*), sum(length(body)) FROM docs").fetchall()
        cons[compress] = con
    rng = random.Random(7)
    rows = [rng.randint(1, count) for _ in range(20_000)]
    position = {False: 0, True: 0}  # both stores read the same sequence of rows

    def query(compressed: bool) -> Any:
        def run() -> None:
            i = position[compressed]
            position[compressed] = (i + 1) % len(rows)
            cons[compressed].execute(POINT, (rows[i],)).fetchone()
        return run

    raw, packed = query(False), query(True)

    record(benchmark, driver=driver, cache=cache, db_bytes=READ_SIZE, query=POINT)
    try:
        interleaved(benchmark, raw, packed, rounds=200 if S.quick else 5000)
    finally:
        for con in cons.values():
            con.close()


WAKE_CASES = [pytest.param(driver, id=driver) for driver in ("lmdb", "redis")]


@pytest.mark.benchmark(group="storage-cold-wake")
@pytest.mark.parametrize("driver", WAKE_CASES)
def test_cold_wake(benchmark: Any, pair: tuple[dict[bool, Any], int], driver: str) -> None:
    """One preload call (768 KiB of chunks: all decoded), open, one point query; the
    compressed store timed, the raw one interleaved."""
    stores, count = pair
    opened: list[Any] = []

    def close_previous() -> None:
        while opened:
            opened.pop().close()

    def wake(store: Any) -> Any:
        kv = store.actor("reads")

        def run() -> None:
            con = vfs.connect(kv, preload=kv.preload(PRELOAD))
            opened.append(con)
            con.execute(POINT, (count // 2,)).fetchone()
        return run

    record(benchmark, driver=driver, db_bytes=READ_SIZE, query=POINT)
    try:
        interleaved(benchmark, wake(stores[False]), wake(stores[True]), rounds=6 if S.quick else 100,
                    setup=close_previous)
    finally:
        close_previous()
