"""A new actor's first call in ONE KV round trip (issue 25): the ownership claim, the
migrated image and the first action's writes travel in one conditional call
(:meth:`actor_db.kv.ActorKV.create_or_preload`); an actor that turns out to exist wakes
with the preload that came back. Exact round-trip counts, every driver, both VFSes."""

from __future__ import annotations

import threading

import pytest

from vfs.protocol import PreloadRequest, WriteBatch

from actor_db.errors import ActorOwnedElsewhereError, FencedError
from actor_db.kv import KVStore
from actor_db.kv.leases import encode_owner
from actor_db.runtime.keys import STATE_KEY
from actor_db.runtime.startup import preload_request
from actor_db.runtime.actor import ActorOptions


def _request() -> PreloadRequest:
    return preload_request(ActorOptions(), has_db=True)


def test_create_or_preload_creates_an_absent_actor_in_one_round_trip(store: KVStore) -> None:
    view = store.actor("t/new")
    before = store.round_trips
    assert view.create_or_preload(_request(), WriteBatch(puts={STATE_KEY: b"s", b"\x08x": b"page"})) is None
    assert store.round_trips - before == 1
    assert view.fence_token == 1
    assert store.actor("t/new").get_many([STATE_KEY, b"\x08x"]) == [b"s", b"page"]
    view.write(WriteBatch(puts={b"\x02": b"fenced ok"}))  # the view owns the actor


def test_create_or_preload_of_an_existing_actor_writes_nothing_and_preloads(store: KVStore) -> None:
    store.actor("t/old").write(WriteBatch(puts={STATE_KEY: b"old state"}))
    view = store.actor("t/old")
    before = store.round_trips
    found = view.create_or_preload(_request(), WriteBatch(puts={STATE_KEY: b"new", b"\x08x": b"page"}))
    assert store.round_trips - before == 1
    assert found is not None and found.lookup(STATE_KEY) == b"old state"
    assert store.actor("t/old").get_many([STATE_KEY, b"\x08x"]) == [b"old state", None]
    assert view.fence_token is not None


def test_create_or_preload_refuses_expectations(store: KVStore) -> None:
    with pytest.raises(ValueError):
        store.actor("t/x").create_or_preload(_request(), WriteBatch(expect={STATE_KEY: None}))


def test_two_views_racing_to_create_one_actor_create_it_once(store: KVStore, reopen_store) -> None:  # type: ignore[no-untyped-def]
    other = reopen_store()
    try:
        views = [store.actor("t/race"), other.actor("t/race")]
        results: list[object] = [None, None]
        barrier = threading.Barrier(2)

        def create(i: int) -> None:
            barrier.wait(5)
            results[i] = views[i].create_or_preload(_request(), WriteBatch(puts={STATE_KEY: b"by %d" % i}))

        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        created = [i for i in range(2) if results[i] is None]
        assert len(created) == 1
        winner, loser = created[0], 1 - created[0]
        assert results[loser].lookup(STATE_KEY) == b"by %d" % winner  # type: ignore[attr-defined]
        # The later owner fences the earlier one, whichever created.
        late = max(range(2), key=lambda i: views[i].fence_token or 0)
        with pytest.raises(FencedError):
            views[1 - late].write(WriteBatch(puts={b"\x02": b"x"}))
    finally:
        other.close()


def test_create_or_preload_honours_the_placement_claim(store: KVStore) -> None:
    assert store.supports_placement
    mine, theirs = encode_owner("a", "1"), encode_owner("b", "2")
    taken = store.actor("t/placed")
    taken.claim = lambda: (theirs, ())
    assert taken.create_or_preload(_request(), WriteBatch(puts={STATE_KEY: b"b"})) is None
    view = store.actor("t/placed")
    view.claim = lambda: (mine, ())
    before = store.round_trips
    with pytest.raises(ActorOwnedElsewhereError):
        view.create_or_preload(_request(), WriteBatch(puts={STATE_KEY: b"a"}))
    assert store.round_trips - before == 1
    view.claim = lambda: (mine, (theirs,))  # the other owner was found dead
    found = view.create_or_preload(_request(), WriteBatch(puts={STATE_KEY: b"a"}))
    assert found is not None and found.lookup(STATE_KEY) == b"b" and view.replaced == theirs
    assert store.owner_of("t/placed") == mine
