"""The KV drivers and VFS kinds the behavioural suite runs against.

To add a driver: write a :class:`DriverFactory` subclass and register it in
:data:`DRIVERS`. Every test using the ``store`` fixture then runs on it too.
"""

from __future__ import annotations

import pathlib
from typing import Callable

from actor_db.kv import KVStore, LmdbKV, MemoryKV


class DriverFactory:
    """Opens stores of one kind, all on the same underlying data."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp

    def open(self) -> KVStore:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Stop whatever :meth:`open` needed (servers, ...)."""


class MemoryFactory(DriverFactory):
    def __init__(self, tmp: pathlib.Path) -> None:
        super().__init__(tmp)
        self._store = MemoryKV()

    def open(self) -> KVStore:
        return self._store.new_handle()


class LmdbFactory(DriverFactory):
    def open(self) -> KVStore:
        return LmdbKV(self.tmp / "store")


class RedisFactory(DriverFactory):
    """RedisKV on this test process's durable ``redis-server`` (AOF, ``appendfsync always``;
    started on first use, stopped by PID at exit), in a fresh namespace per test."""

    cluster = False

    def __init__(self, tmp: pathlib.Path) -> None:
        super().__init__(tmp)
        from tests.redis_server import fresh_namespace

        self.namespace = fresh_namespace("redis")
        self._stores: list[KVStore] = []

    def url(self) -> str:
        from tests.redis_server import session_cluster, session_server

        return session_cluster().url if self.cluster else session_server().url

    def open(self) -> KVStore:
        from actor_db.kv.redis import RedisKV

        store = RedisKV(self.url(), namespace=self.namespace, cluster=self.cluster)
        self._stores.append(store)
        return store

    def cleanup(self) -> None:
        from actor_db.kv.redis import RedisKV

        for store in self._stores:
            store.close()
        if self._stores:
            with RedisKV(self.url(), namespace=self.namespace, cluster=self.cluster,
                         check_persistence=False) as dropper:
                dropper.drop_namespace()  # type: ignore[attr-defined]


class RedisClusterFactory(RedisFactory):
    """RedisKV on this test process's 3-master Redis Cluster (loopback ports)."""

    cluster = True


DRIVERS: dict[str, Callable[[pathlib.Path], DriverFactory]] = {
    "memory": MemoryFactory,
    "lmdb": LmdbFactory,
    "redis": RedisFactory,
}
# The cluster runs its own tests (tests/test_redis_cluster.py: 3 masters, the protocol,
# round trips, slots); the whole behavioural suite on it is opt-in to keep CI short.
if __import__("os").environ.get("ACTOR_DB_TEST_REDIS_CLUSTER", "").lower() in {"1", "true", "yes"}:
    DRIVERS["redis-cluster"] = RedisClusterFactory


def vfs_kinds() -> list[str]:
    """VFS implementations to run the suite on: ``python``, and ``native`` when built.

    :raises RuntimeError: in CI (``CI=true``) when the native VFS is not built, so a
        broken build fails the run instead of silently testing only the Python VFS.
    """
    import os

    import native

    if native.AVAILABLE:
        return ["python", "native"]
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        raise RuntimeError(f"CI: the native VFS is not built ({native.BUILD_ERROR}); the suite must run on it")
    return ["python"]
