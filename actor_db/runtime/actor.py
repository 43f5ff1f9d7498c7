"""``actor_db.actor(...)``: declaring an actor type and its actions.

>>> import actor_db
>>> counter = actor_db.actor("counter", state=lambda: {"count": 0},
...                          db=actor_db.db(migrations=["CREATE TABLE events (delta INTEGER)"]))
>>> @counter.action
... async def add(c, delta: int) -> int:
...     await c.db.execute("INSERT INTO events (delta) VALUES (?)", delta)
...     c.state["count"] += delta
...     return c.state["count"]
>>> sorted(counter.actions)
['add']

An actor type is only a declaration; :class:`actor_db.Registry` runs instances of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar, overload

from vfs.startup import DEFAULT_INTERIOR_MAX_BYTES, DEFAULT_SQLITE_PRELOAD_BYTES

from actor_db.errors import ConfigurationError
from actor_db.runtime.migrations import DatabaseConfig

if TYPE_CHECKING:
    from actor_db.runtime.database import Database
    from actor_db.runtime.schedule import CronAPI, ScheduleAPI

__all__ = ["ActorDefinition", "ActorOptions", "Context", "actor"]

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")

DEFAULT_PRELOAD_MAX_BYTES = 1024 * 1024
DEFAULT_PRELOAD_MAX_WORKFLOW_BYTES = 128 * 1024
DEFAULT_PRELOAD_MAX_CONNECTIONS_BYTES = 64 * 1024
DEFAULT_IDLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ActorOptions:
    """Per-actor-type tuning. Budgets are value bytes; 0 disables that part.

    :ivar preload_max_bytes: total startup preload budget (RivetKit: 1 MiB); the state
        record is charged first.
    :ivar preload_max_sqlite_bytes: SQLite chunks, lowest first, partial (768 KiB).
    :ivar preload_max_workflow_bytes: workflows, all-or-nothing (128 KiB).
    :ivar preload_max_connections_bytes: connections, all-or-nothing (64 KiB).
    :ivar preload_max_interior_bytes: cap on the B-tree interior pages the hot-set hint
        lists (8 MiB), preloaded on top of the SQLite budget and the total so a query
        for any key costs at most one leaf per B-tree (``docs/preload.md``); 0: they
        share ``preload_max_sqlite_bytes`` with the other chunks.
    :ivar idle_timeout_s: seconds without calls before the actor sleeps; ``None``
        never sleeps on its own.
    :ivar output_gate: ``True`` (default): commits are queued and coalesced, the next
        action runs at once, and a caller gets its result only once every write it
        depends on is durable (see ``docs/runtime.md``). ``False``: each commit waits
        for the KV inside its action (one KV write per commit).
    :ivar inline_queries: with an output gate, let SQLite calls whose pages are in
        memory run on the event loop's thread without a thread hop (learned per actor:
        :mod:`actor_db.runtime.inline`). ``False``: every call goes to a pool thread.
    :ivar schedule_max_attempts: runs of a due schedule entry (``c.schedule``,
        ``c.cron``) whose action raises before it is recorded as failed (one-shot) or
        moved on to its next time (cron, every); >= 1.
    :ivar schedule_backoff_s: seconds before the first retry of a failed entry; each
        retry waits twice as long as the one before, at most ``schedule_max_backoff_s``.
    :ivar sqlite_cache_pages: SQLite's own page cache per awake actor (``PRAGMA
        cache_size``, pages). Default 0: no SQLite page cache slab (~87 KiB saved per
        awake actor); pages are then served by the VFS chunk cache (a memory copy per
        page, ~1.5 µs more per small query). ``None``: SQLite's default (2 MiB, 20
        pages allocated at the first read).
    :ivar speculative_create: with an output gate and a store that supports it, the
        first call to an actor this process has not started yet runs against the
        image a NEW actor would have (its migrations on an empty database, no KV
        read), and the claim, that image and the call's writes go out in ONE
        conditional KV round trip ("create only if absent"). If the actor exists, the
        speculative work is discarded unseen and the call runs again on the actor as
        woken from the preload that came back (same round trip). So a new actor's first
        call costs 1 round trip; the price is that the first call after a restart to an
        actor that exists runs its migrations and the action twice (the first run's
        effects on the database and state are discarded; a call to another actor from
        that run stops the speculation first). A registry pauses it for a type after a
        run of first calls that found existing actors (:mod:`actor_db.runtime.speculation`).
        ``False``: never speculate (a new actor's first write call then costs 3 round
        trips, a read 2).
    """

    preload_max_bytes: int = DEFAULT_PRELOAD_MAX_BYTES
    preload_max_sqlite_bytes: int = DEFAULT_SQLITE_PRELOAD_BYTES
    preload_max_workflow_bytes: int = DEFAULT_PRELOAD_MAX_WORKFLOW_BYTES
    preload_max_connections_bytes: int = DEFAULT_PRELOAD_MAX_CONNECTIONS_BYTES
    preload_max_interior_bytes: int = DEFAULT_INTERIOR_MAX_BYTES
    idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S
    output_gate: bool = True
    inline_queries: bool = True
    sqlite_cache_pages: int | None = 0
    speculative_create: bool = True
    schedule_max_attempts: int = 5
    schedule_backoff_s: float = 1.0
    schedule_max_backoff_s: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.schedule_max_attempts, bool) or not isinstance(self.schedule_max_attempts, int) \
                or self.schedule_max_attempts < 1:
            raise ConfigurationError(f"schedule_max_attempts must be an int >= 1, not {self.schedule_max_attempts!r}")
        for name in ("schedule_backoff_s", "schedule_max_backoff_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0, not {value!r}")
        for name in ("preload_max_bytes", "preload_max_sqlite_bytes", "preload_max_workflow_bytes",
                     "preload_max_connections_bytes", "preload_max_interior_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"{name} must be an int >= 0 (bytes), not {value!r}")
        for name in ("output_gate", "inline_queries", "speculative_create"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.sqlite_cache_pages is not None and (not isinstance(self.sqlite_cache_pages, int)
                                                    or self.sqlite_cache_pages < 0):
            raise ConfigurationError(f"sqlite_cache_pages must be an int >= 0 or None, not {self.sqlite_cache_pages!r}")
        if self.idle_timeout_s is not None and self.idle_timeout_s <= 0:
            raise ConfigurationError(f"idle_timeout_s must be > 0 seconds or None, not {self.idle_timeout_s!r}")


class Context:
    """What an action receives as ``c``.

    :ivar key: the actor's key.
    :ivar name: the actor type's name.
    """

    def __init__(self, name: str, key: str, holder: Any, database: Database | None, schedules: Any = None) -> None:
        self.name = name
        self.key = key
        self._holder = holder
        self._db = database
        self._schedules = schedules

    @property
    def schedule(self) -> ScheduleAPI:
        """One-shot durable schedules (:class:`~actor_db.runtime.schedule.ScheduleAPI`):
        ``c.schedule.after(seconds, action, *args)``, ``.at(when, ...)``,
        ``.cancel(id)``, ``await .list()``; changes commit with the action."""
        from actor_db.runtime.schedule import ScheduleAPI

        if self._schedules is None:
            raise ConfigurationError("c.schedule is only available inside an action")
        return ScheduleAPI(self._schedules)

    @property
    def cron(self) -> CronAPI:
        """Repeating durable schedules (:class:`~actor_db.runtime.schedule.CronAPI`):
        ``c.cron.set(name, expression, action, *args, timezone="UTC")``,
        ``.every(name, seconds, ...)``, ``.delete(name)``, ``await .list()``."""
        from actor_db.runtime.schedule import CronAPI

        if self._schedules is None:
            raise ConfigurationError("c.cron is only available inside an action")
        return CronAPI(self._schedules)

    @property
    def state(self) -> Any:
        """The persisted state; changes are saved when the action's work commits."""
        return self._holder.value

    @state.setter
    def state(self, value: Any) -> None:
        self._holder.value = value

    @property
    def db(self) -> Database:
        """The actor's database (see :class:`~actor_db.runtime.database.Database`).

        :raises ConfigurationError: the actor type declares no database.
        """
        if self._db is None:
            raise ConfigurationError(f"actor type {self.name!r} has no database: declare one with db=actor_db.db(...)")
        return self._db


