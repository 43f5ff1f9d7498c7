"""Output gates, write coalescing and the bounded pool (issue 13), on every driver and VFS.

Counted, never timed: KV writes per action (``kv_writes`` in ``handle.metrics()``),
which callers returned while a write was held back by a test hook, what the KV holds
after a failed or refused write, and the pool's thread count.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Callable

import pytest

import actor_db
import vfs
from actor_db.errors import CommitFailedError, FencedError, KVError
from actor_db.kv import KVStore, MemoryKV
from actor_db.runtime.gate import OutputGate, merge_run
from actor_db.runtime.pool import ThreadPool
from vfs.protocol import KVLimits, WriteBatch
from tests.runtime_support import HookedStore, run, until

DEADLINE_S = 30.0


@pytest.fixture
def runtime_vfs(vfs_kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the runtime open its databases with VFS ``vfs_kind``."""
    monkeypatch.setattr(vfs, "connect", functools.partial(vfs.connect, vfs=vfs_kind))
    return vfs_kind


def ledger_type(**options: Any) -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("ledger", state=lambda: {"n": 0},
                       db=actor_db.db(migrations=["CREATE TABLE e (id INTEGER PRIMARY KEY, v TEXT)"]),
                       idle_timeout_s=None, **options)

    @t.action
    async def insert(c: actor_db.Context, i: int) -> int:
        await c.db.execute("INSERT INTO e (id, v) VALUES (?, ?)", i, f"row {i}")
        c.state["n"] += 1
        return i

    @t.action
    async def ids(c: actor_db.Context) -> list[int]:
        return [r[0] for r in await c.db.execute("SELECT id FROM e ORDER BY id")]

    @t.action
    def count(c: actor_db.Context) -> int:
        return int(c.state["n"])

    return t


class WriteValve:
    """A hook on one actor's writes: :meth:`close` makes the next write wait inside the
    KV call (the flusher's thread) until :meth:`open`; ``fail`` makes it raise after."""

    def __init__(self, hooked: HookedStore, actor_id: str) -> None:
        self.actor_id = actor_id
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail: Callable[[], None] | None = None
        hooked.hook = self._hook

    def _hook(self, op: str, actor: str | None, payload: Any) -> None:
        if op != "write" or actor != self.actor_id or not self.armed:
            return
        self.armed = False
        self.entered.set()
        self.release.wait(DEADLINE_S)
        if self.fail is not None:
            self.fail()

    def close(self) -> None:
        self.entered.clear()
        self.release.clear()
        self.armed = True

    def open(self) -> None:
        self.release.set()


def test_commits_coalesce_while_a_write_is_in_flight_and_callers_wait_for_durability(
        store: KVStore, runtime_vfs: str) -> None:
    hooked = HookedStore(store)
    valve = WriteValve(hooked, "ledger/a")

    async def main() -> None:
        registry = actor_db.Registry([ledger_type()], kv=hooked)
        handle = registry.get_or_create("ledger", "a")
        assert await handle.call("insert", 0) == 0
        m0 = handle.metrics()
        valve.close()
        first = asyncio.ensure_future(handle.call("insert", 1))
        await until(valve.entered.is_set)  # batch 1 is inside the KV write now
        later = [asyncio.ensure_future(handle.call("insert", i)) for i in range(2, 7)]
        reader = asyncio.ensure_future(handle.call("ids"))
        # Every action ran at once (the next action does not wait for the KV) ...
        await until(lambda: handle.metrics()["actions_total"] == m0["actions_total"] + 7)
        await asyncio.sleep(0)
        # ... but no caller got its result: each depends on a batch not durable yet.
        assert not any(t.done() for t in [first, *later, reader])
        assert handle.metrics()["output_gate_batches"] == m0["output_gate_batches"] + 6
        valve.open()
        assert await asyncio.gather(first, *later) == [1, 2, 3, 4, 5, 6]
        assert await reader == [0, 1, 2, 3, 4, 5, 6]  # it saw the data before it was durable
        m1 = handle.metrics()
        # batch 1, then batches 2-6 merged into ONE atomic write
        assert m1["kv_writes"] - m0["kv_writes"] == 2
        assert m1["output_gate_merged_batches"] - m0["output_gate_merged_batches"] == 4
        await handle.sleep()
        assert await handle.call("ids") == [0, 1, 2, 3, 4, 5, 6]
        assert await handle.call("count") == 7
        await registry.close()

    run(main())


