"""``LatencyKV``: a KV store wrapper that injects a fixed latency per round trip.

Every raw call of the wrapped store (``get_many``, ``scan``, ``write``, ``preload``,
``acquire``, ``create``) first sleeps :attr:`LatencyKV.latency_s` seconds, modelling a
datacenter KV one network round trip away; then the wrapped store runs it.
``time.sleep`` releases the GIL, so many actors waiting on the KV overlap as they would
on a real network. Round trips are counted by :class:`actor_db.kv.KVStore` exactly as
for any driver (one per call of an actor view), so the counts are machine-independent;
only the times depend on the machine.

A group write can also be awaited by the runtime's event loop, as a network store's
reply is (:meth:`KVStore.start_write_many`) when the wrapped store applies writes in
memory: it is sent at once and is a deadline ``latency_s`` later; the wrapped store
applies it when the deadline is met (:meth:`GroupWrite.finish`, which sleeps the rest
of the delay if called early).

Invariants: the wrapper adds no caching and no batching of its own (a group write,
:meth:`actor_db.kv.KVStore.write_many`, is one round trip when the wrapped store
makes it one), so a benchmark's round trips
are those its code would make on the real store; :attr:`LatencyKV.identity` is the
wrapped store's, so the VFS's one-open-per-actor rule still covers both objects.
"""

from __future__ import annotations

import time
from typing import Hashable, Mapping, Sequence

from vfs.preload import PreloadMap
from vfs.protocol import PreloadRequest, WriteBatch

from actor_db.kv.base import Fence, GroupItem, GroupWrite, KVStore

__all__ = ["LatencyKV", "DEFAULT_LATENCY_S", "measure_sleep_overhead"]

DEFAULT_LATENCY_S = 0.001
"""Injected latency per round trip, in seconds (1 ms: a KV in the same datacenter)."""


class LatencyKV(KVStore):
    """Wrap ``inner`` so that every round trip costs ``latency_s`` seconds more.

    :param inner: the real store (e.g. :class:`actor_db.kv.MemoryKV`); its limits apply.
    :param latency_s: seconds slept per round trip (0 disables the delay; the count
        goes on). Mutable: benchmarks set it to 0 while building fixtures.
    """

    def __init__(self, inner: KVStore, latency_s: float = DEFAULT_LATENCY_S) -> None:
        super().__init__(inner.limits)
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0 seconds, not {latency_s!r}")
        self.inner = inner
        self.latency_s = latency_s

    def __repr__(self) -> str:
        return f"LatencyKV({self.inner!r}, latency_s={self.latency_s})"

    @property
    def identity(self) -> Hashable:
        return self.inner.identity

    def _delay(self) -> None:
        if self.latency_s > 0:
            time.sleep(self.latency_s)

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._delay()
        return self.inner._get_many(keys)

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        self._delay()
        return self.inner._scan(start, end, limit, max_bytes)

    def _write(self, batch: WriteBatch, fence: Fence | None = None) -> None:
        self._delay()
        self.inner._write(batch, fence)

    @property
    def groups_writes(self) -> bool:  # type: ignore[override]
        """The wrapped store's: a group write is then one round trip, one delay."""
        return self.inner.groups_writes

    def _write_many(self, items: Sequence[GroupItem]) -> list[Exception | None]:
        self._delay()
        return self.inner._write_many(items)

    @property
    def loop_writes(self) -> bool:  # type: ignore[override]
        """Over an in-memory store (nothing to block on but the modelled network): the
        event loop may wait for a group write's delay itself."""
        return self.inner.instant_writes and self.inner.groups_writes

    def _start_write_many(self, items: Sequence[GroupItem]) -> GroupWrite:
        deadline = time.monotonic() + self.latency_s
        inner = self.inner

        def finish() -> list[Exception | None]:
            left = deadline - time.monotonic()
            if left > 0:
                time.sleep(left)
            return inner._write_many(items)

        return GroupWrite(finish, deadline=deadline)

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        self._delay()
        return self.inner._preload(request)

    def _acquire(self, actor_id: str, request: PreloadRequest | None) -> tuple[int, PreloadMap | None]:
        self._delay()
        return self.inner._acquire(actor_id, request)

    @property
    def supports_create(self) -> bool:  # type: ignore[override]
        """The wrapped store's: a new actor's creation rides its claim (one delay)."""
        return self.inner.supports_create

    def _create(self, actor_id: str, request: PreloadRequest, puts: Mapping[bytes, bytes],
                claim: tuple[bytes, Sequence[bytes]] | None
                ) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        self._delay()
        return self.inner._create(actor_id, request, puts, claim)

    def close(self) -> None:
        self.inner.close()


def measure_sleep_overhead(latency_s: float = DEFAULT_LATENCY_S, samples: int = 50) -> float:
    """Mean seconds one ``time.sleep(latency_s)`` really takes on this machine.

    The OS timer adds ~50-100 µs to each sleep; the report states it so the times can
    be read against the nominal latency.
    """
    started = time.perf_counter()
    for _ in range(samples):
        time.sleep(latency_s)
    return (time.perf_counter() - started) / samples
