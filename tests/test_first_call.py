"""A new actor's first call in ONE KV round trip (issue 25): the ownership claim, the
migrated image and the first action's writes travel in one conditional call
(:meth:`actor_db.kv.ActorKV.create_or_preload`); an actor that turns out to exist wakes
with the preload that came back. Exact round-trip counts, every driver, both VFSes."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any, Awaitable, Callable

import pytest

import actor_db
import vfs
from vfs.protocol import PreloadRequest, WriteBatch

from actor_db.errors import ActorOwnedElsewhereError, FencedError
from actor_db.kv import KVStore
from actor_db.kv.leases import encode_owner
from actor_db.runtime.keys import STATE_KEY
from actor_db.runtime.startup import preload_request
from actor_db.runtime.actor import ActorOptions

NO_POLL = actor_db.ScheduleOptions(enabled=False)
"""Round trips here are counted at the store: no schedule poller (its 10 reads/s)."""


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


# ------------------------------------------------------------------ the runtime
MIGRATIONS = ["CREATE TABLE entries (id INTEGER PRIMARY KEY, who TEXT NOT NULL)",
              "CREATE INDEX entries_who ON entries (who)",
              "INSERT INTO entries (who) VALUES ('seed')"]
"""Three versions; the seed row shows how many times the actor was created."""

PAUSES: dict[str, Callable[[], Awaitable[None]]] = {}
"""``who`` -> a coroutine an ``add`` for ``who`` awaits after its insert (race tests)."""


def ledger_type(**options: Any) -> Any:
    t = actor_db.actor("ledger", state=lambda: {"adds": 0}, db=actor_db.db(migrations=MIGRATIONS), **options)

    @t.action
    async def add(c: actor_db.Context, who: str) -> list[str]:
        await c.db.execute("INSERT INTO entries (who) VALUES (?)", who)
        c.state["adds"] += 1
        pause = PAUSES.get(who)
        if pause is not None:
            await pause()
        return [r[0] for r in await c.db.execute("SELECT who FROM entries ORDER BY id")]

    @t.action
    async def entries(c: actor_db.Context) -> list[str]:
        return [r[0] for r in await c.db.execute("SELECT who FROM entries ORDER BY id")]

    @t.action
    async def find(c: actor_db.Context, who: str) -> int:
        return int((await c.db.execute("SELECT count(*) FROM entries WHERE who = ?", who))[0][0])

    @t.action
    def adds(c: actor_db.Context) -> int:
        return int(c.state["adds"])

    @t.action
    async def check(c: actor_db.Context) -> str:
        return str((await c.db.execute("PRAGMA integrity_check"))[0][0])

    return t


@pytest.fixture
def on_vfs(vfs_kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every database the runtime opens in the test uses ``vfs_kind``."""
    monkeypatch.setattr(vfs, "connect", functools.partial(vfs.connect, vfs=vfs_kind))
    return vfs_kind


def other_runtime(reopen_store: Callable[[], KVStore]) -> KVStore:
    """A driver object on the same data standing for another process: it gets an
    identity of its own, so this process's one-open-per-database rule (which a second
    process would not share) lets two runtimes hold the actor at once, as two
    processes would."""
    store = reopen_store()
    cls = type(store)
    store.__class__ = type(f"OtherProcess{cls.__name__}", (cls,),
                           {"identity": property(lambda self: ("another process", id(self)))})
    return store


async def _verify(store: KVStore, key: str) -> tuple[list[str], int, str]:
    """(entries, adds, integrity) of ``ledger/key`` read by a fresh runtime."""
    async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
        handle = registry.get_or_create("ledger", key)
        return await handle.call("entries"), await handle.call("adds"), await handle.call("check")


def test_a_new_actors_first_write_call_is_one_round_trip(store: KVStore, on_vfs: str,
                                                         reopen_store: Callable[[], KVStore]) -> None:
    async def main() -> None:
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("ledger", "w")
            before = store.round_trips
            assert await handle.call("add", "first") == ["seed", "first"]
            assert store.round_trips - before == 1
            m = handle.metrics()
            assert m["startup_is_new"] is True and m["startup_kv_round_trips"] == 1 and m["kv_round_trips"] == 1
            assert m["output_gate_flushes"] == 1 and m["actions_total"] == 1
            before = store.round_trips
            assert await handle.call("add", "second") == ["seed", "first", "second"]
            assert store.round_trips - before == 1
        other = reopen_store()
        try:
            assert await _verify(other, "w") == (["seed", "first", "second"], 2, "ok")
        finally:
            other.close()

    asyncio.run(main())


