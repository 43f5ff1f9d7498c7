"""Cold start: wake an existing actor's database and answer its first query.

Per database size, the same data is opened by each backend and asked one point query
(``SELECT length(v) FROM items WHERE id = ?``, the middle row). Rows:

- ``ours+preload``: one preload call (meta, commit record, the lowest 768 KiB of
  chunks), ``vfs.connect(preload=...)``, the query (live reads only past the preload);
- ``ours, no preload``: ``vfs.connect`` with no preload (its open fetches the meta,
  commit record and head chunks in one call), then the query;
- ``naive KV VFS``: :mod:`benchmarks.naive_vfs`, one get per page read;
- ``local file``: apsw on the same bytes in a local file (``locking_mode=EXCLUSIVE``;
  the OS page cache is warm, so this is the limit, not a cold disk);
- ``ours+preload (native VFS)`` when the C VFS is built; ``ours+preload on Redis`` when
  Redis is available (loopback, no injected latency, sizes up to ``redis_max_size``);
- ``runtime wake`` when the actor runtime exists: a sleeping actor's first action
  (``handle.call``), i.e. state + database from the runtime's one startup call.

A round's time covers opening and the query; closing the previous connection is
untimed setup.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import apsw
import pytest

import vfs
from vfs.protocol import PreloadRequest

from actor_db.kv import MemoryKV
from benchmarks import backends, naive_vfs
from benchmarks.datasets import dataset, human_size, load_into, row_count
from benchmarks.kvlatency import LatencyKV
from benchmarks.measure import record, run_rounds
from benchmarks.settings import settings

S = settings()
QUERY = "SELECT length(v) FROM items WHERE id = ?"
PRELOAD = PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges())

BACKENDS = ["ours+preload", "ours, no preload", "naive KV VFS", "local file"]
if backends.native_available():
    BACKENDS.append("ours+preload (native VFS)")
if backends.redis_available():
    BACKENDS.append("ours+preload on Redis")
if backends.runtime_available():
    BACKENDS.append("runtime wake")


def _actor_id(size: int) -> str:
    return f"cold-{size}"


@pytest.fixture(scope="module")
def cold_store() -> Iterator[LatencyKV]:
    """Every size loaded once into one memory store, behind the latency wrapper."""
    inner = MemoryKV()
    for size in S.cold_sizes:
        load_into(inner, _actor_id(size), dataset(size))
    yield LatencyKV(inner, S.latency_s)


class _Runtime:
    """One registry on the cold store whose ``bench/cold-<size>`` actors hold each dataset."""

    def __init__(self, store: LatencyKV) -> None:
        import actor_db

        self.loop = asyncio.new_event_loop()
        self.store = store
        definition = actor_db.actor(
            "bench", state=lambda: {"wakes": 0},
            db=actor_db.db(migrations=["CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v BLOB NOT NULL)"]),
            idle_timeout_s=None)

        @definition.action
        async def get(c: Any, row_id: int) -> int:
            rows = await c.db.execute(QUERY, row_id)
            return int(rows[0][0])

        self.registry = actor_db.Registry([definition], kv=store)
        latency, store.latency_s = store.latency_s, 0.0
        try:
            for size in S.cold_sizes:
                handle = self.registry.get_or_create("bench", f"cold-{size}")
                self.run(handle.wake())  # creates the state record and page 1 ...
                self.run(handle.sleep())
                load_into(store.inner, f"bench/cold-{size}", dataset(size))  # ... then the data
                self.run(handle.call("get", 1))  # migration to version 1 (IF NOT EXISTS: no-op)
                self.run(handle.sleep())
        finally:
            store.latency_s = latency

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.registry.close())
        self.loop.close()


@pytest.fixture(scope="module")
def runtime(cold_store: LatencyKV) -> Iterator[_Runtime]:
    rt = _Runtime(cold_store)
    yield rt
    rt.close()


CASES = [
    pytest.param(size, backend, id=f"{human_size(size).replace(' ', '')}-{backend}")
    for size in S.cold_sizes for backend in BACKENDS
    if not (backend == "ours+preload on Redis" and size > S.redis_max_size)
]


@pytest.mark.benchmark(group="cold-start")
@pytest.mark.parametrize(("size", "backend"), CASES)
def test_cold_start(benchmark: Any, request: pytest.FixtureRequest, size: int, backend: str) -> None:
    mid = row_count(size) // 2 + 1
    opened: list[Any] = []

    def close_previous() -> None:
        while opened:
            opened.pop().close()

    def check(value: int) -> None:
        assert value == 1000, value

    record(benchmark, backend=backend, size_bytes=size, db_bytes=dataset(size).stat().st_size,
           latency_ms=S.latency_s * 1000.0, query=QUERY)

    if backend == "local file":
        path = str(dataset(size))

        def local() -> None:
            con = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
            con.execute("PRAGMA locking_mode=EXCLUSIVE")
            opened.append(con)
            check(con.execute(QUERY, (mid,)).fetchone()[0])

        run_rounds(benchmark, local, rounds=S.cold_rounds, setup=close_previous, warmup_rounds=1)
        close_previous()
        return

    if backend == "runtime wake":
        rt: _Runtime = request.getfixturevalue("runtime")
        handle = rt.registry.get_or_create("bench", f"cold-{size}")
        trips = run_rounds(benchmark, lambda: check(rt.run(handle.call("get", mid))), rounds=S.cold_rounds,
                           counter=lambda: rt.store.round_trips, setup=lambda: rt.run(handle.sleep()),
                           warmup_rounds=1)
        metrics = handle.metrics()
        record(benchmark, startup_kv_round_trips=metrics.get("startup_kv_round_trips"))
        rt.run(handle.sleep())
        assert trips
        return

    if backend == "ours+preload on Redis":
        store: Any = request.getfixturevalue("redis_store")
        if _actor_id(size) not in _redis_loaded:
            load_into(store, _actor_id(size), dataset(size))
            _redis_loaded.add(_actor_id(size))
        record(benchmark, latency_ms=None)
    else:
        store = request.getfixturevalue("cold_store")
    kv = store.actor(_actor_id(size))
    kind = "native" if backend == "ours+preload (native VFS)" else "python"

    def ours_preload() -> None:
        con = vfs.connect(kv, preload=kv.preload(PRELOAD), vfs=kind)
        opened.append(con)
        check(con.execute(QUERY, (mid,)).fetchone()[0])

    def ours_plain() -> None:
        con = vfs.connect(kv)
        opened.append(con)
        check(con.execute(QUERY, (mid,)).fetchone()[0])

    def naive() -> None:
        con = naive_vfs.connect(kv, f"cold-{size}")
        opened.append(con)
        check(con.execute(QUERY, (mid,)).fetchone()[0])

    target = {"ours, no preload": ours_plain, "naive KV VFS": naive}.get(backend, ours_preload)
    run_rounds(benchmark, target, rounds=S.cold_rounds, counter=lambda: store.round_trips, setup=close_previous,
               warmup_rounds=1)
    close_previous()


_redis_loaded: set[str] = set()
