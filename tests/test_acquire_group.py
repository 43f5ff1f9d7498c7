"""Grouped ownership acquisitions (issue 23: wakes at 1,000 fires/s).

Store level (``KVStore.acquire_and_preload_many``) on every driver, the Redis Cluster
included: each actor gets its own token and preload (the same as its own
``acquire_and_preload``), its view is fenced, a stale view is refused afterwards, and
the call costs ONE round trip where the driver groups acquisitions (else one per actor).
Thread level (:class:`actor_db.kv.acquire_group.AcquireGroup`): concurrent wakes share
store calls, each gets its own answer.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import pytest

from actor_db.errors import FencedError, KVError
from actor_db.kv import KVStore, MemoryKV
from actor_db.kv.acquire_group import AcquireGroup
from vfs.preload import ABSENT
from vfs.protocol import KeyRange, PrefixBudget, PreloadRequest, WriteBatch
from tests.test_kv_conditions import cstore, factory  # noqa: F401 (every driver and the Redis Cluster)

DEADLINE_S = 30.0


def request() -> PreloadRequest:
    return PreloadRequest(keys=(b"state", b"missing"),
                          ranges=(PrefixBudget(KeyRange(b"r/", b"r0"), 1 << 20, partial=True),),
                          max_total_bytes=1 << 20)


def put(key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.put(key, value)
    return batch


def test_many_acquisitions_give_each_actor_its_token_and_preload(cstore: KVStore) -> None:
    views = [cstore.actor(f"grp/a{i}") for i in range(5)]
    for i, view in enumerate(views):
        view.write(put(b"state", b"s%d" % i))
        view.write(put(b"r/%d" % i, b"row"))
    views[2].acquire_ownership()  # a2 had an owner before: its token moves on from 1
    trips = cstore.round_trips
    found = cstore.acquire_and_preload_many([(v, request()) for v in views])
    assert cstore.round_trips - trips == (1 if cstore.groups_acquires else 5)
    for i, (view, preload) in enumerate(zip(views, found)):
        assert not isinstance(preload, Exception)
        assert preload.lookup(b"state") == b"s%d" % i
        assert preload.lookup(b"missing") is ABSENT
        assert preload.items(b"r/", b"r0") == [(b"r/%d" % i, b"row")]
        assert view.fence_token == (2 if i == 2 else 1)
    # Each view is fenced: a later owner refuses its writes, and its own still land.
    views[0].write(put(b"k", b"mine"))
    other = cstore.actor("grp/a1")
    other.acquire_ownership()
    with pytest.raises(FencedError):
        views[1].write(put(b"k", b"stale"))
    assert other.get_many([b"k"]) == [None]


def test_group_acquisition_matches_single_acquisition(cstore: KVStore) -> None:
    one, two = cstore.actor("same/one"), cstore.actor("same/two")
    for view in (one, two):
        view.write(put(b"state", b"x"))
    single = one.acquire_and_preload(request())
    grouped = cstore.acquire_and_preload_many([(two, request())])[0]
    assert not isinstance(grouped, Exception)
    assert single.lookup(b"state") == grouped.lookup(b"state") == b"x"
    assert one.fence_token == two.fence_token == 1


def test_group_acquisition_refuses_foreign_claimed_and_repeated_views() -> None:
    store, other = MemoryKV(), MemoryKV()
    with pytest.raises(ValueError):
        store.acquire_and_preload_many([(other.actor("x"), request())])
    claimed = store.actor("c")
    claimed.claim = lambda: (b"node", ())
    with pytest.raises(ValueError):
        store.acquire_and_preload_many([(claimed, request())])
    with pytest.raises(ValueError):
        store.acquire_and_preload_many([(store.actor("d"), request()), (store.actor("d"), request())])
    assert store.acquire_and_preload_many([]) == []


def test_a_failed_group_call_fails_every_actor_in_it() -> None:
    class Broken(MemoryKV):
        def _acquire_many(self, items: Any) -> Any:
            raise ConnectionError("the network went away")

    store = Broken()
    views = [store.actor("a"), store.actor("b")]
    results = store.acquire_and_preload_many([(v, request()) for v in views])
    assert all(isinstance(r, KVError) and "network went away" in str(r) for r in results)
    assert all(v.fence_token is None for v in views)  # no token was handed out to them
    with pytest.raises(KVError):
        views[0].acquire_and_preload(request())  # the single path goes through the group too


def test_concurrent_wakes_share_store_calls(cstore: KVStore) -> None:
    """Threads acquiring at once (wakes) share store calls where the driver groups
    them; each gets its own token and preload, and the store counts its real calls."""
    views = [cstore.actor(f"wake/a{i}") for i in range(24)]
    for i, view in enumerate(views):
        view.write(put(b"state", b"s%d" % i))
    if cstore.groups_acquires:  # hold the first group call until every thread has asked
        inner = cstore._acquire_many
        asked = threading.Barrier(len(views) + 1, timeout=DEADLINE_S)
        release = threading.Event()
        first = [True]

        def slow(items: Sequence[Any]) -> Any:
            if first[0]:
                first[0] = False
                release.wait(DEADLINE_S)
            return inner(items)

        cstore._acquire_many = slow  # type: ignore[method-assign]
    results: dict[int, Any] = {}

    def wake(i: int) -> None:
        if cstore.groups_acquires:
            asked.wait()
        results[i] = views[i].acquire_and_preload(request())

    trips = cstore.round_trips
    threads = [threading.Thread(target=wake, args=(i,)) for i in range(len(views))]
    for t in threads:
        t.start()
    if cstore.groups_acquires:
        asked.wait()
        group = cstore._acquire_grouper()
        for _ in range(int(DEADLINE_S * 100)):  # until every thread queued behind the first call
            if group.calls == 0 and len(group._queue) == len(views) - 1:
                break
            threading.Event().wait(0.01)
        release.set()
    for t in threads:
        t.join(DEADLINE_S)
    assert len(results) == len(views)
    for i, view in enumerate(views):
        assert results[i].lookup(b"state") == b"s%d" % i
        assert view.fence_token == 1
    # Grouping: the first call alone, the 23 that waited behind it in one more.
    assert cstore.round_trips - trips == (2 if cstore.groups_acquires else len(views))


def test_the_group_runs_one_call_at_a_time_and_answers_each_item() -> None:
    running, peak, sizes = [0], [0], []
    lock = threading.Lock()
    gate = threading.Event()

    def run_many(items: Sequence[int]) -> list[Any]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        sizes.append(len(items))
        if len(sizes) == 1:
            gate.wait(DEADLINE_S)
        with lock:
            running[0] -= 1
        return [ValueError(i) if i % 7 == 0 else i * 10 for i in items]

    group: AcquireGroup[int, Any] = AcquireGroup(run_many, max_items=8)
    answers: dict[int, Any] = {}

    def call(i: int) -> None:
        try:
            answers[i] = group.run(i)
        except ValueError as exc:
            answers[i] = exc

    first = threading.Thread(target=call, args=(1,))
    first.start()
    for _ in range(int(DEADLINE_S * 100)):
        if sizes:
            break
        threading.Event().wait(0.01)
    others = [threading.Thread(target=call, args=(i,)) for i in range(2, 22)]
    for t in others:
        t.start()
    for _ in range(int(DEADLINE_S * 100)):
        if len(group._queue) == 20:
            break
        threading.Event().wait(0.01)
    gate.set()
    for t in [first, *others]:
        t.join(DEADLINE_S)
    assert peak[0] == 1
    assert sizes == [1, 8, 8, 4]  # the first alone, then the 20 waiting, at most 8 per call
    assert group.calls == 4 and group.items == 21
    for i in range(1, 22):
        if i % 7 == 0:
            assert isinstance(answers[i], ValueError) and answers[i].args == (i,)
        else:
            assert answers[i] == i * 10


def test_a_server_that_lost_the_scripts_still_acquires(cstore: KVStore) -> None:
    """Redis after a restart (SCRIPT FLUSH): the pipelined EVALSHA answers NOSCRIPT and
    that actor is acquired again on its own with EVAL (other drivers: the same call)."""
    views = [cstore.actor(f"flush/a{i}") for i in range(3)]
    for view in views:
        view.write(put(b"state", b"here"))
    client = getattr(cstore, "client", None)
    if client is not None:
        client.script_flush()
    found = cstore.acquire_and_preload_many([(v, request()) for v in views])
    assert [f.lookup(b"state") for f in found] == [b"here"] * 3  # type: ignore[union-attr]
    assert [v.fence_token for v in views] == [1, 1, 1]
