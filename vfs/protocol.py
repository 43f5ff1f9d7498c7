"""The narrow key-value protocol the VFS needs, and the value types it exchanges.

Every storage driver (in-memory, LMDB, Redis, ...) hands the VFS an *actor-scoped view*:
an object whose keys are already confined to one actor's namespace. The VFS never sees
another actor's keys and never builds a namespace prefix itself.

Invariants every implementation must keep (one test body checks them all):

- Every method call is exactly ONE round trip to the store and is counted once.
- A missing key reads as ``None``; deleting a missing key is not an error.
- :meth:`KV.write` applies the whole :class:`WriteBatch` atomically, or none of it,
  and when it returns the batch is as durable as the driver promises.
- :meth:`KV.scan` returns keys in ascending byte order.
- Any failure is raised as an exception (drivers raise
  ``actor_db.errors.KVError`` subclasses); a call never fails silently.

Left out on purpose: transactions spanning calls, watches, TTLs. The VFS builds its
atomicity on single batches (and its redo protocol for batches over the limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Hashable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from vfs.preload import PreloadMap

__all__ = ["KV", "KVLimits", "WriteBatch", "KeyRange", "PreloadRequest", "PrefixBudget", "HintSpec",
           "ConditionFailedError", "holds_ownership"]


@dataclass(frozen=True)
class KVLimits:
    """Limits a driver enforces; ``None`` means unlimited.

    :ivar max_key_bytes: longest key, in bytes, after the driver's namespace prefix
        is removed (what the caller sees).
    :ivar max_value_bytes: largest single value, in bytes.
    :ivar max_batch_keys: most keys a single atomic :meth:`KV.write` may touch
        (puts + deletes + range deletes).
    :ivar max_batch_bytes: most key+value bytes a single atomic write may carry.
    """

    max_key_bytes: int | None = None
    max_value_bytes: int | None = None
    max_batch_keys: int | None = None
    max_batch_bytes: int | None = None

    def batch_fits(self, keys: int, nbytes: int) -> bool:
        """Whether a batch of ``keys`` operations and ``nbytes`` payload bytes fits."""
        if self.max_batch_keys is not None and keys > self.max_batch_keys:
            return False
        if self.max_batch_bytes is not None and nbytes > self.max_batch_bytes:
            return False
        return True


@dataclass(frozen=True)
class KeyRange:
    """A half-open key range ``[start, end)`` in byte order."""

    start: bytes
    end: bytes

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.start <= key < self.end


class ConditionFailedError(Exception):
    """A :class:`WriteBatch`'s expectation did not hold when the batch was applied
    (:attr:`WriteBatch.expect`): the write was refused and nothing of the batch was
    applied. Drivers raise a subclass (``actor_db.errors.KVConditionFailedError``).

    :ivar key: the first expected key (in :attr:`WriteBatch.expect` order) that did not
        hold its expected value, as the caller passed it (actor-relative, without any
        driver prefix); ``None`` when unknown.
    """

    def __init__(self, message: str = "", *, key: bytes | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class WriteBatch:
    """One atomic write: expectations are checked, then range deletes, deletes, puts.

    The order matters when operations overlap: a key that is both inside a deleted
    range and put in the same batch ends up holding the put value.

    *Conditional writes.* :attr:`expect` maps keys to the value each must hold for the
    batch to apply (``None``: the key must be absent). The driver checks every
    expectation in the same atomic step as the write (with the fencing check, when the
    view is fenced), against the state BEFORE any operation of the batch, so an
    expectation on a key the batch itself puts or deletes sees the old value. If one
    does not hold, nothing of the batch is applied and the write raises a
    :class:`ConditionFailedError` naming the first failing key. This is a
    compare-and-set: read a key, then write with ``expect_value(key, what_was_read)``
    and retry on :class:`ConditionFailedError`.

    A batch with expectations but no operation is a valid *pure check*: ``write`` checks
    it atomically, raises if it fails, writes nothing, and costs one round trip like any
    write (it is still falsy: ``bool(batch)`` counts operations only, so code that skips
    empty batches must test ``batch.expect`` too).

    :ivar puts: key -> value to store.
    :ivar deletes: keys to delete (a missing key is not an error).
    :ivar delete_ranges: half-open ranges to delete.
    :ivar expect: key -> value it must hold (``None``: absent) for the batch to apply.
    """

    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: set[bytes] = field(default_factory=set)
    delete_ranges: list[KeyRange] = field(default_factory=list)
    expect: dict[bytes, bytes | None] = field(default_factory=dict)

    def put(self, key: bytes, value: bytes) -> None:
        self.deletes.discard(key)
        self.puts[key] = value

    def delete(self, key: bytes) -> None:
        self.puts.pop(key, None)
        self.deletes.add(key)

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Delete every key in ``[start, end)``; puts already in the batch win."""
        if start < end:
            self.delete_ranges.append(KeyRange(start, end))

    def expect_value(self, key: bytes, value: bytes | None) -> None:
        """Apply the batch only if ``key`` holds exactly ``value`` (``None``: ``key`` is
        absent) at the moment it applies, before any of its operations."""
        self.expect[key] = value

    def merge(self, other: WriteBatch) -> None:
        """Add ``other``'s operations after this batch's own (``other`` wins), and its
        expectations (``other``'s value wins for a key both expect).

        Every expectation of the merged batch is checked before ANY of its operations,
        so ``other``'s are checked against the state before this batch's operations,
        not after them: do not merge a batch with expectations behind operations it
        depends on.
        """
        for r in other.delete_ranges:
            self.puts = {k: v for k, v in self.puts.items() if k not in r}
            self.delete_ranges.append(r)
        for k in other.deletes:
            self.delete(k)
        if self.deletes:
            for k, v in other.puts.items():
                self.put(k, v)
        else:  # (nothing to un-delete: put() is a plain dict store; every commit merges here)
            self.puts.update(other.puts)
        if other.expect:
            self.expect.update(other.expect)

    @property
    def op_count(self) -> int:
        """Number of operations (each put, delete and range delete counts one;
        expectations do not count)."""
        return len(self.puts) + len(self.deletes) + len(self.delete_ranges)

    @property
    def payload_bytes(self) -> int:
        """Key and value bytes carried by the batch (expected keys and values too)."""
        puts = self.puts
        n = sum(map(len, puts)) + sum(map(len, puts.values()))  # (C loops: every commit counts it)
        if self.deletes:
            n += sum(map(len, self.deletes))
        if self.delete_ranges:
            n += sum(len(r.start) + len(r.end) for r in self.delete_ranges)
        if self.expect:
            n += sum(len(k) + (0 if v is None else len(v)) for k, v in self.expect.items())
        return n

    def __bool__(self) -> bool:
        """Whether the batch has operations (expectations alone do not count)."""
        return bool(self.puts or self.deletes or self.delete_ranges)


