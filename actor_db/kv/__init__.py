"""KV drivers. Each satisfies :class:`vfs.protocol.KV` through :meth:`KVStore.actor`."""

from typing import TYPE_CHECKING, Any

from actor_db.kv.base import ActorKV, Fence, KVStore
from actor_db.kv.fencing import fenced_cause
from actor_db.kv.lmdb import LmdbKV
from actor_db.kv.memory import MemoryKV
from actor_db.kv.snapshot import SnapshotChangedError, SnapshotKV, retry_on_change

if TYPE_CHECKING:
    from actor_db.kv.redis import RedisKV

__all__ = ["KVStore", "ActorKV", "Fence", "MemoryKV", "LmdbKV", "RedisKV", "fenced_cause",
           "SnapshotKV", "SnapshotChangedError", "retry_on_change"]


def __getattr__(name: str) -> Any:
    # redis-py is an optional extra ("actor-db[redis]"): import it only when asked for.
    if name == "RedisKV":
        from actor_db.kv.redis import RedisKV

        return RedisKV
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
