"""The preload map: what one startup KV call fetched, with exact knowledge of coverage.

A lookup has three answers:

- the value (``bytes``): the key was fetched and exists;
- :data:`ABSENT`: the key was asked for exactly, or lies inside a scanned part of a
  range, and does not exist;
- :data:`NOT_LOADED`: the preload knows nothing; the caller must ask the KV.

Invariant (the one that prevents silent data loss): a key skipped for budget is never
:data:`ABSENT`. A partially scanned range covers keys only up to and including the
last key it kept; keys after that are :data:`NOT_LOADED`.

Writes made after the preload keep it current through :meth:`PreloadMap.update` and
:meth:`PreloadMap.delete_range`; :meth:`PreloadMap.clear` forgets everything (used
before migrations run, after a failed commit, and after a redo roll-forward).
"""

from __future__ import annotations

import enum
import threading
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

from vfs.protocol import HintSpec, KeyRange, PreloadRequest

__all__ = ["PreloadMap", "PreloadMiss", "ABSENT", "NOT_LOADED", "build_preload", "evaluate_preload"]


class PreloadMiss(enum.Enum):
    """The two ways a preload lookup can fail to give a value."""

    ABSENT = "absent"
    NOT_LOADED = "not loaded"


ABSENT = PreloadMiss.ABSENT
NOT_LOADED = PreloadMiss.NOT_LOADED

_K = TypeVar("_K")
_V = TypeVar("_V")


def _interned(table: dict[_K, _V], key: _K, make: Callable[[], _V], bound: int) -> _V:
    """``table[key]``, made with ``make()`` at its first use; the table is cleared when
    it reaches ``bound`` entries (a cache: any object it forgets stays valid)."""
    found = table.get(key)
    if found is None:
        if len(table) >= bound:
            table.clear()
        found = table[key] = make()
    return found


_SHARED_RANGES: dict[tuple[bytes, bytes], KeyRange] = {}
"""Covered ranges by ``(start, end)``: every actor's preload covers the same few
actor-relative ranges, so their (frozen) :class:`KeyRange` objects are shared, not
made per awake actor (bounded: cleared at :data:`_SHARED_RANGES_MAX` entries)."""
_SHARED_RANGES_MAX = 4096


def _shared_range(start: bytes, end: bytes) -> KeyRange:
    """The :class:`KeyRange` ``[start, end)``, one object per distinct range."""
    return _interned(_SHARED_RANGES, (start, end), lambda: KeyRange(start, end), _SHARED_RANGES_MAX)


_SHARED_COVERAGE: dict[object, object] = {}  # (values: frozensets and tuples, see _T)
"""Immutable coverage (a frozenset of exact keys, a tuple of covered ranges) by value,
bounded like :data:`_SHARED_RANGES`: most actors of a type wake with the same ones. (A
frozenset never equals a tuple, so a value found here has the type of the one asked.)"""
_SHARED_COVERAGE_MAX = 1024
_SHARE_AT_MOST = 32
"""Only sets and tuples of at most this many members are shared (hashing a big one at
every wake would cost more than the object it saves)."""

_T = TypeVar("_T", "frozenset[bytes]", "tuple[KeyRange, ...]")


def _shared(value: _T) -> _T:
    """``value`` or the equal one already shared."""
    if len(value) > _SHARE_AT_MOST:
        return value
    found: _T = _interned(_SHARED_COVERAGE, value, lambda: value, _SHARED_COVERAGE_MAX)  # type: ignore[arg-type]
    return found


