"""The store-wide due index: which actors have scheduled work due, by due time.

An actor's schedule lives in its own key space (:mod:`actor_db.runtime.schedule`). One
kind of its keys, the *due mark* of an entry, is mirrored by the driver into a
store-wide index, inside the same atomic step as the batch that writes or deletes it::

    actor-relative due mark   key [7, 0] + entry id, value u64 BE due time (ms since the epoch)
    index entry (ordered)     b"d" + u64 BE due ms + u16 BE actor id length + id + entry id

Every atomic batch that puts a due mark replaces the entry's index entry (the old due
time is read in the same atomic step), and every batch that deletes one (an exact
delete, or a range delete such as ``delete_all``) removes it: the index never
disagrees with the actors' keys, whatever writes them (the runtime, an import, a
restore). Ordered drivers (MemoryKV, LMDB) keep the index as a key range ordered by due
time; Redis keeps sorted sets (score: due ms, member: actor and entry) in the actors'
own hash slots (:mod:`actor_db.kv.redis`). Reading what is due (:meth:`KVStore.due`)
is one bounded read per poll whatever the number of actors and entries.

Invariants:

- A due mark's value is exactly 8 bytes; a value of another length under the prefix
  is not mirrored (the runtime never writes one).
- The index entry carries the entry id after the actor id, so the id needs no length.

Left out: the schedule's own records and their meaning (the runtime's).
"""

from __future__ import annotations

import struct
from typing import Callable, Iterable, NamedTuple, Sequence

from vfs.protocol import WriteBatch

from actor_db.kv.namespace import actor_prefix_length, prefix_end

__all__ = ["DUE_MARK", "DUE_MARK_END", "INDEX_START", "INDEX_END", "DueEntry", "due_mark", "due_value", "index_key",
           "parse_index_key", "index_changes", "index_bound", "due_page"]

DUE_MARK = bytes([7, 0])
"""Actor-relative prefix of due marks (the runtime's ``[7]`` subspace: schedules)."""
DUE_MARK_END = bytes([7, 1])
INDEX_START = b"d"
"""Store-level tag of the ordered index (outside every actor's range)."""
INDEX_END = b"e"
_U64 = struct.Struct(">Q")


class DueEntry(NamedTuple):
    """One index entry: ``entry`` of actor ``actor_id`` is due at ``due_ms``."""

    due_ms: int
    actor_id: str
    entry: bytes


def due_mark(entry: bytes) -> bytes:
    """The actor-relative due mark key of ``entry``."""
    return DUE_MARK + entry


def due_value(due_ms: int) -> bytes:
    """A due mark's value: its due time (ms since the epoch, clamped at 0)."""
    return _U64.pack(max(0, int(due_ms)))


def _due_of(value: bytes | None) -> int | None:
    if value is None or len(value) != _U64.size:
        return None
    return int(_U64.unpack(value)[0])


def index_key(actor_prefix: bytes, entry: bytes, due_ms: int) -> bytes:
    """The ordered index key of ``entry`` of the actor whose store prefix is
    ``actor_prefix``, due at ``due_ms``."""
    return INDEX_START + _U64.pack(due_ms) + actor_prefix[1:] + entry


def index_bound(due_ms: int) -> bytes:
    """The first index key due after ``due_ms`` (exclusive end of what is due by then)."""
    return INDEX_START + _U64.pack(max(0, int(due_ms)) + 1)


def parse_index_key(key: bytes) -> DueEntry | None:
    """The entry an ordered index key names (``None``: not one)."""
    if len(key) < 11 or not key.startswith(INDEX_START):
        return None
    (due,) = _U64.unpack_from(key, 1)
    (length,) = struct.unpack_from(">H", key, 9)
    end = 11 + length
    if len(key) < end:
        return None
    return DueEntry(due, key[11:end].decode("utf-8", errors="replace"), key[end:])


