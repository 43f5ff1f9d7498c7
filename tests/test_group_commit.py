"""Group commit (issue 13): many actors' output-gate writes in ONE KV round trip.

Store level (``KVStore.write_many``) on every driver, the Redis Cluster included: each
batch is atomic, fenced and checked on its own and gets its own result. Runtime level
on every driver and both VFSes: busy actors share round trips, each actor's own write
count stays exact, a refused or failed batch breaks only its own actor, and a thread
that must wait for a joined gate never waits for a round it would have to start itself.
Counted, never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import pathlib
import random
import threading
from typing import Any, Iterator

import pytest

import actor_db
import vfs
from actor_db.errors import CommitFailedError, FencedError, KVConditionFailedError, KVError, KVLimitError
from actor_db.kv import KVStore, LmdbKV, MemoryKV
from actor_db.runtime.gate import OutputGate
from actor_db.runtime.group_commit import MIN_ROUND, GroupCommitter, committer_for
from actor_db.runtime.metrics import CountingKV
from actor_db.runtime.pool import ThreadPool
from vfs.protocol import KVLimits, WriteBatch
from tests.drivers import DRIVERS, DriverFactory
from tests.test_kv_conditions import cstore, factory  # noqa: F401 (every driver and the Redis Cluster)
from tests.runtime_support import HookedStore, run, until

DEADLINE_S = 30.0


def put(key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.put(key, value)
    return batch


# ------------------------------------------------------------------------ the store API

def test_write_many_gives_each_batch_its_own_result(cstore: KVStore) -> None:
    a, b, c, d = (cstore.actor(name) for name in ("gc/a", "gc/b", "gc/c", "gc/d"))
    for view in (a, b, c, d):
        view.acquire_ownership()
    cstore.actor("gc/b").acquire_ownership()  # another runtime took b: b's token is stale
    refused = put(b"k", b"c")
    refused.expect_value(b"missing", b"something")
    too_long = put(b"x" * 100_000, b"d") if cstore.limits.max_key_bytes else None
    writes = [(a, put(b"k", b"a")), (b, put(b"k", b"b")), (c, refused)]
    if too_long is not None:
        writes.append((d, too_long))
    trips = cstore.round_trips
    results = cstore.write_many(writes)
    assert results[0] is None
    assert isinstance(results[1], FencedError)
    assert isinstance(results[2], KVConditionFailedError) and results[2].key == b"missing"  # actor-relative
    if too_long is not None:
        assert isinstance(results[3], KVLimitError)  # refused before anything was sent
    expected_trips = 1 if cstore.groups_writes else 3
    assert cstore.round_trips - trips == expected_trips
    assert a.get_many([b"k"]) == [b"a"]
    assert b.get_many([b"k"]) == [None] and c.get_many([b"k"]) == [None]  # nothing of a refused batch


def test_write_many_applies_every_operation_kind(cstore: KVStore) -> None:
    a, b = cstore.actor("ops/a"), cstore.actor("ops/b")
    seed = WriteBatch()
    for k in (b"r/1", b"r/2", b"r/3", b"gone", b"kept"):
        seed.put(k, b"v")
    assert cstore.write_many([(a, seed), (b, put(b"only", b"b"))]) == [None, None]
    change = WriteBatch()
    change.delete_range(b"r/", b"r/3")
    change.delete(b"gone")
    change.put(b"new", b"n")
    change.expect_value(b"kept", b"v")
    assert cstore.write_many([(a, change), (b, put(b"only", b"b2"))]) == [None, None]
    assert dict(a.scan(b"", b"")) == {b"kept": b"v", b"new": b"n", b"r/3": b"v"}
    assert dict(b.scan(b"", b"")) == {b"only": b"b2"}


def test_write_many_refuses_a_view_of_another_store(tmp_path: pathlib.Path) -> None:
    one, other = MemoryKV(), MemoryKV()
    with pytest.raises(ValueError):
        one.write_many([(other.actor("x"), put(b"k", b"v"))])


def test_lmdb_falls_back_to_one_write_per_batch_when_the_group_is_refused(tmp_path: pathlib.Path) -> None:
    store = LmdbKV(tmp_path / "small", map_size=256 * 1024)
    try:
        small, big = store.actor("small"), store.actor("big")
        huge = WriteBatch()
        noise = random.Random(0)
        for i in range(200):  # ~800 KB: more than the map holds (random: LMDB's LZ4 cannot shrink it)
            huge.put(b"k%04d" % i, noise.randbytes(4000))
        results = store.write_many([(small, put(b"k", b"v")), (big, huge)])
        assert results[0] is None  # the batch that fits is written on its own
        assert isinstance(results[1], KVLimitError)
        assert small.get_many([b"k"]) == [b"v"]
        assert big.scan(b"", b"") == []
    finally:
        store.close()


def test_a_failed_round_trip_fails_every_batch_in_it() -> None:
    class Broken(MemoryKV):
        def _write_many(self, items: Any) -> list[Exception | None]:
            raise ConnectionError("the network went away")

    store = Broken()
    results = store.write_many([(store.actor("a"), put(b"k", b"v")), (store.actor("b"), put(b"k", b"v"))])
    assert all(isinstance(r, KVError) and "network went away" in str(r) for r in results)


# ------------------------------------------------------------------------ the runtime

@pytest.fixture
def runtime_vfs(vfs_kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(vfs, "connect", functools.partial(vfs.connect, vfs=vfs_kind))
    return vfs_kind


def counter_type() -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("ctr", state=lambda: {"n": 0},
                       db=actor_db.db(migrations=["CREATE TABLE e (id INTEGER PRIMARY KEY, v TEXT)"]),
                       idle_timeout_s=None)

    @t.action
    async def add(c: actor_db.Context, i: int) -> int:
        await c.db.execute("INSERT INTO e (id, v) VALUES (?, ?)", i, f"row {i}")
        return i

    @t.action
    async def ids(c: actor_db.Context) -> list[int]:
        return [r[0] for r in await c.db.execute("SELECT id FROM e ORDER BY id")]

    return t


class Gatekeeper:
    """Holds every group write inside the KV call until :meth:`open` (a hook of a
    :class:`HookedStore`), counting the group calls that reached the store."""

    def __init__(self, hooked: HookedStore) -> None:
        self.held = threading.Event()
        self.held.set()
        self.entered = threading.Event()
        self.groups = 0
        self._hooked = hooked
        inner_many = hooked._write_many

        def write_many(items: Any) -> list[Exception | None]:
            self.groups += 1
            self.entered.set()
            self.held.wait(DEADLINE_S)
            return inner_many(items)

        hooked._write_many = write_many  # type: ignore[method-assign]

    def close(self) -> None:
        self.entered.clear()
        self.held.clear()

    def open(self) -> None:
        self.held.set()


def test_busy_actors_share_round_trips_and_keep_exact_counts(store: KVStore, runtime_vfs: str) -> None:
    hooked = HookedStore(store)
    keeper = Gatekeeper(hooked)
    actors = 12

    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=hooked)
        handles = [registry.get_or_create("ctr", f"a{i}") for i in range(actors)]
        await asyncio.gather(*(h.call("add", 0) for h in handles))
        before = [h.metrics()["kv_writes"] for h in handles]
        trips = hooked.round_trips
        if hooked.groups_writes and not hooked.instant_writes:
            keeper.close()  # the next group write waits inside the store ...
            first = asyncio.ensure_future(handles[0].call("add", 1))
            await until(keeper.entered.is_set)
            # ... while every other actor commits: their batches all join the NEXT round.
            rest = [asyncio.ensure_future(h.call("add", 1)) for h in handles[1:]]
            await until(lambda: all(h.metrics()["output_gate_batches"] >= 2 for h in handles[1:]))
            keeper.open()
            assert await asyncio.gather(first, *rest) == [1] * actors
            # actor 0's round, then the 11 others in full rounds of MIN_ROUND and one for the rest
            assert hooked.round_trips - trips == 1 + math.ceil((actors - 1) / MIN_ROUND) == 3
            assert keeper.groups >= 2
        else:  # MemoryKV: every commit is applied in the committing thread, at once
            assert await asyncio.gather(*(h.call("add", 1) for h in handles)) == [1] * actors
            assert hooked.round_trips - trips == actors and keeper.groups == 0
        assert [h.metrics()["kv_writes"] - b for h, b in zip(handles, before)] == [1] * actors
        for h in handles:
            await h.sleep()
        assert await asyncio.gather(*(h.call("ids") for h in handles)) == [[0, 1]] * actors
        await registry.close()

    run(main())


def test_a_fenced_actor_in_a_round_breaks_only_its_own_gate(driver: DriverFactory, runtime_vfs: str) -> None:
    store = driver.open()
    other = driver.open()

    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=store)
        handles = [registry.get_or_create("ctr", f"f{i}") for i in range(6)]
        await asyncio.gather(*(h.call("add", 0) for h in handles))
        other.actor("ctr/f3").acquire_ownership()  # a second runtime takes f3 over
        results = await asyncio.gather(*(h.call("add", 1) for h in handles), return_exceptions=True)
        assert isinstance(results[3], FencedError)
        assert [r for i, r in enumerate(results) if i != 3] == [1] * 5
        reader = actor_db.Registry([counter_type()], kv=other)
        assert await reader.get_or_create("ctr", "f3").call("ids") == [0]  # the refused batch: nothing
        for i in (0, 1, 2, 4, 5):
            await handles[i].sleep()
            assert await handles[i].call("ids") == [0, 1]
        await reader.close()
        await registry.close()

    try:
        run(main())
    finally:
        other.close()
        store.close()


def test_a_failed_group_write_resets_every_actor_in_it_and_they_reopen(store: KVStore, runtime_vfs: str) -> None:
    hooked = HookedStore(store)
    failing = [False]

    def hook(op: str, actor: str | None, payload: Any) -> None:
        if op == "write" and failing[0] and actor is not None and actor.startswith("ctr/r"):
            raise ConnectionError("round trip lost")

    inner_many = hooked._write_many

    def write_many(items: Any) -> list[Exception | None]:
        if failing[0]:  # the whole round trip fails: every batch in it
            raise ConnectionError("round trip lost")
        return inner_many(items)

    hooked._write_many = write_many  # type: ignore[method-assign]

    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=hooked)
        handles = [registry.get_or_create("ctr", f"r{i}") for i in range(4)]
        await asyncio.gather(*(h.call("add", 0) for h in handles))
        failing[0] = True
        hooked.hook = hook  # MemoryKV writes inline, one batch at a time: fail each
        results = await asyncio.gather(*(h.call("add", 1) for h in handles), return_exceptions=True)
        failing[0] = False
        hooked.hook = None
        assert all(isinstance(r, CommitFailedError) for r in results), results
        assert all("round trip lost" in str(r.__cause__) for r in results)
        # Every actor answers again from the KV, the only truth: the lost round's rows are gone.
        for h in handles:
            assert await h.call("ids") == [0]
            assert await h.call("add", 2) == 2
            assert await h.call("ids") == [0, 2]
        await registry.close()

    run(main())


def test_a_thread_that_waits_withdraws_a_joined_gate_instead_of_deadlocking(tmp_path: pathlib.Path) -> None:
    """The event loop's thread commits (the gate joins a round scheduled on that same
    loop), then must wait for durability before it yields (a drain, as a scan does):
    it withdraws the gate and writes the batch itself."""
    async def main(kv: KVStore) -> None:
        pool = ThreadPool(2)
        view = CountingKV(kv.actor("w"))
        gate = OutputGate(view, pool, asyncio.get_running_loop(), "w")
        grouped = committer_for(view, pool)
        assert grouped is not None and isinstance(grouped[0], GroupCommitter)
        gate.write(put(b"k", b"1"))  # joins; the round would start after this callback
        assert gate.pending == 1
        gate.drain()  # on the loop's thread, before yielding: must not wait for the round
        assert gate.durable == 1 and kv.actor("w").get_many([b"k"]) == [b"1"]
        gate.write(put(b"k", b"2"))
        await gate.wait(gate.enqueued)  # the normal path: the round runs on the pool
        assert kv.actor("w").get_many([b"k"]) == [b"2"]
        assert grouped[0].rounds >= 1
        pool.shutdown()

    kv = LmdbKV(tmp_path / "w")
    try:
        with loop_thread_never_sleeps():
            run(main(kv))
    finally:
        kv.close()


def test_only_plain_views_of_grouping_stores_join_a_committer(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        pool = ThreadPool(1)
        loop = asyncio.get_running_loop()
        lmdb_store = LmdbKV(tmp_path / "g")
        try:
            grouped = OutputGate(CountingKV(lmdb_store.actor("g")), pool, loop, "g")
            assert grouped._committer is not None

            class Wrapper:  # a view that adds behaviour of its own keeps its own writes
                def __init__(self, inner: Any) -> None:
                    self.inner = inner
                    self.limits = inner.limits
            wrapped = OutputGate(CountingKV(Wrapper(lmdb_store.actor("w"))), pool, loop, "w")  # type: ignore[arg-type]
            assert wrapped._committer is None
            instant = OutputGate(CountingKV(MemoryKV().actor("m")), pool, loop, "m")
            assert instant._committer is None  # written in the committing thread
        finally:
            lmdb_store.close()
            pool.shutdown()

    run(main())


def test_redis_group_write_reloads_scripts_the_server_lost(tmp_path: pathlib.Path) -> None:
    """After a server restart (here: SCRIPT FLUSH) the pipeline's EVALSHA calls come back
    NOSCRIPT; each such batch is sent again with EVAL and applied, with its own result."""
    factory = DRIVERS["redis"](tmp_path)
    store = factory.open()
    try:
        a, b = store.actor("ns/a"), store.actor("ns/b")
        a.acquire_ownership()
        store.client.script_flush()
        results = store.write_many([(a, put(b"k", b"a")), (b, put(b"k", b"b"))])
        assert results == [None, None]
        assert a.get_many([b"k"]) == [b"a"] and b.get_many([b"k"]) == [b"b"]
        store.client.script_flush()
        store.actor("ns/a").acquire_ownership()  # a's token is stale now: refused, also via EVAL
        results = store.write_many([(a, put(b"k", b"a2")), (b, put(b"k", b"b2"))])
        assert isinstance(results[0], FencedError) and results[1] is None
        assert a.get_many([b"k"]) == [b"a"] and b.get_many([b"k"]) == [b"b2"]
    finally:
        factory.cleanup()


# -------------------------------------------------- rounds the event loop waits for

def loop_store(kind: str) -> KVStore:
    """A store whose group writes the event loop waits for (``loop_writes``): the
    benchmarks' latency model over MemoryKV, or a real redis-server (one pipelined
    connection)."""
    if kind == "latency":
        from benchmarks.kvlatency import LatencyKV

        return LatencyKV(MemoryKV(), 0.02)
    from actor_db.kv.redis import RedisKV
    from tests.redis_server import fresh_namespace, session_server

    return RedisKV(session_server().url, namespace=fresh_namespace("loop"))


@contextlib.contextmanager
def loop_thread_never_sleeps() -> Iterator[None]:
    """Make a gate wait on this thread (the one that runs the event loop) fail at once.
    The loop's thread is the only one that can start or finish a round scheduled on
    its loop, so a gate that puts it to sleep for that round has deadlocked: the test
    fails with that message instead of hanging, and nothing about time is involved."""
    loop_thread = threading.get_ident()
    original = OutputGate._sleep

    def sleep(gate: OutputGate) -> None:
        if threading.get_ident() == loop_thread:
            raise AssertionError("the event loop's thread went to sleep waiting for a round that only it "
                                 "can start or finish (a deadlock)")
        original(gate)

    OutputGate._sleep = sleep  # type: ignore[method-assign]
    try:
        yield
    finally:
        OutputGate._sleep = original  # type: ignore[method-assign]


@pytest.mark.parametrize("kind", ["latency", "redis"])
def test_rounds_on_the_event_loop_use_no_pool_thread(kind: str, runtime_vfs: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``loop_writes``, busy actors' rounds are sent and finished on the event loop:
    no round runs on a pool thread, each round is one round trip, and every action's
    write is durable when its call returns."""
    store = loop_store(kind)
    assert store.loop_writes
    pool_rounds: list[int] = []
    for name in ("_round", "_start_here"):
        original = getattr(GroupCommitter, name)
        monkeypatch.setattr(GroupCommitter, name,
                            lambda self, *a, _o=original: (pool_rounds.append(1), _o(self, *a))[1])
    actors = 16

    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=store)
        handles = [registry.get_or_create("ctr", f"a{i}") for i in range(actors)]
        await asyncio.gather(*(h.call("add", 0) for h in handles))  # wake (migrations run on workers)
        for i in range(1, 4):
            await asyncio.gather(*(h.call("add", i) for h in handles))  # warm: calls run inline
        grouped = committer_for(handles[0]._instance._outgate.inner, registry.pool)  # type: ignore[union-attr]
        assert grouped is not None
        committer = grouped[0]
        rounds, trips, pool_before = committer.rounds, store.round_trips, len(pool_rounds)
        for i in range(4, 12):
            assert await asyncio.gather(*(h.call("add", i) for h in handles)) == [i] * actors
        assert len(pool_rounds) == pool_before  # no round on a pool thread
        assert committer.rounds - rounds == store.round_trips - trips > 0  # one round trip per round
        assert committer.rounds - rounds < 8 * actors  # and rounds carry several actors
        for h in handles:
            await h.sleep()
        assert await asyncio.gather(*(h.call("ids") for h in handles)) == [list(range(12))] * actors
        await registry.close()

    try:
        run(main())
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["latency", "redis"])
def test_a_lone_writer_sends_its_round_from_its_commit(kind: str, runtime_vfs: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One actor writing alone: its commit's round leaves from the commit itself (no
    loop iteration spent gathering other actors' commits: one of three per action);
    still one round trip per action, durable when the call returns. A second writer
    brings the gathering back."""
    store = loop_store(kind)
    if kind == "latency":
        store.latency_s = 0.001  # type: ignore[attr-defined]
    starts: list[int] = []
    original = GroupCommitter._start
    monkeypatch.setattr(GroupCommitter, "_start", lambda self, loop: (starts.append(1), original(self, loop))[1])

    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=store)
        h = registry.get_or_create("ctr", "alone")
        await h.call("add", 0)  # wake (migrations run on the worker)
        for i in range(1, 4):
            await h.call("add", i)  # warm: calls run inline
        started, trips = len(starts), store.round_trips
        for i in range(4, 24):
            assert await h.call("add", i) == i
        assert len(starts) == started  # no gathering iteration for a lone writer
        assert store.round_trips - trips == 20  # one round trip per action
        other = registry.get_or_create("ctr", "second")
        await other.call("add", 0)
        for i in range(1, 6):
            await asyncio.gather(h.call("add", 23 + i), other.call("add", i))
        assert len(starts) > started  # two writers: their commits are gathered again
        await h.sleep()
        assert await h.call("ids") == list(range(29))
        await registry.close()

    try:
        run(main())
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["latency", "redis"])
def test_the_loop_thread_finishes_a_round_it_must_wait_for(kind: str) -> None:
    """A round on the event loop holds the gate's batch; the loop's own thread then must
    wait for it (a drain inside an inline SQLite call): it reads the reply itself
    instead of waiting for a callback only it could run."""
    store = loop_store(kind)

    async def main() -> None:
        pool = ThreadPool(2)
        view = CountingKV(store.actor("w"))
        gate = OutputGate(view, pool, asyncio.get_running_loop(), "w")
        gate.write(put(b"k", b"1"))  # joins; the round starts after this callback
        await asyncio.sleep(0)  # the round is sent: in flight, the loop waits for its reply
        assert gate._loop_round is not None and gate.durable == 0
        gate.drain()  # on the loop's thread, before yielding again
        assert gate.durable == 1 and gate._loop_round is None
        assert store.actor("w").get_many([b"k"]) == [b"1"]
        gate.write(put(b"k", b"2"))
        await gate.wait(gate.enqueued)  # the normal path: the loop's callback finishes it
        assert store.actor("w").get_many([b"k"]) == [b"2"]
        pool.shutdown()

    try:
        with loop_thread_never_sleeps():
            run(main())
    finally:
        store.close()


def test_a_lost_group_write_connection_writes_its_rounds_again() -> None:
    """The server drops the connection the rounds are pipelined on while one is in
    flight (not applied: writes are paused): the round is written again on a new
    connection, and the action returns only once its write is durable."""
    from actor_db.kv.redis import RedisKV
    from tests.redis_server import fresh_namespace, session_server

    store = RedisKV(session_server().url, namespace=fresh_namespace("lost"))

    async def main() -> None:
        registry = actor_db.Registry([counter_type()], kv=store)
        handles = [registry.get_or_create("ctr", f"a{i}") for i in range(4)]
        for i in range(3):
            await asyncio.gather(*(h.call("add", i) for h in handles))
        channel = store._channel
        assert channel is not None and channel._conn is not None
        host, port = channel._conn._sock.getsockname()[:2]
        victim = next(c for c in store.client.client_list() if c["addr"] == f"{host}:{port}")
        store.client.client_pause(60_000, all=False)  # writes wait in the server (until unpaused below)
        calls = [asyncio.ensure_future(h.call("add", 3)) for h in handles]
        await until(lambda: bool(channel._queue))
        store.client.client_kill_filter(_id=victim["id"])  # the in-flight round is lost, never applied
        store.client.client_unpause()  # the round written again goes through
        assert await asyncio.gather(*calls) == [3] * 4
        for h in handles:
            await h.sleep()
        assert await asyncio.gather(*(h.call("ids") for h in handles)) == [[0, 1, 2, 3]] * 4
        await registry.close()

    try:
        run(main())
    finally:
        store.client.client_unpause()
        store.close()
