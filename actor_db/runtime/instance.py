"""One actor instance: its mutex, its lifecycle (wake, sleep, destroy) and its actions.

States: ``asleep`` (nothing in memory but counters) → ``awake`` (worker queue, SQLite
connection, state, output gate) → ``asleep`` again, or ``destroyed`` (every key
deleted; final).

Invariants:

- One :class:`asyncio.Lock` per instance: actions, wake, sleep and destroy of one
  actor never overlap; different actors run concurrently (their SQLite calls run on the
  shared pool, so a slow KV call blocks only its own actor, up to the pool's cap).
- Output gate (on unless the type says ``output_gate=False``): an action's commit is
  queued in the actor's :class:`~actor_db.runtime.gate.OutputGate` and the lock is
  released when the action returns, so the next action runs at once and sees its data;
  the caller gets the result (or the action's error) only when every batch queued up to
  the action's end is durable. When a gate write fails, every caller waiting on it and
  every action that ran on the same in-memory state gets
  :class:`~actor_db.errors.CommitFailedError` (or ``FencedError``), the SQLite
  connection is discarded (the actor goes ``asleep``) and the next call re-opens the
  actor from the KV. Without a gate, a commit waits for the KV inside the action, as
  before.
- ``c.db`` works only while an action (or ``on_wake``/``on_sleep``, or a migration)
  of this actor runs; after sleep or destroy began it raises
  :class:`~actor_db.errors.ActorShuttingDownError` instead of touching the database.
- Closing runs its cleanup in ``finally``: the connection is closed and the worker
  stopped even when a hook or the KV fails.
- Call cycles fail at once instead of deadlocking. The ContextVar ``_chain`` holds the
  actors whose lock is held on the current call chain (one :class:`_Hold` per lock
  hold: an action, a wake with its migrations and ``on_wake``, a sleep with its
  ``on_sleep``, a destroy). It follows the chain through ``await`` and into tasks
  started meanwhile (asyncio copies the context into a new task). Asking for the lock
  of an actor whose frame on the chain is still active (``A -> B -> A``, or an action
  calling its own actor) raises :class:`~actor_db.errors.ActorCallCycleError` naming
  the chain; a frame stops counting when its lock is released, so a task that outlives
  the action that started it is not refused later.
- A new actor's first call (``ActorOptions.speculative_create``): the first call to an
  instance that never started in this process runs speculatively on the image a NEW
  actor would have (a speculative :class:`OutputGate`, no KV call), and its writes, the
  migrated image and the ownership claim go out in ONE conditional round trip
  (:meth:`~actor_db.kv.ActorKV.create_or_preload`). Created: the call's result is
  durable, it is released. The actor exists: everything the speculation did is
  discarded unwritten (its caller saw nothing: the output gate held it), the actor
  wakes from the preload that came back, and the call runs again. A call to another
  actor from a speculative run, or anything that needs the KV, aborts the speculation
  before it happens; the call then runs the ordinary way.
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
from types import CoroutineType, TracebackType
from typing import Any

import apsw

import vfs
from vfs.keys import FILE_MAIN, chunk_range
from vfs.preload import PreloadMap

from actor_db.kv.fencing import fenced_cause
from actor_db.errors import (
    ActionNotFoundError, ActorCallCycleError, ActorDBError, ActorNotFoundError, ActorShuttingDownError,
    CommitFailedError, FencedError, KVError, SpeculationAbortedError,
)
from actor_db.runtime.actor import ActorDefinition, Context
from actor_db.runtime.database import ActorConnection, Database
from actor_db.runtime.gate import OutputGate
from actor_db.runtime.idle import idle_timers_for
from actor_db.runtime.inline import Runner
from actor_db.runtime.metrics import CountingKV, StartupMetrics
from actor_db.runtime.pool import ThreadPool
from actor_db.runtime.keys import SCHEDULE_RECORDS
from actor_db.runtime.loops import current_loop, running_loop
from actor_db.runtime.prefetch import Lines, actor_lines, prefetch
from actor_db.runtime.schedule import (
    FIRE_ACTION, Entry, PendingSchedule, decode_record, decode_records, failure_changes, fired_changes, record_key,
)
from actor_db.runtime.speculation import SpeculationPolicy
from actor_db.runtime.startup import preload_request, start_actor
from actor_db.runtime.state import PersistedState
from actor_db.runtime.worker import Worker

log = logging.getLogger(__name__)

_STALE_READ_ERRORS = (apsw.CorruptError, apsw.NotADBError)
"""What SQLite reports when it reads pages of two committed states mixed (a runtime
that lost its actor: :meth:`ActorInstance._takeover`)."""

__all__ = ["ActorInstance"]

ASLEEP, AWAKE, DESTROYED = "asleep", "awake", "destroyed"

_COUNTERS = ("output_gate_batches", "output_gate_flushes", "output_gate_merged_batches", "inline_calls",
             "inline_misses", "worker_calls")
"""Lifetime counters of ``handle.metrics()`` (summed over wakes): batches handed to the
output gate, KV writes it made (round trips), batches that rode in another's write,
SQLite calls run inline on the event loop / on the worker, inline calls that missed."""


_chain: contextvars.ContextVar[tuple[_Hold, ...]] = contextvars.ContextVar("actor_db_call_chain", default=())
"""The actors busy on the current call chain, outermost first (see the module docstring)."""


class _Hold:
    """``async with _Hold(instance, what)``: take the actor's lock and put the actor on
    the call chain until the lock is released (or ``await hold.acquire()`` ... ``finally:
    hold.release()``). The hold is its own frame on the chain: :attr:`instance`, and
    :attr:`active` until it is released.

    :raises ActorCallCycleError: (at construction, before anything else happens) the
        actor is busy further up the current call chain.
    """

    __slots__ = ("instance", "active", "_chain", "_token")

    def __init__(self, instance: ActorInstance, what: str, action: str | None = None) -> None:
        chain = _chain.get()
        if chain:  # (a call from outside every action has no chain: nothing to check)
            chain = tuple(frame for frame in chain if frame.active)
        for frame in chain:
            speculation = frame.instance._speculation
            if speculation is not None:
                # A speculative first call must not reach another actor: its run may be
                # discarded and repeated (the module docstring). Stop it before anything happens.
                speculation.speculation_aborted = True
                raise SpeculationAbortedError(f"actor {frame.instance.label}: a speculative first call reached "
                                              f"{instance.label}; it runs again the ordinary way")
        for frame in chain:
            if frame.instance is instance:
                if action is not None:  # (formatted only here: an action call names itself)
                    what = f"{what} {action!r} called"
                labels = tuple(f.instance.label for f in chain) + (instance.label,)
                path = " -> ".join(labels)
                log.debug("actor call cycle refused: %s (%s)", path, what)
                raise ActorCallCycleError(
                    f"actor call cycle: {path}: {what} on {instance.label}, which is busy further up this "
                    f"call chain; waiting for it would deadlock", chain=labels)
        self.instance = instance
        self.active = False
        self._chain = chain
        self._token: contextvars.Token[tuple[_Hold, ...]] | None = None

    async def acquire(self) -> None:
        await self.instance._lock.acquire()
        self.active = True
        self._token = _chain.set(self._chain + (self,))

    def release(self) -> None:
        assert self.active and self._token is not None
        self.active = False
        _chain.reset(self._token)
        self.instance._lock.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


_MAIN_CHUNKS = chunk_range(FILE_MAIN)


def _database_preloaded(core: ActorConnection) -> bool:
    """Whether the startup preload holds every chunk of the actor's database (it came
    whole within the budget and no migration cleared it): then no query can miss."""
    con = core.con
    if con is None:
        return False
    start, end = _MAIN_CHUNKS
    return con.kv_file.preload.covers(start, end)


class ActorInstance:
    """The runtime side of one actor (type ``definition``, key ``key``).

    :param kv: the actor's KV view (``store.actor(actor_id)``).
    :param pool: the runtime's thread pool (its SQLite calls and KV writes run there).
    """

    __slots__ = (
        "_actions", "_closing", "_core", "_counters", "_database", "_generation", "_idle_deadline",
        "_idle_generation", "_idle_seq", "_idle_loop", "_lock", "_on_destroyed", "_outgate", "_pool", "_prefetch",
        "_resets",
        "_policy", "_runner", "_speculation", "_starting", "_starts", "_startup", "_tasks", "_vfs_closed", "_worker",
        "_schedule_counts", "definition", "key", "notify_due",
        "kv", "label", "status", "__weakref__",
    )

    def __init__(self, definition: ActorDefinition, key: str, kv: Any, pool: ThreadPool,
                 on_destroyed: Any = None, speculation: SpeculationPolicy | None = None) -> None:
        self.definition = definition
        self.key = key
        self.label = f"{definition.name}/{key}"
        self.kv = CountingKV(kv)
        self.status = ASLEEP
        self._pool = pool
        self._lock = asyncio.Lock()
        self._worker: Worker | None = None
        self._runner: Runner | None = None
        self._outgate: OutputGate | None = None
        self._policy = speculation if speculation is not None else SpeculationPolicy(definition.name)
        """When first calls of this type speculate (shared by the registry's actors of the type)."""
        self._speculation: OutputGate | None = None
        """While a speculative first call runs: its gate (:meth:`_speculative_call`)."""
        self._core: ActorConnection | None = None
        self._database: Database | None = None
        self._prefetch: Lines = None
        """While awake: the cache lines a call touches first (:mod:`actor_db.runtime.prefetch`)."""
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._resets = 0
        self._closing = False
        self._starting = False
        self._startup = StartupMetrics()
        self._vfs_closed = vfs.VFSStats()
        self._starts = 0
        self._actions = 0
        self._generation = 0
        self._idle_seq = 0
        """The seq of the actor's entry in its loop's idle timers (0: none)."""
        self._idle_deadline = 0.0
        """Loop time at which the actor goes to sleep if no call comes first."""
        self._idle_generation = 0
        """:attr:`_generation` when the deadline was set (a later call postpones it)."""
        self._idle_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] | None = None
        """Background tasks of the actor (idle sleep, reset) while any runs."""
        self._on_destroyed = on_destroyed
        self._schedule_counts = {"fired": 0, "retry": 0, "failed": 0}
        """Schedule entries run here: succeeded, failed and retried later, failed for good."""
        self.notify_due: Any = None
        """``notify_due(due_ms)`` (the registry's poller) when an action sets an entry."""

    # ------------------------------------------------------------------ c.db's gate
    def _gate(self) -> ActorConnection:
        core = self._core
        if self.status != AWAKE or self._closing or core is None:
            raise ActorShuttingDownError(f"actor {self.label} is shutting down (or asleep): query not run")
        if not (core.action_active or self._starting):
            raise ActorDBError(f"actor {self.label}: c.db may only be used while one of its actions runs")
        return core

    # ------------------------------------------------------------------ wake
    async def _wake(self, preload: PreloadMap | None = None, speculative: bool = False,
                    trips0: int | None = None) -> StartupMetrics:
        """Start the actor (lock held, asleep); returns the start's metrics.

        :param preload: the startup preload another call already brought with ownership.
        :param speculative: start as a new, empty actor with no KV call, its gate
            speculative and left held: the caller commits or discards the speculation
            and then calls :meth:`_started`.
        :param trips0: the actor's round-trip count the start's cost is counted from.
        """
        options = self.definition.options
        worker = Worker(self._pool, self.label, instant=self.kv.instant_writes)
        view: CountingKV | OutputGate = self.kv
        if options.output_gate:
            # Held while starting: a new actor's creation batch, its migrations and
            # on_wake's commit go out as one KV write at the end of the start.
            gate = OutputGate(self.kv, self._pool, current_loop(), self.label,
                              on_failure=self._gate_failed, held=True, speculative=speculative)
            view = self._outgate = gate
        runner = Runner(worker, view, inline=options.inline_queries)
        database = Database(runner, self)
        self._worker, self._runner, self._database = worker, runner, database

        def make_core(state: PersistedState) -> ActorConnection:
            self._core = ActorConnection(view, state, self.label)
            return self._core

        self._starting = True
        self.status = AWAKE
        if trips0 is None:
            trips0 = self.kv.round_trips
        try:
            core, metrics = await start_actor(self.definition, self.key, view, worker, make_core, database,
                                              preload=preload, speculative=speculative)
            self._starting = False
            if self.definition.on_wake is not None:
                started = time.perf_counter()
                with metrics.user("on_wake"):
                    await self._run_as_action(self.definition.on_wake)
                metrics.total_ms += (time.perf_counter() - started) * 1000.0
            if speculative:
                return metrics
            if self._outgate is not None:
                # The start's writes (creation, migrations, on_wake) are durable before
                # the actor serves anything: one KV write when they fit one batch.
                started = time.perf_counter()
                self._outgate.open()
                await self._outgate.wait(self._outgate.enqueued)
                metrics.total_ms += (time.perf_counter() - started) * 1000.0
            metrics.kv_round_trips = self.kv.round_trips - trips0
        except BaseException as exc:
            fenced = fenced_cause(exc) if isinstance(exc, Exception) else None
            gate_failed = self._outgate is not None and self._outgate.failure is not None
            try:
                await self._close_worker()
            except Exception:  # keep the error that stopped the wake; the close's is logged
                log.log(logging.DEBUG if fenced is not None else logging.WARNING,
                        "actor %s: closing after a failed wake failed too", self.label, exc_info=True)
            if fenced is not None and (fenced is not exc or gate_failed):
                log.warning("actor %s was taken over by another runtime while waking: %s", self.label, fenced)
                raise FencedError(f"{fenced} (while waking actor {self.label}; it was not started here)") from exc
            raise
        finally:
            self._starting = False
        self._started(metrics)
        return metrics

    def _started(self, metrics: StartupMetrics) -> None:
        """(Lock held, the start's writes durable.) The actor is ready: record it."""
        if metrics.is_new:
            self._policy.created()
        self._startup = metrics
        self._starts += 1
        if metrics.is_new and self._core is not None:
            # A new actor's keys were all absent (its state record is the first written,
            # and destroy deletes every key): it has no schedule entry, none to read.
            self._core.schedule.known = {}
        if self._core is not None:
            self._prefetch = actor_lines(
                (self, self._lock, self._outgate, self._runner, self._worker, self.kv, self._database)
                + self._core.hot_objects(), self._core.sqlite_pointer())
        if self._core is not None and self._runner is not None and _database_preloaded(self._core):
            self._runner.assume_local()
        log.info("actor %s awake (new=%s, %d KV round trips, %.3f ms)", self.label, metrics.is_new,
                 metrics.kv_round_trips, metrics.total_ms)

    def _may_speculate(self) -> bool:
        """Whether a call that wakes the actor now may run speculatively as a new
        actor's first call: the type allows it, this instance never started in this
        process (an actor it started before exists), and the store can create an actor
        in its ownership claim."""
        options = self.definition.options
        return (options.speculative_create and options.output_gate and self._starts == 0 and self._policy.active
                and self.kv.supports_create)

    async def _speculative_call(self, fn: Any, args: tuple[Any, ...]) -> tuple[Any, Exception | None] | None:
        """(Lock held, asleep.) Run the first call of an actor assumed new: start it on
        an empty image and run ``fn`` with no KV call, then send the claim, the image
        and the call's writes in ONE conditional round trip (the module docstring).
        ``fn`` is ``None`` for a wake without an action.

        :returns: ``(result, error)`` of the call when the actor was created by it (the
            call's writes are durable); ``None`` when the call must run the ordinary way:
            the actor existed (it is awake now, woken from the preload that came back)
            or the speculation was aborted (it is asleep; nothing was sent).
        :raises CommitFailedError: the round trip failed (whether the creation was
            applied is unknown; the actor stays asleep and re-opens from the KV).
        :raises PlacementError: the claim was refused before or in the round trip, e.g.
            :class:`~actor_db.errors.ActorOwnedElsewhereError` (nothing was applied).
        """
        trips0 = self.kv.round_trips
        result: Any = None
        error: Exception | None = None
        try:
            metrics = await self._wake(speculative=True, trips0=trips0)
        except Exception as exc:  # (e.g. a migration failed on the empty image: the ordinary wake decides)
            log.debug("actor %s: speculative start stopped (%s: %s); waking the ordinary way", self.label,
                      type(exc).__name__, exc)
            return None
        gate, worker = self._outgate, self._worker
        assert gate is not None and worker is not None
        self._speculation = gate
        try:
            if fn is not None:
                self._actions += 1
                try:
                    result = await self._run_as_action(fn, *args)
                except Exception as exc:
                    error = exc
        except BaseException:
            await self._discard_speculation()
            raise
        finally:
            self._speculation = None
        if gate.speculation_aborted or isinstance(error, SpeculationAbortedError):
            if fn is not None:
                self._actions -= 1
            await self._discard_speculation()
            return None
        request = preload_request(self.definition.options, self.definition.database is not None)
        started = time.perf_counter()
        try:
            with metrics.internal("preload"):  # (the claim's round trip: the start's preload phase)
                found = await worker.run(gate.commit_speculation, request)
        except SpeculationAbortedError:
            if fn is not None:
                self._actions -= 1
            await self._discard_speculation()
            return None
        except KVError as exc:
            await self._discard_speculation()
            # The creation may have been applied (a lost reply), as a commit's may.
            raise CommitFailedError(
                f"actor {self.label}: the KV call creating the actor with its first call's writes failed "
                f"({type(exc).__name__}: {exc}); whether it was applied is unknown; the next call re-opens the "
                "actor from the KV") from exc
        except BaseException:
            await self._discard_speculation()
            raise
        if found is None:
            self._policy.created()
            gate.open()
            metrics.total_ms += (time.perf_counter() - started) * 1000.0
            metrics.kv_round_trips = self.kv.round_trips - trips0
            self._started(metrics)
            return result, error
        # The actor exists: what ran was never seen; wake it from what came back.
        self._policy.found_existing()
        if fn is not None:
            self._actions -= 1
        await self._discard_speculation()
        log.debug("actor %s exists: its speculative first call was discarded", self.label)
        elapsed_ms = metrics.internal_ms["preload"]
        woken = await self._wake(preload=found, trips0=trips0)
        woken.internal_ms["preload"] += elapsed_ms
        woken.total_ms += elapsed_ms
        return None

    async def _discard_speculation(self) -> None:
        """(Lock held.) Close a speculative start with nothing written."""
        gate = self._outgate
        if gate is not None:
            gate.discard_speculation()
        self._closing = True
        try:
            await self._close_worker()
        except Exception:
            log.debug("actor %s: closing a discarded speculation failed", self.label, exc_info=True)

    async def _close_worker(self) -> None:
        """Close the connection, stop the worker and wait until the output gate has
        nothing in flight (durable or broken); always leaves the actor not awake."""
        worker, core, gate = self._worker, self._core, self._outgate
        self._fold_stats()
        try:
            if worker is not None:
                await worker.close(core.close if core is not None else None)
        finally:
            try:
                if gate is not None:
                    await gate.settle()
                    if gate.failure is not None:
                        log.info("actor %s closed after a failed KV write: its in-memory state was discarded",
                                 self.label)
            finally:
                self._fold_counters()
                self._worker = self._core = self._database = self._runner = self._outgate = self._prefetch = None
                if self.status == AWAKE:
                    self.status = ASLEEP
                self._closing = False

    def _gate_failed(self, gate: OutputGate) -> None:
        """(Event loop, from the gate.) Discard the actor's in-memory state soon."""
        if self._outgate is gate:
            task = asyncio.get_running_loop().create_task(self._discard(gate))
            self._keep(task)

    async def _discard(self, gate: OutputGate) -> None:
        """Close the actor if ``gate`` (broken) is still its gate; the next call re-opens
        it from the KV. Never raises (its errors are logged)."""
        try:
            async with _Hold(self, "reset after a failed KV write"):
                await self._discard_locked(gate)
        except Exception:
            log.exception("actor %s: reset after a failed KV write failed", self.label)

    async def _discard_locked(self, gate: OutputGate) -> None:
        if self._outgate is not gate or self.status != AWAKE:
            return
        self._closing = True
        self._resets += 1
        try:
            await self._close_worker()
        except Exception:  # the connection's own rollback write-back fails too: expected
            log.debug("actor %s: close after a failed KV write failed", self.label, exc_info=True)
        log.warning("actor %s was reset after a failed KV write; it re-opens from the KV on its next call: %s",
                    self.label, gate.failure)

    async def _gate_wait(self, gate: OutputGate | None, seq: int) -> None:
        """Wait until batch ``seq`` of ``gate`` is durable (the output gate). On a broken
        gate, the actor is discarded before the error reaches the caller."""
        if gate is None or seq <= gate.durable:
            return
        try:
            fut = gate.waiter(seq)  # (no coroutine of OutputGate.wait's own)
            if fut is not None:
                await fut
        except Exception:
            if gate.failure is not None:
                await self._discard(gate)
            raise

    # ------------------------------------------------------------------ actions
    def _context(self) -> Context:
        assert self._core is not None
        return Context(self.definition.name, self.key, self._core.state,
                       self._database if self.definition.database is not None else None, self)

    # ------------------------------------------------------------------ schedules
    # What ``c.schedule`` / ``c.cron`` use of the instance (the ``_Host`` of
    # :mod:`actor_db.runtime.schedule`; the instance itself, no object per actor):
    # only valid while one of its actions runs (the awake connection's pending changes).
    @property
    def pending(self) -> PendingSchedule:
        """The running action's schedule changes (raises when no action runs)."""
        return self._gate().schedule

    def set_due(self, due_ms: int) -> None:
        """An action set an entry due at ``due_ms``: tell the registry's poller."""
        notify = self.notify_due
        if notify is not None:
            notify(due_ms)

    async def read_entries(self) -> dict[str, Entry]:
        """Every entry as the running action sees it, its own changes laid over the
        committed ones (read with one scan at the first need after a wake)."""
        core = self._gate()
        return core.schedule.overlay(await self._known_entries(core))

    def now_ms(self) -> int:
        """The store's time (ms since the epoch): :meth:`~actor_db.kv.KVStore.now_ms`."""
        store = getattr(getattr(self.kv, "inner", None), "store", None)
        return int(store.now_ms()) if store is not None else int(time.time() * 1000)

    async def _known_entries(self, core: ActorConnection) -> dict[str, bytes]:
        """(An action runs.) The committed entries' records by id: one scan at the first
        need after a wake (once this actor's queued writes are durable), then from memory."""
        known = core.schedule.known
        if known is None:
            assert self._runner is not None
            pairs = await self._runner.call(core.kv.scan, SCHEDULE_RECORDS.start, SCHEDULE_RECORDS.end)
            known = core.schedule.known = decode_records(pairs)
        return known

    async def _entry_exists(self, entry_id: Any) -> bool:
        """(Lock held, asleep.) Whether entry ``entry_id``'s record exists (one
        unfenced read): a stale due entry must not wake, or create, the actor."""
        if not isinstance(entry_id, str):
            return False
        worker = Worker(self._pool, self.label, instant=self.kv.instant_writes)
        found = await worker.run(self.kv.get_many, [record_key(entry_id)])
        return found[0] is not None

    async def _fire(self, c: Context, entry_id: str, due_ms: int) -> dict[str, Any]:
        """The body of :data:`~actor_db.runtime.schedule.FIRE_ACTION` (run as an action:
        lock held, awake): run entry ``entry_id`` if it is still due at ``due_ms``. Its
        removal (or move to its next time) rides the action's own commit; when the
        action raises, its writes are rolled back and the retry (or the failure) is
        committed instead. Returns ``{"outcome": "fired" | "retry" | "failed" | "stale"}``."""
        core, runner = self._core, self._runner
        assert core is not None and runner is not None
        raw = (await self._known_entries(core)).get(entry_id)
        entry = None if raw is None else decode_record(entry_id, raw)  # (a fresh object: known holds bytes)
        if entry is None:
            return {"outcome": "stale"}
        if entry.status != "scheduled" or entry.due_ms != due_ms:
            return {"outcome": "stale"}  # cancelled, moved or already run since it was found due
        now = self.now_ms()
        options = self.definition.options
        fn = self.definition.actions.get(entry.action)
        if fn is None:
            error = ActionNotFoundError(f"actor type {self.definition.name!r} has no action {entry.action!r} any more")
            failure_changes(core.schedule, entry, error, now, max_attempts=1, backoff_s=0.0, max_backoff_s=0.0)
            log.error("actor %s: schedule entry %s cannot run: %s", self.label, entry_id, error)
            self._schedule_counts["failed"] += 1
            return {"outcome": "failed", "error": str(error)}
        fired_changes(core.schedule, entry, now)
        try:
            result = fn(c, *entry.args)
            if type(result) is CoroutineType or inspect.isawaitable(result):
                await result
            core.state.pending()  # (a state that cannot be saved fails this attempt, not the commit)
        except Exception as exc:
            gate = self._outgate
            if fenced_cause(exc) is not None or (gate is not None and gate.failure is not None):
                raise  # the KV refused this runtime: the entry stays for the actor's owner
            await runner.call(core.abandon)
            assert raw is not None
            entry = Entry.decode(raw)  # (the entry as committed: the failure counts on it)
            outcome = failure_changes(core.schedule, entry, exc, now, max_attempts=options.schedule_max_attempts,
                                      backoff_s=options.schedule_backoff_s,
                                      max_backoff_s=options.schedule_max_backoff_s)
            if outcome == "retry":
                log.warning("actor %s: scheduled action %r (entry %s) failed, attempt %d of %d; retrying at %d ms: %s",
                            self.label, entry.action, entry_id, entry.attempts, options.schedule_max_attempts,
                            entry.due_ms, entry.error)
            else:
                log.error("actor %s: scheduled action %r (entry %s) failed %d times; recorded as failed: %s",
                          self.label, entry.action, entry_id, options.schedule_max_attempts, entry.error)
            self._schedule_counts[outcome] += 1
            return {"outcome": outcome, "error": entry.error}
        self._schedule_counts["fired"] += 1
        return {"outcome": "fired"}

    async def _run_as_action(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(c, *args)`` with the implicit transaction (lock already held)."""
        runner, core = self._runner, self._core
        assert runner is not None and core is not None
        core.begin_action()
        try:
            # (a sync action returns its result; an async one a coroutine to await)
            result = fn(self._context(), *args)
            if type(result) is CoroutineType or inspect.isawaitable(result):
                result = await result
        except BaseException:
            await runner.call(core.end_action, False)
            raise
        await runner.call(core.end_action, True)
        if core.base_due:  # (off the loop, after this action: see ActorConnection.build_due_base)
            runner.worker.run_later(core.build_due_base)
        return result

    async def call(self, action: str, *args: Any) -> Any:
        """Run ``action`` with ``args``, waking the actor first if needed.

        :raises ActionNotFoundError: the type has no such action.
        :raises ActorNotFoundError: the actor was destroyed.
        :raises ActorCallCycleError: this actor is busy further up the calling chain
            (``A -> B -> A``, or an action calling its own actor).
        :raises FencedError: another runtime took the actor over (during the wake or
            the action); the actor was closed here.
        :raises CommitFailedError: a KV write this action depended on failed (output
            gate); the actor was reset and re-opens from the KV on its next call.
        """
        prefetch(self._prefetch)  # (the misses of this call's first steps overlap, see prefetch.py)
        fn = self.definition.actions.get(action)
        firing = fn is None and action == FIRE_ACTION
        if firing:
            fn = self._fire
        if fn is None:
            raise ActionNotFoundError(
                f"actor type {self.definition.name!r} has no action {action!r} "
                f"(actions: {sorted(self.definition.actions)})")
        hold = _Hold(self, "action", action)
        self._generation += 1
        error: Exception | None = None
        await hold.acquire()
        try:
            if self.status == DESTROYED:
                raise ActorNotFoundError(f"actor {self.label} was destroyed")
            if self._outgate is not None and self._outgate.failure is not None:
                await self._discard_locked(self._outgate)  # broken: re-open from the KV below
            done = None
            if self.status == ASLEEP:
                if firing and not await self._entry_exists(args[0] if args else None):
                    return {"outcome": "stale"}  # (nothing ran: the actor stays asleep)
                if not firing and self._may_speculate():
                    done = await self._speculative_call(fn, args)
                if done is None and self.status == ASLEEP:
                    await self._wake()
            gate = self._outgate
            try:
                if done is not None:  # a new actor's first call: it ran, its writes are durable
                    result, error = done
                else:
                    self._actions += 1
                    result = await self._run_as_action(fn, *args)
            except Exception as exc:
                if gate is not None and gate.failure is not None:
                    # The action ran on state that is being thrown away: the gate's error.
                    await self._discard_locked(gate)
                    raise gate.error() from exc
                fenced = fenced_cause(exc)
                if fenced is None and isinstance(exc, _STALE_READ_ERRORS):
                    fenced = await self._takeover(exc)
                if fenced is None:
                    if gate is None:
                        raise
                    error = exc  # the error is an output too: released by the gate below
                else:
                    await self._fenced(action, exc, fenced)
            finally:
                self._schedule_idle()
            seq = gate.enqueued if gate is not None else 0
        finally:
            hold.release()
        if gate is not None and seq > gate.durable:
            await self._gate_wait(gate, seq)
        if error is not None:
            raise error
        return result

    async def _takeover(self, exc: Exception) -> FencedError | None:
        """(Lock held.) After an error a stale read can cause (:data:`_STALE_READ_ERRORS`):
        the :class:`FencedError` if another runtime took the actor over, else ``None``
        (ONE KV round trip, only on this error path).

        Reads are not fenced: a runtime that lost the actor keeps serving reads, and
        once the new owner's commits change pages this one has not cached, SQLite sees
        its cached pages mixed with the new owner's and reports ``CorruptError``, on
        every action, for as long as nothing writes (issue 29, item 6)."""
        worker = self._worker
        if worker is None or self.kv.fence_token is None:
            return None
        try:
            await worker.run(self.kv.check_ownership)
        except FencedError as fenced:
            log.info("actor %s: %s was a stale read; another runtime owns the actor", self.label,
                     type(exc).__name__)
            return fenced
        except Exception:
            log.debug("actor %s: ownership check after %s failed", self.label, type(exc).__name__, exc_info=True)
        return None

    async def _fenced(self, action: str, exc: Exception, fenced: FencedError) -> None:
        """(Lock held.) Close the actor after a fenced commit and raise the FencedError:
        another runtime owns the actor now, so this instance must stop writing."""
        log.warning("actor %s was taken over by another runtime; closing it here: %s", self.label, fenced)
        self._closing = True
        try:
            await self._close_worker()
        except Exception:  # the rollback write-back is fenced too
            log.debug("actor %s: close after takeover failed", self.label, exc_info=True)
        if fenced is exc:
            raise exc
        raise FencedError(f"{fenced} (during action {action!r} of {self.label}; it was closed here)") from exc

    async def wake(self) -> None:
        """Start the actor now if it is asleep (creating it if it does not exist).

        :raises FencedError: another runtime took the actor over while it woke.
        :raises ActorCallCycleError: called from this actor's own action (chain).
        """
        async with _Hold(self, "wake"):
            if self.status == DESTROYED:
                raise ActorNotFoundError(f"actor {self.label} was destroyed")
            if self._outgate is not None and self._outgate.failure is not None:
                await self._discard_locked(self._outgate)
            if self.status == ASLEEP:
                if self._may_speculate():
                    await self._speculative_call(None, ())
                if self.status == ASLEEP:
                    await self._wake()
                self._schedule_idle()
            gate = self._outgate
            seq = gate.enqueued if gate is not None else 0
        await self._gate_wait(gate, seq)

    # ------------------------------------------------------------------ sleep / destroy
    def _schedule_idle(self) -> None:
        """(End of an action, a wake.) The actor sleeps ``idle_timeout_s`` from now
        unless another call comes first. One entry per actor in its loop's
        :class:`~actor_db.runtime.idle.IdleTimers`, not one per action: it is only
        added when the actor has none, and when it comes out before the latest
        deadline (an action ran since it was set) it adds itself again for that
        deadline."""
        timeout = self.definition.options.idle_timeout_s
        if timeout is None or self.status != AWAKE:
            self._cancel_idle()
            return
        loop = running_loop(self._idle_loop)  # (no system call when it is the timer's loop)
        if loop is None:
            raise RuntimeError("no running event loop")
        if self._idle_seq and self._idle_loop is not loop:  # the app moved to another loop
            self._cancel_idle()
        self._idle_deadline = loop.time() + timeout
        self._idle_generation = self._generation
        if not self._idle_seq:
            self._idle_seq = idle_timers_for(loop).add(self._idle_deadline, self)
            self._idle_loop = loop

    def _cancel_idle(self) -> None:
        """Drop the actor's idle entry, if it has one."""
        if self._idle_seq:
            self._idle_seq = 0
            loop = self._idle_loop
            if loop is not None:
                idle_timers_for(loop).cancelled()

    def _idle_fire(self, now: float | None = None) -> None:
        """(Event loop.) The actor's idle entry came out at loop time ``now`` (seconds;
        ``None``: the loop's time now): sleep if the deadline passed with no call since,
        else add the entry again for the deadline."""
        self._idle_seq = 0
        if self.status != AWAKE:
            return
        loop = current_loop()
        if now is None:
            now = loop.time()
        if now < self._idle_deadline:  # an action ended since: its deadline
            self._idle_seq = idle_timers_for(loop).add(self._idle_deadline, self)
            self._idle_loop = loop
            return
        generation = self._idle_generation
        if generation != self._generation:
            return  # a call is running; it sets the deadline again when it ends
        task = loop.create_task(self._idle_sleep(generation))
        self._keep(task)

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to background ``task`` until it is done (the set exists only
        while one runs: an actor is mostly idle, and there are many actors)."""
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = set()
        tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        tasks = self._tasks
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                self._tasks = None

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

    def _fold_counters(self) -> None:
        for name, value in self._live_counters().items():
            self._counters[name] += value

    def _live_counters(self) -> dict[str, int]:
        """The awake instance's gate and runner counters (zeros when asleep)."""
        gate, runner = self._outgate, self._runner
        return {
            "output_gate_batches": gate.enqueued if gate is not None else 0,
            "output_gate_flushes": gate.flushes if gate is not None else 0,
            "output_gate_merged_batches": gate.merged_batches if gate is not None else 0,
            "inline_calls": runner.inline_calls if runner is not None else 0,
            "inline_misses": runner.inline_misses if runner is not None else 0,
            "worker_calls": runner.worker_calls if runner is not None else 0,
        }

    async def sleep(self) -> None:
        """Let in-flight actions finish, then close the connection and free memory.

        :raises ActorCallCycleError: called from this actor's own action (chain): it
            would wait for that action forever.
        """
        hold = self._lifecycle_hold("sleep")
        async with hold:
            await self._sleep_locked()

    def _lifecycle_hold(self, kind: str) -> _Hold:
        """The hold of a sleep, destroy or restore: it ends the idle timer (the actor is
        about to go to sleep anyway) and counts as activity for the idle logic."""
        hold = _Hold(self, kind)
        self._generation += 1
        self._cancel_idle()
        return hold

    async def destroy(self) -> None:
        """Close the actor and delete every key it has (one KV round trip). Final.

        :raises ActorCallCycleError: called from this actor's own action (chain).
        """
        hold = self._lifecycle_hold("destroy")
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
                    await Worker(self._pool, self.label, instant=self.kv.instant_writes).run(self.kv.delete_all)
                finally:
                    if self._on_destroyed is not None:
                        self._on_destroyed(self)
            log.info("actor %s destroyed", self.label)

    # ------------------------------------------------------------------ history
    async def bookmark(self) -> str:
        """The bookmark of the actor's committed state (1 round trip; docs/history.md)."""
        from actor_db.ops import history as ops_history

        return await Worker(self._pool, self.label, instant=self.kv.instant_writes).run(
            ops_history.bookmark, self.kv.inner)

    async def bookmark_for_time(self, t: Any) -> str:
        """The bookmark of the last state committed at or before ``t``."""
        from actor_db.ops import history as ops_history

        return await Worker(self._pool, self.label, instant=self.kv.instant_writes).run(
            ops_history.bookmark_for_time, self.kv.inner, t)

    async def restore(self, bookmark: str | None, at: Any) -> Any:
        """Put the actor to sleep (in-flight actions finish first; calls wait), then make
        the past state current as a new commit (:func:`actor_db.ops.history.restore`).

        :raises ActorCallCycleError: called from this actor's own action (chain).
        """
        from actor_db.ops import history as ops_history

        hold = self._lifecycle_hold("restore")
        async with hold:
            if self.status == DESTROYED:
                raise ActorNotFoundError(f"actor {self.label} was destroyed")
            await self._sleep_locked()
            worker = Worker(self._pool, self.label, instant=self.kv.instant_writes)
            result = await worker.run(lambda: ops_history.restore(self.kv.inner, bookmark=bookmark, at=at))
        log.info("actor %s restored to %s", self.label, result.restored)
        return result

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
            "resets_total": self._resets,
            "schedules_fired_total": self._schedule_counts["fired"],
            "schedules_retried_total": self._schedule_counts["retry"],
            "schedules_failed_total": self._schedule_counts["failed"],
            "status": self.status,
        })
        live = self._live_counters()
        out.update({name: self._counters[name] + live[name] for name in _COUNTERS})
        cache = vfs.chunk_cache.stats()  # process-wide: shared by every actor
        out.update({"chunk_cache_bytes": cache.bytes, "chunk_cache_budget_bytes": cache.budget_bytes,
                    "chunk_cache_hits": cache.hits, "chunk_cache_misses": cache.misses,
                    "chunk_cache_evictions": cache.evictions})
        return out
