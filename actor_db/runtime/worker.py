"""The asyncio bridge: one serial queue (a *strand*) per awake actor on the shared pool.

An actor no longer owns a thread. Its SQLite calls are queued on its :class:`Worker`;
when the queue goes from empty to non-empty the worker submits ONE drain job to the
runtime's :class:`~actor_db.runtime.pool.ThreadPool`, which runs the queued calls one
after another and hands each result back to the event loop. So a slow KV call (made by
the VFS inside SQLite) blocks one pool thread and only its own actor; other actors go
on as long as the pool has threads (its cap).

Invariants:

- An actor's calls run one at a time, in submission order (FIFO), whichever pool
  thread runs them: a drain job is the only runner of its worker's queue, and the
  worker submits a new one only after the last one found the queue empty (right
  after its last call returned, before that call's result is handed back).
- :meth:`Worker.run_inline` runs a call on the event loop's thread, only while the queue
  is empty and nothing runs (:attr:`Worker.idle`), so it never interleaves with a
  queued call either.
- A drain job runs at most :data:`FAIRNESS_CALLS` calls, then re-queues itself behind
  the other actors' jobs, so one busy actor cannot hold a thread forever.
- A result is handed back through the loop's :class:`~actor_db.runtime.inbox.Inbox`
  (one loop wake-up for a burst of results) behind a ``fut.done()`` guard, so a
  cancelled await cannot crash the pool thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any, Callable, TypeVar

from actor_db.errors import ActorShuttingDownError
from actor_db.runtime.inbox import Inbox, inbox_for
from actor_db.runtime.loops import current_loop
from actor_db.runtime.pool import ThreadPool

log = logging.getLogger(__name__)

__all__ = ["Worker", "FAIRNESS_CALLS"]

T = TypeVar("T")

FAIRNESS_CALLS = 64
"""Calls one drain job runs before it lets other actors' jobs go first."""


def _resolve(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled; drop the result
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


_Item = tuple["asyncio.Future[Any] | None", "Inbox | None", Callable[..., Any], tuple[Any, ...]]
"""A queued call: its future and the inbox that resolves it (``None``, ``None`` for a
chore nobody awaits, :meth:`Worker.run_later`), the function and its arguments."""


def _run_chore(name: str, fn: Callable[[], Any], *, on_pool: bool) -> None:
    """Run a chore (:meth:`Worker.run_later`): an exception is logged, never raised. On
    a pool thread nothing escapes at all (it would leave the worker's queue without a
    runner); on the event loop's thread a ``KeyboardInterrupt`` still reaches the app."""
    try:
        fn()
    except Exception:
        log.exception("actor %s: a background chore failed", name)
    except BaseException:
        if not on_pool:
            raise
        log.exception("actor %s: a background chore was interrupted", name)


class Worker:
    """One actor's serial queue of calls, run on the shared ``pool``.

    :param pool: the runtime's thread pool.
    :param name: the actor's label (for log messages).
    :param instant: the actor's store answers every call in memory, without I/O
        (``MemoryKV``: ``instant_writes``): a call made while nothing is queued runs
        right away on the caller's (the event loop's) thread, since a thread hop would
        cost more than the call and there is no round trip to overlap.
    """

    __slots__ = ("_pool", "name", "_lock", "_queue", "_scheduled", "_closed", "_instant")

    def __init__(self, pool: ThreadPool, name: str, instant: bool = False) -> None:
        self._pool = pool
        self.name = name
        self._instant = instant
        self._lock = threading.Lock()
        self._queue: collections.deque[_Item] | None = None
        """(Lock.) The calls not started yet; made by the first call that queues and
        dropped when a drain finds it empty (an idle awake actor holds none)."""
        self._scheduled = False
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> bool:
        """No call is queued or running (read on the event loop; a call queued from
        the loop makes it ``False`` at once, and it turns ``True`` only once the queue
        is empty and the last call returned)."""
        return not self._scheduled

    def _drain(self) -> None:
        lock = self._lock
        with lock:
            queue = self._queue
        assert queue is not None, "a drain job runs only after a call was queued"
        for _ in range(FAIRNESS_CALLS):
            with lock:
                if not queue:
                    self._scheduled = False
                    self._queue = None
                    return
                fut, inbox, fn, args = queue.popleft()
            result: Any = None
            error: BaseException | None = None
            if fut is None:
                _run_chore(self.name, fn, on_pool=True)
            else:
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to the awaiting task, never lost
                    error = exc
            with lock:
                # The call is over: when nothing else is queued the worker is idle
                # BEFORE its caller hears back, so the caller's next call may run
                # inline at once (this job touches nothing of the actor any more).
                last = not queue
                if last:
                    self._scheduled = False
                    self._queue = None
            if inbox is not None:
                inbox.post(_resolve, fut, result, error)
            if last:
                return
        self._pool.submit(self._drain)  # fairness: other actors' jobs first

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a pool thread after the calls queued before it.

        :raises ActorShuttingDownError: the worker was closed.
        """
        if self._closed:
            raise ActorShuttingDownError("actor is shutting down: its database worker is closed")
        if self._instant and not self._scheduled:
            return fn(*args)  # nothing to wait for, nothing queued: no hop (see ``instant``)
        loop = current_loop()  # (no getpid() system call, as get_running_loop() makes)
        fut: asyncio.Future[T] = loop.create_future()
        self._queue_item((fut, inbox_for(loop), fn, args))
        return await fut

    def _queue_item(self, item: _Item) -> None:
        """Queue ``item`` behind the calls queued before it; start a drain job on the
        pool if none is scheduled (the queue is made here when there was none)."""
        with self._lock:
            queue = self._queue
            if queue is None:
                queue = self._queue = collections.deque()
            queue.append(item)
            start = not self._scheduled
            self._scheduled = True
        if start:
            self._pool.submit(self._drain)

    def run_later(self, fn: Callable[[], Any]) -> None:
        """(Event loop's thread.) Queue the chore ``fn()`` behind the calls queued before
        it, with nobody waiting for it: the calls queued after it wait for it (FIFO),
        and its exception is logged, never raised. Run at once when the worker would
        run a call inline anyway (``instant`` and idle). A closed worker drops it."""
        if self._closed:
            return
        if self._instant and not self._scheduled:
            _run_chore(self.name, fn, on_pool=False)
            return
        self._queue_item((None, None, fn, ()))

    def run_inline(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` right here on the event loop's thread (no hop).

        Only for calls that need no KV round trip (pages in memory, writes handed to an
        output gate); the caller checks :attr:`idle` first.

        :raises ActorShuttingDownError: the worker was closed.
        """
        if self._closed:
            raise ActorShuttingDownError("actor is shutting down: its database worker is closed")
        assert not self._scheduled, "run_inline while calls are queued"
        return fn(*args)

    async def close(self, final: Callable[[], None] | None = None) -> None:
        """Run ``final`` (if given) as the last call, then refuse new calls.

        Calls submitted before ``close`` still run; later ones raise
        :class:`ActorShuttingDownError`. Idempotent. No thread to join: the pool's
        threads outlive every actor.
        """
        if self._closed:
            return
        try:
            if final is not None:
                await self.run(final)
        finally:
            self._closed = True
