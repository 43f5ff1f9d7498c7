"""The writer lease for operations that write an actor outside SQLite's own locking
(``import``, ``rm``): the same KV lease the drop-in's ``locking="cross-process"``
connections take (:mod:`vfs.lease`, key ``[8, 1, 5]``), held for the whole operation.

:func:`writer_lease` waits (up to ``timeout_s``) until no live lease is held, puts its
own with a conditional write, and yields a :class:`LeasedKV`: a view whose every write
(the VFS's commits, its staging and redo batches, ``delete_all``) expects the lease to
still be this operation's. A background thread renews the lease (every third of its
time to live) while the operation runs, so a long import keeps it; if the lease is
ever lost (the process stalled past the time to live and a drop-in writer took it
over), the next write fails with ``KVConditionFailedError`` and nothing of it lands.
At the end the lease is deleted with a conditional delete (best effort: it expires).

Invariants:

- No write of a :class:`LeasedKV` lands unless its lease is current at that moment
  (the expectation is part of the same atomic batch).
- A drop-in connection in a write transaction holds the lease: the operation waits
  for its commit or rollback, and gives up with :class:`~actor_db.errors.WriterBusyError`
  (naming the holder) after ``timeout_s``; it never writes under a live transaction.
- While the operation holds the lease, drop-in writers wait for it (their busy
  handler, up to their ``timeout``), and their read transactions see the operation's
  commit as another process's commit.

Left out: connections of the drop-in in the SAME process using ``locking="in-process"``
(a ``MemoryKV``) do not write the KV lease; they are coordinated by that process's
lock table, not by this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Hashable, Iterator

from vfs import lease as vfs_lease
from vfs.protocol import KeyRange, WriteBatch

from actor_db.errors import KVConditionFailedError, WriterBusyError

log = logging.getLogger(__name__)

__all__ = ["LeasedKV", "writer_lease", "DEFAULT_LEASE_TIMEOUT_S", "LEASE_POLL_MAX_S"]

DEFAULT_LEASE_TIMEOUT_S = 5.0
"""Seconds an operation waits for a drop-in writer's lease (the drop-in's own default
``timeout``)."""
LEASE_POLL_MAX_S = 0.1
"""Longest pause between two reads of a held lease while waiting, seconds."""



def _renewed(value: bytes, ttl_s: float) -> bytes:
    """``value`` with the same holder id and an expiry ``ttl_s`` seconds from now."""
    return vfs_lease.renewed(value, ttl_s)


class LeasedKV:
    """An actor view whose writes land only while this operation holds the writer lease.

    Forwards every read and attribute to the wrapped view; :meth:`write` and
    :meth:`delete_all` add ``expect_value(LEASE_KEY, <our lease>)`` to the batch. Writes
    and renewals are serialized by one lock, so a write never races a renewal.
    """

    def __init__(self, view: Any, value: bytes, ttl_s: float, *, lease_view: Any = None) -> None:
        self._view = view
        self._lease_view = view if lease_view is None else lease_view
        self._value = value
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self.lost: BaseException | None = None
        """Why the lease was lost (a failed renewal), or ``None``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)

    def __repr__(self) -> str:
        return f"<LeasedKV {self._view!r} lease {vfs_lease.lease_holder(self._value)}>"

    @property
    def view(self) -> Any:
        """The wrapped view (unconditional writes: do not write through it)."""
        return self._view

    @property
    def identity(self) -> Hashable:
        return self._view.identity  # type: ignore[no-any-return]

    @property
    def lease_value(self) -> bytes:
        """The current lease value (holder id + expiry)."""
        return self._value

    def get_many(self, keys: Any) -> list[bytes | None]:
        return self._view.get_many(keys)  # type: ignore[no-any-return]

    def scan(self, start: bytes, end: bytes, **kwargs: Any) -> list[tuple[bytes, bytes]]:
        return self._view.scan(start, end, **kwargs)  # type: ignore[no-any-return]

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically if the lease is still this operation's.

        :raises KVConditionFailedError: the lease was lost (or another expectation of
            the batch failed); nothing was applied.
        """
        if vfs_lease.LEASE_KEY in batch.expect:  # a caller that manages the lease itself
            raise ValueError("a batch through LeasedKV must not set its own lease expectation")
        with self._lock:
            batch.expect_value(vfs_lease.LEASE_KEY, self._value)
            try:
                self._view.write(batch)
            finally:
                del batch.expect[vfs_lease.LEASE_KEY]

    def delete_all(self) -> None:
        """Delete every key of the actor (the lease with them) in one atomic batch that
        expects the lease (one round trip)."""
        batch = WriteBatch()
        # An empty range end is the end of the actor's namespace (ActorKV's rule): every key.
        batch.delete_ranges.append(KeyRange(b"", b""))
        self.write(batch)
        self._value = b""  # deleted with the rest

    def renew(self) -> bool:
        """Extend the lease by its time to live (one conditional round trip).

        :returns: whether it is still held (``False``: lost or already released).
        """
        with self._lock:
            if not self._value:
                return False
            value = _renewed(self._value, self._ttl_s)
            batch = WriteBatch()
            batch.put(vfs_lease.LEASE_KEY, value)
            batch.expect_value(vfs_lease.LEASE_KEY, self._value)
            try:
                self._lease_view.write(batch)
            except KVConditionFailedError as exc:
                self.lost = exc
                log.warning("actor %r: the writer lease %s was lost (a stall past its %.1f s time to live?); "
                            "the operation's next write will be refused", getattr(self._view, "actor_id", "?"),
                            vfs_lease.lease_holder(self._value), self._ttl_s)
                self._value = b"\x00" * len(self._value)  # never matches: every later write is refused
                return False
            self._value = value
            return True

    def release(self) -> None:
        """Delete the lease if it is still ours (best effort; it expires anyway)."""
        with self._lock:
            value, self._value = self._value, b""
            if not value or not any(value):
                return
            batch = WriteBatch()
            batch.delete(vfs_lease.LEASE_KEY)
            batch.expect_value(vfs_lease.LEASE_KEY, value)
            try:
                self._lease_view.write(batch)
            except Exception as exc:
                log.info("could not release the writer lease of actor %r (%s); it expires",
                         getattr(self._view, "actor_id", "?"), exc)


def _acquire(view: Any, ttl_s: float, timeout_s: float) -> bytes:
    """Put a fresh lease when none is live (waiting up to ``timeout_s``).

    :raises WriterBusyError: a live lease was held throughout ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        current = view.get_many([vfs_lease.LEASE_KEY])[0]
        if current is None or vfs_lease.lease_expired(current):
            if current is not None:
                log.warning("actor %r: taking over the expired writer lease %s", getattr(view, "actor_id", "?"),
                            vfs_lease.lease_holder(current))
            value = vfs_lease.new_lease(ttl_s)
            batch = WriteBatch()
            batch.put(vfs_lease.LEASE_KEY, value)
            batch.expect_value(vfs_lease.LEASE_KEY, current)
            try:
                view.write(batch)
                return value
            except KVConditionFailedError:
                pass  # another writer got there first: wait for it like any holder
            except BaseException:
                _forget(view, value)  # the put may have landed (a lost reply): take it back
                raise
        elif time.monotonic() >= deadline:
            holder = vfs_lease.lease_holder(current)
            raise WriterBusyError(
                f"actor {getattr(view, 'actor_id', '?')!r}: another writer (writer lease {holder}: a drop-in "
                f"connection in a write transaction, or another actor-db command) held the actor's writer lease "
                f"for {timeout_s:g} s; nothing was written (retry when it has committed, or pass a longer "
                "--timeout)", holder=holder)
        time.sleep(min(pause, max(0.0, deadline - time.monotonic()), LEASE_POLL_MAX_S))
        pause *= 2


