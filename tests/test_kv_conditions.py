"""Conditional writes (``WriteBatch.expect``), on every driver: memory, LMDB in a real
file, Redis on the test redis-server, and the 3-master Redis Cluster.

A batch applies only if every expected key holds its expected value (``None``: absent)
at the moment it applies, checked in the same atomic step as the write and the fence,
before any of its operations; otherwise ``KVConditionFailedError`` and nothing applied.
"""

from __future__ import annotations

import pathlib
import threading
from typing import Any, Callable, Iterator

import pytest

from vfs.protocol import ConditionFailedError, KVLimits, WriteBatch

from actor_db.errors import FencedError, KVConditionFailedError, KVError, KVLimitError
from actor_db.kv import ActorKV, KVStore, MemoryKV
from tests.drivers import DRIVERS, DriverFactory, RedisClusterFactory

CONDITION_DRIVERS: dict[str, Callable[[pathlib.Path], DriverFactory]] = {
    **DRIVERS, "redis-cluster": RedisClusterFactory}


@pytest.fixture(params=sorted(CONDITION_DRIVERS), ids=str)
def factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    """Stores of one driver kind (the suite's drivers, and always the Redis Cluster)."""
    made = CONDITION_DRIVERS[request.param](tmp_path_factory.mktemp(request.param))
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def cstore(factory: DriverFactory) -> Iterator[KVStore]:
    s = factory.open()
    try:
        yield s
    finally:
        s.close()


def seed(kv: ActorKV) -> None:
    """A known state: a=1, b=2, c=3, r/1..r/3 (a range), x=x."""
    batch = WriteBatch()
    for k, v in {b"a": b"1", b"b": b"2", b"c": b"3", b"r/1": b"r1", b"r/2": b"r2", b"r/3": b"r3", b"x": b"x"}.items():
        batch.put(k, v)
    kv.write(batch)


def state(kv: ActorKV) -> dict[bytes, bytes]:
    return dict(kv.scan(b"", b""))


SEEDED = {b"a": b"1", b"b": b"2", b"c": b"3", b"r/1": b"r1", b"r/2": b"r2", b"r/3": b"r3", b"x": b"x"}


def mixed_batch() -> WriteBatch:
    """A batch with a put (new and overwrite), a delete and a range delete."""
    batch = WriteBatch()
    batch.put(b"a", b"new-a")
    batch.put(b"n", b"new")
    batch.delete(b"b")
    batch.delete_range(b"r/", b"r0")
    return batch


# -- the WriteBatch API ------------------------------------------------------------------

def test_batch_expectations_api() -> None:
    batch = WriteBatch()
    assert batch.expect == {} and not batch
    batch.expect_value(b"k", b"v")
    batch.expect_value(b"gone", None)
    assert batch.expect == {b"k": b"v", b"gone": None}
    assert not batch and batch.op_count == 0  # expectations are not operations
    assert batch.payload_bytes == len(b"k") + len(b"v") + len(b"gone")  # but they travel
    batch.put(b"p", b"12")
    assert batch and batch.op_count == 1 and batch.payload_bytes == 2 + 4 + 3
    other = WriteBatch()
    other.expect_value(b"k", b"other")
    other.expect_value(b"o", None)
    other.delete(b"d")
    batch.merge(other)
    assert batch.expect == {b"k": b"other", b"gone": None, b"o": None}  # other's value wins
    assert batch.deletes == {b"d"} and batch.puts == {b"p": b"12"}


def test_error_types() -> None:
    exc = KVConditionFailedError("no", key=b"k")
    assert isinstance(exc, ConditionFailedError) and isinstance(exc, KVError)
    assert exc.key == b"k" and str(exc) == "no"
    assert KVConditionFailedError("unknown").key is None
    assert ConditionFailedError("plain", key=b"z").key == b"z"


# -- every driver --------------------------------------------------------------------------

