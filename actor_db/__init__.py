"""actor-db: per-actor SQLite databases whose pages live in a key-value store."""

from actor_db import errors, kv
from actor_db.dbapi import connect
from actor_db.errors import ActorDBError
from actor_db.runtime import ActorHandle, Context, Registry, Row, ScheduleOptions, actor, db

__all__ = ["errors", "kv", "connect", "ActorDBError", "actor", "db", "Registry", "ActorHandle", "Context", "Row",
           "ScheduleOptions"]
__version__ = "0.1.0"
