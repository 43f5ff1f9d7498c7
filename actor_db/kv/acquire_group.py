"""Grouped ownership acquisitions: many actors' wakes in one store call.

Waking an actor takes its single-writer ownership with its startup preload in one
atomic step (:meth:`~actor_db.kv.ActorKV.acquire_and_preload`). On LMDB that step is a
durable write transaction (an fsync, a few ms), and write transactions are serialized,
so actors waking one by one are bounded to a few hundred wakes per second however many
threads start them. A store that can take several actors' ownership in ONE call
(:attr:`~actor_db.kv.KVStore.groups_acquires`: LMDB one write transaction, Redis one
pipeline of the acquire scripts, MemoryKV one lock) lets concurrent wakes share it, as
group commit does for commits.

:class:`AcquireGroup` does the sharing between the threads that call it (no timer, no
thread of its own): a call made while no group call is running runs at once, alone; the
calls made while one runs wait and go together in the next, run by the first of them
(its *leader*). A wake therefore waits at most for the group call in flight plus its own.

Invariants:

- Every item is sent in exactly one group call and gets exactly that call's answer for
  it (its token and preload, or its exception); a failed group call gives its
  exception to each of its items (each may or may not have taken ownership, as a failed
  single acquisition).
- At most one group call runs at a time per group; at most ``max_items`` items per call.
- A waiting caller is woken by the leader that ran its item, or made leader itself.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

__all__ = ["AcquireGroup", "MAX_GROUP_ITEMS"]

MAX_GROUP_ITEMS = 128
"""Most acquisitions sent in one store call (a bound on one call's size and time)."""

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T]):
    __slots__ = ("item", "result", "done", "lead", "event")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: Any = None
        self.done = False
        self.lead = False
        self.event = threading.Event()


class AcquireGroup(Generic[T, R]):
    """Runs ``run_many(items) -> results`` (one result or exception per item, in order;
    it may raise for the whole call) over the items of concurrent :meth:`run` calls.

    :param run_many: the store's grouped call.
    :param max_items: most items per call.
    """

    def __init__(self, run_many: Callable[[Sequence[T]], Sequence[R | BaseException]],
                 max_items: int = MAX_GROUP_ITEMS) -> None:
        self._run_many = run_many
        self._max_items = max_items
        self._lock = threading.Lock()
        self._queue: list[_Slot[T]] = []
        self._busy = False
        self.calls = 0
        """Group calls made so far."""
        self.items = 0
        """Items sent so far (``items / calls``: the mean group size)."""

    def run(self, item: T) -> R:
        """``item``'s result from the group call it was sent in (blocks the calling
        thread until then); raises its exception."""
        slot: _Slot[T] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            if lead:
                self._busy = True
        if not lead:
            slot.event.wait()
            if slot.done:
                return self._answer(slot)
            assert slot.lead  # (the previous leader handed over: run the queue)
        self._lead()
        assert slot.done
        return self._answer(slot)

    @staticmethod
    def _answer(slot: _Slot[Any]) -> Any:
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result

    def _lead(self) -> None:
        """Run the queued items (the leader's own first), then hand over to the first
        caller still waiting, or mark the group idle."""
        with self._lock:
            taken, self._queue = self._queue[:self._max_items], self._queue[self._max_items:]
        try:
            results: Sequence[Any] = self._run_many([s.item for s in taken])
            if len(results) != len(taken):
                raise RuntimeError(f"a grouped call answered {len(results)} items of {len(taken)}")
        except BaseException as exc:  # the whole call failed: each item gets its error
            results = [exc] * len(taken)
        self.calls += 1
        self.items += len(taken)
        for slot, result in zip(taken, results):
            slot.result, slot.done = result, True
        with self._lock:
            following = self._queue[0] if self._queue else None
            if following is None:
                self._busy = False
            else:
                following.lead = True
        for slot in taken:
            slot.event.set()
        if following is not None:
            following.event.set()
