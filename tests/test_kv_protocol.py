"""One test body for the KV protocol, run against every driver."""

from __future__ import annotations

import pytest

from vfs.preload import ABSENT, NOT_LOADED
from vfs.protocol import KV, KeyRange, PrefixBudget, PreloadRequest, WriteBatch

from actor_db.errors import KVLimitError
from actor_db.kv import KVStore, MemoryKV
from vfs.protocol import KVLimits


def put(kv: KV, **items: bytes) -> None:
    batch = WriteBatch()
    for k, v in items.items():
        batch.put(k.encode(), v)
    kv.write(batch)


def test_view_satisfies_protocol(store: KVStore) -> None:
    assert isinstance(store.actor("a"), KV)


def test_get_missing_is_none_and_order_kept(store: KVStore) -> None:
    kv = store.actor("a")
    put(kv, x=b"1", z=b"3")
    assert kv.get_many([b"z", b"missing", b"x"]) == [b"3", None, b"1"]


def test_every_call_is_one_round_trip(store: KVStore) -> None:
    kv = store.actor("a")
    before = store.round_trips
    put(kv, k=b"v")
    kv.get_many([b"k", b"j"])
    kv.scan(b"", b"\xff")
    kv.preload(PreloadRequest(keys=(b"k",)))
    assert store.round_trips - before == 4


def test_scan_is_ordered_and_limited(store: KVStore) -> None:
    kv = store.actor("a")
    batch = WriteBatch()
    for i in (5, 1, 3, 2, 4):
        batch.put(bytes([1, i]), bytes([i]) * i)
    kv.write(batch)
    assert [k for k, _ in kv.scan(b"\x01", b"\x02")] == [bytes([1, i]) for i in range(1, 6)]
    assert [k for k, _ in kv.scan(b"\x01", b"\x02", limit=2)] == [b"\x01\x01", b"\x01\x02"]
    assert [k for k, _ in kv.scan(b"\x01\x02", b"\x01\x04")] == [b"\x01\x02", b"\x01\x03"]
    # max_bytes stops before the pair that would exceed it: 1 + 2 + 3 = 6 <= 6.
    assert len(kv.scan(b"\x01", b"\x02", max_bytes=6)) == 3


def test_batch_order_range_delete_then_delete_then_put(store: KVStore) -> None:
    kv = store.actor("a")
    put(kv, a=b"1", b=b"2", c=b"3", d=b"4")
    batch = WriteBatch()
    batch.delete_range(b"a", b"d")
    batch.put(b"b", b"new")
    batch.delete(b"d")
    batch.delete(b"never-existed")
    kv.write(batch)
    assert kv.scan(b"", b"\xff") == [(b"b", b"new")]


def test_actors_are_isolated(store: KVStore) -> None:
    a, ab = store.actor("a"), store.actor("ab")
    put(a, k=b"from-a")
    put(ab, k=b"from-ab")
    everything = WriteBatch()
    everything.delete_range(b"", b"\xff\xff")
    a.write(everything)
    assert a.get_many([b"k"]) == [None]
    assert ab.get_many([b"k"]) == [b"from-ab"]
    assert ab.scan(b"", b"\xff\xff") == [(b"k", b"from-ab")]
    assert "ab" in store.actor_ids() and "a" not in store.actor_ids()


def test_data_survives_a_new_driver_object(store: KVStore, reopen_store) -> None:  # type: ignore[no-untyped-def]
    put(store.actor("a"), k=b"v")
    other = reopen_store()
    try:
        assert other.actor("a").get_many([b"k"]) == [b"v"]
    finally:
        other.close()


def test_preload_three_answers_and_budgets(store: KVStore) -> None:
    kv = store.actor("a")
    batch = WriteBatch()
    batch.put(b"\x01", b"state")
    for i in range(10):
        batch.put(bytes([8, i]), bytes(100))
    kv.write(batch)
    request = PreloadRequest(
        keys=(b"\x01", b"\x02"),
        ranges=(PrefixBudget(KeyRange(b"\x08", b"\x09"), max_bytes=350, partial=True),),
    )
    pre = kv.preload(request)
    assert pre.lookup(b"\x01") == b"state"
    assert pre.lookup(b"\x02") is ABSENT
    # Three 100-byte values fit in 350; keys up to the third are covered.
    for i in range(3):
        assert pre.lookup(bytes([8, i])) == bytes(100)
    assert pre.lookup(bytes([8, 1, 5])) is ABSENT  # between kept keys: known absent
    assert pre.lookup(bytes([8, 2, 5])) is NOT_LOADED  # after the last kept key
    # Skipped for budget: NEVER reported absent.
    for i in range(3, 10):
        assert pre.lookup(bytes([8, i])) is NOT_LOADED
    assert pre.lookup(b"\x09") is NOT_LOADED  # outside every requested range


