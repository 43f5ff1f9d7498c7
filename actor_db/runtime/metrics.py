"""Per-actor counters: KV round trips (counted at the actor's KV view) and startup phases.

The names returned by :meth:`StartupMetrics.as_dict` are part of the public contract of
``handle.metrics()`` (issue 3): ``startup_kv_round_trips``, ``startup_total_ms``,
``startup_is_new``, ``startup_internal_<phase>_ms`` and ``startup_user_<phase>_ms``.
Durations are milliseconds of wall time; counters are round trips (KV calls).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator, Sequence

from vfs.preload import PreloadMap
from vfs.protocol import KV, KVLimits, PreloadRequest, WriteBatch

__all__ = ["CountingKV", "StartupMetrics", "INTERNAL_PHASES", "USER_PHASES"]

INTERNAL_PHASES: tuple[str, ...] = ("preload", "load_state", "open_db", "create", "migrate")
"""Runtime phases of a start, in order (``create`` only runs for a new actor)."""

USER_PHASES: tuple[str, ...] = ("state_factory", "migrations", "on_migrate", "on_wake")
"""User-code phases of a start."""


class CountingKV:
    """An actor-scoped KV view that counts its own calls (reads and writes).

    Every call is one round trip, counted before it is made (a failed call still cost
    one). Satisfies :class:`vfs.protocol.KV`; thread-safe.
    """

    __slots__ = ("_lock", "inner", "reads", "writes", "__weakref__")

    def __init__(self, inner: KV) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.reads = 0
        """Read calls (get_many, scan, preload), in round trips."""
        self.writes = 0
        """Write calls, in round trips."""

    @property
    def round_trips(self) -> int:
        """All KV calls made through this view."""
        return self.reads + self.writes

    @property
    def identity(self) -> Hashable:
        return self.inner.identity

    @property
    def limits(self) -> KVLimits:
        return self.inner.limits

    @property
    def instant_writes(self) -> bool:
        """Whether the inner view's store applies writes instantly (``MemoryKV``)."""
        return bool(getattr(self.inner, "instant_writes", False))

    @property
    def fence_token(self) -> int | None:
        """The inner view's fencing token (``None``: it never took ownership)."""
        return getattr(self.inner, "fence_token", None)

    def _read(self) -> None:
        with self._lock:
            self.reads += 1

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._read()
        return self.inner.get_many(keys)

    def acquire_and_preload(self, request: PreloadRequest) -> PreloadMap:
        """Take single-writer ownership of the actor and preload, in ONE round trip.

        Views without fencing support (e.g. test wrappers) just preload. From here on
        every write of a fenced view fails with :class:`~actor_db.errors.FencedError`
        once another runtime has taken the actor over.
        """
        self._read()
        acquire = getattr(self.inner, "acquire_and_preload", None)
        if acquire is None:
            return self.inner.preload(request)
        return acquire(request)  # type: ignore[no-any-return]

    @property
    def supports_create(self) -> bool:
        """Whether :meth:`create_or_preload` is possible (the inner view's store
        implements it)."""
        store = getattr(self.inner, "store", None)
        return bool(getattr(store, "supports_create", False)) and hasattr(self.inner, "create_or_preload")

    def create_or_preload(self, request: PreloadRequest, batch: WriteBatch) -> PreloadMap | None:
        """The inner view's :meth:`~actor_db.kv.ActorKV.create_or_preload`: ownership,
        and the creation or the preload, in ONE round trip: counted as a write when it
        created the actor (or failed), as a read when it brought the preload (what an
        ordinary wake's :meth:`acquire_and_preload` is counted as)."""
        try:
            found: PreloadMap | None = self.inner.create_or_preload(request, batch)  # type: ignore[attr-defined]
        except BaseException:
            with self._lock:
                self.writes += 1
            raise
        with self._lock:
            if found is None:
                self.writes += 1
            else:
                self.reads += 1
        return found

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None,
             max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        self._read()
        return self.inner.scan(start, end, limit=limit, max_bytes=max_bytes)

    def preload(self, request: PreloadRequest) -> PreloadMap:
        self._read()
        return self.inner.preload(request)

    def write(self, batch: WriteBatch) -> None:
        with self._lock:
            self.writes += 1
        self.inner.write(batch)

    def count_write(self) -> None:
        """Count a write of this actor made elsewhere (its batch in a group write,
        :mod:`actor_db.runtime.group_commit`): the actor's KV write calls stay exact."""
        with self._lock:
            self.writes += 1

    def check_ownership(self) -> None:
        """The inner view's :meth:`~actor_db.kv.ActorKV.check_ownership` (one write
        call, counted), if it has one; else nothing."""
        check = getattr(self.inner, "check_ownership", None)
        if check is None or self.fence_token is None:
            return
        with self._lock:
            self.writes += 1
        check()

    def delete_all(self) -> None:
        """Delete every key of the actor (one round trip; the driver view must offer it)."""
        with self._lock:
            self.writes += 1
        self.inner.delete_all()  # type: ignore[attr-defined]


@dataclass
class StartupMetrics:
    """What the last start of an actor cost.

    :ivar kv_round_trips: KV calls from the start until the actor was ready.
    :ivar is_new: the actor was created by this start.
    :ivar internal_ms: runtime phase → milliseconds.
    :ivar user_ms: user-code phase → milliseconds.
    """

    kv_round_trips: int = 0
    total_ms: float = 0.0
    is_new: bool = False
    internal_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(INTERNAL_PHASES, 0.0))
    user_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USER_PHASES, 0.0))

    @contextmanager
    def internal(self, phase: str) -> Iterator[None]:
        """Add the time spent in the ``with`` body to runtime phase ``phase``."""
        assert phase in self.internal_ms, phase
        start = time.perf_counter()
        try:
            yield
        finally:
            self.internal_ms[phase] += (time.perf_counter() - start) * 1000.0

    @contextmanager
    def user(self, phase: str) -> Iterator[None]:
        """Add the time spent in the ``with`` body to user phase ``phase``."""
        assert phase in self.user_ms, phase
        start = time.perf_counter()
        try:
            yield
        finally:
            self.user_ms[phase] += (time.perf_counter() - start) * 1000.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "startup_kv_round_trips": self.kv_round_trips,
            "startup_total_ms": self.total_ms,
            "startup_is_new": self.is_new,
        }
        out.update({f"startup_internal_{k}_ms": v for k, v in self.internal_ms.items()})
        out.update({f"startup_user_{k}_ms": v for k, v in self.user_ms.items()})
        return out
