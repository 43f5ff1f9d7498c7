"""The loop's one idle timer (:mod:`actor_db.runtime.idle`), driven by hand on a fake
loop: order, postponement, cancellation, compaction; no wall clock."""

from __future__ import annotations

import contextvars
from typing import Any, Callable

from actor_db.runtime.idle import IdleTimers


class _Handle:
    def __init__(self, when: float, fn: Callable[[], None], context: contextvars.Context) -> None:
        self.when, self.fn, self.context, self.cancelled = when, fn, context, False

    def cancel(self) -> None:
        self.cancelled = True


class _Loop:
    """``time()`` and ``call_at()`` of an event loop, advanced by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[[], None], *, context: contextvars.Context) -> _Handle:
        handle = _Handle(when, fn, context)
        self.handles.append(handle)
        return handle

    def armed(self) -> list[float]:
        return [h.when for h in self.handles if not h.cancelled]

    def advance(self, to: float) -> None:
        self.now = to
        while True:
            due = [h for h in self.handles if not h.cancelled and h.when <= to]
            if not due:
                return
            for h in due:
                self.handles.remove(h)
                h.context.run(h.fn)


class _Target:
    """An actor's side: a deadline that calls may postpone, re-added when early."""

    def __init__(self, timers: IdleTimers, name: str, deadline: float, log: list[str]) -> None:
        self.timers, self.name, self.deadline, self.log = timers, name, deadline, log
        self._idle_seq = timers.add(deadline, self)

    def _idle_fire(self, now: float | None = None) -> None:
        assert now is not None
        if now < self.deadline:
            self._idle_seq = self.timers.add(self.deadline, self)
            return
        self.log.append(self.name)

    def cancel(self) -> None:
        self._idle_seq = 0
        self.timers.cancelled()


def _timers() -> tuple[_Loop, IdleTimers]:
    loop = _Loop()
    return loop, IdleTimers(loop)  # type: ignore[arg-type]


def test_targets_fire_in_deadline_order_with_one_armed_timer() -> None:
    loop, timers = _timers()
    fired: list[str] = []
    targets = [_Target(timers, name, when, fired) for name, when in (("c", 3.0), ("a", 1.0), ("b", 2.0))]
    assert loop.armed() == [1.0]  # one loop timer, for the earliest deadline
    loop.advance(1.5)
    assert fired == ["a"] and loop.armed() == [2.0]
    loop.advance(10.0)
    assert fired == ["a", "b", "c"] and loop.armed() == [] and len(timers) == 0
    assert all(t._idle_seq == 0 for t in targets)


def test_a_postponed_deadline_re_adds_and_keeps_earlier_entries_armed() -> None:
    """A target whose deadline moved re-adds itself from inside the run; an entry that
    was waiting with an earlier time must still be armed for its own time."""
    loop, timers = _timers()
    fired: list[str] = []
    late = _Target(timers, "late", 1.0, fired)
    early = _Target(timers, "early", 2.0, fired)
    late.deadline = 5.0  # a call postponed it: no heap operation
    loop.advance(1.0)
    assert fired == [] and late._idle_seq != 0 and loop.armed() == [2.0]
    loop.advance(2.0)
    assert fired == ["early"] and early._idle_seq == 0 and loop.armed() == [5.0]
    loop.advance(5.0)
    assert fired == ["early", "late"]


def test_cancelled_entries_are_skipped_and_compacted() -> None:
    loop, timers = _timers()
    fired: list[str] = []
    targets = [_Target(timers, f"t{i}", 1.0 + i, fired) for i in range(100)]
    for t in targets[:60]:
        t.cancel()
    assert len(timers) == 49  # at the 51st cancel, more than half: rebuilt without them (9 since)
    targets[60].cancel()
    loop.advance(1000.0)
    assert fired == [f"t{i}" for i in range(61, 100)] and len(timers) == 0


def test_the_loop_timer_keeps_no_caller_context() -> None:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("probe", default=None)
    loop, timers = _timers()
    seen: list[Any] = []

    class Probe(_Target):
        def _idle_fire(self, now: float | None = None) -> None:
            seen.append(var.get())

    var.set(object())  # (what an action's call chain would hold)
    Probe(timers, "p", 1.0, [])
    assert len(loop.handles[0].context) == 0
    loop.advance(1.0)
    assert seen == [None]