def test_preload_all_or_nothing_and_total_budget(store: KVStore) -> None:
    kv = store.actor("a")
    batch = WriteBatch()
    batch.put(b"\x01", bytes(50))
    for i in range(4):
        batch.put(bytes([6, i]), bytes(100))
        batch.put(bytes([8, i]), bytes(100))
    kv.write(batch)
    pre = kv.preload(PreloadRequest(
        keys=(b"\x01",),
        ranges=(
            PrefixBudget(KeyRange(b"\x06", b"\x07"), max_bytes=300, partial=False),  # 400 > 300: nothing
            PrefixBudget(KeyRange(b"\x08", b"\x09"), max_bytes=10_000, partial=True),
        ),
        max_total_bytes=50 + 250,  # the state, then 250 bytes for ranges
    ))
    assert all(pre.lookup(bytes([6, i])) is NOT_LOADED for i in range(4))
    assert [pre.lookup(bytes([8, i])) for i in range(2)] == [bytes(100)] * 2
    assert pre.lookup(bytes([8, 2])) is NOT_LOADED
    # An empty range within budget is fully covered.
    empty = kv.preload(PreloadRequest(ranges=(PrefixBudget(KeyRange(b"\x20", b"\x21"), 1),)))
    assert empty.lookup(b"\x20\x05") is ABSENT
    # A disabled range (budget 0) covers nothing.
    off = kv.preload(PreloadRequest(ranges=(PrefixBudget(KeyRange(b"\x20", b"\x21"), 0),)))
    assert off.lookup(b"\x20\x05") is NOT_LOADED


def test_limits_are_enforced_before_sending() -> None:
    store = MemoryKV(KVLimits(max_key_bytes=64, max_value_bytes=1000, max_batch_keys=3))
    kv = store.actor("a")
    with pytest.raises(KVLimitError, match="value of 1001 bytes"):
        put(kv, k=bytes(1001))
    with pytest.raises(KVLimitError, match="atomic-batch limit"):
        put(kv, a=b"", b=b"", c=b"", d=b"")
    with pytest.raises(KVLimitError, match="key of"):
        kv.get_many([bytes(100)])
    assert kv.get_many([b"k", b"a"]) == [None, None]  # nothing was applied


def test_store_reports_limits(store: KVStore) -> None:
    assert isinstance(store.limits, KVLimits)
    assert isinstance(store.round_trips, int)


@pytest.mark.parametrize("arguments", [{"limit": -1}, {"max_bytes": -1}, {"limit": -5, "max_bytes": 10},
                                       {"limit": 3, "max_bytes": -(2 ** 40)}], ids=str)
def test_scan_refuses_negative_limits_on_every_driver(store: KVStore, arguments: dict[str, int]) -> None:
    """``limit=-1`` / ``max_bytes=-1`` returned nothing on MemoryKV and LMDB and
    everything on Redis (issue 29, item 6): refused everywhere, before any round trip,
    also on a snapshot."""
    from actor_db.kv.snapshot import read_snapshot

    kv = store.actor("a")
    put(kv, a=b"1", b=b"22", c=b"333")
    before = store.round_trips
    with pytest.raises(ValueError, match="must be >= 0"):
        kv.scan(b"", b"\xff", **arguments)
    assert store.round_trips == before
    with read_snapshot(kv) as snapshot:
        with pytest.raises(ValueError, match="must be >= 0"):
            snapshot.scan(b"", b"\xff", **arguments)


def test_scan_zero_limits_agree_on_every_driver(store: KVStore) -> None:
    kv = store.actor("a")
    put(kv, a=b"1", b=b"22", c=b"333")
    assert kv.scan(b"", b"\xff", limit=0) == []
    assert kv.scan(b"", b"\xff", max_bytes=0) == []
    assert kv.scan(b"", b"\xff", max_bytes=3) == [(b"a", b"1"), (b"b", b"22")]
    assert kv.scan(b"", b"\xff", limit=2, max_bytes=100) == [(b"a", b"1"), (b"b", b"22")]