class PreloadMap:
    """Values and coverage from one preload call.

    :param values: keys found, with their values.
    :param exact_keys: keys asked for exactly (found or not).
    :param covered: ranges whose every key is known: present in ``values`` or absent.
        For a partial scan the range is ``[start, last_key_kept + b"\\x00")``.

    The exact keys and the covered ranges are immutable (a frozenset, a tuple: a change
    replaces them), so equal ones are shared between maps: one per awake actor would be
    two objects the garbage collector tracks for each.
    """

    def __init__(
        self,
        values: Mapping[bytes, bytes] | None = None,
        exact_keys: Iterable[bytes] = (),
        covered: Iterable[KeyRange] = (),
    ) -> None:
        self._values: dict[bytes, bytes] = dict(values or {})
        self._exact: frozenset[bytes] = _shared(frozenset(exact_keys))
        self._covered: tuple[KeyRange, ...] = _shared(tuple(covered))
        self._lock = threading.Lock()
        self._listeners: list[Callable[[bytes, bytes | None], None]] = []
        for key in self._values:
            assert self._is_covered(key), f"preloaded key {key!r} lies outside the coverage"

    @classmethod
    def empty(cls) -> PreloadMap:
        """A preload that knows nothing (every lookup is :data:`NOT_LOADED`)."""
        return cls()

    def _is_covered(self, key: bytes) -> bool:
        return key in self._exact or any(key in r for r in self._covered)

    def add_listener(self, listener: Callable[[bytes, bytes | None], None]) -> None:
        """Call ``listener(start, end)`` after every change to keys in ``[start, end)``
        (``end`` ``None``: unbounded). The native VFS mirrors chunk entries this way."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[bytes, bytes | None], None]) -> None:
        """Undo :meth:`add_listener` (no error if it is not registered)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, start: bytes, end: bytes | None) -> None:
        for listener in list(self._listeners):
            listener(start, end)

    def covered_ranges(self) -> list[KeyRange]:
        """Every range whose keys are known (exact keys as one-key ranges)."""
        with self._lock:
            return [KeyRange(k, k + b"\x00") for k in self._exact] + list(self._covered)

    def covers(self, start: bytes, end: bytes) -> bool:
        """Whether one covered range holds all of ``[start, end)`` (every key in it is
        known: found or absent); :meth:`covered_ranges` without building the list."""
        if end == start + b"\x00" and start in self._exact:  # (a one-key range)
            return True
        return any(r.start <= start and end <= r.end for r in self._covered)

    def lookup(self, key: bytes) -> bytes | PreloadMiss:
        """The value of ``key``, :data:`ABSENT`, or :data:`NOT_LOADED`."""
        value = self._values.get(key)
        if value is not None:
            return value
        return ABSENT if self._is_covered(key) else NOT_LOADED

    def update(self, key: bytes, value: bytes | None) -> None:
        """Record a committed write of ``key`` (``None``: deleted).

        Only keys the preload covers are tracked; others stay :data:`NOT_LOADED`.
        """
        with self._lock:
            if not self._is_covered(key):
                return
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = value
        self._notify(key, key + b"\x00")

    def update_many(self, items: Iterable[tuple[bytes, bytes]], *,
                    mirrored_by: Callable[[bytes, bytes | None], None] | None = None) -> None:
        """:meth:`update` for each ``(key, value)`` of a commit, under one lock hold;
        listeners hear of each covered key afterwards, in order, except
        ``mirrored_by``: a listener whose owner applies the same change itself (the
        native VFS copies a commit's chunks into its C mirror in one call)."""
        changed: list[bytes] = []
        with self._lock:
            values, exact, covered = self._values, self._exact, self._covered
            for key, value in items:
                if key not in exact:  # (_is_covered, inlined)
                    for r in covered:
                        if r.start <= key < r.end:
                            break
                    else:
                        continue
                values[key] = value
                changed.append(key)
        listeners = [f for f in self._listeners if f != mirrored_by]
        if changed and listeners:
            for key in changed:
                for listener in listeners:
                    listener(key, key + b"\x00")

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Record a committed range delete: covered keys in it become absent."""
        with self._lock:
            for key in [k for k in self._values if start <= k < end]:
                del self._values[key]
        self._notify(start, end)

    def clear(self, start: bytes | None = None, end: bytes | None = None) -> None:
        """Forget keys in ``[start, end)`` (everything by default): they become
        :data:`NOT_LOADED`, never :data:`ABSENT`."""
        self._clear(start, end)
        self._notify(start if start is not None and end is not None else b"", end if start is not None else None)

    def _clear(self, start: bytes | None, end: bytes | None) -> None:
        with self._lock:
            if start is None or end is None:
                self._values.clear()
                self._exact = frozenset()
                self._covered = ()
                return
            self._values = {k: v for k, v in self._values.items() if not start <= k < end}
            self._exact = _shared(frozenset(k for k in self._exact if not start <= k < end))
            kept: list[KeyRange] = []
            for r in self._covered:
                # Keep the parts of each covered range outside [start, end) (a range
                # wholly outside is kept as it is: no new object).
                if r.end <= start or r.start >= end:
                    kept.append(r)
                    continue
                if r.start < start:
                    kept.append(_shared_range(r.start, min(r.end, start)))
                if r.end > end:
                    kept.append(_shared_range(max(r.start, end), r.end))
            self._covered = _shared(tuple(r for r in kept if r.start < r.end))

    def without_prefix(self, prefix: bytes) -> PreloadMap:
        """A copy with ``prefix`` removed from every key (drivers use this to turn
        store keys into actor-relative keys). Every key must start with ``prefix``."""
        n = len(prefix)
        assert all(k.startswith(prefix) for k in self._values), "preloaded key outside the prefix"
        return PreloadMap(
            {k[n:]: v for k, v in self._values.items()},
            [k[n:] for k in self._exact],
            [_shared_range(r.start[n:], r.end[n:]) for r in self._covered],
        )

    def items(self, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        """Found keys in ``[start, end)`` in key order."""
        return sorted((k, v) for k, v in self._values.items() if start <= k < end)

    @property
    def value_bytes(self) -> int:
        """Bytes of values held."""
        return sum(len(v) for v in self._values.values())

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return (
            f"PreloadMap({len(self._values)} values, {self.value_bytes} bytes, "
            f"{len(self._exact)} exact keys, {len(self._covered)} covered ranges)"
        )


def build_preload(
    request_keys: Iterable[bytes],
    key_values: Mapping[bytes, bytes | None],
    ranges: Iterable[tuple[KeyRange, list[tuple[bytes, bytes]], bool]],
    hinted: Mapping[bytes, bytes | None] | None = None,
) -> PreloadMap:
    """Assemble a :class:`PreloadMap` from a driver's raw results.

    :param request_keys: exact keys requested.
    :param key_values: their values (``None``: absent).
    :param ranges: per range: the range, the pairs kept (ascending), and whether the
        range was scanned to its end (``complete``). An incomplete range covers only up
        to its last kept key; an incomplete range that kept nothing covers nothing.
    :param hinted: hint records and the hinted chunks fetched (``None``: absent); each
        is known exactly, like a requested key.
    """
    hinted = dict(hinted or {})
    values = {k: v for k, v in key_values.items() if v is not None}
    values.update((k, v) for k, v in hinted.items() if v is not None)
    covered: list[KeyRange] = []
    for rng, pairs, complete in ranges:
        for k, v in pairs:
            values[k] = v
        if complete:
            covered.append(rng)
        elif pairs:
            # Everything up to and including the last kept key is known.
            covered.append(_shared_range(rng.start, pairs[-1][0] + b"\x00"))
    return PreloadMap(values, [*request_keys, *hinted], covered)


def evaluate_preload(
    request: PreloadRequest,
    get: Callable[[bytes], bytes | None],
    iterate: Callable[[bytes, bytes], Iterator[tuple[bytes, bytes]]],
) -> PreloadMap:
    """Evaluate ``request``'s budgets against a store, for drivers that can run this
    logic inside one transaction (in-memory, LMDB). Redis runs the same rules in Lua.

    Rules: exact keys are read first and their value bytes are charged to
    ``max_total_bytes``; then each range, in order, gets ``min(its budget, what is left
    of the total)``. A range with ``max_bytes <= 0`` is disabled (not scanned, covers
    nothing). A partial range keeps the lowest keys that fit; an all-or-nothing range
    that does not fit keeps nothing and covers nothing.

    A range with a ``hint`` first reads the hint record and the chunks it lists, in
    its order: those the record marks interior are charged to the hint's
    ``interior_max_bytes`` while it lasts (outside the range's budget and the total),
    the others to the range's budget, until one does not fit; the scan then keeps what
    fits in the rest, skipping (not charging again) hinted keys.

    :param get: reads one key (``None``: absent), inside the caller's transaction.
    :param iterate: yields pairs of ``[start, end)`` in ascending key order.
    """
    key_values = {k: get(k) for k in request.keys}
    remaining = request.max_total_bytes
    if remaining is not None:
        remaining -= sum(len(v) for v in key_values.values() if v is not None)
    results: list[tuple[KeyRange, list[tuple[bytes, bytes]], bool]] = []
    hinted: dict[bytes, bytes | None] = {}
    for budget_spec in request.ranges:
        if budget_spec.max_bytes <= 0:
            continue
        budget = budget_spec.max_bytes if remaining is None else min(budget_spec.max_bytes, max(remaining, 0))
        rng = budget_spec.range
        kept: list[tuple[bytes, bytes]] = []
        used = 0
        complete = True
        fetched: set[bytes] = set()
        if budget_spec.hint is not None:
            used = _fetch_hinted(budget_spec.hint, budget, get, hinted, fetched)
        for key, value in iterate(rng.start, rng.end):
            if key in fetched:
                continue
            if used + len(value) > budget:
                complete = False
                break
            kept.append((key, value))
            used += len(value)
        if not complete and not budget_spec.partial:
            kept, used = [], 0
        results.append((rng, kept, complete))
        if remaining is not None:
            remaining -= used
    return build_preload(request.keys, key_values, results, hinted)


def _fetch_hinted(spec: HintSpec, budget: int, get: Callable[[bytes], bytes | None],
                  out: dict[bytes, bytes | None], fetched: set[bytes]) -> int:
    """Read the hint record and the chunks it lists into ``out`` until the budget is
    spent; returns the value bytes charged to the range's budget (interior pages within
    ``spec.interior_max_bytes`` are not). ``fetched`` receives the chunk keys kept."""
    from vfs import hint  # the record format (vfs.hint imports nothing of this module)

    record = get(spec.key)
    out[spec.key] = record
    decoded = hint.decode_hint(record)
    if decoded is None:
        return 0
    used = interior_used = 0
    for j, index in enumerate(decoded.indices):
        key = spec.chunk_prefix + index.to_bytes(4, "big")
        if key in fetched:
            continue
        value = get(key)
        size = 0 if value is None else len(value)
        if j < decoded.interior and interior_used + size <= spec.interior_max_bytes:
            interior_used += size
        elif used + size <= budget:
            used += size
        else:
            break
        out[key] = value
        fetched.add(key)
    return used