Hook = Callable[[Context], "Awaitable[None] | None"]


@dataclass
class ActorDefinition:
    """An actor type: its name, initial state, database and actions."""

    name: str
    state_factory: Callable[[], Any] | None
    database: DatabaseConfig | None
    options: ActorOptions
    on_wake: Hook | None = None
    on_sleep: Hook | None = None
    actions: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @overload
    def action(self, fn: F) -> F: ...

    @overload
    def action(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def action(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Register ``fn(c, *args)`` (sync or ``async``) as an action.

        Use as ``@counter.action`` or ``@counter.action(name="other")``.

        :raises ConfigurationError: an action of that name already exists.
        """
        def register(f: F) -> F:
            action_name = name or f.__name__
            if action_name == "__actor_db_fire__":  # (actor_db.runtime.schedule.FIRE_ACTION)
                raise ConfigurationError(f"action name {action_name!r} is reserved")
            if action_name in self.actions:
                raise ConfigurationError(f"actor type {self.name!r} already has an action {action_name!r}")
            self.actions[action_name] = f
            return f

        return register(fn) if fn is not None else register


def actor(
    name: str,
    *,
    state: Callable[[], Any] | None = None,
    db: DatabaseConfig | None = None,
    on_wake: Hook | None = None,
    on_sleep: Hook | None = None,
    **options: Any,
) -> ActorDefinition:
    """Declare an actor type.

    :param name: the type's name: 1-128 of ``A-Z a-z 0-9 _ . -``.
    :param state: a factory for a new actor's initial state (JSON-serializable).
    :param db: the database declaration (:func:`actor_db.db`), or ``None``.
    :param on_wake: ``(c)`` hook run at every start, after migrations, like an action.
    :param on_sleep: ``(c)`` hook run before the actor sleeps (not on destroy).
    :param options: :class:`ActorOptions` fields (``preload_max_sqlite_bytes``,
        ``idle_timeout_s``, ...).
    :raises ConfigurationError: a bad name, option or argument.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(f"actor type name {name!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
    if state is not None and not callable(state):
        raise ConfigurationError("state must be a callable returning the initial state (e.g. lambda: {...})")
    if db is not None and not isinstance(db, DatabaseConfig):
        raise ConfigurationError("db must be built with actor_db.db(...)")
    try:
        opts = ActorOptions(**options)
    except TypeError as exc:
        raise ConfigurationError(f"unknown actor option: {exc}") from exc
    return ActorDefinition(name, state, db, opts, on_wake, on_sleep)