def test_without_an_output_gate_each_commit_waits_for_the_kv(store: KVStore) -> None:
    hooked = HookedStore(store)
    valve = WriteValve(hooked, "ledger/a")

    async def main() -> None:
        registry = actor_db.Registry([ledger_type(output_gate=False)], kv=hooked)
        handle = registry.get_or_create("ledger", "a")
        await handle.call("insert", 0)
        m0 = handle.metrics()
        valve.close()
        first = asyncio.ensure_future(handle.call("insert", 1))
        await until(valve.entered.is_set)
        second = asyncio.ensure_future(handle.call("insert", 2))
        for _ in range(20):
            await asyncio.sleep(0)
        # the second action has not even started: the first holds the actor until durable
        assert handle.metrics()["actions_total"] == m0["actions_total"] + 1
        assert not second.done() and handle.metrics()["vfs_commits"] == m0["vfs_commits"]
        valve.open()
        assert [await first, await second] == [1, 2]
        assert handle.metrics()["kv_writes"] - m0["kv_writes"] == 2  # one write per commit
        assert handle.metrics()["output_gate_batches"] == 0
        await registry.close()

    run(main())


def test_a_failed_write_fails_every_dependent_action_and_the_actor_reopens_from_the_kv(
        store: KVStore, runtime_vfs: str) -> None:
    hooked = HookedStore(store)
    valve = WriteValve(hooked, "ledger/a")

    def lost() -> None:
        raise KVError("injected: the KV went away")

    async def main() -> None:
        registry = actor_db.Registry([ledger_type()], kv=hooked)
        handle = registry.get_or_create("ledger", "a")
        await handle.call("insert", 0)
        valve.fail = lost
        valve.close()
        first = asyncio.ensure_future(handle.call("insert", 1))
        await until(valve.entered.is_set)
        later = [asyncio.ensure_future(handle.call("insert", i)) for i in (2, 3)]
        reader = asyncio.ensure_future(handle.call("ids"))  # it saw rows that are lost
        await until(lambda: handle.metrics()["output_gate_batches"] >= 4)
        valve.open()
        outcomes = await asyncio.gather(first, *later, reader, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, CommitFailedError), outcome
            assert isinstance(outcome.__cause__, KVError)
            assert "re-opens from the KV" in str(outcome)
        m = handle.metrics()
        assert m["resets_total"] == 1 and m["status"] == "asleep"
        # The KV is the truth: none of the failed batches was applied, memory agrees.
        assert await handle.call("ids") == [0]
        assert await handle.call("count") == 1
        assert await handle.call("insert", 9) == 9  # usable again
        assert await handle.call("ids") == [0, 9]
        await registry.close()

    run(main())


def test_a_merged_batch_is_refused_whole_when_fenced(store: KVStore, reopen_store: Callable[[], KVStore]) -> None:
    """Another runtime takes the actor over while batch 1 is in flight and 2-4 wait
    behind it: batch 1 and the merged write of 2-4 are both refused whole."""
    hooked = HookedStore(store)
    valve = WriteValve(hooked, "ledger/a")

    async def main() -> None:
        registry = actor_db.Registry([ledger_type()], kv=hooked)
        handle = registry.get_or_create("ledger", "a")
        await handle.call("insert", 0)
        other = reopen_store()
        # Inside the first held write, the rival takes ownership: that write (1) and the
        # merged one behind it (2-4) carry the old token.

        def take_over() -> None:
            other.actor("ledger/a").acquire_ownership()

        valve.fail = take_over
        valve.close()
        calls = [asyncio.ensure_future(handle.call("insert", i)) for i in (1, 2, 3, 4)]
        await until(valve.entered.is_set)
        await until(lambda: handle.metrics()["output_gate_batches"] >= 5)
        valve.open()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, FencedError) for o in outcomes), outcomes
        assert handle.metrics()["status"] == "asleep"
        rival = actor_db.Registry([ledger_type()], kv=other)
        assert await rival.get_or_create("ledger", "a").call("ids") == [0]
        await rival.close()
        await registry.close()
        other.close()

    run(main())


def test_threads_stay_under_the_cap_and_a_slow_actor_blocks_only_itself(store: KVStore) -> None:
    hooked = HookedStore(store)
    valve = WriteValve(hooked, "ledger/slow")
    cap = 4

    async def main() -> None:
        registry = actor_db.Registry([ledger_type()], kv=hooked, max_threads=cap)
        slow = registry.get_or_create("ledger", "slow")
        await slow.call("insert", 0)
        valve.close()
        stuck = asyncio.ensure_future(slow.call("insert", 1))
        await until(valve.entered.is_set)
        handles = [registry.get_or_create("ledger", f"k{i}") for i in range(60)]
        results = await asyncio.gather(*(h.call("insert", i) for i, h in enumerate(handles)))
        assert results == list(range(60))  # 60 actors started and wrote while one write hangs
        assert not stuck.done()
        assert registry.pool.peak_threads <= cap  # every OS thread the runtime started, ever
        valve.open()
        assert await stuck == 1
        await registry.close()

    run(main())