def _unfenced(view: Any) -> Any:
    """A view of the same actor that holds no fencing token, for the lease's own writes:
    the lease coordinates drop-in writers, not owners, so taking, renewing and releasing
    it must work even after a runtime fenced this operation off (else a fenced import
    would leave its lease to block every writer until it expires)."""
    store, actor_id = getattr(view, "store", None), getattr(view, "actor_id", None)
    if isinstance(actor_id, str) and callable(getattr(store, "actor", None)):
        return store.actor(actor_id)  # type: ignore[union-attr]
    return view  # a wrapper without a store: its own writes (tests)


def _forget(view: Any, value: bytes) -> None:
    """Delete the lease ``value`` if it is there (best effort, after a failed put)."""
    batch = WriteBatch()
    batch.delete(vfs_lease.LEASE_KEY)
    batch.expect_value(vfs_lease.LEASE_KEY, value)
    with contextlib.suppress(Exception):
        view.write(batch)


@contextlib.contextmanager
def writer_lease(view: Any, *, timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
                 ttl_s: float = vfs_lease.DEFAULT_LEASE_TTL_S) -> Iterator[LeasedKV]:
    """Hold the actor's writer lease for the ``with`` block (see the module docstring).

    Costs 2 round trips to take (a read, a conditional put), 1 per renewal (every
    ``ttl_s / 3`` seconds) and 1 to release.

    :param view: the actor view (e.g. ``store.actor("a1")``, fenced or not).
    :param timeout_s: how long to wait for a live lease of another writer, seconds.
    :param ttl_s: the lease's time to live if this process dies, seconds.
    :raises WriterBusyError: another writer held the lease for ``timeout_s``.
    """
    if timeout_s < 0 or not ttl_s > 0:
        raise ValueError(f"timeout_s must be >= 0 and ttl_s > 0 (got {timeout_s!r}, {ttl_s!r})")
    lease_view = _unfenced(view)
    leased = LeasedKV(view, _acquire(lease_view, ttl_s, timeout_s), ttl_s, lease_view=lease_view)
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not leased.renew():
                    return
            except Exception as exc:  # the KV is down: the writes will fail too
                log.warning("actor %r: renewing the writer lease failed (%s)", getattr(view, "actor_id", "?"), exc)

    renewer = threading.Thread(target=keep_alive, name="actor-db-lease", daemon=True)
    renewer.start()
    try:
        yield leased
    finally:
        stop.set()
        renewer.join()
        leased.release()
