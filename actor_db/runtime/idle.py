"""Idle deadlines: ONE event-loop timer for every awake actor of a loop.

An awake actor sleeps when no call came for its ``idle_timeout_s``. Each actor used to
hold an ``asyncio.TimerHandle`` of its own, and with it the ``contextvars.Context``
copied when the timer was set (which kept the last action's call-chain frame alive):
about 8 objects the garbage collector tracks, per awake actor, for as long as it is
awake. :class:`IdleTimers` keeps every deadline of a loop in one heap of
``(when, seq, target)`` tuples (ONE tracked object per awake actor) and arms one loop
timer for the earliest.

Invariants:

- A target is in the heap at most once *live*: the entry whose ``seq`` equals the
  target's ``_idle_seq``. Cancelling only changes the target's ``_idle_seq`` (no heap
  search); entries whose seq no longer matches are skipped when they come out, and
  the heap is rebuilt without them when they are more than half of it.
- A target's deadline may move later without touching the heap (a call postpones
  it): when its entry comes out early, the target adds itself again for its deadline
  (:meth:`ActorInstance._idle_fire`). So a busy actor costs no heap operation per
  call, one per timeout period.
- :meth:`IdleTimers._run` pops only entries due at the time it started (plus the
  clock's resolution, as asyncio's own timers), so an entry added while it runs, for a
  later time, cannot make it loop.
- The loop timer runs in an empty :class:`contextvars.Context`: no caller's context
  (and nothing it references) is kept alive by it, and a task a target starts from it
  starts with an empty context.

Left out: thread safety (every method runs on the loop's thread).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import logging
import time
import weakref
from typing import Protocol

log = logging.getLogger(__name__)

__all__ = ["IdleTarget", "IdleTimers", "idle_timers_for"]

_RESOLUTION = time.get_clock_info("monotonic").resolution
"""Seconds: asyncio runs a timer due within the clock's resolution of now (its loop
time is ``time.monotonic()``)."""

_COMPACT_MIN = 64
"""Heap size below which cancelled entries are left to come out on their own."""


class IdleTarget(Protocol):
    """What :class:`IdleTimers` calls: an awake actor instance."""

    _idle_seq: int
    """The seq of the target's live heap entry; 0: it has none."""

    def _idle_fire(self, now: float | None = None) -> None:
        """The target's entry came out at loop time ``now`` (seconds): sleep if its
        deadline passed, else add itself again for it."""


class IdleTimers:
    """Every idle deadline of one event loop (see the module docstring).

    :param loop: the loop whose time (``loop.time()``, seconds) the deadlines use.
    """

    __slots__ = ("_loop", "_heap", "_handle", "_armed_at", "_seq", "_stale", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # (the registry of these must not keep a loop alive)
        self._heap: list[tuple[float, int, IdleTarget]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        """Loop time the armed timer fires at (meaningful while :attr:`_handle` is set)."""
        self._seq = 0
        self._stale = 0
        """Entries in the heap whose target cancelled them (an upper bound)."""

    def __len__(self) -> int:
        """Entries in the heap, cancelled ones included."""
        return len(self._heap)

    def add(self, when: float, target: IdleTarget) -> int:
        """Put ``target`` in the heap for loop time ``when`` (seconds); returns the
        entry's seq, which the caller stores as ``target._idle_seq``."""
        self._seq += 1
        seq = self._seq
        heapq.heappush(self._heap, (when, seq, target))
        if self._handle is None or when < self._armed_at:
            self._arm(when)
        return seq

    def cancelled(self) -> None:
        """A target dropped its entry (set its ``_idle_seq`` to 0 or moved it)."""
        self._stale += 1
        heap = self._heap
        if self._stale * 2 > len(heap) and len(heap) >= _COMPACT_MIN:
            self._heap = [entry for entry in heap if entry[2]._idle_seq == entry[1]]
            heapq.heapify(self._heap)
            self._stale = 0

    def _arm(self, when: float) -> None:
        loop = self._loop()
        if loop is None:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(when, self._run, context=contextvars.Context())
        self._armed_at = when

    def _run(self) -> None:
        self._handle = None
        loop = self._loop()
        if loop is None:
            return
        horizon = loop.time() + _RESOLUTION
        heap = self._heap
        while heap and heap[0][0] <= horizon:
            _, seq, target = heapq.heappop(heap)
            if target._idle_seq != seq:
                self._stale = max(0, self._stale - 1)
                continue
            target._idle_seq = 0
            try:
                target._idle_fire(horizon)
            except Exception:  # one actor's failure must not strand the others' deadlines
                log.exception("idle deadline of %r failed", target)
        # (a target that added itself again armed the timer for its own time: an
        # entry that was already waiting may be due earlier)
        if heap and (self._handle is None or heap[0][0] < self._armed_at):
            self._arm(heap[0][0])


_timers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IdleTimers] = weakref.WeakKeyDictionary()


def idle_timers_for(loop: asyncio.AbstractEventLoop) -> IdleTimers:
    """The :class:`IdleTimers` of ``loop`` (one per loop, created on first use; only
    called on the loop's thread)."""
    timers = _timers.get(loop)
    if timers is None:
        timers = _timers[loop] = IdleTimers(loop)
    return timers