def test_many_actors_wake_and_sleep_together_with_few_threads() -> None:
    async def main() -> None:
        registry = actor_db.Registry([ledger_type()], kv=MemoryKV(), max_threads=2)
        handles = [registry.get_or_create("ledger", f"a{i}") for i in range(300)]
        await asyncio.gather(*(h.call("insert", 1) for h in handles))
        await asyncio.gather(*(h.sleep() for h in handles))
        assert await asyncio.gather(*(h.call("ids") for h in handles)) == [[1]] * 300
        assert all(h.metrics()["startup_kv_round_trips"] == 1 for h in handles)  # a plain wake: 1 call
        assert registry.pool.peak_threads <= 2
        await registry.close()

    run(main())


# ---------------------------------------------------------------------------- the gate itself

def test_merge_run_keeps_order_and_limits() -> None:
    a, b, c = WriteBatch(), WriteBatch(), WriteBatch()
    a.put(b"k1", b"a")
    a.put(b"k2", b"a")
    b.delete_range(b"k1", b"k2")  # deletes k1 only
    b.put(b"k3", b"b")
    c.put(b"k1", b"c")
    c.delete(b"k3")
    merged, taken = merge_run([a, b, c], KVLimits())
    assert taken == 3
    state: dict[bytes, bytes] = {}
    for r in merged.delete_ranges:
        state = {k: v for k, v in state.items() if k not in r}
    for k in merged.deletes:
        state.pop(k, None)
    state.update(merged.puts)
    assert state == {b"k1": b"c", b"k2": b"a"}
    assert b"k3" in merged.deletes
    # A limit stops the run before the batch that would break it; the first always goes.
    _, taken = merge_run([a, b, c], KVLimits(max_batch_keys=2))
    assert taken == 1
    _, taken = merge_run([a, b, c], KVLimits(max_batch_keys=3))  # a+b: k2, k3 and the range
    assert taken == 2


def test_reads_see_pending_batches_in_order() -> None:
    inner_store = MemoryKV()
    view = actor_db.runtime.metrics.CountingKV(inner_store.actor("x"))
    seed = WriteBatch()
    seed.put(b"a", b"kv")
    seed.put(b"b", b"kv")
    seed.put(b"c", b"kv")
    view.write(seed)

    async def main() -> None:
        pool = ThreadPool(1)
        gate = OutputGate(view, pool, asyncio.get_running_loop(), "x", held=True)
        one, two = WriteBatch(), WriteBatch()
        one.put(b"a", b"one")
        one.delete_range(b"b", b"c")
        two.put(b"b", b"two")
        two.delete(b"a")
        gate.write(one)
        gate.write(two)
        reads = view.reads
        assert gate.get_many([b"a", b"b"]) == [None, b"two"]
        assert view.reads == reads  # answered by the pending batches: no round trip
        assert gate.get_many([b"a", b"c", b"d"]) == [None, b"kv", None]
        assert view.reads == reads + 1  # c and d only
        assert gate.pending == 2 and view.writes == 1
        assert gate.scan(b"", b"\xff") == [(b"b", b"two"), (b"c", b"kv")]  # a scan waits: durable
        assert gate.durable == 2 and view.writes == 2  # the two batches: one merged write
        pool.shutdown()

    run(main())


def test_512_busy_actors_on_redis_wait_for_connections_instead_of_failing() -> None:
    """More threads than connections: a call waits for a free connection (no "Too many
    connections"), so 512 actors writing at once on a real redis-server all succeed."""
    from actor_db.kv.redis import RedisKV
    from tests.redis_server import fresh_namespace, session_server

    server = session_server()
    namespace = fresh_namespace("pool")

    async def main() -> None:
        store = RedisKV(server.url, namespace=namespace, max_connections=16)
        registry = actor_db.Registry([ledger_type()], kv=store, max_threads=128)
        handles = [registry.get_or_create("ledger", f"a{i}") for i in range(512)]
        outcomes = await asyncio.gather(*(h.call("insert", i) for i, h in enumerate(handles)),
                                        return_exceptions=True)
        outcomes += await asyncio.gather(*(h.call("insert", 1000 + i) for i, h in enumerate(handles)),
                                         return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert failed == [], failed[:3]
        assert registry.pool.peak_threads <= 128
        assert store.client.connection_pool.max_connections == 16
        await registry.close()
        store.drop_namespace()
        store.close()

    run(main())
