"""KV drivers. Each satisfies :class:`vfs.protocol.KV` through :meth:`KVStore.actor`."""

from actor_db.kv.base import ActorKV, KVStore
from actor_db.kv.lmdb import LmdbKV
from actor_db.kv.memory import MemoryKV

__all__ = ["KVStore", "ActorKV", "MemoryKV", "LmdbKV"]
