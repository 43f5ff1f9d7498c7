"""The actor runtime: actor types, the registry, per-actor databases and lifecycle.

Modules, one concept each: :mod:`~actor_db.runtime.actor` (declaring types and
actions), :mod:`~actor_db.runtime.migrations` (``db()`` and migrations),
:mod:`~actor_db.runtime.database` (``c.db`` and the worker-side connection),
:mod:`~actor_db.runtime.pool` (the bounded thread pool all actors share),
:mod:`~actor_db.runtime.worker` (one actor's serial queue on the pool),
:mod:`~actor_db.runtime.inline` (inline on the event loop, or on the pool),
:mod:`~actor_db.runtime.gate` (output gates and write coalescing), :mod:`~actor_db.runtime.state`
(the persisted record), :mod:`~actor_db.runtime.startup` (the one-call start),
:mod:`~actor_db.runtime.instance` (lifecycle and mutex),
:mod:`~actor_db.runtime.registry` (``Registry`` and handles),
:mod:`~actor_db.runtime.metrics` (counters), :mod:`~actor_db.runtime.keys` (actor keys),
:mod:`~actor_db.runtime.schedule` (``c.schedule``/``c.cron``), :mod:`~actor_db.runtime.firing`
(firing due entries).
"""

from actor_db.runtime.actor import ActorDefinition, ActorOptions, Context, actor
from actor_db.runtime.database import Database
from actor_db.runtime.firing import ScheduleOptions
from actor_db.runtime.migrations import DatabaseConfig, db
from actor_db.runtime.registry import ActorHandle, Registry
from actor_db.runtime.rows import Row

__all__ = [
    "actor", "db", "Registry", "ActorHandle", "ActorDefinition", "ActorOptions", "Context",
    "Database", "DatabaseConfig", "Row", "ScheduleOptions",
]
