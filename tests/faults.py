"""KV wrappers that fail on purpose, for crash-safety and error-path tests."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence

from vfs.preload import PreloadMap
from vfs.protocol import KV, KVLimits, PreloadRequest, WriteBatch

from actor_db.errors import KVUnavailableError


class InjectedFault(KVUnavailableError):
    """The failure a :class:`FaultyKV` raises."""


class ForwardingKV:
    """An actor-scoped view that hands every call to ``inner`` through :meth:`_around`,
    the one place a subclass adds its behaviour (failures, counting, interrupts).

    :param limits: limits to report instead of ``inner``'s (e.g. a small batch cap).
    """

    def __init__(self, inner: KV, limits: KVLimits | None = None) -> None:
        self.inner = inner
        self._limits = limits

    @property
    def identity(self) -> Hashable:
        return self.inner.identity

    @property
    def limits(self) -> KVLimits:
        return self._limits or self.inner.limits

    @property
    def fence_token(self) -> int | None:
        return getattr(self.inner, "fence_token", None)

    def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
        """Run ``call`` (``batch`` is the batch of a write, ``None`` for a read)."""
        return call()

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self._around(lambda: self.inner.get_many(keys), None)  # type: ignore[no-any-return]

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None,
             max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        return self._around(lambda: self.inner.scan(start, end, limit=limit, max_bytes=max_bytes),  # type: ignore[no-any-return]
                            None)

    def write(self, batch: WriteBatch) -> None:
        self._around(lambda: self.inner.write(batch), batch)

    def preload(self, request: PreloadRequest) -> PreloadMap:
        return self._around(lambda: self.inner.preload(request), None)  # type: ignore[no-any-return]


class FaultyKV(ForwardingKV):
    """Wraps an actor-scoped view; can fail the N-th write, or every call while ``down``.

    :param fail_write_at: 1-based index of the write call that raises (before it reaches
        the store, so nothing of it is applied); ``None`` never.
    :param apply_then_fail: the failing write is applied first, then raises (an
        ambiguous failure, like a lost reply from a network store).
    """

    def __init__(self, inner: KV, *, fail_write_at: int | None = None, apply_then_fail: bool = False,
                 limits: KVLimits | None = None) -> None:
        super().__init__(inner, limits)
        self.fail_write_at = fail_write_at
        self.apply_then_fail = apply_then_fail
        self.writes = 0
        self.batches: list[WriteBatch] = []
        """Every batch this view was asked to write, in order (failed ones too)."""
        self.down = False
        self.failed = False

    @property
    def fence_token(self) -> None:
        """Never an owner: the crash tests model a writer without fencing."""
        return None

    def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
        if self.down:
            raise InjectedFault("injected: KV is down")
        if batch is None:
            return call()
        self.writes += 1
        self.batches.append(batch)
        if self.fail_write_at is not None and self.writes == self.fail_write_at:
            self.failed = True
            if self.apply_then_fail:
                call()
            raise InjectedFault(f"injected: write call #{self.writes} failed")
        return call()


class OtherProcessView(ForwardingKV):
    """An actor-scoped view as ANOTHER process would hold it: the same keys, but its own
    identity (the one-open-per-process registry does not see it) and no ownership.
    Counts its calls, so a test can assert that a reader never wrote.
    """

    def __init__(self, inner: KV) -> None:
        super().__init__(inner)
        self.reads = 0
        self.writes = 0

    @property
    def identity(self) -> Hashable:
        return (self.inner.identity, "other-process", id(self))

    @property
    def fence_token(self) -> None:
        return None

    @property
    def actor_id(self) -> str | None:
        return getattr(self.inner, "actor_id", None)

    def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
        if batch is None:
            self.reads += 1
        else:
            self.writes += 1
        return call()
