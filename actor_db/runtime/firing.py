"""Firing due schedule entries: one poller per running registry (or serve node).

:class:`Firer` reads the store's due index (:meth:`~actor_db.kv.KVStore.due`: one
bounded read, whatever the number of actors and entries) and hands every due entry to
``dispatch(entry)``, which runs it through the ordinary call path: the registry's own
(:meth:`ActorInstance.call` with :data:`~actor_db.runtime.schedule.FIRE_ACTION`), or a
serve node's routing, which runs it on the actor's owner and forwards it there when
another live node owns it. The fired action's commit removes the entry (or moves it), so
an entry found due twice (two pollers, a poll during the run) runs once: the second
dispatch finds it gone or moved and does nothing.

When to poll: at once again when a full page was due; else when the next known entry is
due, or after ``poll_interval_s`` at the latest (entries set by other processes since
the last poll are seen then; an action of this process that sets an entry due sooner
wakes the poller: :meth:`Firer.notify`). So, when nothing is due, the cost is one store
round trip per ``poll_interval_s`` per process (a Redis Cluster: one per primary).

Invariants:

- At most ``concurrency`` dispatches run at once; an entry is dispatched at most once at
  a time by one poller (keyed by actor, entry and due time), and not again from a poll
  whose read began before that dispatch ended (the read may predate its commit; a poll
  begun after it sees the commit). Nothing is lost: a later poll lists what is still due.
- Due entries a poll listed beyond the free dispatch slots wait in the *backlog* (in
  due order, with the poll's start time, under the same rule) and start as slots free
  up, so a backlog of due entries costs one poll per page, not one per finished
  dispatch; the next poll replaces the backlog with what it reads (at the latest
  ``poll_interval_s`` later, at once when the backlog runs out after a full page, or
  when this process sets an entry due sooner).
- A dispatch's failure (a placement error, a store error) is logged and counted; the
  entry stays in the index and is dispatched again at a later poll.
- :meth:`stop` waits for the poll loop and every running dispatch.

Left out: fairness between actors beyond due order; a due page full of entries this
process cannot run (an actor type it does not declare) delays later entries until a
process that declares it runs them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from actor_db.errors import ConfigurationError
from actor_db.kv.base import KVStore
from actor_db.kv.due import DueEntry
from actor_db.runtime.loops import current_loop

log = logging.getLogger(__name__)

__all__ = ["Firer", "ScheduleOptions", "FiringMetrics"]


@dataclass(frozen=True)
class ScheduleOptions:
    """How a registry fires due entries.

    :ivar enabled: fire at all (``False``: entries are kept but never run here).
    :ivar poll_interval_s: longest wait between two due-index reads while nothing is
        known to be due: the lateness bound for entries set by other processes, and the
        idle cost (one round trip per interval).
    :ivar page: due entries read per poll (the bound on one poll's cost).
    :ivar concurrency: entries run at once by this process.
    :ivar tick_s: shortest wait between two polls that found work: entries due within
        one tick start together (their commits share KV writes), at the price of up to
        one tick of lateness.
    """

    enabled: bool = True
    poll_interval_s: float = 0.1
    page: int = 256
    concurrency: int = 64
    tick_s: float = 0.01

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigurationError(f"enabled must be True or False, not {self.enabled!r}")
        if isinstance(self.poll_interval_s, bool) or not isinstance(self.poll_interval_s, (int, float)) \
                or not 0.001 <= self.poll_interval_s <= 3600:
            raise ConfigurationError(f"poll_interval_s must be seconds in [0.001, 3600], not {self.poll_interval_s!r}")
        if isinstance(self.tick_s, bool) or not isinstance(self.tick_s, (int, float)) \
                or not 0 <= self.tick_s <= self.poll_interval_s:
            raise ConfigurationError(f"tick_s must be seconds in [0, poll_interval_s], not {self.tick_s!r}")
        for name in ("page", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, not {value!r}")


@dataclass
class FiringMetrics:
    """Counters of one poller (``Registry.schedule_metrics()``)."""

    polls: int = 0
    """Due-index reads (store round trips: one each, a Redis Cluster one per primary)."""
    dispatched: int = 0
    """Entries handed to the call path."""
    skipped: int = 0
    """Due entries a poll listed whose run had ended after that poll's read began (read
    before the run's commit landed): not dispatched again."""
    outcomes: dict[str, int] | None = None
    """Dispatches by result: ``fired``, ``retry``, ``failed``, ``stale``, ``error``."""
    lateness_ms: list[float] | None = None
    """The last :data:`LATENESS_SAMPLES` start delays (dispatch time - due time, ms, store time)."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schedule_polls_total": self.polls, "schedule_dispatched_total": self.dispatched,
                               "schedule_skipped_total": self.skipped}
        for name, count in (self.outcomes or {}).items():
            out[f"schedule_{name}_total"] = count
        return out


LATENESS_SAMPLES = 100_000


class Firer:
    """The poll loop of one process over ``store`` (see the module docstring).

    :param dispatch: ``await dispatch(entry)`` runs one due entry; its result (a dict
        with ``outcome``) is counted; it may raise (logged, counted as ``error``).
    :param known: ``known(actor_id)`` tells whether this process can run that actor's
        entries (its type is declared); others are left to other processes.
    """

    def __init__(self, store: KVStore, dispatch: Callable[[DueEntry], Awaitable[Any]],
                 known: Callable[[str], bool], options: ScheduleOptions) -> None:
        self.store = store
        self.options = options
        self.metrics = FiringMetrics(outcomes={"fired": 0, "retry": 0, "failed": 0, "stale": 0, "error": 0},
                                     lateness_ms=[])
        self._dispatch = dispatch
        self._known = known
        self._task: asyncio.Task[None] | None = None
        self._running: dict[tuple[str, bytes, int], asyncio.Task[None]] = {}
        self._done_at: dict[tuple[str, bytes, int], float] = {}
        """Loop time each dispatch finished, kept while a poll started before it may
        still be answered: such a poll can still list the entry (read before the run's
        commit), so it is not dispatched again from that poll."""
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._unknown_logged: set[str] = set()
        self._polling: asyncio.Future[Any] | None = None
        """The due-index read in flight on an executor thread (or done)."""
        self._wake_at = 0.0
        """Loop time of the next planned poll while the loop sleeps (0: it is polling)."""
        self._backlog: collections.deque[DueEntry] = collections.deque()
        """Entries the last poll listed that found no free slot, in due order."""
        self._backlog_read = 0.0
        """Loop time the poll that listed the backlog began."""
        self._backlog_more = False
        """That poll read a full page: poll at once when the backlog runs out."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start polling on the running event loop (idempotent)."""
        if self.running:
            return
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="actor-db-schedules")

    def notify(self, due_ms: int) -> None:
        """(Event loop.) An action of this process set an entry due at ``due_ms``: poll
        then if that is before the next planned poll (a few ms later at the earliest,
        so the action's commit has landed)."""
        if self._wake is None or self._stopping:
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.002, (due_ms - self.store.now_ms()) / 1000.0)
        if at < self._wake_at - 0.001:
            self._wake_at = at
            loop.call_at(at, self._wake.set)

    async def stop(self) -> None:
        """Stop polling and wait for the running dispatches (idempotent)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        polling, self._polling = self._polling, None
        if polling is not None:
            await asyncio.wait([polling])
        running = list(self._running.values())
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        options = self.options
        failures = 0
        while not self._stopping:
            assert self._wake is not None
            self._wake.clear()
            try:
                # (shielded: stop() waits for a read in flight before the store may close)
                poll_started = loop.time()
                self._polling = loop.run_in_executor(None, self.store.due, options.page)
                now, due, next_ms = await asyncio.shield(self._polling)
                failures = 0
            except Exception as exc:  # the store is down: try again later, never die
                failures += 1
                delay = min(5.0, options.poll_interval_s * (2 ** min(failures, 6)))
                log.warning("schedules: reading the due index failed (%s); retrying in %.2f s", exc, delay)
                await self._sleep(delay)
                continue
            self.metrics.polls += 1
            self._backlog = collections.deque(due)  # (this read replaces the last one's)
            self._backlog_read = poll_started
            self._backlog_more = len(due) >= options.page
            started = self._start_backlog()
            done_at = self._done_at
            if done_at:  # (later polls start after these ended: they see their commits)
                self._done_at = {t: at for t, at in done_at.items() if at >= poll_started}
            # With a backlog, slots free up one by one and take the next of it
            # (_finished), which wakes this loop when it runs out after a full page.
            if len(due) >= options.page and started and not self._backlog:
                await asyncio.sleep(0)  # more is due: read the next page at once
                continue
            wait = options.poll_interval_s
            if next_ms is not None:
                wait = min(wait, max(0.0, (next_ms - now) / 1000.0))
            # At least one tick between polls: the entries due within it start together,
            # so their commits share group-commit rounds (one fsync for many on LMDB).
            wait = max(wait, options.tick_s)
            await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self._wake_at = asyncio.get_running_loop().time() + seconds
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._wake_at = 0.0

    def _start_backlog(self) -> int:
        """Start backlog entries while a dispatch slot is free; returns how many started.
        An entry is dropped if it runs already, if its run ended after the read that
        listed it began (that read may predate the run's commit), or if this process
        does not declare its type."""
        backlog, running, done_at = self._backlog, self._running, self._done_at
        read = self._backlog_read
        concurrency = self.options.concurrency
        started = 0
        while backlog and len(running) < concurrency:
            entry = backlog.popleft()
            token = (entry.actor_id, entry.entry, entry.due_ms)
            if token in running:
                continue
            if done_at.get(token, -1.0) >= read:
                self.metrics.skipped += 1  # (its run ended after this read began: already done)
                continue
            if not self._known(entry.actor_id):
                if entry.actor_id.partition("/")[0] not in self._unknown_logged:
                    self._unknown_logged.add(entry.actor_id.partition("/")[0])
                    log.warning("schedules: entries of actor %s are due but its type is not declared here; "
                                "left to a process that declares it", entry.actor_id)
                continue
            started += 1
            self._start(entry)
        return started

    def _start(self, entry: DueEntry) -> None:
        token = (entry.actor_id, entry.entry, entry.due_ms)
        self.metrics.dispatched += 1
        late = self.store.now_ms() - entry.due_ms
        samples = self.metrics.lateness_ms
        assert samples is not None
        if len(samples) < LATENESS_SAMPLES:
            samples.append(float(late))
        task = current_loop().create_task(self._run(entry))
        self._running[token] = task
        task.add_done_callback(lambda _: self._finished(token))

    def _finished(self, token: tuple[str, bytes, int]) -> None:
        full = len(self._running) >= self.options.concurrency
        self._running.pop(token, None)
        if self._wake is not None:
            self._done_at[token] = current_loop().time()
        if self._wake is None or self._stopping:
            return
        if self._backlog:
            self._start_backlog()  # the next entry the last poll listed takes the slot
            if self._backlog or not self._backlog_more:
                return
            self._wake.set()  # the backlog ran out after a full page: read the next one
        elif full:
            self._wake.set()  # a slot is free again: look at once

    async def _run(self, entry: DueEntry) -> None:
        outcomes = self.metrics.outcomes
        assert outcomes is not None
        started = time.perf_counter()
        try:
            result = await self._dispatch(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcomes["error"] += 1
            log.warning("schedules: entry %r of actor %s (due %d ms) could not run now: %s: %s", entry.entry,
                        entry.actor_id, entry.due_ms, type(exc).__name__, exc)
            return
        outcome = result.get("outcome", "fired") if isinstance(result, dict) else "fired"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        log.debug("schedules: entry %r of actor %s: %s in %.3f ms", entry.entry, entry.actor_id, outcome,
                  (time.perf_counter() - started) * 1000.0)