@dataclass(frozen=True)
class HintSpec:
    """Chunks to preload first because a hint record lists them (:mod:`vfs.hint`).

    :ivar key: the hint record's key; it is read in the same call (and reported found or
        absent, like an exact key).
    :ivar chunk_prefix: the listed chunk ``i`` is the key ``chunk_prefix + u32 BE i``.
    :ivar interior_max_bytes: allowance in value bytes for the chunks the record marks
        as B-tree interior pages (its first ``interior`` entries, :mod:`vfs.hint`
        version 2), charged before and outside the range's budget and the request's
        total; once it is spent, the rest are charged to the range's budget like the
        other listed chunks. 0: every listed chunk goes to the range's budget.
    """

    key: bytes
    chunk_prefix: bytes
    interior_max_bytes: int = 0


@dataclass(frozen=True)
class PrefixBudget:
    """A range to preload, bounded by a byte budget.

    :ivar range: the keys to scan, in ascending order.
    :ivar max_bytes: budget in value bytes for this range (0 disables the range: it is
        not scanned and nothing in it is reported as absent).
    :ivar partial: when the range holds more than the budget, ``True`` keeps the
        lowest keys that fit (and covers keys only up to the last one kept);
        ``False`` keeps nothing (all-or-nothing).
    :ivar hint: before the scan, the chunks a hint record lists are fetched in its order
        and charged to this range's budget first (each reported found or absent, as an
        exact key; those past the budget are not loaded); the scan then fills what is
        left, skipping them. Only for partial ranges. All in the same single call.
    """

    range: KeyRange
    max_bytes: int
    partial: bool = True
    hint: HintSpec | None = None


@dataclass(frozen=True)
class PreloadRequest:
    """What a startup preload fetches in ONE round trip.

    :ivar keys: exact keys; each comes back found or confirmed absent, whatever the
        budget (their value bytes are charged to ``max_total_bytes`` first).
    :ivar ranges: prefix scans with budgets, evaluated in order.
    :ivar max_total_bytes: budget in value bytes over all ranges together; a range gets
        ``min(its own budget, what is left of the total)``.
    """

    keys: tuple[bytes, ...] = ()
    ranges: tuple[PrefixBudget, ...] = ()
    max_total_bytes: int | None = None


@runtime_checkable
class KV(Protocol):
    """An actor-scoped key-value view. Every method is one round trip."""

    @property
    def identity(self) -> Hashable:
        """A value equal for two views of the same actor in the same store.

        The VFS uses it to refuse a second open of one database in one process.
        """
        ...

    @property
    def limits(self) -> KVLimits:
        """The driver's limits (atomic batch size, value size, ...)."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values for ``keys`` in the same order; ``None`` for a missing key."""
        ...

    def scan(
        self,
        start: bytes,
        end: bytes,
        *,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Key/value pairs with ``start <= key < end`` in ascending key order.

        Stops after ``limit`` pairs, or before the pair that would take the returned
        value bytes over ``max_bytes`` (at least one pair is returned if any exists
        and ``max_bytes`` is ``None``). ``limit=0`` or ``max_bytes=0`` returns nothing.

        :raises ValueError: ``limit`` or ``max_bytes`` is negative.
        """
        ...

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically (all or nothing)."""
        ...

    def preload(self, request: PreloadRequest) -> PreloadMap:
        """Run ``request`` in one round trip and return what it found."""
        ...


def holds_ownership(kv: object) -> bool:
    """Whether ``kv`` took single-writer ownership of its actor (a fencing token).

    A view may expose ``fence_token`` (``None`` until it acquired ownership; drivers in
    ``actor_db.kv`` do, and wrappers forward it). Only an owner's writes are checked
    against newer owners, so only an owner may clean up what an interrupted large
    transaction left in the KV when it opens; any other open only reads.
    """
    return getattr(kv, "fence_token", None) is not None
