"""The runtime's thread pool and loop inbox, and where an actor's calls run (issue 13).

Counted, never timed: which jobs ran and in what order, how many threads exist, which
callbacks reached the loop, and the ``inline_calls`` / ``worker_calls`` counters.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import actor_db
from actor_db.kv import MemoryKV
from actor_db.runtime.inbox import inbox_for
from actor_db.runtime.pool import ThreadPool
from tests.helpers import poll_until
from tests.runtime_support import HookedStore, run

DEADLINE_S = 30.0


def wait_until(predicate: Any) -> None:
    poll_until(predicate, "the pool never got there", DEADLINE_S)


def test_pool_runs_jobs_in_order_within_the_cap() -> None:
    pool = ThreadPool(3, idle_timeout_s=0.05)
    gate = threading.Event()
    ran: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> None:
        gate.wait(DEADLINE_S)
        with lock:
            ran.append(i)

    for i in range(50):
        pool.submit(lambda i=i: job(i))
    assert pool.threads <= 3 and pool.peak_threads <= 3
    gate.set()
    wait_until(lambda: len(ran) == 50)
    assert sorted(ran) == list(range(50))
    wait_until(lambda: pool.threads == 0)  # idle threads leave after the timeout
    one: list[int] = []
    pool.submit(lambda: one.append(1))  # and a later job starts one again
    wait_until(lambda: one == [1])
    assert pool.peak_threads <= 3


def test_pool_single_thread_is_fifo_and_survives_a_failing_job() -> None:
    pool = ThreadPool(1)
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("job failed")

    pool.submit(boom)
    for i in range(20):
        pool.submit(lambda i=i: ran.append(i))
    wait_until(lambda: len(ran) == 20)
    assert ran == list(range(20))
    pool.shutdown()
    wait_until(lambda: pool.threads == 0)
    pool.submit(lambda: ran.append(99))  # a shut-down pool starts threads again
    wait_until(lambda: ran[-1] == 99)
    pool.shutdown()


def test_inbox_runs_posts_from_threads_in_order_on_the_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        inbox = inbox_for(loop)
        assert inbox_for(loop) is inbox
        seen: list[tuple[int, int]] = []
        done = asyncio.Event()
        loop_thread = threading.get_ident()

        def note(t: int, i: int) -> None:
            assert threading.get_ident() == loop_thread
            seen.append((t, i))
            if len(seen) == 400:
                done.set()

        def poster(t: int) -> None:
            for i in range(100):
                inbox.post(note, t, i)

        threads = [threading.Thread(target=poster, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        await asyncio.wait_for(done.wait(), DEADLINE_S)
        for th in threads:
            th.join()
        for t in range(4):  # each thread's posts in the order it made them
            assert [i for tt, i in seen if tt == t] == list(range(100))

    run(main())


def notes_type() -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("notes", state=lambda: {"n": 0},
                       db=actor_db.db(migrations=["CREATE TABLE n (id INTEGER PRIMARY KEY, v INTEGER)"]),
                       idle_timeout_s=None)

    @t.action
    async def add(c: actor_db.Context, i: int) -> None:
        await c.db.execute("INSERT INTO n (id, v) VALUES (?, ?)", i, i)

    @t.action
    async def total(c: actor_db.Context) -> int:
        return int((await c.db.execute("SELECT count(*) FROM n"))[0][0])

    return t


def test_an_instant_store_needs_no_thread() -> None:
    """MemoryKV answers in memory: starts, queries, commits and sleeps run on the loop."""
    async def main() -> None:
        registry = actor_db.Registry([notes_type()], kv=MemoryKV())
        handles = [registry.get_or_create("notes", f"a{i}") for i in range(20)]
        await asyncio.gather(*(h.call("add", 1) for h in handles))
        await asyncio.gather(*(h.sleep() for h in handles))
        assert await asyncio.gather(*(h.call("total") for h in handles)) == [1] * 20
        assert registry.pool.peak_threads == 0
        await registry.close()

    run(main())


def test_a_preloaded_actor_runs_its_first_calls_inline() -> None:
    """A store with I/O (a wrapper: not instant): the start uses the pool, but an actor
    whose whole database came with the startup preload runs its first query inline."""
    store = HookedStore(MemoryKV())

    async def main() -> None:
        registry = actor_db.Registry([notes_type()], kv=store)
        h = registry.get_or_create("notes", "p")
        await h.call("add", 1)
        await h.sleep()
        await h.wake()
        before = h.metrics()
        assert await h.call("total") == 1
        after = h.metrics()
        assert after["inline_calls"] - before["inline_calls"] >= 1
        assert after["worker_calls"] - before["worker_calls"] == 0
        assert after["inline_misses"] == before["inline_misses"]
        assert registry.pool.peak_threads >= 1  # the start itself went through the pool
        await registry.close()

    run(main())


def test_pool_shutdown_lets_idle_and_busy_threads_leave() -> None:
    pool = ThreadPool(8)
    release = threading.Event()
    for _ in range(8):
        pool.submit(lambda: release.wait(DEADLINE_S))
    wait_until(lambda: pool.threads == 8)
    pool.shutdown()  # all busy: each leaves when its job ends and nothing is queued
    release.set()
    wait_until(lambda: pool.threads == 0)
    done: list[int] = []
    for i in range(8):
        pool.submit(lambda i=i: done.append(i))
    wait_until(lambda: len(done) == 8)
    pool.shutdown()  # now idle: every one of them leaves, not just one
    wait_until(lambda: pool.threads == 0)


def test_a_worker_chore_keeps_the_queue_order_and_never_wedges_it(caplog: Any) -> None:
    """``Worker.run_later``: a chore runs after the calls queued before it and before
    those queued after it; one that fails, even with a ``BaseException`` on a pool
    thread, is logged and the calls after it still run."""
    from actor_db.runtime.worker import Worker

    async def main() -> None:
        pool = ThreadPool(2)
        worker = Worker(pool, "w")
        order: list[str] = []

        def failing() -> None:
            order.append("bad chore")
            raise KeyboardInterrupt  # on a pool thread: logged, the queue goes on

        first = asyncio.ensure_future(worker.run(order.append, "call 1"))
        await asyncio.sleep(0)  # the task starts: "call 1" is queued (or already ran)
        worker.run_later(lambda: order.append("chore"))
        worker.run_later(failing)
        second = await worker.run(order.append, "call 2")
        await first
        assert second is None
        assert order == ["call 1", "chore", "bad chore", "call 2"]
        assert worker.idle
        await worker.close()
        worker.run_later(lambda: order.append("after close"))  # dropped
        assert order[-1] == "call 2"
        pool.shutdown()

    with caplog.at_level("ERROR", logger="actor_db.runtime.worker"):
        run(main())
    assert any("background chore was interrupted" in r.getMessage() for r in caplog.records)
