"""KV wrappers that fail on purpose, for crash-safety and error-path tests."""

from __future__ import annotations

from typing import Hashable, Sequence

from vfs.preload import PreloadMap
from vfs.protocol import KV, KVLimits, PreloadRequest, WriteBatch

from actor_db.errors import KVUnavailableError


class InjectedFault(KVUnavailableError):
    """The failure a :class:`FaultyKV` raises."""


class FaultyKV:
    """Wraps an actor-scoped view; can fail the N-th write, or every call while ``down``.

    :param fail_write_at: 1-based index of the write call that raises (before it reaches
        the store, so nothing of it is applied); ``None`` never.
    :param apply_then_fail: the failing write is applied first, then raises (an
        ambiguous failure, like a lost reply from a network store).
    """

    def __init__(self, inner: KV, *, fail_write_at: int | None = None, apply_then_fail: bool = False,
                 limits: KVLimits | None = None) -> None:
        self.inner = inner
        self.fail_write_at = fail_write_at
        self.apply_then_fail = apply_then_fail
        self.writes = 0
        self.batches: list[WriteBatch] = []
        """Every batch this view was asked to write, in order (failed ones too)."""
        self.down = False
        self.failed = False
        self._limits = limits

    @property
    def identity(self) -> Hashable:
        return self.inner.identity

    @property
    def limits(self) -> KVLimits:
        return self._limits or self.inner.limits

    def _check(self) -> None:
        if self.down:
            raise InjectedFault("injected: KV is down")

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check()
        return self.inner.get_many(keys)

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None, max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        self._check()
        return self.inner.scan(start, end, limit=limit, max_bytes=max_bytes)

    def write(self, batch: WriteBatch) -> None:
        self._check()
        self.writes += 1
        self.batches.append(batch)
        if self.fail_write_at is not None and self.writes == self.fail_write_at:
            self.failed = True
            if self.apply_then_fail:
                self.inner.write(batch)
            raise InjectedFault(f"injected: write call #{self.writes} failed")
        self.inner.write(batch)

    def preload(self, request: PreloadRequest) -> PreloadMap:
        self._check()
        return self.inner.preload(request)


class OtherProcessView:
    """An actor-scoped view as ANOTHER process would hold it: the same keys, but its own
    identity (the one-open-per-process registry does not see it) and no ownership.
    Counts its calls, so a test can assert that a reader never wrote.
    """

    def __init__(self, inner: KV) -> None:
        self.inner = inner
        self.reads = 0
        self.writes = 0

    @property
    def identity(self) -> Hashable:
        return (self.inner.identity, "other-process", id(self))

    @property
    def limits(self) -> KVLimits:
        return self.inner.limits

    @property
    def actor_id(self) -> str | None:
        return getattr(self.inner, "actor_id", None)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self.reads += 1
        return self.inner.get_many(keys)

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None, max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        self.reads += 1
        return self.inner.scan(start, end, limit=limit, max_bytes=max_bytes)

    def write(self, batch: WriteBatch) -> None:
        self.writes += 1
        self.inner.write(batch)

    def preload(self, request: PreloadRequest) -> PreloadMap:
        self.reads += 1
        return self.inner.preload(request)
