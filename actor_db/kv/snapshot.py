"""Snapshot reads: a read-only actor view on ONE consistent committed state.

A reader of a live actor (``actor-db export``, ``inspect``, a backup) makes many KV
calls; without a snapshot, a commit landing between two of them mixes pages of two
states (a "backup" whose pages disagree, or a bank whose balances no longer sum to 0).
:func:`read_snapshot` returns a :class:`SnapshotKV` whose every read sees one state:

- ``MemoryKV``: the actor's keys are copied under the store's lock (one call).
- ``LmdbKV``: one LMDB read transaction is held open for the snapshot's life (MVCC:
  writers are never blocked; the pages it sees are kept until it closes).
- ``RedisKV``: Redis has no multi-call read transaction, so every write script bumps a
  per-actor version counter, every snapshot read returns the version in the same
  atomic script, and a read that sees another version than the first raises
  :class:`SnapshotChangedError` instead of returning data from a different state. The
  caller retries (:func:`retry_on_change` does it with backoff); after
  ``PINNED_AFTER`` changed tries it takes a *pinned* snapshot instead: one script
  copies the actor's keys server-side (O(size), and that much memory while it lives),
  which always completes however busy the writer is.

A snapshot view never writes (:meth:`SnapshotKV.write` raises) and has its own
identity, so it can be opened with ``vfs.connect(snapshot, readonly=True)`` in the same
process as the actor's live connection.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Callable, Hashable, Protocol, Sequence, TypeVar

from vfs.preload import PreloadMap
from vfs.protocol import KVLimits, PreloadRequest, WriteBatch

from actor_db.errors import KVError, find_cause

if TYPE_CHECKING:
    from actor_db.kv.base import ActorKV

log = logging.getLogger(__name__)

__all__ = ["SnapshotKV", "SnapshotReader", "SnapshotChangedError", "read_snapshot", "retry_on_change",
           "snapshot_changed", "DEFAULT_SNAPSHOT_ATTEMPTS"]

DEFAULT_SNAPSHOT_ATTEMPTS = 5
"""Tries :func:`retry_on_change` makes before giving up (drivers without read transactions)."""
PINNED_AFTER = 2
"""Changed tries after which :func:`retry_on_change` takes a pinned snapshot."""

_serial = itertools.count(1)
T = TypeVar("T")


class SnapshotChangedError(KVError):
    """A commit landed on the actor while a snapshot read was in progress (drivers
    without multi-call read transactions detect it; nothing inconsistent was returned).
    Retry the whole read: :func:`retry_on_change`."""


class SnapshotReader(Protocol):
    """A driver's raw snapshot: full store keys, the same rules as ``KVStore``'s raw
    operations, every answer from one committed state."""

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]: ...

    def _preload(self, request: PreloadRequest) -> PreloadMap: ...

    def close(self) -> None: ...


class SnapshotKV:
    """A read-only view of one actor at one committed state (see the module docstring).

    Satisfies :class:`vfs.protocol.KV` for reads; each call is one round trip, counted
    on the store like the live view's. Use as a context manager, or :meth:`close` it.
    """

    def __init__(self, view: ActorKV, reader: SnapshotReader) -> None:
        self.view = view
        self.actor_id = view.actor_id
        self._reader = reader
        self._identity = (view.identity, "snapshot", next(_serial))
        self._closed = False

    def __repr__(self) -> str:
        return f"<SnapshotKV {self.actor_id!r} of {type(self.view.store).__name__}>"

    @property
    def identity(self) -> Hashable:
        return self._identity

    @property
    def limits(self) -> KVLimits:
        return self.view.limits

    @property
    def fence_token(self) -> None:
        """Always ``None``: a snapshot never owns the actor (and never writes)."""
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise KVError(f"{self!r} is closed")

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check_open()
        return self.view._get_many_from(self._reader, "snapshot get", keys)

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None,
             max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        self._check_open()
        return self.view._scan_from(self._reader, "snapshot scan", start, end, limit, max_bytes)

    def preload(self, request: PreloadRequest) -> PreloadMap:
        self._check_open()
        found: PreloadMap = self.view._call("snapshot preload", self._reader._preload, self.view._full_request(request))
        return found.without_prefix(self.view.prefix)

    def write(self, batch: WriteBatch) -> None:
        """Always refused: a snapshot is read-only."""
        raise KVError(f"{self!r} is a read-only snapshot; write through the actor's own view")

    def close(self) -> None:
        """Release the snapshot (LMDB: end its read transaction). Idempotent."""
        if not self._closed:
            self._closed = True
            self._reader.close()

    def __enter__(self) -> SnapshotKV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_snapshot(view: ActorKV, *, pinned: bool = False) -> SnapshotKV:
    """A :class:`SnapshotKV` of ``view``'s actor as of now (one consistent state).

    :param pinned: for drivers without read transactions (Redis), copy the actor's
        keys server-side now, so no later commit can interrupt the reads (costs the
        copy); other drivers' snapshots are always pinned.

    :raises KVError: the driver cannot take snapshots, or the store failed.
    """
    opener = getattr(view.store, "_open_snapshot", None)
    if opener is None:
        raise KVError(f"{type(view.store).__name__} cannot take snapshot reads")
    view.store._count()
    try:
        reader = opener(view.prefix, view._end, pinned)
    except KVError:
        raise
    except Exception as exc:
        raise KVError(f"{type(view.store).__name__} snapshot of actor {view.actor_id!r} failed: {exc}") from exc
    return SnapshotKV(view, reader)


def snapshot_changed(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its cause/context chain, e.g. the
    ``apsw.IOError`` the VFS raised) is a :class:`SnapshotChangedError`."""
    return find_cause(exc, SnapshotChangedError) is not None


def retry_on_change(view: ActorKV, read: Callable[[SnapshotKV], T], *,
                    attempts: int = DEFAULT_SNAPSHOT_ATTEMPTS, backoff_s: float = 0.005) -> T:
    """Run ``read`` on a fresh snapshot until no commit interrupts it.

    :param read: does all its reads through the snapshot it is given; it may raise
        anything (an ``apsw`` error caused by :class:`SnapshotChangedError` counts as a
        change and is retried).
    :param attempts: tries before the last :class:`SnapshotChangedError` is raised;
        from try ``PINNED_AFTER + 1`` on the snapshot is pinned (cannot change).
    :param backoff_s: first pause between tries, doubled each time (capped at 0.5 s).
    """
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        with read_snapshot(view, pinned=attempt > PINNED_AFTER) as snapshot:
            try:
                return read(snapshot)
            except BaseException as exc:
                if attempt == attempts or not snapshot_changed(exc):
                    raise
        log.debug("actor %r changed during a snapshot read (try %d); retrying", view.actor_id, attempt)
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")  # pragma: no cover