def _marks_in(keys: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
    """``(actor prefix, entry)`` of the due marks among the store keys ``keys`` (one
    pass; keys of one actor, the usual batch, cost one ``startswith`` each)."""
    out: list[tuple[bytes, bytes]] = []
    actor, mark, plen = b"", b"", 0
    for key in keys:
        if plen and key.startswith(actor):  # (the prefix holds the id's length: unambiguous)
            if key.startswith(mark):
                out.append((actor, key[plen + len(DUE_MARK):]))
            continue
        found = actor_prefix_length(key)
        if found is None:
            continue
        plen = found
        actor = key[:plen]
        mark = actor + DUE_MARK
        if key.startswith(mark):
            out.append((actor, key[plen + len(DUE_MARK):]))
    return out


def _unmarked(batch: WriteBatch) -> bool:
    """Whether ``batch`` is the usual one: every key and range of ONE actor, no key a due
    mark and no range reaching the actor's due marks (then :func:`index_changes` has
    nothing to change). ``False`` only means "look closer"."""
    first = next(iter(batch.puts), None)
    if first is None:
        first = next(iter(batch.deletes), None)
        if first is None:
            if not batch.delete_ranges:
                return True
            first = batch.delete_ranges[0].start
    plen = actor_prefix_length(first)
    if plen is None:
        return False
    actor = first[:plen]
    mark = actor + DUE_MARK
    for keys in (batch.puts, batch.deletes):
        for key in keys:
            if key.startswith(mark) or not key.startswith(actor):
                return False
    if batch.delete_ranges:
        end = _actor_end(actor)
        mark_end = actor + DUE_MARK_END
        for r in batch.delete_ranges:
            if not r.start.startswith(actor) or r.end > end or (r.start < mark_end and mark < r.end):
                return False
    return True


def _actor_end(actor: bytes, _ends: dict[bytes, bytes] = {}) -> bytes:  # noqa: B006 (a bounded cache)
    """:func:`prefix_end` of an actor prefix (cached: every commit of the actor asks)."""
    end = _ends.get(actor)
    if end is None:
        if len(_ends) >= 4096:
            _ends.clear()
        end = _ends[actor] = prefix_end(actor)
    return end


def index_changes(batch: WriteBatch, get: Callable[[bytes], bytes | None],
                  existing: Callable[[bytes, bytes], Iterable[tuple[bytes, bytes]]]) -> tuple[list[bytes], list[bytes]]:
    """The ordered index keys to delete and to put so that the index mirrors ``batch``
    (full store keys), for an ordered driver applying it: ``(deletes, puts)``, applied in
    that order after the batch, in the same atomic step. Computed BEFORE the batch is
    applied (it reads the marks' current values).

    :param get: the current (decoded) value of a store key, or ``None``.
    :param existing: ``existing(start, end)`` yields the ``(key, decoded value)`` pairs
        now in ``[start, end)`` (called only for range deletes that can hold due marks).
    """
    if _unmarked(batch):
        return [], []
    deletes: list[bytes] = []
    for r in batch.delete_ranges:
        plen = actor_prefix_length(r.start)
        prefix = r.start[:plen] if plen is not None else None
        if prefix is not None and r.end <= prefix_end(prefix):  # (every range an ActorKV sends)
            lo, hi = max(r.start, prefix + DUE_MARK), min(r.end, prefix + DUE_MARK_END)
            pairs = existing(lo, hi) if lo < hi else ()
        else:
            pairs = existing(r.start, r.end)
        for key, value in pairs:
            for actor, entry in _marks_in((key,)):
                due = _due_of(value)
                if due is not None:
                    deletes.append(index_key(actor, entry, due))
    puts: list[bytes] = []
    put_marks = _marks_in(batch.puts) if batch.puts else ()  # (one pass: used twice below)
    for marks in (_marks_in(batch.deletes) if batch.deletes else (), put_marks):
        for actor, entry in marks:
            due = _due_of(get(actor + DUE_MARK + entry))
            if due is not None:
                deletes.append(index_key(actor, entry, due))
    for actor, entry in put_marks:
        due = _due_of(batch.puts[actor + DUE_MARK + entry])
        if due is not None:
            puts.append(index_key(actor, entry, due))
    return deletes, puts


def due_page(now_ms: int, keys: Sequence[bytes], limit: int) -> tuple[int, list[DueEntry], int | None]:
    """An ordered driver's answer to ``KVStore._due``: ``keys`` are the first index
    keys (at most ``limit + 1``, in order)."""
    due: list[DueEntry] = []
    for key in keys:
        entry = parse_index_key(key)
        if entry is None:
            continue
        if entry.due_ms > now_ms:
            return now_ms, due, entry.due_ms
        if len(due) == limit:
            break
        due.append(entry)
    return now_ms, due, None