def test_a_new_actors_first_read_call_is_one_round_trip(store: KVStore, on_vfs: str,
                                                        reopen_store: Callable[[], KVStore]) -> None:
    async def main() -> None:
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("ledger", "r")
            before = store.round_trips
            assert await handle.call("entries") == ["seed"]
            assert store.round_trips - before == 1
            assert handle.metrics()["startup_is_new"] is True
            fresh = registry.get_or_create("ledger", "woken")
            before = store.round_trips
            await fresh.wake()  # a wake without a call creates in one round trip too
            assert store.round_trips - before == 1
            before = store.round_trips
            assert await fresh.call("find", "seed") == 1
            assert store.round_trips - before == 0
        other = reopen_store()
        try:
            assert await _verify(other, "r") == (["seed"], 0, "ok")
        finally:
            other.close()

    asyncio.run(main())


def test_an_existing_actor_wakes_from_what_the_claim_brought(store: KVStore, on_vfs: str,
                                                             reopen_store: Callable[[], KVStore]) -> None:
    """A new runtime's first call to an actor that exists: the speculation is discarded
    (its run seen by nobody), the actor wakes from the preload of the same round trip,
    and the call runs once on the real state."""
    async def main() -> None:
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
            assert await registry.get_or_create("ledger", "e").call("add", "one") == ["seed", "one"]
        other = reopen_store()
        try:
            async with actor_db.Registry([ledger_type()], kv=other, schedules=NO_POLL) as registry:
                handle = registry.get_or_create("ledger", "e")
                before = other.round_trips
                assert await handle.call("entries") == ["seed", "one"]
                assert other.round_trips - before == 1  # claim + preload: as an ordinary wake
                m = handle.metrics()
                assert m["startup_is_new"] is False and m["startup_kv_round_trips"] == 1
                assert m["output_gate_batches"] == 0 and m["actions_total"] == 1
                before = other.round_trips
                assert await handle.call("add", "two") == ["seed", "one", "two"]
                assert other.round_trips - before == 1
            assert await _verify(other, "e") == (["seed", "one", "two"], 2, "ok")
        finally:
            other.close()

    asyncio.run(main())


def test_two_runtimes_racing_to_create_one_actor(store: KVStore, on_vfs: str,
                                                 reopen_store: Callable[[], KVStore]) -> None:
    """Runtime A's speculative first call is held between its insert and its commit;
    runtime B creates the actor meanwhile. A's claim finds it: A wakes it from what came
    back and runs its call again on B's data. Created once (one seed row), nothing lost
    (both calls' rows and state), and B, the older owner, is fenced afterwards."""
    other = other_runtime(reopen_store)
    paused, go = asyncio.Event(), asyncio.Event()
    a_runs: list[int] = []

    async def pause() -> None:
        a_runs.append(1)
        paused.set()
        await go.wait()

    async def main() -> None:
        PAUSES["a"] = pause
        try:
            async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as reg_a, \
                    actor_db.Registry([ledger_type()], kv=other, schedules=NO_POLL) as reg_b:
                a, b = reg_a.get_or_create("ledger", "race"), reg_b.get_or_create("ledger", "race")
                first = asyncio.create_task(a.call("add", "a"))
                await asyncio.wait_for(paused.wait(), 10)
                before = other.round_trips
                assert await b.call("add", "b") == ["seed", "b"]  # B creates the actor
                assert other.round_trips - before == 1 and b.metrics()["startup_is_new"] is True
                before = store.round_trips
                go.set()
                assert await asyncio.wait_for(first, 10) == ["seed", "b", "a"]
                assert store.round_trips - before == 2  # the claim (which found B's actor) + the call's commit
                assert a.metrics()["startup_is_new"] is False and len(a_runs) == 2
                with pytest.raises(FencedError):  # A owns it now
                    await b.call("add", "late")
                assert await b.call("entries") == ["seed", "b", "a"]  # B re-acquires: all there
        finally:
            PAUSES.clear()
        assert await _verify(store, "race") == (["seed", "b", "a"], 2, "ok")

    try:
        asyncio.run(main())
    finally:
        other.close()


def test_two_runtimes_creating_one_actor_at_once(store: KVStore, on_vfs: str,
                                                 reopen_store: Callable[[], KVStore]) -> None:
    """Both first calls at the same time, each in one or two round trips: exactly one
    creates the actor, the other wakes it; both calls' writes are kept."""
    other = other_runtime(reopen_store)

    async def main() -> None:
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as reg_a, \
                actor_db.Registry([ledger_type()], kv=other, schedules=NO_POLL) as reg_b:
            for n in range(3):
                key = f"both-{n}"
                a, b = reg_a.get_or_create("ledger", key), reg_b.get_or_create("ledger", key)
                got = await asyncio.gather(a.call("add", "a"), b.call("add", "b"))
                assert sorted(h.metrics()["startup_is_new"] for h in (a, b)) == [False, True]
                assert sorted(len(g) for g in got) == [2, 3] and all(g[0] == "seed" for g in got)
                assert sorted(max(got, key=len)) == ["a", "b", "seed"]
                await a.sleep()
                await b.sleep()
                entries, adds, ok = await _verify(store, key)
                assert sorted(entries) == ["a", "b", "seed"] and adds == 2 and ok == "ok"

    try:
        asyncio.run(main())
    finally:
        other.close()


