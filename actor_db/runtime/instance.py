"""One actor instance: its mutex, its lifecycle (wake, sleep, destroy) and its actions.

States: ``asleep`` (nothing in memory but counters) → ``awake`` (worker thread, SQLite
connection, state) → ``asleep`` again, or ``destroyed`` (every key deleted; final).

Invariants:

- One :class:`asyncio.Lock` per instance: actions, wake, sleep and destroy of one
  actor never overlap; different actors run concurrently (each has its own worker
  thread, so a slow KV call blocks only its own actor).
- ``c.db`` works only while an action (or ``on_wake``/``on_sleep``, or a migration)
  of this actor runs; after sleep or destroy began it raises
  :class:`~actor_db.errors.ActorShuttingDownError` instead of touching the database.
- Closing runs its cleanup in ``finally``: the connection is closed and the worker
  stopped even when a hook or the KV fails.
- Call cycles fail at once instead of deadlocking. The ContextVar ``_chain`` holds the
  actors whose lock is held on the current call chain (one :class:`_Frame` per lock
  hold: an action, a wake with its migrations and ``on_wake``, a sleep with its
  ``on_sleep``, a destroy). It follows the chain through ``await`` and into tasks
  started meanwhile (asyncio copies the context into a new task). Asking for the lock
  of an actor whose frame on the chain is still active (``A -> B -> A``, or an action
  calling its own actor) raises :class:`~actor_db.errors.ActorCallCycleError` naming
  the chain; a frame stops counting when its lock is released, so a task that outlives
  the action that started it is not refused later.
- An ``apsw`` (or any) error whose cause chain holds a
  :class:`~actor_db.errors.FencedError`, during a wake or an action, reaches the caller
  as a ``FencedError`` (its ``__cause__`` the original error) and the actor is closed
  here: another runtime owns it now.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from types import TracebackType
from typing import Any

import vfs

from actor_db.kv.fencing import fenced_cause
from actor_db.errors import (
    ActionNotFoundError, ActorCallCycleError, ActorDBError, ActorNotFoundError, ActorShuttingDownError, FencedError,
)
from actor_db.runtime.actor import ActorDefinition, Context
from actor_db.runtime.database import ActorConnection, Database
from actor_db.runtime.metrics import CountingKV, StartupMetrics
from actor_db.runtime.startup import start_actor
from actor_db.runtime.state import PersistedState
from actor_db.runtime.worker import Worker

log = logging.getLogger(__name__)

__all__ = ["ActorInstance"]

ASLEEP, AWAKE, DESTROYED = "asleep", "awake", "destroyed"


class _Frame:
    """One hold of an actor's lock on a call chain; :attr:`active` until it is released."""

    __slots__ = ("instance", "active")

    def __init__(self, instance: ActorInstance) -> None:
        self.instance = instance
        self.active = True


_chain: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar("actor_db_call_chain", default=())
"""The actors busy on the current call chain, outermost first (see the module docstring)."""


class _Hold:
    """``async with _Hold(instance, what)``: take the actor's lock and put the actor on
    the call chain until the lock is released.

    :raises ActorCallCycleError: (at construction, before anything else happens) the
        actor is busy further up the current call chain.
    """

    __slots__ = ("_instance", "_chain", "_frame", "_token")

    def __init__(self, instance: ActorInstance, what: str) -> None:
        chain = tuple(frame for frame in _chain.get() if frame.active)
        for frame in chain:
            if frame.instance is instance:
                labels = tuple(f.instance.label for f in chain) + (instance.label,)
                path = " -> ".join(labels)
                log.debug("actor call cycle refused: %s (%s)", path, what)
                raise ActorCallCycleError(
                    f"actor call cycle: {path}: {what} on {instance.label}, which is busy further up this "
                    f"call chain; waiting for it would deadlock", chain=labels)
        self._instance = instance
        self._chain = chain
        self._frame: _Frame | None = None
        self._token: contextvars.Token[tuple[_Frame, ...]] | None = None

    async def __aenter__(self) -> None:
        await self._instance._lock.acquire()
        self._frame = _Frame(self._instance)
        self._token = _chain.set(self._chain + (self._frame,))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._frame is not None and self._token is not None
        self._frame.active = False
        _chain.reset(self._token)
        self._instance._lock.release()


