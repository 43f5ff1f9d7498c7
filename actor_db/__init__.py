"""actor-db: per-actor SQLite databases whose pages live in a key-value store."""

from actor_db import errors, kv
from actor_db.errors import ActorDBError

__all__ = ["errors", "kv", "ActorDBError"]
__version__ = "0.1.0"
