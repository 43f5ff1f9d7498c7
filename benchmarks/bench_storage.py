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
are read from LMDB and decoded) and ``cold-wake`` (one preload call, open, first query,
as in :mod:`benchmarks.bench_cold_start`), each with compression on and off.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import vfs
from vfs.protocol import PreloadRequest

from actor_db.kv import LmdbKV
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
    from actor_db.cli import import_database

    path = source(kind, SIZE)
    db_bytes = path.stat().st_size
    record(benchmark, driver=driver, dataset=kind, compress=compress, db_bytes=db_bytes)
    if driver == "lmdb":
        store: Any = LmdbKV(workdir / "store", compress=compress)
    else:
        store = _redis(request.getfixturevalue("redis_store"), compress)
    before = int(store.client.info("memory")["used_memory"]) if driver == "redis" else 0
    names = iter(range(1_000_000))
    try:
        benchmark.pedantic(lambda: import_database(path, store.actor(f"imported-{next(names)}")),
                           rounds=1, iterations=1)
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
    finally:
        if driver == "redis":
            store.drop_namespace()
            store.client.delete(store.value_encoding_key)
        store.close()


READ_CASES = [pytest.param(driver, cache, compress, id=f"{driver}-{cache}-{'lz4' if compress else 'raw'}")
              for driver in ("lmdb", "redis") for cache in ("cache-holds-db", "cache-64-chunks")
              for compress in (True, False)]


@pytest.fixture
def loaded(request: pytest.FixtureRequest, workdir: Path) -> Iterator[tuple[Any, int]]:
    """A store (of the case's driver and compression) holding the text dataset of
    ``READ_SIZE`` as actor ``reads``; and its row count."""
    from actor_db.cli import import_database

    driver, compress = request.node.callspec.params["driver"], request.node.callspec.params["compress"]
    if driver == "lmdb":
        store: Any = LmdbKV(workdir / "store", compress=compress, durable=False)
    else:
        store = _redis(request.getfixturevalue("redis_store"), compress)
    path = text_dataset(READ_SIZE)
    import_database(path, store.actor("reads"), check=False)
    with sqlite3.connect(path) as con:
        count = int(con.execute("SELECT count(*) FROM docs").fetchone()[0])
    yield store, count
    if driver == "redis":
        store.drop_namespace()
        store.client.delete(store.value_encoding_key)
    store.close()


@pytest.mark.benchmark(group="storage-warm-read")
@pytest.mark.parametrize(("driver", "cache", "compress"), READ_CASES)
def test_warm_read(benchmark: Any, loaded: tuple[Any, int], driver: str, cache: str, compress: bool) -> None:
    store, count = loaded
    kv = store.actor("reads")
    chunks = READ_SIZE // vfs.CHUNK_SIZE + 64 if cache == "cache-holds-db" else 64
    con = vfs.connect(kv, cache_chunks=chunks)
    con.execute("PRAGMA cache_size=-256")  # SQLite's own cache small: reads reach the VFS
    con.execute("SELECT count(*), sum(length(body)) FROM docs").fetchall()
    rng = random.Random(7)
    record(benchmark, driver=driver, cache=cache, compress=compress, db_bytes=READ_SIZE, query=POINT)
    try:
        run_rounds(benchmark, lambda: con.execute(POINT, (rng.randint(1, count),)).fetchone(),
                   rounds=200 if S.quick else 5000, counter=lambda: int(store.round_trips), warmup_rounds=20)
    finally:
        con.close()


WAKE_CASES = [pytest.param(driver, compress, id=f"{driver}-{'lz4' if compress else 'raw'}")
              for driver in ("lmdb", "redis") for compress in (True, False)]


@pytest.mark.benchmark(group="storage-cold-wake")
@pytest.mark.parametrize(("driver", "compress"), WAKE_CASES)
def test_cold_wake(benchmark: Any, loaded: tuple[Any, int], driver: str, compress: bool) -> None:
    """One preload call (768 KiB of chunks: all decoded), open, one point query."""
    store, count = loaded
    kv = store.actor("reads")
    opened: list[Any] = []

    def close_previous() -> None:
        while opened:
            opened.pop().close()

    def wake() -> None:
        con = vfs.connect(kv, preload=kv.preload(PRELOAD))
        opened.append(con)
        con.execute(POINT, (count // 2,)).fetchone()

    record(benchmark, driver=driver, compress=compress, db_bytes=READ_SIZE, query=POINT)
    run_rounds(benchmark, wake, rounds=5 if S.quick else 50, counter=lambda: int(store.round_trips),
               setup=close_previous, warmup_rounds=2)
    close_previous()
