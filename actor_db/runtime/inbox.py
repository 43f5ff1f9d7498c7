"""Handing results from pool threads to the event loop, many per wake-up.

``loop.call_soon_threadsafe`` writes one byte to the loop's self-pipe per call (a
syscall on the pool thread, a read and a loop iteration on the loop's side). Under load
many KV calls finish while the loop is busy; an :class:`Inbox` queues their callbacks
and asks the loop to run them with ONE ``call_soon_threadsafe`` until the loop has
emptied it, so a busy loop takes a whole burst of completions in one callback.

Invariants: callbacks run on the loop's thread, in the order they were posted (per
inbox, so per loop); a callback posted after the loop was closed is dropped (nobody
waits any more) and logged at debug level; a callback that raises is logged and does
not stop the others.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import weakref
from typing import Any, Callable

log = logging.getLogger(__name__)

__all__ = ["Inbox", "inbox_for"]


class Inbox:
    """Callbacks posted from any thread, run on ``loop`` in batches."""

    __slots__ = ("_loop", "_lock", "_items", "_armed", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the registry of inboxes must not keep a loop alive
        self._lock = threading.Lock()
        self._items: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._armed = False

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """(Any thread.) Run ``fn(*args)`` on the loop soon."""
        with self._lock:
            self._items.append((fn, args))
            if self._armed:
                return
            self._armed = True
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("event loop is gone")
            loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self._lock:
                self._items.clear()
                self._armed = False
            log.debug("event loop closed before a result could be delivered")

    def _run(self) -> None:
        lock, items = self._lock, self._items
        with lock:
            batch = list(items)
            items.clear()
        for fn, args in batch:
            try:
                fn(*args)
            except Exception:  # one bad callback must not strand the others
                log.exception("actor-db callback %r raised on the event loop", fn)
        with lock:
            again = bool(items)  # posted meanwhile (not re-armed): run after the loop's other work
            self._armed = again
        if again:
            loop = self._loop()
            if loop is not None:
                loop.call_soon(self._run)


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def inbox_for(loop: asyncio.AbstractEventLoop) -> Inbox:
    """The inbox of ``loop`` (one per loop, created on first use)."""
    inbox = _inboxes.get(loop)
    if inbox is None:
        with _inboxes_lock:
            inbox = _inboxes.get(loop)
            if inbox is None:
                inbox = _inboxes[loop] = Inbox(loop)
    return inbox
