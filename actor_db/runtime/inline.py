"""Where an actor's next SQLite call runs: inline on the event loop, or on its worker.

A thread hop costs a few tens of microseconds of CPU (a queue hand-off, a wake-up of a
pool thread, a wake-up of the event loop), more than a cached ``SELECT`` itself. With an
output gate, a call whose pages are all in memory makes no KV round trip at all (commits
are queued, not written), so it can run right on the event loop's thread with no hop.
Whether the pages are in memory is only known afterwards, so :class:`Runner` learns it:

- a call runs inline only when the actor has an output gate that is not broken and has
  little pending, its worker is idle (nothing queued, so order is kept), and its last
  :attr:`Runner.need` calls on the worker made no KV read;
- an inline call that did read the KV (a cache miss: it blocked the event loop for one
  round trip) sends the actor back to its worker and doubles ``need`` (up to
  :data:`MAX_NEED`), so an actor that misses often stays on its worker and costs the
  loop at most one blocked round trip per ``need`` calls;
- ``need`` halves (down to :data:`MIN_NEED`) after every :data:`MIN_NEED` * 16 inline
  calls in a row without a miss;
- an actor whose whole database came with its startup preload (every chunk is in
  memory, so no call can miss until that changes) starts inline at once
  (:meth:`Runner.assume_local`) instead of after ``need`` worker calls: a freshly woken
  actor's first calls cost no thread hop either.

Invariants: inline and worker calls of one actor never interleave and keep their
submission order (inline only when the worker is idle); without an output gate (commits
wait for the KV) every call goes to the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

from actor_db.runtime.gate import OutputGate

if TYPE_CHECKING:
    from actor_db.runtime.metrics import CountingKV
    from actor_db.runtime.worker import Worker

__all__ = ["Runner", "MIN_NEED", "MAX_NEED", "INLINE_MAX_PENDING_BYTES"]

T = TypeVar("T")

MIN_NEED = 2
"""Clean worker calls (no KV read) before calls may run inline again."""
MAX_NEED = 1024
"""The most clean worker calls asked for after repeated inline misses."""
INLINE_MAX_PENDING_BYTES = 4 * 1024 * 1024
"""No inline call while more than this many bytes wait in the output gate (a commit
could then have to wait for the KV)."""


class Runner:
    """Runs one actor's SQLite calls inline or on its worker (see the module docstring).

    :param worker: the actor's worker (strand).
    :param kv: the view its connection reads through (the output gate when there is one).
    :param inline: allow inline calls at all.
    """

    __slots__ = ("worker", "_kv", "_gate", "need", "_streak", "inline_calls", "worker_calls", "inline_misses")

    def __init__(self, worker: Worker, kv: CountingKV | OutputGate, inline: bool = True) -> None:
        self.worker = worker
        self._kv = kv.inner if isinstance(kv, OutputGate) else kv
        """The counting view whose ``reads`` tell a miss (the gate's own ``reads`` is a
        property returning the same counter: read it without that frame)."""
        self._gate = kv if inline and isinstance(kv, OutputGate) else None
        self.need = MIN_NEED
        self._streak = 0
        self.inline_calls = 0
        """Calls run on the event loop's thread."""
        self.worker_calls = 0
        """Calls run on a pool thread."""
        self.inline_misses = 0
        """Inline calls that read the KV (each blocked the event loop for a round trip)."""

    def assume_local(self) -> None:
        """Allow inline calls now: the caller knows every page is in memory (a miss
        still sends the actor back to its worker, as always)."""
        self._streak = max(self._streak, self.need)

    def _may_inline(self) -> bool:
        gate = self._gate
        return (gate is not None and self._streak >= self.need and self.worker.idle and gate.failure is None
                and gate.pending_bytes <= INLINE_MAX_PENDING_BYTES)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, inline when that is known to be cheap, else on the worker."""
        kv = self._kv
        reads = kv.reads
        gate, worker = self._gate, self.worker
        # (_may_inline, inlined: this runs twice per action; the worker's ``idle`` and the
        # gate's ``pending_bytes`` read as the fields behind those properties)
        if (gate is not None and self._streak >= self.need and not worker._scheduled and gate.failure is None
                and gate._pending_bytes <= INLINE_MAX_PENDING_BYTES):
            self.inline_calls += 1
            try:
                return worker.run_inline(fn, *args)
            finally:
                if kv.reads != reads:
                    self.inline_misses += 1
                    self._streak = 0
                    self.need = min(self.need * 2, MAX_NEED)
                else:
                    self._streak += 1
                    if self._streak >= self.need + MIN_NEED * 16 and self.need > MIN_NEED:
                        self.need //= 2
                        self._streak = self.need
        self.worker_calls += 1
        try:
            return await worker.run(fn, *args)
        finally:
            self._streak = self._streak + 1 if kv.reads == reads else 0
