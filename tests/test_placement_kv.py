"""The placement primitives every driver implements (issue 22): the owner record is
claimed in the wake's single round trip, conditionally, with the fencing bump; node
heartbeats carry a lease; an expired instance can never renew. One body, every driver."""

from __future__ import annotations

import time

import pytest

from actor_db.errors import ActorOwnedElsewhereError, FencedError
from actor_db.kv.base import KVStore
from actor_db.kv.namespace import actor_prefix
from actor_db.runtime.actor import ActorOptions
from actor_db.runtime.startup import preload_request
from vfs.protocol import WriteBatch

REQUEST = preload_request(ActorOptions(), True)
A, B = b"node-a\0i1", b"node-b\0i2"


def claimed(store: KVStore, actor_id: str, owner: bytes, replace: tuple[bytes, ...] = ()):  # type: ignore[no-untyped-def]
    view = store.actor(actor_id)
    view.claim = lambda: (owner, replace)
    view.acquire_and_preload(REQUEST)
    return view


def test_claim_is_one_round_trip_conditional_and_fences_the_old_owner(store: KVStore, reopen_store) -> None:  # type: ignore[no-untyped-def]
    trips = store.round_trips
    a = claimed(store, "t/x", A)
    assert store.round_trips - trips == 1  # ownership + fencing bump + preload: one call
    assert a.fence_token == 1 and store.owner_of("t/x") == A
    a.write(WriteBatch(puts={b"\x01": b"from-a"}))

    other = reopen_store()
    try:
        b = other.actor("t/x")
        b.claim = lambda: (B, ())
        before = other.round_trips
        with pytest.raises(ActorOwnedElsewhereError) as refused:
            b.acquire_and_preload(REQUEST)
        assert refused.value.owner == A and other.round_trips - before == 1
        assert b.fence_token is None and other.owner_of("t/x") == A
        a.write(WriteBatch(puts={b"\x01": b"still-a"}))  # a refused claim bumps nothing

        again = claimed(store, "t/x", A)  # the owner itself may claim again (a new wake)
        assert again.fence_token == 2
        with pytest.raises(FencedError):
            a.write(WriteBatch(puts={b"\x01": b"stale"}))

        assert again.replaced is None
        taken = claimed(other, "t/x", B, replace=(A,))  # A judged dead: B may replace exactly it
        assert taken.fence_token == 3 and other.owner_of("t/x") == B and taken.replaced == A
        with pytest.raises(FencedError):
            again.write(WriteBatch(puts={b"\x01": b"after takeover"}))
        assert taken.get_many([b"\x01"]) == [b"still-a"]
        with pytest.raises(ActorOwnedElsewhereError):
            claimed(store, "t/x", A)  # B is not in A's replace set
        assert not store.release_owner("t/x", A) and other.release_owner("t/x", B)
        assert store.owner_of("t/x") is None
        free = claimed(store, "t/x", A, replace=(B,))  # released: free at once, nothing replaced
        assert free.fence_token == 4 and free.replaced is None
    finally:
        other.close()


def test_heartbeat_lease_join_renew_expire_leave(store: KVStore) -> None:
    assert store.nodes() == {}
    assert store.heartbeat("n1", b"i1", b'{"addr":"x"}', 400, join=True)
    assert not store.heartbeat("n1", b"i2", b"{}", 400, join=True)  # a live instance holds the id
    assert not store.heartbeat("n1", b"i2", b"{}", 400)  # nor may another instance renew
    assert store.heartbeat("n1", b"i1", b'{"addr":"y"}', 400)
    assert store.heartbeat("n2", b"j1", b"{}", 5000, join=True)
    trips = store.round_trips
    assert store.nodes() == {"n1": (b"i1", b'{"addr":"y"}'), "n2": (b"j1", b"{}")}
    assert store.round_trips - trips == 1  # every node's liveness in one call
    deadline = time.monotonic() + 5.0
    while "n1" in store.nodes():  # the lease runs out on the store's clock
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not store.heartbeat("n1", b"i1", b"{}", 400)  # expired: never renewed again
    assert store.heartbeat("n1", b"i3", b"{}", 400, join=True)  # a new instance may join
    assert not store.leave("n1", b"i1") and store.leave("n1", b"i3")
    assert set(store.nodes()) == {"n2"}
    with pytest.raises(ValueError):
        store.heartbeat("n1", b"i4", b"{}", 0)


@pytest.fixture
def cluster_driver(tmp_path):  # type: ignore[no-untyped-def]
    from tests.drivers import RedisClusterFactory

    factory = RedisClusterFactory(tmp_path)
    yield factory
    factory.cleanup()


def test_placement_on_a_3_master_redis_cluster(cluster_driver) -> None:  # type: ignore[no-untyped-def]
    """Owner records live in the actor's hash slot and heartbeats under one hash tag:
    the same rules hold on a cluster (actors on every master)."""
    store = cluster_driver.open()
    test_heartbeat_lease_join_renew_expire_leave(store)
    test_claim_is_one_round_trip_conditional_and_fences_the_old_owner(store, cluster_driver.open)
    owners = [store._actor_cache(actor_prefix(f"t/{i}")).owner for i in range(30)]
    for i in range(30):
        claimed(store, f"t/{i}", A)
        assert store.owner_of(f"t/{i}") == A
    assert len({store.client.get_node_from_key(key).name for key in owners}) == 3  # every master holds some
