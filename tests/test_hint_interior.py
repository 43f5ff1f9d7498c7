"""The hint after any awake period (issue 25): recency, every interior page, one behaviour.

- A wake right after a write-heavy awake period, then the call that repeats the last
  workload (a primary-key and an index query): ONE round trip in all, and the startup
  reads nothing beyond the preload (the schema pages are always in the hint), on every
  driver and both VFSes.
- Every B-tree interior page is in the hint (known from the page types SQLite reads and
  writes, kept current as commits split and merge pages), with its own preload
  allowance: after a wake a query for a key no earlier run read costs at most one leaf
  per B-tree it touches (a primary-key query: wake + 1; then an index query: + 1).
- The two VFSes make the same round trips and write the same hints for the same
  workload, past the preload, with and without the chunk cache, on every driver.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from typing import Any

import pytest

import actor_db
import vfs
from vfs import hint
from vfs.keys import FILE_MAIN, chunk_key
from vfs.protocol import HintSpec, KeyRange, PrefixBudget, PreloadRequest, WriteBatch

from actor_db.kv import KVStore, MemoryKV
from actor_db.runtime.metrics import CountingKV
from tests.drivers import vfs_kinds
from tests.helpers import integrity

PK = "SELECT length(v) FROM t WHERE id = ?"
INDEX = "SELECT id FROM t WHERE k = ?"


def _key(i: int, rows: int) -> str:
    return f"k{(i * 7919) % rows:07d}"


def _fill_sql() -> str:
    return ("WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
            "INSERT INTO t SELECT i, printf('k%07d', (i * 7919) % ?), randomblob(200) FROM s")


# ------------------------------------------------------------------ the runtime
WIDE_SCHEMA = [f"CREATE TABLE wide_{n} ({', '.join(f'column_number_{c} TEXT DEFAULT NULL' for c in range(6))})"
               for n in range(30)]
"""~8 KiB of schema SQL: the schema table spans several pages (page 1 is interior)."""


def _big_actor(rows: int) -> Any:
    t = actor_db.actor("big", db=actor_db.db(migrations=[
        "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)", "CREATE INDEX t_k ON t (k)", *WIDE_SCHEMA]))

    @t.action
    async def fill(c: actor_db.Context, start: int, n: int) -> int:
        await c.db.execute(_fill_sql(), start, start + n - 1, rows)
        # and a report over the whole table: every one of its pages read again
        return int((await c.db.execute("SELECT count(*) FROM t WHERE length(v) > 0"))[0][0])

    @t.action
    async def read(c: actor_db.Context, i: int) -> Any:
        return (await c.db.execute(PK, i), await c.db.execute(INDEX, _key(i, rows)))

    return t


def test_a_wake_after_a_write_heavy_period_repeats_the_last_workload_in_one_round_trip(
        store: KVStore, vfs_kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """~5 MiB (20,000 rows and an index) inserted in 10 actions, each also scanning the
    table, then 3 point + index reads, sleep; wake + the last read: 1 round trip, with
    no startup read beyond the preload, whatever the filling read (~7,000 reads of
    ~1,300 chunks, far more than the hint holds, most of them more often than the last
    workload's)."""
    monkeypatch.setattr(vfs, "connect", functools.partial(vfs.connect, vfs=vfs_kind))
    rows = 20000

    async def main() -> list[int]:
        async with actor_db.Registry([_big_actor(rows)], kv=store,  # (no poller: store round trips are counted)
                                     schedules=actor_db.ScheduleOptions(enabled=False)) as registry:
            handle = registry.get_or_create("big", "a")
            for j in range(10):
                await handle.call("fill", 1 + j * rows // 10, rows // 10)
            for i in (rows // 7, rows // 2, rows * 5 // 7):
                await handle.call("read", i)
            costs = []
            for i in (rows * 5 // 7, rows * 5 // 7):  # the first wake, then a steady one
                await handle.sleep()
                before = store.round_trips
                await handle.call("read", i)
                costs.append(store.round_trips - before)
                assert handle.metrics()["startup_kv_round_trips"] == 1
            return costs

    with caplog.at_level(logging.WARNING, logger="actor_db.runtime.startup"):
        assert asyncio.run(main()) == [1, 1]
    assert not [r for r in caplog.records if "beyond the preload" in r.getMessage()]


def test_the_startup_never_reads_beyond_the_preload_when_the_hint_exists(
        store: KVStore, vfs_kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The schema (several pages here) and page 1 are always in the hint: after an
    awake period that read ~1,000 other chunks (and none of the schema after its
    start), the next startup is the preload alone, before any call's own reads."""
    monkeypatch.setattr(vfs, "connect", functools.partial(vfs.connect, vfs=vfs_kind))
    rows = 16000

    async def main() -> None:
        async with actor_db.Registry([_big_actor(rows)], kv=store) as registry:
            handle = registry.get_or_create("big", "s")
            for j in range(4):
                await handle.call("fill", 1 + j * rows // 4, rows // 4)
            await handle.sleep()
            for _ in range(2):
                for i in range(1, rows, 37):  # reads all over the database, twice
                    await handle.call("read", i)
            await handle.sleep()
            await handle.call("read", 5)
            assert handle.metrics()["startup_kv_round_trips"] == 1

    with caplog.at_level(logging.WARNING, logger="actor_db.runtime.startup"):
        asyncio.run(main())
    assert not [r for r in caplog.records if "beyond the preload" in r.getMessage()]
    saved = hint.decode_hint(store.actor("big/s").get_many([hint.HINT_KEY])[0])
    assert saved is not None and 0 in saved.indices and saved.interior >= 1


# ---------------------------------------------------------- the VFS, any key
def _build(kv: Any, rows: int, vfs_kind: str, step: int = 20000) -> None:
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
    con.execute("CREATE INDEX t_k ON t (k)")
    for start in range(1, rows + 1, step):
        with con:
            con.execute(_fill_sql(), (start, min(rows, start + step - 1), rows))
    con.close()


def _wake(store: KVStore, actor: str, vfs_kind: str, queries: list[tuple[str, Any]]) -> tuple[list[int], int]:
    """Wake as the runtime does (ownership + the one preload call); the round trips
    after each query (the preload included) and the preload's value bytes."""
    counting = CountingKV(store.actor(actor))
    preload = counting.acquire_and_preload(PreloadRequest(
        keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges(), max_total_bytes=1024 * 1024))
    con = vfs.connect(counting, preload=preload, vfs=vfs_kind)
    trips = []
    for sql, args in queries:
        assert con.execute(sql, args).fetchall()
        trips.append(counting.round_trips)
    con.close()
    return trips, preload.value_bytes


def _interior_pages(store: KVStore, actor: str) -> set[int]:
    con = vfs.connect(store.actor(actor), readonly=True)
    try:
        return {p - 1 for (p,) in con.execute("SELECT pageno FROM dbstat WHERE pagetype = 'internal'")}
    finally:
        con.close()


def _any_key_costs_one_leaf_per_btree(store: KVStore, vfs_kind: str, rows: int) -> None:
    owner = store.actor("any")
    owner.acquire_ownership()  # the owner saves the hint as it closes
    _build(owner, rows, vfs_kind)
    saved = hint.decode_hint(store.actor("any").get_many([hint.HINT_KEY])[0])
    interior = _interior_pages(store, "any")
    assert saved is not None and set(saved.indices[:saved.interior]) == interior
    for n, (pk, other) in enumerate([(rows // 3, rows // 5), (rows // 3 + 777, rows // 5 + 999),
                                     (rows - 5, 17)]):
        trips, _ = _wake(store, "any", vfs_kind, [(PK, (pk,)), (INDEX, (_key(other, rows),))])
        assert trips[0] <= 2, (n, trips)          # wake + at most the table's leaf
        assert trips[1] - trips[0] <= 1, (n, trips)  # at most the index's leaf


def test_a_query_for_any_key_costs_at_most_one_leaf_per_btree(store: KVStore, vfs_kind: str) -> None:
    """~4 MiB, every driver: keys no earlier wake read."""
    _any_key_costs_one_leaf_per_btree(store, vfs_kind, 16000)


@pytest.mark.parametrize("vfs_kind", vfs_kinds()[-1:])
def test_a_query_for_any_key_of_a_64_mib_database_costs_at_most_one_leaf_per_btree(vfs_kind: str) -> None:
    """64 MiB (~60 interior pages), MemoryKV: the interior does not fit the 768 KiB
    budget's share of the lowest chunks, the hint's interior allowance brings it."""
    _any_key_costs_one_leaf_per_btree(MemoryKV(), vfs_kind, 64 * 1024 * 1024 // 260)


def test_the_interior_pages_stay_current_as_commits_split_and_merge_pages(store: KVStore, vfs_kind: str) -> None:
    """After deletes (merges), inserts (splits) and a VACUUM (every page rewritten), the
    hint lists exactly the database's interior pages; before the VACUUM, at least all
    of them (a freed page SQLite does not rewrite may linger: a cost, never an error)."""
    kv = store.actor("splits")
    kv.acquire_ownership()
    _build(kv, 8000, vfs_kind)
    con = vfs.connect(kv, vfs=vfs_kind)
    with con:
        con.execute("DELETE FROM t WHERE id % 10 < 7")
    with con:
        con.execute("INSERT INTO t SELECT id + 100000, 'z' || k, randomblob(300) FROM t")
    con.close()
    saved = hint.decode_hint(store.actor("splits").get_many([hint.HINT_KEY])[0])
    assert saved is not None and set(saved.indices[:saved.interior]) >= _interior_pages(store, "splits")
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("VACUUM")
    assert integrity(con) == "ok"
    con.close()
    saved = hint.decode_hint(store.actor("splits").get_many([hint.HINT_KEY])[0])
    assert saved is not None and set(saved.indices[:saved.interior]) == _interior_pages(store, "splits")


# ------------------------------------------------------ the preload's rules
def test_interior_pages_have_their_own_allowance_on_every_driver(store: KVStore) -> None:
    """The first ``interior`` listed chunks are charged to ``interior_max_bytes`` (not to
    the range or the total); the rest, and a version 1 record's, to the range."""
    kv = store.actor("allow")
    batch = WriteBatch()
    for i in range(20):
        batch.put(chunk_key(FILE_MAIN, i), bytes([i]) * 4096)
    batch.put(hint.HINT_KEY, hint.encode([10, 11, 12, 13, 14, 15], interior=4))
    kv.write(batch)
    start, end = chunk_key(FILE_MAIN, 0), chunk_key(FILE_MAIN, 1 << 20)

    def loaded(interior_max: int, record: bytes | None = None) -> list[int]:
        if record is not None:
            kv.write(WriteBatch(puts={hint.HINT_KEY: record}))
        spec = HintSpec(hint.HINT_KEY, chunk_key(FILE_MAIN, 0)[:-4], interior_max)
        request = PreloadRequest(ranges=(PrefixBudget(KeyRange(start, end), 3 * 4096, hint=spec),),
                                 max_total_bytes=3 * 4096)
        preload = kv.preload(request)
        return [i for i in range(20) if isinstance(preload.lookup(chunk_key(FILE_MAIN, i)), bytes)]

    assert loaded(4 * 4096) == [0, 10, 11, 12, 13, 14, 15]    # 4 interior free, 2 + chunk 0 in the range
    assert loaded(2 * 4096) == [10, 11, 12, 13, 14]           # 2 free, then the range's 3
    assert loaded(0) == [10, 11, 12]
    version1 = struct.pack(">BI6I", 1, 6, 10, 11, 12, 13, 14, 15)
    assert hint.decode_hint(version1) == hint.Hint([10, 11, 12, 13, 14, 15], 0)
    assert loaded(4 * 4096, version1) == [10, 11, 12]         # version 1: no interior part


def test_the_hot_set_orders_by_recency_and_drops_the_older_half() -> None:
    hot = hint.HotSet(capacity=8)
    for index in [5, 6, 7, 5, 8, 9, 10, 11, 12, 13]:   # 13 is the 9th distinct: 5..8 dropped
        hot.record(index)
    recent, interior, schema = hot.items()
    assert recent == [13, 12, 11, 10, 9]
    page = bytearray(4096)
    page[0] = 5
    hot.observe(40, page)
    page[0] = 13
    hot.observe(41, page)
    assert hot.items()[1] == [40]
    hot.observe(40, page)                               # rewritten as a leaf
    assert hot.items()[1] == []
    ranked = hint.rank([3, 2, 1], [9, 4], [7], max_chunks=3, max_interior_chunks=10, end_chunk=9)
    assert ranked == hint.Hint([4, 0, 7, 3], 1)
    # the interior pages the last workload read first (most recent first), then ascending
    assert hint.rank([8, 3, 6], [2, 3, 5, 6, 8], [], max_chunks=2, max_interior_chunks=4, end_chunk=9) \
        == hint.Hint([8, 3, 6, 2, 0], 4)


# ------------------------------------------------------ one behaviour, two VFSes
@pytest.mark.skipif(len(vfs_kinds()) < 2, reason="needs the native VFS")
@pytest.mark.parametrize(("cache_chunks", "sqlite_cache"), [(0, None), (0, 0), (None, 0)],
                         ids=["no-chunk-cache", "no-cache-at-all", "runtime-like"])
def test_both_vfses_make_the_same_round_trips_and_hints(store: KVStore, cache_chunks: int | None,
                                                        sqlite_cache: int | None) -> None:
    """A database past the preload: scattered reads, a scan, commits that grow it; the
    round trips, chunks fetched and the hint written agree exactly (``sqlite_cache=0``:
    SQLite's own page cache off, as the runtime runs it, so every page access reaches
    the VFS)."""
    outcome: dict[str, Any] = {}
    for kind in ("python", "native"):
        actor = f"same-{kind}"
        owner = store.actor(actor)
        owner.acquire_ownership()
        _build(owner, 12000, "python")
        counting = CountingKV(store.actor(actor))
        preload = counting.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(),
                                                  ranges=vfs.sqlite_preload_ranges(128 * 1024)))
        con = vfs.connect(counting, preload=preload, vfs=kind, cache_chunks=cache_chunks)
        if sqlite_cache is not None:
            con.execute(f"PRAGMA cache_size={sqlite_cache}")
        trips = []
        for i in range(1, 12000, 997):
            con.execute(PK, (i,)).fetchall()
            con.execute(INDEX, (_key(i * 3, 12000),)).fetchall()
            trips.append(counting.round_trips)
        con.execute("SELECT count(*), sum(length(v)) FROM t WHERE id > 6000").fetchall()
        trips.append(counting.round_trips)
        for n in range(3):
            with con:
                con.execute(_fill_sql(), (20000 + n * 500, 20499 + n * 500, 12000))
            trips.append(counting.round_trips)
        stats = con.stats.snapshot()
        con.close()
        outcome[kind] = (trips, stats.chunks_fetched, stats.live_reads,
                         store.actor(actor).get_many([hint.HINT_KEY])[0])
    assert outcome["native"] == outcome["python"]