async def _call_user(fn: Any, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class ActorInstance:
    """The runtime side of one actor (type ``definition``, key ``key``).

    :param kv: the actor's KV view (``store.actor(actor_id)``).
    """

    def __init__(self, definition: ActorDefinition, key: str, kv: Any, on_destroyed: Any = None) -> None:
        self.definition = definition
        self.key = key
        self.label = f"{definition.name}/{key}"
        self.kv = CountingKV(kv)
        self.status = ASLEEP
        self._lock = asyncio.Lock()
        self._worker: Worker | None = None
        self._core: ActorConnection | None = None
        self._database: Database | None = None
        self._closing = False
        self._starting = False
        self._startup = StartupMetrics()
        self._vfs_closed = vfs.VFSStats()
        self._starts = 0
        self._actions = 0
        self._generation = 0
        self._idle_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_destroyed = on_destroyed

    # ------------------------------------------------------------------ gate
    def _gate(self) -> ActorConnection:
        core = self._core
        if self.status != AWAKE or self._closing or core is None:
            raise ActorShuttingDownError(f"actor {self.label} is shutting down (or asleep): query not run")
        if not (core.action_active or self._starting):
            raise ActorDBError(f"actor {self.label}: c.db may only be used while one of its actions runs")
        return core

    # ------------------------------------------------------------------ wake
    async def _wake(self) -> None:
        worker = Worker(f"actor-db:{self.label}")
        database = Database(worker, self._gate)
        self._worker, self._database = worker, database

        def make_core(state: PersistedState) -> ActorConnection:
            self._core = ActorConnection(self.kv, state, self.label)
            return self._core

        self._starting = True
        self.status = AWAKE
        trips0 = self.kv.round_trips
        try:
            core, metrics = await start_actor(self.definition, self.key, self.kv, worker, make_core, database)
            self._starting = False
            if self.definition.on_wake is not None:
                started = time.perf_counter()
                with metrics.user("on_wake"):
                    await self._run_as_action(self.definition.on_wake)
                metrics.total_ms += (time.perf_counter() - started) * 1000.0
                metrics.kv_round_trips = self.kv.round_trips - trips0
        except BaseException as exc:
            fenced = fenced_cause(exc) if isinstance(exc, Exception) else None
            try:
                await self._close_worker()
            except Exception:  # keep the error that stopped the wake; the close's is logged
                log.log(logging.DEBUG if fenced is not None else logging.WARNING,
                        "actor %s: closing after a failed wake failed too", self.label, exc_info=True)
            if fenced is not None and fenced is not exc:
                log.warning("actor %s was taken over by another runtime while waking: %s", self.label, fenced)
                raise FencedError(f"{fenced} (while waking actor {self.label}; it was not started here)") from exc
            raise
        finally:
            self._starting = False
        self._startup = metrics
        self._starts += 1
        log.info("actor %s awake (new=%s, %d KV round trips, %.3f ms)", self.label, metrics.is_new,
                 metrics.kv_round_trips, metrics.total_ms)

    async def _close_worker(self) -> None:
        """Close the connection and stop the worker; always leaves the actor not awake."""
        worker, core = self._worker, self._core
        self._fold_stats()
        try:
            if worker is not None:
                await worker.close(core.close if core is not None else None)
        finally:
            self._worker = self._core = self._database = None
            if self.status == AWAKE:
                self.status = ASLEEP
            self._closing = False

    # ------------------------------------------------------------------ actions
    def _context(self) -> Context:
        assert self._core is not None
        return Context(self.definition.name, self.key, self._core.state,
                       self._database if self.definition.database is not None else None)

    async def _run_as_action(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(c, *args)`` with the implicit transaction (lock already held)."""
        worker, core = self._worker, self._core
        assert worker is not None and core is not None
        core.begin_action()
        try:
            result = await _call_user(fn, self._context(), *args)
        except BaseException:
            await worker.run(core.end_action, False)
            raise
        await worker.run(core.end_action, True)
        return result

    async def call(self, action: str, *args: Any) -> Any:
        """Run ``action`` with ``args``, waking the actor first if needed.

        :raises ActionNotFoundError: the type has no such action.
        :raises ActorNotFoundError: the actor was destroyed.
        :raises ActorCallCycleError: this actor is busy further up the calling chain
            (``A -> B -> A``, or an action calling its own actor).
        :raises FencedError: another runtime took the actor over (during the wake or
            the action); the actor was closed here.
        """
        fn = self.definition.actions.get(action)
        if fn is None:
            raise ActionNotFoundError(
                f"actor type {self.definition.name!r} has no action {action!r} "
                f"(actions: {sorted(self.definition.actions)})")
        hold = _Hold(self, f"action {action!r} called")
        self._generation += 1
        async with hold:
            if self.status == DESTROYED:
                raise ActorNotFoundError(f"actor {self.label} was destroyed")
            if self.status == ASLEEP:
                await self._wake()
            try:
                self._actions += 1
                return await self._run_as_action(fn, *args)
            except Exception as exc:
                fenced = fenced_cause(exc)
                if fenced is None:
                    raise
                # Another runtime owns the actor now: this instance must stop writing.
                log.warning("actor %s was taken over by another runtime; closing it here: %s", self.label, fenced)
                self._closing = True
                try:
                    await self._close_worker()
                except Exception:  # the rollback write-back is fenced too
                    log.debug("actor %s: close after takeover failed", self.label, exc_info=True)
                if fenced is exc:
                    raise
                raise FencedError(f"{fenced} (during action {action!r} of {self.label}; it was closed here)") from exc
            finally:
                self._schedule_idle()

    async def wake(self) -> None:
        """Start the actor now if it is asleep (creating it if it does not exist).

        :raises FencedError: another runtime took the actor over while it woke.
        :raises ActorCallCycleError: called from this actor's own action (chain).
        """
        async with _Hold(self, "wake"):
            if self.status == DESTROYED:
                raise ActorNotFoundError(f"actor {self.label} was destroyed")
            if self.status == ASLEEP:
                await self._wake()
                self._schedule_idle()

    # ------------------------------------------------------------------ sleep / destroy
    def _schedule_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        timeout = self.definition.options.idle_timeout_s
        if timeout is None or self.status != AWAKE:
            return
        generation = self._generation
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._idle_handle = None
            if generation == self._generation and self.status == AWAKE:
                task = loop.create_task(self._idle_sleep(generation))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        self._idle_handle = loop.call_later(timeout, fire)

    async def _idle_sleep(self, generation: int) -> None:
        try:
            async with _Hold(self, "idle sleep"):
                if generation == self._generation and self.status == AWAKE:
                    log.debug("actor %s idle for %.3f s: going to sleep", self.label,
                              self.definition.options.idle_timeout_s or 0.0)
                    await self._sleep_locked()
        except Exception:  # a background task: report, never lose
            log.exception("actor %s: idle sleep failed", self.label)

    async def _sleep_locked(self) -> None:
        if self.status != AWAKE:
            return
        try:
            if self.definition.on_sleep is not None:
                try:
                    await self._run_as_action(self.definition.on_sleep)
                except Exception:
                    log.exception("actor %s: on_sleep failed; going to sleep anyway", self.label)
        finally:
            self._closing = True
            await self._close_worker()
        log.info("actor %s asleep", self.label)

    def _fold_stats(self) -> None:
        if self._core is not None:
            stats = self._core.stats()
            for name, value in stats.as_dict().items():
                setattr(self._vfs_closed, name, getattr(self._vfs_closed, name) + value)

    async def sleep(self) -> None:
        """Let in-flight actions finish, then close the connection and free memory.

        :raises ActorCallCycleError: called from this actor's own action (chain): it
            would wait for that action forever.
        """
        hold = _Hold(self, "sleep")
        self._generation += 1
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        async with hold:
            await self._sleep_locked()

    async def destroy(self) -> None:
        """Close the actor and delete every key it has (one KV round trip). Final.

        :raises ActorCallCycleError: called from this actor's own action (chain).
        """
        hold = _Hold(self, "destroy")
        self._generation += 1
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        async with hold:
            if self.status == DESTROYED:
                return
            try:
                if self.status == AWAKE:
                    self._closing = True
                    await self._close_worker()
            finally:
                self.status = DESTROYED
                try:
                    await asyncio.to_thread(self.kv.delete_all)
                finally:
                    if self._on_destroyed is not None:
                        self._on_destroyed(self)
            log.info("actor %s destroyed", self.label)

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> dict[str, Any]:
        """Startup metrics of the last start plus lifetime counters (see the issue 3 names)."""
        stats = self._vfs_closed.snapshot()
        if self._core is not None:
            for name, value in self._core.stats().as_dict().items():
                setattr(stats, name, getattr(stats, name) + value)
        out = self._startup.as_dict()
        out.update({
            "kv_round_trips": self.kv.round_trips,
            "kv_reads": self.kv.reads,
            "kv_writes": self.kv.writes,
            "vfs_preload_hits": stats.preload_hits,
            "vfs_cache_hits": stats.cache_hits,
            "vfs_live_reads": stats.live_reads,
            "vfs_commits": stats.commits,
            "starts_total": self._starts,
            "actions_total": self._actions,
            "status": self.status,
        })
        return out