def test_matching_expectations_apply_the_batch(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    batch = mixed_batch()
    batch.expect_value(b"a", b"1")
    batch.expect_value(b"c", b"3")
    batch.expect_value(b"missing", None)
    before = cstore.round_trips
    kv.write(batch)
    assert cstore.round_trips - before == 1
    assert state(kv) == {b"a": b"new-a", b"c": b"3", b"n": b"new", b"x": b"x"}


def test_a_mismatch_raises_and_applies_nothing(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    batch = mixed_batch()
    batch.expect_value(b"c", b"not-3")
    before = cstore.round_trips
    with pytest.raises(KVConditionFailedError) as info:
        kv.write(batch)
    assert cstore.round_trips - before == 1
    exc = info.value
    assert isinstance(exc, ConditionFailedError) and isinstance(exc, KVError)
    assert exc.key == b"c"  # as the caller passed it: no driver prefix
    assert "b'c'" in str(exc) and "'cas'" in str(exc)  # names the key and the actor
    assert state(kv) == SEEDED  # puts, deletes and range deletes all untouched


def test_a_value_expected_on_a_missing_key_fails(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    batch = mixed_batch()
    batch.expect_value(b"missing", b"")  # the empty value is not "absent"
    with pytest.raises(KVConditionFailedError) as info:
        kv.write(batch)
    assert info.value.key == b"missing"
    assert state(kv) == SEEDED


def test_empty_value_is_a_value(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    put = WriteBatch()
    put.put(b"e", b"")
    kv.write(put)
    absent = WriteBatch()
    absent.expect_value(b"e", None)
    with pytest.raises(KVConditionFailedError):
        kv.write(absent)
    present = WriteBatch()
    present.expect_value(b"e", b"")
    present.put(b"e", b"filled")
    kv.write(present)
    assert kv.get_many([b"e"]) == [b"filled"]


def test_absent_expectation_on_missing_and_present_keys(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    create = WriteBatch()
    create.expect_value(b"new", None)
    create.put(b"new", b"created")
    kv.write(create)  # missing: holds
    assert kv.get_many([b"new"]) == [b"created"]
    again = WriteBatch()
    again.expect_value(b"new", None)
    again.put(b"new", b"overwritten")
    again.delete(b"a")
    with pytest.raises(KVConditionFailedError) as info:
        kv.write(again)  # present now: fails
    assert info.value.key == b"new"
    assert kv.get_many([b"new", b"a"]) == [b"created", b"1"]


def test_several_expectations_where_only_the_last_fails(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    batch = mixed_batch()
    batch.expect_value(b"a", b"1")
    batch.expect_value(b"b", b"2")
    batch.expect_value(b"missing", None)
    batch.expect_value(b"x", b"y")  # the only one that does not hold
    with pytest.raises(KVConditionFailedError) as info:
        kv.write(batch)
    assert info.value.key == b"x"
    assert state(kv) == SEEDED


def test_the_first_failing_key_is_reported(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    batch = WriteBatch()
    batch.expect_value(b"a", b"1")
    batch.expect_value(b"b", b"wrong")
    batch.expect_value(b"c", b"wrong too")
    with pytest.raises(KVConditionFailedError) as info:
        kv.write(batch)
    assert info.value.key == b"b"


def test_expectations_see_the_state_before_the_batch(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    batch = WriteBatch()
    batch.put(b"a", b"2")
    batch.expect_value(b"a", b"1")  # the old value of a key the batch puts
    batch.delete(b"b")
    batch.expect_value(b"b", b"2")  # ... and of one it deletes
    batch.delete_range(b"r/", b"r0")
    batch.expect_value(b"r/2", b"r2")  # ... and of one in a range it deletes
    batch.put(b"fresh", b"f")
    batch.expect_value(b"fresh", None)  # ... and absent before a put creates it
    kv.write(batch)
    assert state(kv) == {b"a": b"2", b"c": b"3", b"fresh": b"f", b"x": b"x"}
    # Expecting the value the batch itself would write fails: it is not there yet.
    ahead = WriteBatch()
    ahead.put(b"c", b"4")
    ahead.expect_value(b"c", b"4")
    with pytest.raises(KVConditionFailedError) as info:
        kv.write(ahead)
    assert info.value.key == b"c"
    assert kv.get_many([b"c"]) == [b"3"]


def test_a_pure_check_batch(cstore: KVStore) -> None:
    kv = cstore.actor("cas")
    seed(kv)
    ok = WriteBatch()
    ok.expect_value(b"a", b"1")
    ok.expect_value(b"missing", None)
    assert not ok  # no operation, yet it is checked
    before = cstore.round_trips
    kv.write(ok)
    assert cstore.round_trips - before == 1
    bad = WriteBatch()
    bad.expect_value(b"a", b"1")
    bad.expect_value(b"missing", b"something")
    with pytest.raises(KVConditionFailedError) as info:
        kv.write(bad)
    assert info.value.key == b"missing"
    assert cstore.round_trips - before == 2
    assert state(kv) == SEEDED


def test_a_pure_check_of_an_actor_that_has_no_keys(cstore: KVStore) -> None:
    kv = cstore.actor("empty")
    check = WriteBatch()
    check.expect_value(b"k", None)
    kv.write(check)
    check.expect_value(b"k", b"v")
    with pytest.raises(KVConditionFailedError):
        kv.write(check)
    assert state(kv) == {}


def test_fenced_conditional_writes(factory: DriverFactory, cstore: KVStore) -> None:
    first = cstore.actor("owned")
    first.acquire_ownership()
    seed(first)
    # Fence holds, expectation fails: a condition error, nothing applied.
    batch = mixed_batch()
    batch.expect_value(b"a", b"wrong")
    before = cstore.round_trips
    with pytest.raises(KVConditionFailedError) as info:
        first.write(batch)
    assert info.value.key == b"a" and not isinstance(info.value, FencedError)
    assert cstore.round_trips - before == 1
    assert state(first) == SEEDED
    # Both hold: applied.
    batch = WriteBatch()
    batch.expect_value(b"a", b"1")
    batch.put(b"a", b"owned")
    before = cstore.round_trips
    first.write(batch)
    assert cstore.round_trips - before == 1
    other = factory.open()  # another runtime takes the actor over
    try:
        second = other.actor("owned")
        second.acquire_ownership()
        after_takeover = state(second)
        for expectation in (b"owned", b"wrong"):  # whether the expectation holds or not
            batch = mixed_batch()
            batch.expect_value(b"a", expectation)
            before = cstore.round_trips
            with pytest.raises(FencedError):
                first.write(batch)
            assert cstore.round_trips - before == 1
            assert state(second) == after_takeover  # nothing applied
        pure = WriteBatch()
        pure.expect_value(b"a", b"owned")
        with pytest.raises(FencedError):
            first.write(pure)  # a fenced pure check is fenced too
        second.write(pure)
        pure.expect_value(b"a", b"1")
        with pytest.raises(KVConditionFailedError):
            second.write(pure)
    finally:
        other.close()


def test_expected_keys_obey_the_key_limit(cstore: KVStore) -> None:
    kv = cstore.actor("limits")
    limit = kv.limits.max_key_bytes
    if limit is None:  # no limit to obey: a long expected key is checked like any other
        batch = WriteBatch()
        batch.put(b"k", b"v")
        batch.expect_value(b"x" * 4096, None)
        kv.write(batch)
        assert kv.get_many([b"k"]) == [b"v"]
        return
    batch = WriteBatch()
    batch.put(b"k", b"v")
    batch.expect_value(b"x" * (limit + 1), None)
    before = cstore.round_trips
    with pytest.raises(KVLimitError):
        kv.write(batch)
    assert cstore.round_trips == before  # refused before anything was sent
    assert kv.get_many([b"k"]) == [None]
    batch.expect = {b"x" * limit: None}
    kv.write(batch)
    assert kv.get_many([b"k"]) == [b"v"]


def test_the_cas_race_counts_every_increment(factory: DriverFactory) -> None:
    """8 threads, each on its own store handle (as separate runtimes would be), each
    doing 50 read-then-compare-and-set increments of one counter with retries."""
    threads, increments = 8, 50
    stores = [factory.open() for _ in range(threads)]
    conflicts = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            kv = stores[n].actor("counter")
            start.wait()
            for _ in range(increments):
                while True:
                    (current,) = kv.get_many([b"n"])
                    batch = WriteBatch()
                    batch.expect_value(b"n", current)
                    batch.put(b"n", str((0 if current is None else int(current)) + 1).encode())
                    try:
                        kv.write(batch)
                        break
                    except ConditionFailedError:
                        conflicts[n] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=300)
        assert not errors, errors
        # Every attempt is one read and one write round trip on its own handle.
        for n in range(threads):
            assert stores[n].round_trips == 2 * (increments + conflicts[n])
        assert stores[0].actor("counter").get_many([b"n"]) == [str(threads * increments).encode()]
    finally:
        for s in stores:
            s.close()


# -- wrappers pass expectations through ------------------------------------------------------

def test_wrappers_pass_expectations_through() -> None:
    from benchmarks.kvlatency import LatencyKV
    from tests.faults import FaultyKV, ForwardingKV
    from tests.runtime_support import HookedStore

    inner = MemoryKV()
    for store in (LatencyKV(inner, latency_s=0), HookedStore(inner)):
        kv: Any = store.actor("w")
        for view in (kv, ForwardingKV(kv), FaultyKV(kv)):
            batch = WriteBatch()
            batch.expect_value(b"k", None)
            batch.put(b"k", b"1")
            view.write(batch)
            with pytest.raises(KVConditionFailedError) as info:
                view.write(batch)  # k exists now
            assert info.value.key == b"k"
            assert kv.get_many([b"k"]) == [b"1"]
            kv.delete_all()
    hooked = HookedStore(inner)
    check = WriteBatch()
    check.expect_value(b"k", None)
    hooked.actor("pure").write(check)
    assert hooked.ops("pure") == [("write", hooked.log[-1][2])]  # a pure check names its actor


def test_a_snapshot_refuses_conditional_writes(cstore: KVStore) -> None:
    kv = cstore.actor("snap")
    seed(kv)
    with kv.snapshot() as snap:
        check = WriteBatch()
        check.expect_value(b"a", b"1")
        with pytest.raises(KVError, match="read-only"):
            snap.write(check)


def test_the_output_gate_never_merges_a_conditional_batch_behind_others() -> None:
    from actor_db.runtime.gate import merge_run

    plain1, plain2, conditional, plain3 = WriteBatch(), WriteBatch(), WriteBatch(), WriteBatch()
    plain1.put(b"a", b"1")
    plain2.put(b"b", b"2")
    conditional.expect_value(b"a", b"1")
    conditional.put(b"c", b"3")
    plain3.put(b"d", b"4")
    merged, taken = merge_run([plain1, plain2, conditional, plain3], KVLimits())
    assert taken == 2 and merged.expect == {}
    merged, taken = merge_run([conditional, plain3], KVLimits())
    assert taken == 2 and merged.expect == {b"a": b"1"} and set(merged.puts) == {b"c", b"d"}
    # The exact-merge path (sums over the limit) keeps expectations too.
    overlap = WriteBatch()
    overlap.put(b"c", b"33")
    tight = KVLimits(max_batch_keys=2)
    merged, taken = merge_run([conditional, overlap], tight)
    assert taken == 2 and merged.expect == {b"a": b"1"} and merged.puts == {b"c": b"33"}


def test_memory_limits_count_expected_bytes() -> None:
    store = MemoryKV(KVLimits(max_key_bytes=64, max_batch_bytes=64))
    kv = store.actor("m")
    batch = WriteBatch()
    batch.put(b"k", b"v")
    batch.expect_value(b"e", b"x" * 100)  # the expected value travels with the batch
    with pytest.raises(KVLimitError):
        kv.write(batch)
    room = kv.limits.max_key_bytes
    assert room is not None
    batch.expect = {b"e" * (room + 1): None}  # an expected key obeys the key limit
    with pytest.raises(KVLimitError):
        kv.write(batch)
    assert store.round_trips == 0 and len(store) == 0  # refused before anything was sent
    batch.expect = {b"e" * room: None}
    kv.write(batch)
    assert kv.get_many([b"k"]) == [b"v"]


# -- Redis: a refused batch does not look like a commit to snapshot readers ------------------

@pytest.fixture(params=["redis", "redis-cluster"], ids=str)
def redis_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    made = CONDITION_DRIVERS[request.param](tmp_path_factory.mktemp(request.param))
    try:
        yield made
    finally:
        made.cleanup()


def test_redis_refused_or_pure_checks_do_not_bump_the_write_version(redis_factory: DriverFactory) -> None:
    from actor_db.kv.redis import RedisKV, _Actor

    store = redis_factory.open()
    assert isinstance(store, RedisKV)
    kv = store.actor("versioned")
    seed(kv)
    version_key = _Actor(store.namespace, "versioned").version

    def version() -> bytes | None:
        return store.client.get(version_key)  # type: ignore[no-any-return]

    seeded = version()
    assert seeded == b"1"
    refused = mixed_batch()
    refused.expect_value(b"a", b"wrong")
    with pytest.raises(KVConditionFailedError):
        kv.write(refused)
    assert version() == seeded  # a failed check bumps nothing
    check = WriteBatch()
    check.expect_value(b"a", b"1")
    kv.write(check)
    assert version() == seeded  # a passing pure check writes nothing
    # A versioned snapshot read straddling a refused write is not interrupted ...
    with kv.snapshot() as snap:
        assert snap.get_many([b"a"]) == [b"1"]
        with pytest.raises(KVConditionFailedError):
            kv.write(refused)
        assert snap.get_many([b"b"]) == [b"2"]
    applied = WriteBatch()
    applied.expect_value(b"a", b"1")
    applied.put(b"a", b"2")
    kv.write(applied)
    assert version() == b"2"  # ... while an applied conditional write is a commit
    # And on a fenced write, neither a refused fence nor a refused condition bumps it.
    kv.acquire_ownership()
    refused.expect = {b"a": b"1"}
    with pytest.raises(KVConditionFailedError):
        kv.write(refused)
    assert version() == b"2"


def test_the_output_gate_writes_a_conditional_batch_at_once_in_order() -> None:
    """Through the runtime's output gate, a conditional write sees every batch queued
    before it, raises its condition error to the caller, and leaves the gate whole."""
    import asyncio

    from actor_db.errors import CommitFailedError
    from actor_db.runtime.gate import OutputGate
    from actor_db.runtime.metrics import CountingKV
    from actor_db.runtime.pool import ThreadPool
    from tests.runtime_support import run

    store = MemoryKV()
    view = CountingKV(store.actor("gated"))

    async def main() -> None:
        pool = ThreadPool(1)
        try:
            gate = OutputGate(view, pool, asyncio.get_running_loop(), "gated", held=True)
            first = WriteBatch()
            first.put(b"k", b"1")
            gate.write(first)
            assert gate.pending == 1 and view.writes == 0  # held: queued
            cas = WriteBatch()
            cas.expect_value(b"k", b"1")  # the value of the batch still pending
            cas.put(b"k", b"2")
            gate.write(cas)
            assert gate.pending == 0 and gate.durable == gate.enqueued == 2 and view.writes == 2
            assert store.actor("gated").get_many([b"k"]) == [b"2"]
            stale = WriteBatch()
            stale.expect_value(b"k", b"1")
            stale.put(b"k", b"3")
            with pytest.raises(KVConditionFailedError) as info:
                gate.write(stale)
            assert info.value.key == b"k" and gate.failure is None  # the gate stays whole
            gate.open()
            after = WriteBatch()
            after.put(b"later", b"ok")
            gate.write(after)
            await asyncio.wait_for(gate.wait(gate.enqueued), 30)  # still flushing normally
            assert store.actor("gated").get_many([b"k", b"later"]) == [b"2", b"ok"]
            await gate.wait(2)
            # A failure other than the condition breaks the gate, as a failed flush does.
            owner = store.actor("gated")
            owner.acquire_ownership()
            fenced_view = CountingKV(owner)
            gate2 = OutputGate(fenced_view, pool, asyncio.get_running_loop(), "gated")
            store.actor("gated").acquire_ownership()  # another runtime takes over
            cas = WriteBatch()
            cas.expect_value(b"k", b"2")
            cas.put(b"k", b"4")
            with pytest.raises(FencedError):
                gate2.write(cas)
            assert gate2.failure is not None
            with pytest.raises((FencedError, CommitFailedError)):
                gate2.write(after)
            assert store.actor("gated").get_many([b"k"]) == [b"2"]
        finally:
            pool.shutdown()

    run(main())
