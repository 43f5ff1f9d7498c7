"""``actor_db.Registry``: runs actors of the declared types on one KV store.

>>> import asyncio, actor_db
>>> echo = actor_db.actor("echo", state=lambda: {"n": 0})
>>> @echo.action
... async def ping(c, x):
...     c.state["n"] += 1
...     return x
>>> async def main():
...     async with actor_db.Registry([echo], kv=actor_db.kv.MemoryKV()) as registry:
...         return await registry.get_or_create("echo", key="a").call("ping", 7)
>>> asyncio.run(main())
7

Actor ids in the KV are ``"<type>/<key>"`` (type names contain no ``/``). A registry
keeps one instance per actor; two registries must not run the same actor at once
(the VFS refuses a second open in one process).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from actor_db.errors import ActorKeyTooLongError, ActorNotFoundError, ConfigurationError
from actor_db.kv.base import ActorKV, KVStore
from actor_db.kv.namespace import encode_actor_id
from actor_db.runtime.actor import ActorDefinition
from actor_db.kv.due import DueEntry
from actor_db.runtime.firing import Firer, FiringMetrics, ScheduleOptions
from actor_db.runtime.instance import ActorInstance
from actor_db.runtime.schedule import FIRE_ACTION
from actor_db.runtime.pool import DEFAULT_MAX_THREADS, ThreadPool
from actor_db.runtime.speculation import SpeculationPolicy

if TYPE_CHECKING:
    from actor_db.ops.history import RestoreResult

log = logging.getLogger(__name__)

__all__ = ["Registry", "ActorHandle", "DEFAULT_KV_PATH"]

DEFAULT_KV_PATH = "./.actor-db"
"""Where the default LMDB store lives (relative to the working directory)."""


class ActorHandle:
    """A reference to one actor. Cheap; every method is safe to call at any time."""

    __slots__ = ("_instance", "__weakref__")  # (handles may be kept in weak collections)

    def __init__(self, instance: ActorInstance) -> None:
        self._instance = instance

    @property
    def name(self) -> str:
        return self._instance.definition.name

    @property
    def key(self) -> str:
        return self._instance.key

    async def call(self, action: str, *args: Any) -> Any:
        """Run ``action(c, *args)`` on the actor (waking or creating it first).

        Actions of one actor run one at a time, in call order.

        :raises ActionNotFoundError: no such action.
        :raises ActorNotFoundError: the actor was destroyed.
        :raises MigrationError: the actor could not start because a migration failed.
        """
        return await self._instance.call(action, *args)

    async def wake(self) -> None:
        """Start the actor now (creating it if needed) without running an action."""
        await self._instance.wake()

    async def sleep(self) -> None:
        """Finish in-flight actions, close the database and free the actor's memory.
        The next call wakes it."""
        await self._instance.sleep()

    async def destroy(self) -> None:
        """Delete the actor and every key it stored. Later calls on this handle raise
        :class:`ActorNotFoundError`; ``get_or_create`` makes a new, empty actor."""
        await self._instance.destroy()

    async def bookmark(self) -> str:
        """An opaque string naming the actor's current committed state (1 round trip).

        :raises HistoryError: the actor's type keeps no history (``db(history=False)``)
            or the actor has no database yet.
        """
        return await self._instance.bookmark()

    async def bookmark_for_time(self, t: float | datetime) -> str:
        """The bookmark of the last state committed at or before ``t`` (epoch seconds
        or an aware ``datetime``).

        :raises HistoryError: ``t`` is older than the retained history (7 days by
            default), or the actor keeps no history.
        """
        return await self._instance.bookmark_for_time(t)

    async def restore(self, *, bookmark: str | None = None, at: float | datetime | None = None) -> RestoreResult:
        """Make a past state of the actor's database current, as a new commit: the
        actor is put to sleep first (in-flight actions finish, new calls wait), then
        the state is written like an import. Undo it with
        ``restore(bookmark=result.before)``.

        :param bookmark: from :meth:`bookmark`, :meth:`bookmark_for_time` or ``c.db.bookmark()``.
        :param at: or a time (epoch seconds or an aware ``datetime``).
        :raises HistoryError: that state is not retained, or the bookmark is malformed.
        :raises OperationError: neither or both of ``bookmark`` and ``at``.
        """
        return await self._instance.restore(bookmark, at)  # type: ignore[no-any-return]

    def metrics(self) -> dict[str, Any]:
        """Startup and lifetime counters: ``startup_kv_round_trips``, ``startup_total_ms``,
        ``startup_is_new``, ``startup_internal_*_ms``, ``startup_user_*_ms``,
        ``kv_round_trips``, ``vfs_preload_hits``, ``vfs_cache_hits``, ``vfs_live_reads``, ..."""
        return self._instance.metrics()

    def __repr__(self) -> str:
        return f"<ActorHandle {self._instance.label} {self._instance.status}>"


class Registry:
    """Runs actors of the given types on ``kv``.

    :param actors: the actor types (from :func:`actor_db.actor`).
    :param kv: the store; default: the store ``$ACTOR_DB_KV`` names, else an
        :class:`~actor_db.kv.LmdbKV` in ``./.actor-db`` (owned and closed by the registry).
    :param max_threads: the cap on the OS threads that run the actors' SQLite calls and
        KV writes (:class:`~actor_db.runtime.pool.ThreadPool`), whatever the number of
        awake actors: at most this many KV round trips are in flight at once. Threads
        start on demand and exit after 10 s idle. Default 64.
    :param schedules: how due schedule entries are fired while the registry runs
        (``async with``): :class:`~actor_db.runtime.firing.ScheduleOptions`.
    :raises ConfigurationError: two types share a name, ``kv`` is not a store, or
        ``max_threads`` is not an int >= 1.
    """

    def __init__(self, actors: Iterable[ActorDefinition], kv: KVStore | None = None, *,
                 max_threads: int = DEFAULT_MAX_THREADS, schedules: ScheduleOptions | None = None) -> None:
        self._types: dict[str, ActorDefinition] = {}
        for definition in actors:
            if not isinstance(definition, ActorDefinition):
                raise ConfigurationError(f"{definition!r} is not an actor type (use actor_db.actor(...))")
            if definition.name in self._types:
                raise ConfigurationError(f"two actor types are named {definition.name!r}")
            self._types[definition.name] = definition
        self._owns_kv = kv is None
        if kv is None:  # $ACTOR_DB_KV, else LMDB in ./.actor-db (the rule of actor_db.defaults)
            from actor_db.defaults import open_default_store
            kv = open_default_store()
        if not isinstance(kv, KVStore):
            raise ConfigurationError(f"kv must be an actor_db.kv store, not {type(kv).__name__}")
        self.kv = kv
        self.pool = ThreadPool(max_threads)
        """The shared thread pool (``pool.threads``, ``pool.peak_threads``, ``pool.max_threads``)."""
        self._instances: dict[tuple[str, str], ActorInstance] = {}
        self._policies: dict[str, SpeculationPolicy] = {}
        """Per actor type: when its first calls speculate (:mod:`actor_db.runtime.speculation`)."""
        if schedules is not None and not isinstance(schedules, ScheduleOptions):
            raise ConfigurationError("schedules must be an actor_db.ScheduleOptions")
        self.schedule_options = schedules or ScheduleOptions()
        self._firer: Firer | None = None
        self._forget_callback = self._forget
        self._notify_due_callback = self._notify_due
        """(Bound once: every actor instance holds these two, not bound methods of its own.)"""
        self._claims: Callable[[str], Callable[[], Any]] | None = None
        """Placement (:mod:`actor_db.serve`): ``claims(actor_id)`` is set on every
        actor's KV view, so ownership is only taken through the conditional claim."""

    def get_or_create(self, name: str, key: str = "default") -> ActorHandle:
        """A handle to actor ``key`` of type ``name``; it is created on its first call.

        :raises ActorNotFoundError: no actor type is named ``name``.
        :raises InvalidActorKeyError: ``key`` is not a string, or not valid Unicode
            encodable as UTF-8 (a ``ConfigurationError``).
        :raises ActorKeyTooLongError: ``key`` is too long for the store's key limit
            (LMDB: 511-byte keys); the message gives the longest key it accepts.
        """
        definition = self._types.get(name)
        if definition is None:
            raise ActorNotFoundError(f"no actor type named {name!r} (known: {sorted(self._types)})")
        instance = self._instances.get((name, key)) if isinstance(key, str) else None
        if instance is None:
            policy = self._policies.get(name)
            if policy is None:
                policy = self._policies[name] = SpeculationPolicy(name)
            instance = ActorInstance(definition, key, self._view(name, key), self.pool,
                                     on_destroyed=self._forget_callback, speculation=policy)
            instance.notify_due = self._notify_due_callback
            self._instances[(name, key)] = instance
        return ActorHandle(instance)

    def _view(self, name: str, key: str) -> ActorKV:
        """The KV view of actor ``key`` of type ``name``, errors phrased in terms of the key."""
        encode_actor_id(key, "actor key")
        try:
            view = self.kv.actor(f"{name}/{key}")
            if self._claims is not None:
                view.claim = self._claims(f"{name}/{key}")
            return view
        except ActorKeyTooLongError as exc:
            overhead = len(name.encode("utf-8")) + 1  # the id is "<type>/<key>"
            longest = max(0, exc.max_length - overhead)
            where = (f"its keys are limited to {exc.driver_limit} bytes" if exc.driver_limit is not None
                     else "the key layout stores an actor id's length in 2 bytes")
            raise ActorKeyTooLongError(
                f"actor key of {exc.length - overhead} bytes is too long for {type(self.kv).__name__}: {where}, "
                f"so actor keys (of type {name!r}) to {longest} bytes",
                length=exc.length - overhead, max_length=longest, driver_limit=exc.driver_limit) from None

    def _attach_placement(self, claims: Callable[[str], Callable[[], Any]]) -> None:
        """(:class:`actor_db.serve.node.Node`) Take ownership of every actor, present and
        future, only through ``claims(actor_id)`` (see :attr:`ActorKV.claim`)."""
        self._claims = claims
        for (name, key), instance in list(self._instances.items()):
            inner = getattr(instance.kv, "inner", None)
            if inner is not None and hasattr(inner, "claim"):
                inner.claim = claims(f"{name}/{key}")

    def asgi(self, **options: Any) -> Any:
        """This registry as an ASGI application (:class:`actor_db.serve.app.ActorApp`):
        ``POST /actors/{name}/{key}/{action}``, ``GET /healthz``, ``GET /metrics``, with
        placement across every node sharing the store. ``options``: ``token`` and
        those of :class:`actor_db.serve.node.NodeOptions`. Needs ``pip install actor-db[serve]``
        only to run it under uvicorn (the app itself has no dependency).

        :raises ConfigurationError: the store does not support placement, or a bad option.
        """
        from actor_db.serve.app import ActorApp

        return ActorApp(self, **options)

    def handles(self) -> list[ActorHandle]:
        """Handles of every actor this registry has created a handle for (awake or asleep,
        not destroyed); a snapshot, safe to call from another thread (metrics export)."""
        for _ in range(5):
            try:
                return [ActorHandle(i) for i in list(self._instances.values())]
            except RuntimeError:  # the event loop inserted while we copied
                continue
        return []

    # -- schedules (actor_db.runtime.firing) -----------------------------------------
    def _start_schedules(self, dispatch: Callable[[DueEntry], Awaitable[Any]] | None = None) -> None:
        """Fire due entries of the store's actors from now on (on the running loop):
        through this registry's own call path, or ``dispatch`` (a serve node's routing).
        Nothing when disabled or when the store keeps no due index."""
        if not self.schedule_options.enabled or not getattr(self.kv, "due_index", False):
            return
        if self._firer is None:
            self._firer = Firer(self.kv, self._fire_local, self._knows, self.schedule_options)
        if dispatch is not None:
            self._firer._dispatch = dispatch
        self._firer.start()

    async def _stop_schedules(self) -> None:
        if self._firer is not None:
            await self._firer.stop()

    def _knows(self, actor_id: str) -> bool:
        return actor_id.partition("/")[0] in self._types

    def _notify_due(self, due_ms: int) -> None:
        firer = self._firer
        if firer is not None and firer.running:
            firer.notify(due_ms)

    async def _fire_local(self, entry: DueEntry) -> Any:
        """Run a due entry here (through the actor's ordinary call path)."""
        name, _, key = entry.actor_id.partition("/")
        handle = self.get_or_create(name, key)
        return await handle._instance.call(FIRE_ACTION, entry.entry.decode("utf-8", "replace"), entry.due_ms)

    def schedule_metrics(self) -> dict[str, Any]:
        """The poller's counters: ``schedule_polls_total`` (due-index reads),
        ``schedule_dispatched_total``, ``schedule_skipped_total`` (listed by a poll read before
        their run's commit landed: not run again), ``schedule_fired_total``, ``schedule_retry_total``,
        ``schedule_failed_total``, ``schedule_stale_total``, ``schedule_error_total``
        (zeros when it never ran)."""
        if self._firer is None:
            return FiringMetrics(outcomes={}).as_dict()
        return self._firer.metrics.as_dict()

    def _forget(self, instance: ActorInstance) -> None:
        if self._instances.get((instance.definition.name, instance.key)) is instance:
            del self._instances[(instance.definition.name, instance.key)]

    async def close(self) -> None:
        """Put every awake actor to sleep (all at once), then close the store if the
        registry opened it; idle pool threads exit."""
        try:
            await self._stop_schedules()
            instances = list(self._instances.values())
            results = await asyncio.gather(*(instance.sleep() for instance in instances), return_exceptions=True)
            for instance, result in zip(instances, results):
                if isinstance(result, Exception):
                    log.error("actor %s failed to go to sleep", instance.label, exc_info=result)
                elif isinstance(result, BaseException):
                    raise result
        finally:
            self.pool.shutdown()
            if self._owns_kv:
                self.kv.close()

    async def __aenter__(self) -> Registry:
        self._start_schedules()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