def test_a_speculative_call_reaching_another_actor_runs_the_ordinary_way(store: KVStore, on_vfs: str) -> None:
    """A call to another actor from a speculative first call stops the speculation
    before it reaches that actor: the other actor runs once; the first call completes
    the ordinary way (preload, creation, commit)."""
    bumps: list[int] = []
    counter = actor_db.actor("counter", state=lambda: {"n": 0})

    @counter.action
    def bump(c: actor_db.Context) -> int:
        bumps.append(1)
        c.state["n"] += 1
        return int(c.state["n"])

    t = ledger_type()
    holder: dict[str, Any] = {}

    @t.action
    async def relay(c: actor_db.Context) -> int:
        await c.db.execute("INSERT INTO entries (who) VALUES ('relay')")
        return int(await holder["registry"].get_or_create("counter", "x").call("bump"))

    async def main() -> None:
        async with actor_db.Registry([t, counter], kv=store, schedules=NO_POLL) as registry:
            holder["registry"] = registry
            handle = registry.get_or_create("ledger", "relay")
            assert await handle.call("relay") == 1
            assert bumps == [1]
            assert handle.metrics()["startup_is_new"] is True
            assert await handle.call("entries") == ["seed", "relay"]
            assert await registry.get_or_create("counter", "x").call("bump") == 2
        assert await _verify(store, "relay") == (["seed", "relay"], 0, "ok")

    asyncio.run(main())


