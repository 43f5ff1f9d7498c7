"""Group commit: many actors' output-gate writes in ONE KV round trip.

Without it, every actor with pending batches writes them with its own KV call, each on a
pool thread: a thread wake-up and two GIL hand-offs per actor per round trip, which is
what bounds a process of many busy actors (it is GIL-bound long before the KV is busy).
With it, a gate that has batches to write does not start a flusher of its own: it joins
the store's :class:`GroupCommitter`, and ONE pool job writes every joined gate's next
merged batch with :meth:`~actor_db.kv.KVStore.write_many` (LMDB: one write transaction
and one fsync; Redis: one pipeline of fenced write scripts; see the drivers). Each batch
keeps its own fence, its own expectations and its own result: a refused or failed batch
breaks only its own actor's gate.

When a round starts. A gate that joins from the event loop's thread (an action that ran
inline and committed) schedules the round with ``loop.call_soon``: the round starts
after every callback of the current loop iteration has run, so the commits of a whole
burst of actions (e.g. every caller released by the previous round) go out together,
unless the round fills up first (:meth:`GroupCommitter._round_size`: a quarter of the
actors that wrote in the last 0.1 s, at least 8). A full round leaves at once, so a
long burst is spread over a few rounds and the loop runs the burst's last actions
while its first rounds are in flight (one round per burst would keep every actor in
lock step: the loop idle during the round trip, the KV idle during the burst). A gate
that joins from another thread (a pool worker's commit, a round that found more
pending) joins the round already scheduled on a running loop, or submits one to the
pool. Several rounds may be in flight at once (each on its own pool thread); a gate is
in at most one of them.

Rounds on the event loop. When the store can send a group write and let the caller
wait for the reply (:attr:`~actor_db.kv.KVStore.loop_writes`: one Redis server; the
benchmarks' latency model), a round started on the event loop's thread runs there: it
sends the merged batches at once (:meth:`~actor_db.kv.KVStore.start_write_many`) and
the loop waits for the reply's socket (or deadline) among its other work, then applies
the results and releases the waiting callers, with no pool thread and no wake-up of
another thread. A thread that must wait for such a round (a drain) sleeps until the loop
finishes it, except the loop's own thread (an inline SQLite call), which finishes it
itself (reading the reply, blocking if it is not there yet): it never waits for work
only it could do. A round whose loop no longer runs is finished by whoever waits.

Invariants:

- A gate's batches still reach the KV in sequence order: a gate joins only when it holds
  the right to write (the gate's ``_flushing``), keeps it until its round's result is
  applied, and then joins again if more is pending. :class:`OutputGate` documents it.
- A joined gate that has not been taken into a round yet may be withdrawn by a thread
  that must wait for its batches (:meth:`OutputGate.drain`): that thread then writes them
  itself, so a thread waiting for durability never waits for a round that could only be
  started by the thread it blocks (the event loop).
- A round never raises: every gate in it gets its result, a failed round trip breaks
  every gate in it (each actor re-opens from the KV, as after any failed write).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Sequence

from actor_db.kv.base import ActorKV, GroupWrite, KVStore
from actor_db.runtime.loops import running_loop

if TYPE_CHECKING:
    from actor_db.runtime.gate import OutputGate
    from actor_db.runtime.metrics import CountingKV
    from actor_db.runtime.pool import ThreadPool

log = logging.getLogger(__name__)

__all__ = ["GroupCommitter", "committer_for", "release_all", "MIN_ROUND", "ROUNDS_PER_CYCLE", "ACTIVE_WINDOW_S",
           "LOOP_MIN_ROUND", "LOOP_ROUNDS_PER_CYCLE"]

MIN_ROUND = 8
"""The fewest joined gates that make a round full (see :meth:`GroupCommitter._round_size`)."""
ROUNDS_PER_CYCLE = 4
"""A full round holds this share of the actors that write: a burst of their commits
leaves in about this many rounds."""
ACTIVE_WINDOW_S = 0.1
"""Seconds over which the actors that write are counted (many round trips long)."""
LOOP_MIN_ROUND = 4
LOOP_ROUNDS_PER_CYCLE = 16
""":data:`MIN_ROUND` and :data:`ROUNDS_PER_CYCLE` for a store whose rounds the event loop
waits for (:attr:`~actor_db.kv.KVStore.loop_writes`): such a round costs no thread, so
smaller rounds pay: an actor waits less for the rest of its round to commit. (Measured
with 64 and 256 actors at 5 ms per round trip: rounds of a sixteenth of the writers, at
least 4, beat a quarter by about 15%; with pool threads, small rounds lose.)"""


class GroupCommitter:
    """Writes the gates of one store in shared rounds (see the module docstring).

    :param store: the driver every joined gate writes to (its ``groups_writes`` holds).
    :param pool: where rounds run.
    """

    def __init__(self, store: KVStore, pool: ThreadPool) -> None:
        self.store = store
        self._pool = pool
        self._lock = threading.Lock()
        self._joined: list[OutputGate] = []
        self._recent: dict[int, float] = {}
        """``id(gate)`` -> when it last joined (monotonic seconds), within about
        :data:`ACTIVE_WINDOW_S`."""
        self._active = 0
        """Actors that joined in the last counted window (:meth:`_count_active`)."""
        self._counted_at = 0.0
        self._scheduled: asyncio.AbstractEventLoop | str | None = None
        """Where a round start is scheduled: a loop, ``"pool"``, or ``None`` (nowhere)."""
        self.rounds = 0
        """Round trips made (one per round)."""
        self.batches = 0
        """Gate writes carried by those rounds (``batches / rounds``: actors per round trip)."""

    def join(self, gate: OutputGate) -> None:
        """(Any thread; the gate holds its right to write and is marked joined.) Have
        ``gate`` written in the next round."""
        loop = running_loop(gate._loop)  # (no system call when it is the gate's loop)
        now = time.monotonic()
        with self._lock:
            self._joined.append(gate)
            self._recent[id(gate)] = now
            if now - self._counted_at > ACTIVE_WINDOW_S:
                self._count_active(now)
            pending = self._scheduled
            if loop is not None and (pending is loop or pending is None) and len(self._joined) >= self._round_size():
                gates, self._joined = self._joined, []  # a full round: send it now
                full = True
            else:
                full = False
            if not full:
                if pending == "pool" or (isinstance(pending, asyncio.AbstractEventLoop)
                                         and (pending is loop or pending.is_running())):
                    return  # the start already scheduled takes it
                self._scheduled = "pool" if loop is None else loop
        if full:
            self._send(gates, loop)  # type: ignore[arg-type]
        elif loop is not None:
            loop.call_soon(self._start, loop)
        else:
            self._pool.submit(self._start_here)

    def _round_size(self) -> int:
        """(Lock held.) Joined gates that make a round full: a share
        (1 / :data:`ROUNDS_PER_CYCLE`) of the actors that wrote lately, at least
        :data:`MIN_ROUND`, so a burst of commits leaves in a few rounds whose first ones
        are in flight while the loop still runs the burst's last actions. A round the
        event loop waits for is full at once when one actor wrote lately: it leaves
        from the commit itself, without a loop iteration to gather others."""
        if self.store.loop_writes:
            if len(self._recent) <= 1:
                # One writer lately (this one; ``_recent`` also holds the actors that
                # joined since the last count): nobody to wait for, no loop iteration.
                return 1
            return max(LOOP_MIN_ROUND, self._active // LOOP_ROUNDS_PER_CYCLE)
        return max(MIN_ROUND, self._active // ROUNDS_PER_CYCLE)

    def _count_active(self, now: float) -> None:
        """(Lock held.) Forget actors that did not join for :data:`ACTIVE_WINDOW_S`;
        :attr:`_active` is how many did."""
        horizon = now - ACTIVE_WINDOW_S
        self._recent = {key: seen for key, seen in self._recent.items() if seen >= horizon}
        self._active = len(self._recent)
        self._counted_at = now

    def _take(self) -> list[OutputGate]:
        with self._lock:
            gates, self._joined = self._joined, []
            self._scheduled = None
        return gates

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Event loop ``loop``, the running one.) Send every joined gate in one round."""
        gates = self._take()
        if gates:
            self._send(gates, loop)

    def _send(self, gates: list[OutputGate], loop: asyncio.AbstractEventLoop) -> None:
        """(Event loop.) One round for ``gates``: waited for by this loop when the store
        allows it, else on the pool."""
        if not self.store.loop_writes:
            self._pool.submit(lambda: self._round(gates))
            return
        taken, writes = self._take_round(gates)
        if not taken:
            return
        try:
            group = self.store.start_write_many(writes)  # type: ignore[arg-type]
        except BaseException as exc:
            self._finish(taken, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if group is None:  # the store could not after all: a pool thread writes them
            self._pool.submit(lambda: self._finish(taken, None, writes))
            return
        _LoopRound(self, taken, group, loop).arm()

    def _start_here(self) -> None:
        """(Pool thread.) Run the round of every gate joined by now in this thread."""
        self._round(self._take())

    def _take_round(self, gates: list[OutputGate]) -> tuple[list[tuple[OutputGate, int]], list[tuple[ActorKV, object]]]:
        """Each gate's next merged batch (a gate joined twice counts once; one that left
        is skipped): the gates with their batch counts, and the writes."""
        taken: list[tuple[OutputGate, int]] = []
        writes: list[tuple[ActorKV, object]] = []
        seen: set[int] = set()
        for gate in gates:
            if id(gate) in seen:
                continue
            seen.add(id(gate))
            step = gate._take_for_round()
            if step is None:
                continue
            batch, count = step
            taken.append((gate, count))
            writes.append((gate._group_view, batch))  # type: ignore[arg-type]
        if taken:
            self.rounds += 1
            self.batches += len(taken)
        return taken, writes

    def _round(self, gates: list[OutputGate]) -> None:
        """(Pool thread.) Write each gate's next merged batch in ONE ``write_many``."""
        taken, writes = self._take_round(gates)
        if taken:
            self._finish(taken, None, writes)

    def _finish(self, taken: list[tuple[OutputGate, int]], failure: BaseException | None,
                writes: list[tuple[ActorKV, object]] | None = None,
                results: list[Exception | None] | None = None) -> list[OutputGate]:
        """Apply a round's outcome to its gates: ``results`` (or those of writing
        ``writes`` now, or ``failure`` for every gate). Returns the gates whose waiters
        must be released; released here (one loop wake-up) unless ``results`` were given
        (the loop round releases its own)."""
        post = results is None
        if failure is None and results is None:
            try:
                results = self.store.write_many(writes)  # type: ignore[arg-type]
            except BaseException as exc:  # never strand a gate: each one fails with it
                failure = exc
        if failure is not None:
            for gate, _ in taken:
                gate._written(0, failure)
            if not isinstance(failure, Exception):
                raise failure
            log.error("a group write of %d actors failed: %s", len(taken), failure, exc_info=failure)
            return []
        assert results is not None
        # Every gate's bookkeeping first, then ONE wake-up of the loop for the round
        # (posting per gate would hand the GIL to the loop mid-round, once per actor).
        release = [gate for (gate, count), error in zip(taken, results) if gate._written(count, error)]
        if release and post:
            release_all(release)
        return release


class _LoopRound:
    """A round whose reply the event loop waits for (see the module docstring): armed
    on the loop, finished once, by the loop's callback or by a thread that must wait
    for it and may (:meth:`may_finish_here`)."""

    __slots__ = ("_committer", "_taken", "_group", "_loop", "_thread", "_lock", "_done", "_cancel")

    def __init__(self, committer: GroupCommitter, taken: list[tuple[OutputGate, int]], group: GroupWrite,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._committer = committer
        self._taken = taken
        self._group = group
        self._loop = loop
        self._thread = threading.get_ident()
        """The loop's thread (the round is armed on it)."""
        self._lock = threading.Lock()
        self._done = False
        self._cancel: Any = None

    def arm(self) -> None:
        """(Event loop.) Have the loop finish the round when its reply is there."""
        for gate, _ in self._taken:
            gate._loop_round = self
        self._cancel = self._group.notify(self._loop, self.finish)

    def may_finish_here(self) -> bool:
        """Whether the calling thread may finish the round (:meth:`finish`): it is the
        loop's thread (which would otherwise wait for itself), or the loop no longer
        runs. Any other thread waits for the loop to finish it."""
        return threading.get_ident() == self._thread or not self._loop.is_running()

    def finish(self) -> None:
        """Read the reply (blocking if it is not there yet), apply each gate's result,
        release the waiters. Once; never raises for a batch."""
        with self._lock:
            if self._done:
                return
            self._done = True
        self._disarm()
        results = self._group.finish()
        for gate, _ in self._taken:
            gate._loop_round = None
        release = self._committer._finish(self._taken, None, results=results)
        if not release:
            return
        if threading.get_ident() == self._thread and self._loop.is_running():
            for gate in release:
                if gate._loop is self._loop:
                    gate._release()
                else:
                    release_all([gate])
        else:
            release_all(release)

    def _disarm(self) -> None:
        try:
            if self._cancel is not None:
                self._cancel()
        except RuntimeError:  # the loop is closed: nothing is registered any more
            pass


def release_all(gates: Sequence[OutputGate]) -> None:
    """Post ONE callback per event loop that releases the waiters of every gate in
    ``gates`` (whose :meth:`OutputGate._written` asked for it): a group round wakes each
    loop once, not once per actor."""
    by_inbox: dict[int, tuple[Any, list[OutputGate]]] = {}
    for gate in gates:
        entry = by_inbox.get(id(gate._inbox))
        if entry is None:
            by_inbox[id(gate._inbox)] = (gate._inbox, [gate])
        else:
            entry[1].append(gate)
    for inbox, members in by_inbox.values():
        inbox.post(_release_each, members)


def _release_each(gates: list[OutputGate]) -> None:
    for gate in gates:
        gate._release()


_committers: weakref.WeakKeyDictionary[ThreadPool, dict[int, GroupCommitter]] = weakref.WeakKeyDictionary()
_committers_lock = threading.Lock()


def committer_for(view: CountingKV, pool: ThreadPool) -> tuple[GroupCommitter, ActorKV] | None:
    """The committer ``view``'s writes join and the store view they are made through, or
    ``None`` when they cannot be grouped: the store makes no one-round-trip group
    writes, or ``view`` does not write straight to a store's actor view (a wrapper that
    adds behaviour of its own, e.g. a test's fault injector, keeps its own writes)."""
    inner = getattr(view, "inner", None)
    if type(inner) is not ActorKV or not inner.store.groups_writes:
        return None
    store = inner.store
    with _committers_lock:
        per_pool = _committers.setdefault(pool, {})
        committer = per_pool.get(id(store))
        if committer is None or committer.store is not store:
            committer = per_pool[id(store)] = GroupCommitter(store, pool)
    return committer, inner
