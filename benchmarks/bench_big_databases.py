"""Big databases (issue 12): the database-size axis of the report.

Datasets: ``t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)`` with ~200-byte rows and a
secondary index on ``k`` (built once as a local file, cached, then copied into each
store). Groups:

- ``size-wake``: an actor ran a workload once (a primary-key query and a
  secondary-index query) and slept; then, per round: wake (ownership + the ONE startup
  preload call, 768 KiB SQLite budget within 1 MiB), the same primary-key query, the
  same index query, sleep. ``hint`` uses the hot-set hint (the default); ``no hint``
  preloads the lowest chunks only (the behaviour before hints). Round trips of wake +
  PK query and of wake + both queries, per driver (memory, LMDB, Redis) and size.
- ``size-scan``: a cold full scan (wake without a hint, then ``SELECT count(*),
  sum(length(v))``), chunk cache budget large enough for the database: round trips.
- ``size-warm``: warm random primary-key lookups and index lookups with DEFAULT
  settings (the process-wide cache's default budget; for the larger database a budget
  that holds it), against apsw on a local file: queries/s.

- ``size-any-key`` (issue 25): the database imported with the hint an import through
  SQLite leaves (every interior page); per round a wake, a PK query for a key no round
  read before, an index query for another: round trips (targets: <= 2, then <= 2 more)
  and the wake's preload bytes, at 16, 256 and 1,024 MiB.
- ``size-write-heavy`` (issue 25): an awake period of 10 inserting commits (0.5% of the
  rows each, scattered index keys) and 3 point + index reads, with SQLite's own cache
  off as in the runtime; then wake + the last read: round trips (target: 1), at 4, 16,
  64, 256, 512 and 1,024 MiB.

Injected latency: the run's (``ACTOR_DB_BENCH_LATENCY_MS``, 1 ms by default) on wakes
and scans; 0 for warm reads (they make no round trip; counted).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import apsw
import pytest

import vfs
from vfs import chunk_cache, hint
from vfs.protocol import PreloadRequest

from actor_db.kv import LmdbKV, MemoryKV
from actor_db.runtime.metrics import CountingKV
from benchmarks import backends
from benchmarks.datasets import cache_dir, human_size, load_into
from benchmarks.kvlatency import LatencyKV
from benchmarks.measure import record, run_rounds
from benchmarks.settings import MIB, settings

S = settings()
FORMAT = 1
ROW_BYTES = 180
WAKE_SIZES = (4 * MIB,) if S.quick else (4 * MIB, 64 * MIB, 512 * MIB)
SCAN_SIZES = (16 * MIB,) if S.quick else (16 * MIB, 512 * MIB)
WARM_SIZES = (4 * MIB,) if S.quick else (20 * MIB, 200 * MIB)
WAKE_ROUNDS = 2 if S.quick else 10
DRIVERS = ["memory", "lmdb"] + (["redis"] if backends.redis_available() else [])
PK_QUERY = "SELECT length(v) FROM t WHERE id = ?"
QUERIES_PER_ROUND = 100
INDEX_QUERY = "SELECT id FROM t WHERE k = ?"


def rows_for(size: int) -> int:
    """Rows in a database of about ``size`` bytes (row plus its index entry ~260 bytes)."""
    return max(100, size // 260)


def key_of(i: int, rows: int) -> str:
    return f"key-{(i * 7919) % rows:09d}"


def indexed_dataset(size: int) -> Path:
    """The local SQLite file of about ``size`` bytes (built on first use, cached)."""
    path = cache_dir() / f"indexed-v{FORMAT}-{size}.db"
    if path.exists():
        return path
    partial = path.with_suffix(".building")
    partial.unlink(missing_ok=True)
    rows = rows_for(size)
    con = apsw.Connection(str(partial))
    try:
        con.execute("PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL)")
        con.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                    "INSERT INTO t SELECT i, printf('key-%09d', (i * 7919) % ?), randomblob(?) FROM c",
                    (rows, rows, ROW_BYTES))
        con.execute("CREATE INDEX t_k ON t (k)")
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()
    partial.rename(path)
    return path


@contextlib.contextmanager
def open_store(driver: str) -> Iterator[Any]:
    """A fresh store of ``driver`` (LMDB in a temporary directory; Redis a fresh server)."""
    if driver == "memory":
        yield MemoryKV()
    elif driver == "lmdb":
        tmp = tempfile.mkdtemp(prefix="actor-db-bench-big-")
        store = LmdbKV(os.path.join(tmp, "kv"), durable=False)
        try:
            yield store
        finally:
            store.close()
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        with backends.redis_server() as store:
            yield store


def wake_request(use_hint: bool) -> PreloadRequest:
    return PreloadRequest(keys=vfs.sqlite_preload_keys(),
                          ranges=vfs.sqlite_preload_ranges(768 * 1024, use_hint=use_hint),
                          max_total_bytes=1024 * 1024)


def wake_and_query(store: LatencyKV, actor: str, rows: int, use_hint: bool) -> tuple[int, int]:
    """One wake, the PK query, the index query, sleep; ``(trips to PK, trips to both)``."""
    counting = CountingKV(store.actor(actor))
    preload = counting.acquire_and_preload(wake_request(use_hint))
    con = vfs.connect(counting, preload=preload)
    con.execute(PK_QUERY, (rows * 2 // 3,)).fetchall()
    to_pk = counting.round_trips
    con.execute(INDEX_QUERY, (key_of(rows // 2, rows),)).fetchall()
    both = counting.round_trips
    con.close()
    return to_pk, both


WAKE_CASES = [pytest.param(d, s, m, id=f"{d}-{human_size(s)}-{m}")
              for d in DRIVERS for s in WAKE_SIZES for m in ("hint", "no hint")]


@pytest.mark.benchmark(group="size-wake")
@pytest.mark.parametrize(("driver", "size", "mode"), WAKE_CASES)
def test_wake_after_one_run(benchmark: Any, driver: str, size: int, mode: str) -> None:
    path = indexed_dataset(size)
    rows = rows_for(size)
    use_hint = mode == "hint"
    with open_store(driver) as inner:
        nbytes = load_into(inner, "big", path)
        store = LatencyKV(inner, 0.0)
        first = wake_and_query(store, "big", rows, use_hint)   # the run before the sleep
        store.latency_s = S.latency_s
        trips: list[tuple[int, int]] = []
        run_rounds(benchmark, lambda: trips.append(wake_and_query(store, "big", rows, use_hint)),
                   rounds=WAKE_ROUNDS)
        saved = hint.decode(inner.actor("big").get_many([hint.HINT_KEY])[0]) or []
    record(benchmark, driver=driver, size=size, db_bytes=nbytes, mode=mode, first_run_round_trips=first[1],
           wake_pk_round_trips=max(t[0] for t in trips), wake_pk_index_round_trips=max(t[1] for t in trips),
           hint_chunks=len(saved), round_trips=max(t[1] for t in trips))


@pytest.mark.benchmark(group="size-scan")
@pytest.mark.parametrize("size", SCAN_SIZES, ids=human_size)
def test_cold_full_scan(benchmark: Any, size: int) -> None:
    path = indexed_dataset(size)
    inner = MemoryKV()
    nbytes = load_into(inner, "scan", path)
    store = LatencyKV(inner, S.latency_s)
    chunk_cache.configure(max(chunk_cache.DEFAULT_BUDGET_BYTES, 2 * nbytes))
    trips: list[int] = []

    def scan() -> None:
        counting = CountingKV(store.actor("scan"))
        preload = counting.preload(wake_request(use_hint=False))
        con = vfs.connect(counting, preload=preload)
        con.execute("SELECT count(*), sum(length(v)) FROM t").fetchall()
        con.close()  # drops its chunks: every round is cold
        trips.append(counting.round_trips)

    try:
        run_rounds(benchmark, scan, rounds=2 if S.quick or size > 64 * MIB else 5)
    finally:
        chunk_cache.configure(chunk_cache.DEFAULT_BUDGET_BYTES)
    record(benchmark, size=size, db_bytes=nbytes, round_trips=max(trips), latency_ms=S.latency_s * 1000.0)


WARM_BACKENDS = ["local file", "ours"] + (["ours (native VFS)"] if backends.native_available() else [])
WARM_CASES = [pytest.param(s, q, b, id=f"{human_size(s)}-{q}-{b}")
              for s in WARM_SIZES for q in ("pk-lookup", "index-lookup") for b in WARM_BACKENDS]


def _lookups(con: Any, query: str, rows: int, rng: random.Random) -> Callable[[], None]:
    """One timed unit: QUERIES_PER_ROUND lookups (one ~3 µs lookup is too close to the
    timer's own cost to compare backends)."""
    if query == "pk-lookup":
        def run() -> None:
            for _ in range(QUERIES_PER_ROUND):
                con.execute(PK_QUERY, (rng.randint(1, rows),)).fetchall()
    else:
        def run() -> None:
            for _ in range(QUERIES_PER_ROUND):
                con.execute(INDEX_QUERY, (key_of(rng.randint(1, rows), rows),)).fetchall()
    return run


@pytest.mark.benchmark(group="size-warm")
@pytest.mark.parametrize(("size", "query", "backend"), WARM_CASES)
def test_warm_lookups(benchmark: Any, size: int, query: str, backend: str) -> None:
    """Timed: ``backend``'s rounds. For our backends the local file's batches run in the
    (untimed by pytest-benchmark) setup before each round, timed here, so the two
    alternate in one process over the same kind of keys and the ratio is not skewed by
    drift between separately run benchmarks."""
    path = indexed_dataset(size)
    rows = rows_for(size)
    tmpdir = tempfile.mkdtemp(prefix="actor-db-bench-warm-big-")
    budget = chunk_cache.DEFAULT_BUDGET_BYTES if size * 2 <= chunk_cache.DEFAULT_BUDGET_BYTES else 2 * size
    local_path = os.path.join(tmpdir, "db.sqlite")
    shutil.copyfile(path, local_path)
    local: Any = apsw.Connection(local_path)
    local.execute("PRAGMA locking_mode=EXCLUSIVE")
    con: Any = local
    if backend != "local file":
        chunk_cache.configure(budget)
        store = MemoryKV()
        load_into(store, "warm", path)
        con = vfs.connect(store.actor("warm"), vfs="native" if backend == "ours (native VFS)" else "python")
    local_times: list[float] = []
    try:
        for c in {id(local): local, id(con): con}.values():
            c.execute("SELECT count(*), sum(length(v)), count(DISTINCT k) FROM t").fetchall()  # warm everything
        run = _lookups(con, query, rows, random.Random(11))
        local_run = _lookups(local, query, rows, random.Random(12))

        def alternate() -> None:
            if con is not local:
                started = time.perf_counter()
                local_run()
                local_times.append(time.perf_counter() - started)

        rounds = 5 if S.quick else 200
        run_rounds(benchmark, run, rounds=rounds, warmup_rounds=min(5, rounds), setup=alternate)
        stats = con.stats.snapshot() if hasattr(con, "stats") else None
    finally:
        if con is not local:
            con.close()
        local.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        chunk_cache.configure(chunk_cache.DEFAULT_BUDGET_BYTES)
    ratio = None
    if local_times:
        local_times.sort()
        ratio = local_times[len(local_times) // 2] / float(benchmark.stats.stats.median)
    record(benchmark, size=size, db_bytes=path.stat().st_size, query=query, queries_per_round=QUERIES_PER_ROUND,
           backend=backend, cache_budget_bytes=budget, ratio_to_local_interleaved=ratio,
           live_reads=None if stats is None else stats.live_reads)


# ------------------------------------------------- issue 25: any key, write-heavy periods
ANY_SIZES = (16 * MIB,) if S.quick else (16 * MIB, 256 * MIB, 1024 * MIB)
ANY_ROUNDS = 2 if S.quick else 5
ANY_CASES = [pytest.param(d, s, id=f"{d}-{human_size(s)}")
             for s in ANY_SIZES for d in (DRIVERS if s <= 256 * MIB else ["memory"])]
"""1 GiB on MemoryKV only (LMDB and Redis copies of it would double the run's memory)."""
HEAVY_SIZES = (4 * MIB,) if S.quick else (4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB, 512 * MIB, 1024 * MIB)
HEAVY_CASES = [pytest.param(d, s, id=f"{d}-{human_size(s)}")
               for s in HEAVY_SIZES for d in (DRIVERS if s <= 256 * MIB else ["memory"])]
"""The write-heavy wake at the issue's sizes (4, 64, 512 MiB) and the any-key sizes."""


@contextlib.contextmanager
def loaded_store(driver: str, size: int) -> Iterator[tuple[Any, int, int]]:
    """A fresh store holding the ``size`` database with the hint an import leaves."""
    path = indexed_dataset(size)
    with open_store(driver) as inner:
        yield inner, load_into(inner, "big", path, hint=True), rows_for(size)


def wake_new_keys(store: Any, rows: int, n: int) -> tuple[int, int, int, int]:
    """Wake, a PK query and an index query for keys no earlier round read, sleep:
    ``(round trips of the wake alone, to the PK query, to both, preload value bytes)``."""
    counting = CountingKV(store.actor("big"))
    preload = counting.acquire_and_preload(wake_request(True))
    wake = counting.round_trips
    con = vfs.connect(counting, preload=preload)
    con.execute(PK_QUERY, (1 + (n * 104729 + rows // 3) % rows,)).fetchall()
    to_pk = counting.round_trips
    con.execute(INDEX_QUERY, (key_of(1 + (n * 130363 + rows // 5) % rows, rows),)).fetchall()
    both = counting.round_trips
    con.close()
    return wake, to_pk, both, preload.value_bytes


@pytest.mark.benchmark(group="size-any-key")
@pytest.mark.parametrize(("driver", "size"), ANY_CASES)
def test_wake_and_query_keys_never_read(benchmark: Any, driver: str, size: int) -> None:
    """Round trips of a wake, then a PK query for a key never read (target <= 2), then
    an index query for another (target <= 2 more: one leaf per B-tree), and the wake's
    preload bytes (the hint's interior pages ride on top of the 768 KiB budget)."""
    with loaded_store(driver, size) as (inner, nbytes, rows):
        store = LatencyKV(inner, S.latency_s)
        results: list[tuple[int, int, int, int]] = []
        run_rounds(benchmark, lambda: results.append(wake_new_keys(store, rows, len(results))), rounds=ANY_ROUNDS)
        saved = hint.decode_hint(inner.actor("big").get_many([hint.HINT_KEY])[0])
    record(benchmark, driver=driver, size=size, db_bytes=nbytes,
           interior_pages=0 if saved is None else saved.interior,
           wake_round_trips=max(r[0] for r in results), wake_pk_round_trips=max(r[1] for r in results),
           wake_pk_index_round_trips=max(r[2] for r in results),
           index_after_pk_round_trips=max(r[2] - r[1] for r in results),
           preload_bytes=max(r[3] for r in results), round_trips=max(r[2] for r in results))


def write_heavy_period(store: Any, rows: int, actions: int = 10) -> int:
    """An awake period as the runtime runs it (SQLite's own cache off, so the VFS sees
    every page access): ``actions`` commits each inserting 0.5% of the rows with
    scattered index keys, then 3 point + index reads, sleep. Returns the last read's id."""
    owner = store.actor("big")
    preload = owner.acquire_and_preload(wake_request(True))
    con = vfs.connect(owner, preload=preload)
    con.execute("PRAGMA cache_size=0")
    per = max(10, rows // 200)
    top = int(con.execute("SELECT max(id) FROM t").fetchall()[0][0]) + 1
    for a in range(actions):
        with con:
            con.execute("WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                        "INSERT INTO t SELECT i, printf('key-%09d', (i * 7919) % ?), randomblob(?) FROM c",
                        (top + a * per, top + (a + 1) * per - 1, rows, ROW_BYTES))
    last = 0
    for i in (rows // 7, rows // 2, rows * 5 // 7):
        con.execute(PK_QUERY, (i,)).fetchall()
        con.execute(INDEX_QUERY, (key_of(i, rows),)).fetchall()
        last = i
    con.close()
    return last


@pytest.mark.benchmark(group="size-write-heavy")
@pytest.mark.parametrize(("driver", "size"), HEAVY_CASES)
def test_first_call_after_a_write_heavy_period(benchmark: Any, driver: str, size: int) -> None:
    """Round trips of wake + the call that repeats the last workload (a PK and an index
    query) right after a write-heavy awake period (target: 1 in all)."""
    with loaded_store(driver, size) as (inner, nbytes, rows):
        store = LatencyKV(inner, 0.0)
        trips: list[int] = []
        last: list[int] = []

        def awake_period() -> None:  # untimed: the write-heavy period before the sleep
            store.latency_s = 0.0
            last.append(write_heavy_period(store, rows))
            store.latency_s = S.latency_s

        def wake_and_repeat() -> None:
            counting = CountingKV(store.actor("big"))
            preload = counting.acquire_and_preload(wake_request(True))
            con = vfs.connect(counting, preload=preload)
            con.execute("PRAGMA cache_size=0")
            con.execute(PK_QUERY, (last[-1],)).fetchall()
            con.execute(INDEX_QUERY, (key_of(last[-1], rows),)).fetchall()
            trips.append(counting.round_trips)
            con.close()

        run_rounds(benchmark, wake_and_repeat, rounds=2 if S.quick or size > 256 * MIB else 3, setup=awake_period)
    record(benchmark, driver=driver, size=size, db_bytes=nbytes, first_call_round_trips=max(trips),
           round_trips=max(trips))
