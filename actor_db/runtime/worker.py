"""The asyncio bridge: one worker thread and one queue per awake actor (aiosqlite-style).

Every SQLite call of an actor runs on its own worker thread, so a slow KV call (made by
the VFS inside SQLite) blocks only that actor; the event loop and other actors go on.

Invariants:

- One thread hop per :meth:`Worker.run` call; the callable does all its SQLite work
  (execute and fetch together) on the worker.
- Calls run one at a time, in submission order (FIFO), so an actor's SQLite calls
  never interleave even without the actor lock.
- A result is handed back with ``loop.call_soon_threadsafe`` behind a ``fut.done()``
  guard, so a cancelled await cannot crash the worker.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable, TypeVar

from actor_db.errors import ActorShuttingDownError

log = logging.getLogger(__name__)

__all__ = ["Worker"]

T = TypeVar("T")

_STOP = object()


def _resolve(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled; drop the result
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class Worker:
    """A daemon thread running submitted callables one at a time.

    :param name: the thread's name (shows in tracebacks and ``threading.enumerate()``).
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fut, loop, fn, args = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, never lost
                error = exc
            try:
                loop.call_soon_threadsafe(_resolve, fut, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.debug("worker %s: event loop closed before a result was delivered", self._thread.name)

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread and return its result (one hop).

        :raises ActorShuttingDownError: the worker was closed.
        """
        if self._closed:
            raise ActorShuttingDownError("actor is shutting down: its database worker is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((fut, loop, fn, args))
        return await fut

    async def close(self, final: Callable[[], None] | None = None) -> None:
        """Run ``final`` (if given) as the last call, stop the thread and wait for it.

        Calls submitted before ``close`` still run; later ones raise
        :class:`ActorShuttingDownError`. Idempotent.
        """
        if self._closed:
            return
        try:
            if final is not None:
                await self.run(final)
        finally:
            self._closed = True
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