def test_speculation_can_be_turned_off(store: KVStore) -> None:
    async def main() -> None:
        async with actor_db.Registry([ledger_type(speculative_create=False)], kv=store, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("ledger", "off")
            before = store.round_trips
            assert await handle.call("add", "x") == ["seed", "x"]
            # preload, the creation with the migrations, the call's commit
            assert store.round_trips - before == 3

    asyncio.run(main())


def test_first_calls_on_a_redis_cluster_are_one_round_trip() -> None:
    """The creation script is single-slot (the actor's hash tag, owner record included):
    one round trip per new actor on a 3-master cluster, actors on every master; an
    existing actor's claim brings its preload instead."""
    from actor_db.kv.redis import RedisKV
    from tests.redis_server import fresh_namespace, session_cluster

    store = RedisKV(session_cluster().client(), namespace=fresh_namespace("first"))

    async def main() -> None:
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
            for n in range(6):
                handle = registry.get_or_create("ledger", f"c{n}")
                before = store.round_trips
                assert await handle.call("add", f"x{n}") == ["seed", f"x{n}"]
                assert store.round_trips - before == 1
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("ledger", "c0")
            before = store.round_trips
            assert await handle.call("entries") == ["seed", "x0"]
            assert store.round_trips - before == 1 and handle.metrics()["startup_is_new"] is False

    try:
        asyncio.run(main())
        owners = {store.client.get_node_from_key(f"{store.namespace}:{{{f'ledger/c{n}'.encode().hex()}}}:d").name
                  for n in range(6)}
        assert len(owners) >= 2  # the actors live on several masters
    finally:
        store.drop_namespace()
        store.client.close()


def test_a_new_runtimes_first_call_to_a_big_actor_repeats_its_last_workload_in_one_round_trip(
        store: KVStore, on_vfs: str, reopen_store: Callable[[], KVStore], caplog: pytest.LogCaptureFixture) -> None:
    """An actor past the preload (~4 MiB, an index, a multi-page schema) after a
    write-heavy awake period; a NEW runtime's first call repeats the last workload (a
    PK and an index query): the claim brings the hinted preload (the speculation on an
    empty image is discarded), the startup reads nothing beyond it, and the call is
    answered with no further round trip: 1 in all."""
    from tests.test_hint_interior import _big_actor

    rows = 16000

    async def fill() -> None:
        async with actor_db.Registry([_big_actor(rows)], kv=store, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("big", "w")
            for j in range(8):
                await handle.call("fill", 1 + j * rows // 8, rows // 8)
            for i in (rows // 7, rows // 2, rows * 5 // 7):
                await handle.call("read", i)

    async def first_call(other: KVStore) -> Any:
        async with actor_db.Registry([_big_actor(rows)], kv=other, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("big", "w")
            before = other.round_trips
            answer = await handle.call("read", rows * 5 // 7)
            assert other.round_trips - before == 1
            assert handle.metrics()["startup_is_new"] is False and handle.metrics()["vfs_live_reads"] == 0
            return answer

    asyncio.run(fill())
    other = reopen_store()
    try:
        with caplog.at_level(logging.WARNING, logger="actor_db.runtime.startup"):
            pk, index = asyncio.run(first_call(other))
    finally:
        other.close()
    assert [tuple(r) for r in pk] == [(200,)] and len(index) >= 1
    assert not [r for r in caplog.records if "beyond the preload" in r.getMessage()]


def test_a_creation_larger_than_one_batch_runs_the_ordinary_way() -> None:
    """A store whose atomic batch is smaller than the new actor's image: the speculation
    stops before sending anything and the call runs the ordinary way, correctly."""
    from vfs.protocol import KVLimits

    from actor_db.kv import MemoryKV

    store = MemoryKV(KVLimits(max_batch_bytes=10 * 1024))  # the image: 3 pages, the meta, the state

    async def main() -> None:
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("ledger", "big")
            before = store.round_trips
            assert await handle.call("add", "x") == ["seed", "x"]
            assert store.round_trips - before > 1
            assert handle.metrics()["startup_is_new"] is True
        assert await _verify(store, "big") == (["seed", "x"], 1, "ok")

    asyncio.run(main())


@pytest.mark.parametrize("applied", [False, True], ids=["lost-request", "lost-reply"])
def test_a_failed_creation_round_trip_is_a_commit_failure(applied: bool) -> None:
    """The creating call fails (its request lost, or its reply after the store applied
    it): the caller gets ``CommitFailedError`` (the outcome is unknown), the actor stays
    asleep, and the next call re-opens it from the KV: created anew, or woken with the
    first call's writes."""
    from actor_db.errors import CommitFailedError, KVUnavailableError
    from actor_db.kv import MemoryKV

    class FlakyCreate(MemoryKV):
        failures = 1

        def _create(self, *args: Any) -> Any:
            if self.failures:
                self.failures -= 1
                if applied:
                    super()._create(*args)
                raise KVUnavailableError("injected: connection lost")
            return super()._create(*args)

    store = FlakyCreate()

    async def main() -> None:
        async with actor_db.Registry([ledger_type()], kv=store, schedules=NO_POLL) as registry:
            handle = registry.get_or_create("ledger", "flaky")
            with pytest.raises(CommitFailedError) as caught:
                await handle.call("add", "x")
            assert isinstance(caught.value.__cause__, KVUnavailableError)
            assert handle.metrics()["status"] == "asleep"
            expected = ["seed", "x", "y"] if applied else ["seed", "y"]
            assert await handle.call("add", "y") == expected
            assert handle.metrics()["startup_is_new"] is (not applied)

    asyncio.run(main())


def test_speculation_pauses_after_a_run_of_existing_actors_and_resumes_on_a_creation(
        store: KVStore, reopen_store: Callable[[], KVStore]) -> None:
    """After a restart, first calls to existing actors waste their speculative run; once
    MISSES_TO_PAUSE of a type did in a row, the type stops speculating (no run wasted),
    and the next actor created (the ordinary way) turns it back on."""
    from actor_db.runtime.speculation import MISSES_TO_PAUSE

    runs: list[str] = []
    t = ledger_type()

    @t.action
    async def touch(c: actor_db.Context, who: str) -> int:
        runs.append(who)
        await c.db.execute("INSERT INTO entries (who) VALUES (?)", who)
        return int((await c.db.execute("SELECT count(*) FROM entries"))[0][0])

    existing = MISSES_TO_PAUSE + 3

    async def main() -> None:
        async with actor_db.Registry([t], kv=store, schedules=NO_POLL) as registry:
            for n in range(existing):
                assert await registry.get_or_create("ledger", f"e{n}").call("touch", "setup") == 2
        runs.clear()
        other = reopen_store()
        try:
            async with actor_db.Registry([t], kv=other, schedules=NO_POLL) as registry:
                for n in range(existing):  # a restart: every first call finds an existing actor
                    assert await registry.get_or_create("ledger", f"e{n}").call("touch", f"e{n}") == 3
                # each of the first MISSES_TO_PAUSE ran twice (once discarded), the rest once
                assert len(runs) == existing + MISSES_TO_PAUSE
                before = other.round_trips
                assert await registry.get_or_create("ledger", "n1").call("touch", "n1") == 2
                assert other.round_trips - before == 3  # paused: the ordinary creation
                before = other.round_trips
                assert await registry.get_or_create("ledger", "n2").call("touch", "n2") == 2
                assert other.round_trips - before == 1  # resumed by that creation
        finally:
            other.close()

    asyncio.run(main())
