"""Big databases (issue 12): the hot-set hint, the process-wide chunk cache, read-ahead.

- A hint never changes an answer: random, stale, truncated and corrupt hint records, and
  hints naming chunks past the end of the file, leave every query's result and the
  preload map's three answers exact (property tests), on every driver.
- After one run and a sleep, waking + a primary-key query + a secondary-index query is
  ONE round trip, on every driver and both VFSes; the hint rides in commit batches or
  the owner's close, never in a round trip of its own on the query path, and a reader
  never writes one.
- One chunk cache per process: bounded by its byte budget, shared, per-file caps,
  entries dropped at close, counters reported.
- Geometric read-ahead: a cold scan of 16 MiB costs at most 8 round trips.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vfs
from vfs import chunk_cache, hint
from vfs.keys import FILE_MAIN, chunk_key, meta_key
from vfs.preload import ABSENT, NOT_LOADED
from vfs.protocol import PreloadRequest, WriteBatch

from actor_db.kv import KVStore, MemoryKV
from actor_db.runtime.metrics import CountingKV
from tests.faults import OtherProcessView

ROWS = 6000


def _build(kv: Any, rows: int = ROWS, vfs_kind: str | None = None) -> None:
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
    con.execute("CREATE INDEX t_k ON t (k)")
    with con:
        con.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                    "INSERT INTO t SELECT i, printf('k%07d', (i * 7919) % ?), zeroblob(150 + i % 50) FROM s",
                    (rows, rows))
    con.close()


def _queries(con: Any, rows: int = ROWS) -> list[Any]:
    return [con.execute("SELECT id, length(v) FROM t WHERE id = ?", (rows // 3,)).fetchall(),
            con.execute("SELECT id FROM t WHERE k = ?", (f"k{(rows // 2 * 7919) % rows:07d}",)).fetchall(),
            con.execute("SELECT count(*), sum(length(v)) FROM t WHERE id % 97 = 0").fetchall()]


def _wake_request(budget: int = 768 * 1024) -> PreloadRequest:
    return PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges(budget),
                          max_total_bytes=1024 * 1024)


@pytest.fixture
def built(store: KVStore) -> Iterator[tuple[KVStore, list[Any], list[tuple[bytes, bytes]]]]:
    kv = store.actor("hinted")
    _build(kv)
    con = vfs.connect(store.actor("hinted"), preload=vfs.PreloadMap.empty())
    reference = _queries(con)
    con.close()
    yield store, reference, store.actor("hinted").scan(b"", b"\xff")


_hint_values = st.one_of(
    st.binary(max_size=64),                                                        # garbage
    st.lists(st.integers(0, 1500), max_size=300).map(hint.encode),                 # stale, past the end
    st.lists(st.integers(0, 400), min_size=1, max_size=50).map(lambda i: hint.encode(i)[:-3]),  # truncated
    st.lists(st.integers(0, 400), max_size=50).map(lambda i: b"\x02" + hint.encode(i)[1:]),      # wrong version
    st.just(struct.pack(">BI", 1, 1 << 30)),                                       # absurd count
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_hint_values, budget=st.sampled_from([0, 4096, 64 * 1024, 768 * 1024]))
def test_any_hint_keeps_answers_and_the_preload_exact(built: Any, value: bytes, budget: int) -> None:
    store, reference, stored = built
    kv = store.actor("hinted")
    kv.write(WriteBatch(puts={hint.HINT_KEY: value}))
    counting = CountingKV(OtherProcessView(store.actor("hinted")))
    preload = counting.preload(_wake_request(budget))
    truth = dict(stored)
    truth[hint.HINT_KEY] = value
    for index in range(-5, 1600):  # every chunk key, and some past the end
        key = chunk_key(FILE_MAIN, max(index, 0))
        found = preload.lookup(key)
        if found is ABSENT:
            assert key not in truth, index          # never "absent" for a stored chunk
        elif found is not NOT_LOADED:
            assert found == truth[key], index       # values come from the same state
    assert preload.value_bytes <= 1024 * 1024
    con = vfs.connect(counting, preload=preload, readonly=True)
    assert _queries(con) == reference
    stats = con.stats.snapshot()
    con.close()
    assert counting.round_trips == 1 + stats.round_trips   # every KV call is counted once
    assert counting.writes == 0


BIG_ROWS = 20000  # ~5 MiB: the pages of these queries lie far past the lowest 768 KiB


def _sleep_wake_cycle(store: KVStore, vfs_kind: str) -> tuple[int, int, int]:
    """Wake as the runtime does (ownership + the one preload call), run the workload,
    sleep; returns (round trips of wake + first two queries, all reads, writes)."""
    owner = store.actor("cycle")
    counting = CountingKV(owner)
    preload = counting.acquire_and_preload(_wake_request())
    con = vfs.connect(counting, preload=preload, vfs=vfs_kind)
    con.execute("SELECT v FROM t WHERE id = ?", (BIG_ROWS * 2 // 3,)).fetchall()
    con.execute("SELECT id FROM t WHERE k = ?", (f"k{(BIG_ROWS // 2 * 7919) % BIG_ROWS:07d}",)).fetchall()
    first = counting.round_trips
    con.close()
    return first, counting.reads, counting.writes


def test_after_one_run_a_wake_and_two_queries_cost_one_round_trip(store: KVStore, vfs_kind: str) -> None:
    _build(store.actor("cycle"), rows=BIG_ROWS, vfs_kind=vfs_kind)
    batch = WriteBatch()
    batch.delete(hint.HINT_KEY)  # as a database written before hints existed
    store.actor("cycle").write(batch)
    before, _, writes = _sleep_wake_cycle(store, vfs_kind)
    assert before > 1            # the lowest chunks alone do not hold these pages
    assert writes == 1           # the owner saved the hint as it went to sleep
    after, reads, writes = _sleep_wake_cycle(store, vfs_kind)
    assert after == 1 and reads == 1
    assert writes == 0           # nothing changed materially: no write at all


def test_hints_ride_in_commit_batches_and_readers_never_write_one(store: KVStore, vfs_kind: str) -> None:
    kv = store.actor("writes")
    _build(kv, vfs_kind=vfs_kind)
    counting = CountingKV(store.actor("writes"))
    con = vfs.connect(counting, vfs=vfs_kind)
    for i in range(40):  # reads all over the file, each followed by a 1-row commit
        con.execute("SELECT v FROM t WHERE id = ?", (1 + i * 149,)).fetchall()
        con.execute("UPDATE t SET k = k WHERE id = ?", (1 + i * 149,))
    commits = con.stats.commits
    con.close()
    assert counting.writes == commits                         # no write of its own
    assert hint.decode(kv.get_many([hint.HINT_KEY])[0])      # and yet it is saved
    reader = OtherProcessView(store.actor("writes"))
    con = vfs.connect(reader, vfs=vfs_kind)
    for i in range(60):
        con.execute("SELECT v FROM t WHERE id = ?", (ROWS - i * 97,)).fetchall()
    con.close()
    assert reader.writes == 0


@pytest.fixture
def small_cache() -> Iterator[None]:
    chunk_cache.configure(64 * 4096)
    try:
        yield
    finally:
        chunk_cache.configure(chunk_cache.DEFAULT_BUDGET_BYTES)


def test_one_cache_per_process_within_its_budget(small_cache: None, vfs_kind: str) -> None:
    store = MemoryKV()
    for name in ("a", "b"):
        _build(store.actor(name), rows=3000, vfs_kind=vfs_kind)
    before = chunk_cache.stats()
    a = vfs.connect(store.actor("a"), vfs=vfs_kind, preload=vfs.PreloadMap.empty())
    b = vfs.connect(store.actor("b"), vfs=vfs_kind, preload=vfs.PreloadMap.empty())
    for con in (a, b):
        con.execute("PRAGMA cache_size=2")  # SQLite's own cache: nearly nothing
        con.execute("SELECT sum(length(v)) FROM t").fetchall()
    after = chunk_cache.stats()
    assert after.bytes <= 64 * 4096 and after.budget_bytes == 64 * 4096
    assert after.evictions > before.evictions    # two scans of ~1 MiB each in 256 KiB
    a.execute("SELECT sum(length(v)) FROM t WHERE id > 2900").fetchall()
    assert chunk_cache.stats().hits > after.hits
    a.close()
    b.close()
    assert chunk_cache.stats().bytes == 0         # closing drops a database's entries


def test_a_connection_cap_and_zero_budget(vfs_kind: str) -> None:
    store = MemoryKV()
    _build(store.actor("cap"), rows=3000, vfs_kind=vfs_kind)
    con = vfs.connect(store.actor("cap"), vfs=vfs_kind, cache_chunks=16, preload=vfs.PreloadMap.empty())
    con.execute("PRAGMA cache_size=2")
    con.execute("SELECT sum(length(v)) FROM t").fetchall()
    assert len(con.kv_file._cache) <= 16
    con.close()
    chunk_cache.configure(0)
    try:
        con = vfs.connect(store.actor("cap"), vfs=vfs_kind, preload=vfs.PreloadMap.empty())
        con.execute("SELECT sum(length(v)) FROM t").fetchall()
        assert len(con.kv_file._cache) == 0 and chunk_cache.stats().bytes == 0
        con.close()
    finally:
        chunk_cache.configure(chunk_cache.DEFAULT_BUDGET_BYTES)
    with pytest.raises(ValueError):
        chunk_cache.configure(-1)


def test_the_budget_comes_from_the_environment() -> None:
    import subprocess
    import sys

    code = "from vfs import chunk_cache; print(chunk_cache.stats().budget_bytes)"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ,
                         chunk_cache.ENV_VAR: "3M"}, capture_output=True, text=True, check=True)
    assert int(out.stdout) == 3 * 1024 * 1024
    assert chunk_cache.parse_bytes("512k") == 512 * 1024 and chunk_cache.parse_bytes("1G") == 1 << 30
    with pytest.raises(ValueError):
        chunk_cache.parse_bytes("lots")


def test_a_cold_scan_of_16_mib_costs_at_most_8_round_trips(vfs_kind: str) -> None:
    store = MemoryKV()
    rows = 16 * 1024 * 1024 // 215
    _build(store.actor("scan"), rows=rows, vfs_kind=vfs_kind)
    size = struct.unpack("<HQ", store.actor("scan").get_many([meta_key(FILE_MAIN)])[0] or b"")[1]
    assert size >= 16 * 1024 * 1024
    counting = CountingKV(store.actor("scan"))
    preload = counting.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(),
                                              ranges=vfs.sqlite_preload_ranges(use_hint=False)))
    con = vfs.connect(counting, preload=preload, vfs=vfs_kind)
    assert con.execute("SELECT count(*) FROM t WHERE length(v) > 0").get == rows
    con.close()
    assert counting.round_trips <= 8
