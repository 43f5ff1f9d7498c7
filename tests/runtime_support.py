"""Support for the runtime tests: a store wrapper that observes or delays KV calls.

:class:`HookedStore` wraps any driver (so the same test runs on memory, LMDB, ...) at the
raw-operation level: each raw call is still exactly one call to the real store, made
after an optional hook that may record it, block it on a ``threading.Event``, or raise.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine, Hashable, Sequence, TypeVar

from vfs.preload import PreloadMap
from vfs.protocol import PreloadRequest, WriteBatch

from actor_db.kv import KVStore
from actor_db.kv.namespace import parse_actor_key

T = TypeVar("T")

Hook = Callable[[str, str | None, Any], None]
"""``hook(op, actor_id, payload)``; op is ``get``, ``scan``, ``write`` or ``preload``."""


def _actor_of(key: bytes) -> str | None:
    parsed = parse_actor_key(key)
    return parsed[0] if parsed else None


class HookedStore(KVStore):
    """Delegates every raw operation to ``inner`` after calling :attr:`hook`."""

    def __init__(self, inner: KVStore) -> None:
        super().__init__(inner.limits)
        self.inner = inner
        self.hook: Hook | None = None
        self.log: list[tuple[str, str | None, Any]] = []

    @property
    def identity(self) -> Hashable:
        return self.inner.identity

    def _before(self, op: str, key: bytes, payload: Any) -> None:
        actor = _actor_of(key)
        self.log.append((op, actor, payload))
        if self.hook is not None:
            self.hook(op, actor, payload)

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._before("get", keys[0] if keys else b"", list(keys))
        return self.inner._get_many(keys)

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        self._before("scan", start, (start, end))
        return self.inner._scan(start, end, limit, max_bytes)

    def _write(self, batch: WriteBatch, *fence: Any) -> None:
        self._before("write", self._some_key(batch), batch)
        self.inner._write(batch, *fence)

    @staticmethod
    def _some_key(batch: WriteBatch) -> bytes:
        return next(iter(batch.puts), None) or next(iter(batch.deletes), None) \
            or (batch.delete_ranges[0].start if batch.delete_ranges else None) or next(iter(batch.expect), b"")

    @property
    def groups_writes(self) -> bool:  # type: ignore[override]
        return self.inner.groups_writes

    def _write_many(self, items: Sequence[tuple[WriteBatch, Any]]) -> list[Exception | None]:
        """The hook runs for each batch in turn (as a ``"write"``); a batch whose hook
        raises gets that error, the others go to the inner store in one call."""
        results: list[Exception | None] = [None] * len(items)
        sent: list[int] = []
        for i, (batch, _) in enumerate(items):
            try:
                self._before("write", self._some_key(batch), batch)
            except Exception as exc:
                results[i] = exc
            else:
                sent.append(i)
        if sent:
            for i, error in zip(sent, self.inner._write_many([items[i] for i in sent])):
                results[i] = error
        return results

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        self._before("preload", request.keys[0] if request.keys else b"", request)
        return self.inner._preload(request)

    def _acquire(self, actor_id: str, request: PreloadRequest | None) -> tuple[int, PreloadMap | None]:
        # Taking ownership (with the startup preload) is recorded as the preload it carries.
        self._before("preload", request.keys[0] if request and request.keys else b"", request)
        return self.inner._acquire(actor_id, request)

    def ops(self, actor: str | None = None) -> list[tuple[str, Any]]:
        """Recorded ``(op, payload)`` calls, optionally of one actor only."""
        return [(op, p) for op, a, p in self.log if actor is None or a == actor]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test coroutine on a fresh event loop."""
    return asyncio.run(coro)


def actor_keys(store: KVStore, actor_id: str) -> list[bytes]:
    """Every (actor-relative) key ``actor_id`` holds (one scan)."""
    return [k for k, _ in store.actor(actor_id).scan(b"", b"")]


UNTIL_DEADLINE_S = 30.0


async def until(predicate: Callable[[], bool], deadline_s: float = UNTIL_DEADLINE_S) -> None:
    """Yield to the loop until ``predicate()`` holds (a hang fails the test after
    ``deadline_s``; nothing is timed)."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(poll(), deadline_s)
