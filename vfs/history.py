"""Per-database history: what every commit changed, base images, retention, restore.

Keys (all under ``[8, 1, 7]``, built in :mod:`vfs.keys`; RivetKit's subspaces 0 and 1
are never touched, so a RivetKit reader still sees only the database)::

    [8, 1, 7, 0]                           head: last sequence number and time, byte counters, retention
    [8, 1, 7, 1]                           bases: (seq, time, cumulative bytes, where) of each base image
    [8, 1, 7, 2, u64 BE seq]               entry of commit ``seq``: time, size, truncation, chunk count
    [8, 1, 7, 3, u64 BE seq, u32 BE i]     chunk ``i`` as commit ``seq`` wrote it (after-image)
    [8, 1, 7, 4, u64 BE seq, u32 BE i]     chunk ``i`` of the base image of the state at ``seq``

Invariants:

- A commit's entry, the head and any base or pruning change go in the commit's own
  atomic batch (the commit point's batch for a large commit), so history and database
  never disagree: the state named by the head's sequence number IS the database. The
  changed chunks go in that batch too (one-batch commits) or in batches written before
  the commit point (large commits); before writing any chunk of commit ``seq`` the
  delta range of ``seq`` is range-deleted, so chunks of an earlier attempt that never
  reached its commit point can never be mistaken for the commit's own.
- Restoring ``seq`` reads the latest base at or before ``seq`` and replays the entries
  after it in order (truncation, then the chunks); a new base is written when the chunk
  bytes since the last one exceed ``base_factor`` x the database size, so a restore
  reads at most one base plus that many bytes. A commit whose chunks cover the whole
  file (a new database's first commit, a restore) is a base by itself (no copy).
- Pruning drops whole eras (everything before a base) with range deletes inside a
  commit's batch: never a scan, never on the query path.
- The head is kept in memory between commits by the database's writer: the owner
  (``locking="exclusive"``, fenced), or the connections of one process together
  (``"in-process"``: one shared head, commits serialized by SQLite's locks), or each
  process under the KV writer lease (``"cross-process"``: a commit of another process
  is seen at the next transaction's check, which re-reads the head with the meta).

Left out: history of files other than the main database (journals are transient).
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterator, NamedTuple, Sequence, Union

from vfs.chunks import chunk_count
from vfs.keys import (
    CHUNK_SIZE, HISTORY_BASES_KEY, HISTORY_HEAD_KEY, HISTORY_RANGE, history_base_key, history_base_range,
    history_delta_key, history_delta_range, history_entry_key, history_entry_range, history_seq,
)
from vfs.protocol import KVLimits, WriteBatch

log = logging.getLogger(__name__)

__all__ = ["HistoryOptions", "HistorySetting", "HistoryError", "Policy", "policy_for", "Head", "Base", "Entry",
           "History", "Pending", "DEFAULT_RETENTION", "encode_bookmark", "decode_bookmark", "read_state",
           "seq_at_time", "current_bookmark", "time_ms", "encode_bases", "covers", "delta_puts", "write_deltas",
           "build_base", "to_ms", "image"]

DEFAULT_RETENTION = timedelta(days=7)
_HEAD = struct.Struct("<BQQQQQQ")
_BASE = struct.Struct("<QQQBQ")
_ENTRY = struct.Struct("<BQQqqqBI")
_VERSION = 1
_FLAG_COMPLETE = 1
_BOOKMARK_PREFIX = "h1-"


class HistoryError(ValueError):
    """A bookmark or time names no retained state, or a bookmark is malformed.
    (``actor_db`` raises its own :class:`actor_db.errors.HistoryError` for these.)"""


@dataclass(frozen=True)
class HistoryOptions:
    """How much history a database keeps.

    :ivar retention_s: states committed in the last ``retention_s`` seconds stay
        restorable (default 7 days).
    :ivar max_bytes: most history bytes kept (chunk after-images and base images); the
        oldest eras are dropped first, never the latest base. ``None``: no byte limit.
    :ivar base_factor: a new base image is written when the chunk bytes recorded since
        the last one exceed this many times the database size (bounds a restore's reads).
    :ivar base_min_bytes: ...and at least this many bytes (small databases).
    """

    retention_s: float = DEFAULT_RETENTION.total_seconds()
    max_bytes: int | None = None
    base_factor: float = 16.0
    base_min_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.retention_s > 0:
            raise ValueError(f"history retention must be > 0 seconds, not {self.retention_s!r}")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError(f"history max_bytes must be >= 0, not {self.max_bytes!r}")
        if not self.base_factor > 0 or self.base_min_bytes < 0:
            raise ValueError("history base_factor must be > 0 and base_min_bytes >= 0")


HistorySetting = Union[bool, None, timedelta, HistoryOptions]
"""``True`` (7 days), ``False`` (off: an existing history is dropped at the next
commit), a ``timedelta`` (that retention), :class:`HistoryOptions`, or ``None``: keep
recording if the database has history (with its stored retention), else off."""


@dataclass(frozen=True)
class Policy:
    """A resolved :data:`HistorySetting`: ``mode`` is ``"on"``, ``"off"`` or ``"follow"``."""

    mode: str
    options: HistoryOptions | None = None


def policy_for(setting: HistorySetting) -> Policy:
    """Resolve a user's setting.

    :raises TypeError: not one of the accepted types.
    :raises ValueError: a non-positive retention.
    """
    if setting is None:
        return Policy("follow")
    if setting is True:
        return Policy("on", HistoryOptions())
    if setting is False:
        return Policy("off")
    if isinstance(setting, timedelta):
        return Policy("on", HistoryOptions(retention_s=setting.total_seconds()))
    if isinstance(setting, HistoryOptions):
        return Policy("on", setting)
    raise TypeError(f"history must be True, False, None, a timedelta or HistoryOptions, not {type(setting).__name__}")


def time_ms() -> int:
    """Wall-clock milliseconds since the epoch (what entries record)."""
    return int(time.time() * 1000)


class Head(NamedTuple):
    """``[8, 1, 7, 0]``: the last recorded commit and the history's counters.

    Immutable (a named tuple: one is built per recorded commit, and a tuple is built in a
    fraction of a frozen dataclass's time).

    :ivar last_seq: sequence number of the database's current state (0: the state
        before the first recorded commit).
    :ivar last_time_ms: its commit time, ms since the epoch.
    :ivar since_base: chunk bytes recorded since the latest base.
    :ivar total_bytes: history bytes ever written (chunks and bases), for byte retention.
    :ivar retention_ms: retention by time (what ``history=None`` writers honour).
    :ivar max_bytes: retention by bytes, 0 for none.
    """

    last_seq: int
    last_time_ms: int
    since_base: int
    total_bytes: int
    retention_ms: int
    max_bytes: int

    def encode(self) -> bytes:
        return _HEAD.pack(_VERSION, *self)

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        if len(raw) != _HEAD.size or raw[0] != _VERSION:
            raise ValueError(f"history head of {len(raw)} bytes (version {raw[:1]!r}) is not a version {_VERSION} head")
        return cls(*_HEAD.unpack(raw)[1:])


@dataclass(frozen=True)
class Base:
    """A state whose every chunk is stored: in the base subspace, or (``in_delta``) as
    the changed chunks of its own commit (a commit that wrote the whole file).

    :ivar cum_bytes: :attr:`Head.total_bytes` before this base's chunks were written.
    :ivar size: the database size in bytes at that state.
    """

    seq: int
    time_ms: int
    cum_bytes: int
    in_delta: bool
    size: int


def encode_bases(bases: Sequence[Base]) -> bytes:
    return bytes([_VERSION]) + struct.pack("<I", len(bases)) + b"".join(
        _BASE.pack(b.seq, b.time_ms, b.cum_bytes, int(b.in_delta), b.size) for b in bases)


def _decode_bases(raw: bytes) -> list[Base]:
    if len(raw) < 5 or raw[0] != _VERSION:
        raise ValueError("history bases record is not a version 1 record")
    (count,) = struct.unpack_from("<I", raw, 1)
    if len(raw) != 5 + count * _BASE.size:
        raise ValueError(f"history bases record of {len(raw)} bytes does not hold {count} bases")
    out = []
    for i in range(count):
        seq, when, cum, where, size = _BASE.unpack_from(raw, 5 + i * _BASE.size)
        out.append(Base(seq, when, cum, bool(where), size))
    return out


@dataclass(frozen=True)
class Entry:
    """``[8, 1, 7, 2, seq]``: one recorded commit, with the chunk deletes it made in the
    KV (replayed exactly, so that chunks a shrink left past the end come back when an
    in-place rollback grows the file again, as they do in the KV).

    :ivar size: the database size in bytes after it.
    :ivar hole: ``(first, end)``: chunks it deleted inside the new size, or ``None``.
    :ivar tail_from: first chunk of the tail it deleted (everything from there on), or ``None``.
    :ivar complete: its chunks cover the whole file (it is a base by itself).
    """

    seq: int
    time_ms: int
    size: int
    hole: tuple[int, int] | None
    tail_from: int | None
    complete: bool
    chunks: int

    def encode(self) -> bytes:
        first, end = self.hole if self.hole is not None else (-1, -1)
        return _ENTRY.pack(_VERSION, self.time_ms, self.size, first, end,
                           -1 if self.tail_from is None else self.tail_from,
                           _FLAG_COMPLETE if self.complete else 0, self.chunks)

    @classmethod
    def decode(cls, seq: int, raw: bytes) -> Entry:
        if len(raw) != _ENTRY.size or raw[0] != _VERSION:
            raise ValueError(f"history entry {seq} is not a version {_VERSION} entry")
        _, when, size, first, end, tail_from, flags, chunks = _ENTRY.unpack(raw)
        return cls(seq, when, size, None if first < 0 else (first, end), None if tail_from < 0 else tail_from,
                   bool(flags & _FLAG_COMPLETE), chunks)

    def drop(self, chunks: dict[int, bytes]) -> None:
        """Apply this commit's chunk deletes to a replayed state (before its chunks)."""
        if self.hole is not None:
            first, end = self.hole
            for index in [i for i in chunks if first <= i < end]:
                del chunks[index]
        if self.tail_from is not None:
            for index in [i for i in chunks if i >= self.tail_from]:
                del chunks[index]


class Pending:
    """What a commit adds to the history, applied to :class:`History` once it landed.

    :ivar seq: the commit's sequence number.
    :ivar head: the head after it.
    :ivar bases: the bases after it (the same list object as before when unchanged).
    :ivar ops: the entry, head, bases and pruning operations (for the commit point's batch).
    :ivar build_base: a base image is due after this commit.
    """

    __slots__ = ("seq", "head", "bases", "ops", "build_base")

    def __init__(self, seq: int, head: Head | None, bases: list[Base], ops: WriteBatch | None = None,
                 build_base: bool = False) -> None:
        self.seq = seq
        self.head = head
        self.bases = bases
        self.ops = WriteBatch() if ops is None else ops
        self.build_base = build_base

    def __repr__(self) -> str:
        return f"Pending(seq={self.seq}, head={self.head!r}, bases={len(self.bases)}, build_base={self.build_base})"


def _prune_due(bases: Sequence[Base], now: int, retention_ms: int, max_bytes: int, total_bytes: int) -> bool:
    """Whether :meth:`History._prune` would drop anything (two comparisons instead of
    its walk over the bases, on every recorded commit). It drops the oldest era exactly
    when the second base is past the retention horizon (bases are in time order, so
    the first one is too) or, with a byte limit, when the bytes since the first base
    exceed it. The latest base is never dropped: fewer than two bases, nothing."""
    return len(bases) > 1 and (bases[1].time_ms <= now - retention_ms
                               or bool(max_bytes and total_bytes - bases[0].cum_bytes > max_bytes))


def _retention(options: HistoryOptions) -> tuple[int, int]:
    return int(options.retention_s * 1000), options.max_bytes or 0


class History:
    """One database file's history state (kept in memory between commits by its only writer).

    :param policy: the connection's resolved setting.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.head: Head | None = None
        self.bases: list[Base] = []
        self.loaded = False
        self._options_seen: HistoryOptions | None = None
        self._retention_seen = (0, 0)
        """``_retention(_options_seen)``: the policy's options do not change per commit."""

    def load(self, head: bytes | None, bases: bytes | None) -> None:
        """Adopt the stored head and bases (read with the meta, same round trip).

        :raises ValueError: a record is malformed.
        """
        self.head = None if head is None else Head.decode(head)
        self.bases = [] if bases is None or head is None else _decode_bases(bases)
        self.loaded = True

    def forget(self) -> None:
        """The KV state is unknown (a failure): reload with the next meta read."""
        self.loaded = False

    @property
    def recording(self) -> bool:
        """Whether the next commit records history."""
        return self.policy.mode == "on" or (self.policy.mode == "follow" and self.head is not None)

    @property
    def dropping(self) -> bool:
        """Whether the next commit deletes the stored history (turned off)."""
        return self.head is not None and not self.recording

    @property
    def next_seq(self) -> int:
        return (self.head.last_seq if self.head is not None else 0) + 1

    def needs_first_base(self, committed_size: int) -> bool:
        """Recording starts on a database that already holds data: its current state
        must be stored as a base before the first recorded commit."""
        return self.recording and committed_size > 0 and (self.head is None or not self.bases)

    def options(self) -> HistoryOptions:
        if self.policy.options is not None:
            return self.policy.options
        head = self.head
        assert head is not None
        return HistoryOptions(retention_s=head.retention_ms / 1000, max_bytes=head.max_bytes or None)

    def prepare(self, *, size: int, hole: tuple[int, int] | None, tail_from: int | None,
                chunk_indices: Sequence[int], chunk_bytes: int, now_ms: int | None = None) -> Pending:
        """The history operations of a commit that writes ``chunk_indices`` (whose delta
        chunks the caller writes), deletes the chunks ``hole`` and ``tail_from`` name (as
        the commit's own batch does in the KV) and leaves the file at ``size`` bytes.

        (Runs once per recorded commit: no object is built that the stored records do
        not need; the entry is packed straight from its fields, as :meth:`Entry.encode`.)"""
        now = time_ms() if now_ms is None else now_ms
        options = self.policy.options
        if options is None:
            options = self.options()  # ("follow": the stored head's retention)
            retention_ms, max_bytes = _retention(options)
        else:
            if options is not self._options_seen:
                self._options_seen, self._retention_seen = options, _retention(options)
            retention_ms, max_bytes = self._retention_seen
        head = self.head
        if head is not None:
            seq = head.last_seq + 1
            total = head.total_bytes
            since = head.since_base + chunk_bytes
            if now < head.last_time_ms:
                now = head.last_time_ms  # times never go backwards (a clock step)
        else:
            seq, total, since = 1, 0, chunk_bytes
        # A base by itself only when nothing else is left in the KV: every chunk of the
        # file written, and the chunks past its end deleted by the same commit.
        complete = tail_from is not None and 0 < (n := chunk_count(size)) and tail_from <= n \
            and covers(chunk_indices, n)
        bases = self.bases
        if complete or size == 0:
            bases = bases + [Base(seq, now, total, True, size)]
            since = 0
        new_total = total + chunk_bytes
        new_head = Head(seq, now, since, new_total, retention_ms, max_bytes)
        pending = Pending(seq, new_head, bases)
        puts = pending.ops.puts
        first, end = hole if hole is not None else (-1, -1)
        puts[history_entry_key(seq)] = _ENTRY.pack(
            _VERSION, now, size, first, end, -1 if tail_from is None else tail_from,
            _FLAG_COMPLETE if complete else 0, len(chunk_indices))  # (Entry(...).encode())
        if len(bases) > 1 and _prune_due(bases, now, retention_ms, max_bytes, new_total):
            self._prune(pending, now, retention_ms, max_bytes)
        puts[HISTORY_HEAD_KEY] = _HEAD.pack(_VERSION, *new_head)  # (new_head.encode())
        if pending.bases is not self.bases:
            puts[HISTORY_BASES_KEY] = encode_bases(pending.bases)
        pending.build_base = since >= options.base_factor * size and since >= options.base_min_bytes
        return pending

    def _prune(self, pending: Pending, now: int, retention_ms: int, max_bytes: int) -> None:
        """Drop every era older than the latest base committed before the retention
        horizon, and, over ``max_bytes``, the oldest eras while another base remains."""
        bases = pending.bases
        keep = 0
        horizon = now - retention_ms
        for i, base in enumerate(bases):
            if base.time_ms > horizon:
                break  # (bases are in commit order, so in time order: none later is older)
            keep = i
        assert pending.head is not None
        if max_bytes:
            while keep < len(bases) - 1 and pending.head.total_bytes - bases[keep].cum_bytes > max_bytes:
                keep += 1
        if keep == 0:
            return
        first = bases[keep].seq
        ops = pending.ops
        ops.delete_range(*history_entry_range(0, first))
        ops.delete_range(*history_delta_range(0, first))
        ops.delete_range(*history_base_range(0, first))
        pending.bases = bases[keep:]
        log.debug("history: pruning everything before commit %d", first)

    def drop_ops(self, batch: WriteBatch) -> None:
        """Add the deletion of the whole history to ``batch``."""
        batch.delete_range(*HISTORY_RANGE)

    def applied(self, pending: Pending | None) -> None:
        """The commit carrying ``pending`` landed (``None``: a commit that dropped history)."""
        if pending is None:
            self.head, self.bases = None, []
        else:
            self.head, self.bases = pending.head, pending.bases


def covers(chunk_indices: Sequence[int], n: int) -> bool:
    """Whether ``chunk_indices`` include every chunk index below ``n``."""
    return len(chunk_indices) >= n and set(range(n)).issubset(chunk_indices)


def delta_puts(batch: WriteBatch, seq: int, chunks: dict[int, bytes], *, first: bool) -> None:
    """Add commit ``seq``'s changed chunks to ``batch`` (``first``: clear the range first)."""
    if first:
        batch.delete_range(*history_delta_range(seq, seq + 1))
    for index, data in chunks.items():
        batch.put(history_delta_key(seq, index), data)


Writer = Callable[[WriteBatch], None]
Scanner = Callable[[bytes, bytes, int], list[tuple[bytes, bytes]]]


def chunks_per_batch(limits: KVLimits) -> int:
    """History chunk puts per batch under ``limits``."""
    from vfs.redo import chunks_per_batch as redo_per_batch

    return redo_per_batch(limits)


def write_deltas(write: Writer, limits: KVLimits, seq: int, chunks: dict[int, bytes], *, first: bool) -> int:
    """Write commit ``seq``'s changed chunks in their own batches (large commits, before
    their commit point); returns the number of batches (round trips)."""
    per_batch = chunks_per_batch(limits)
    items = list(chunks.items())
    batches = 0
    for i in range(0, max(len(items), 1 if first else 0), per_batch):
        batch = WriteBatch()
        delta_puts(batch, seq, dict(items[i:i + per_batch]), first=first and i == 0)
        write(batch)
        batches += 1
    return batches


def build_base(write: Writer, scan: Scanner, limits: KVLimits, history: History, size: int,
               now_ms: int | None = None) -> int:
    """Store the database's current state (``size`` bytes, read from its chunk keys) as
    the base image of the head's sequence number. Owner only, between commits (the
    chunk keys must hold exactly the head's state). The last batch adds the base to
    the bases record and resets the head's counter, so a crash part-way leaves an
    unreferenced partial image that the next build (or pruning) deletes.

    :returns: the number of chunks copied.
    """
    from vfs.keys import chunk_range

    head = history.head
    seq = head.last_seq if head is not None else 0
    when = head.last_time_ms if head is not None else (time_ms() if now_ms is None else now_ms)
    per_batch = chunks_per_batch(limits)
    start, end = chunk_range(0)
    last_base = history.bases[-1].seq if history.bases else -1
    if last_base == seq and history.bases:
        return 0
    copied = 0
    nbytes = 0
    batch = WriteBatch()
    batch.delete_range(*history_base_range(last_base + 1))  # partial images of crashed builds
    while True:
        pairs = scan(start, end, per_batch)
        for key, value in pairs:
            index = int.from_bytes(key[-4:], "big")
            # Chunks past the end too: an in-place rollback may grow the file over them.
            batch.put(history_base_key(seq, index), value)
            copied += 1
            nbytes += len(value)
        if len(pairs) < per_batch:
            break
        write(batch)
        batch = WriteBatch()
        start = pairs[-1][0] + b"\x00"
    total = head.total_bytes if head is not None else 0
    options = history.options()
    retention_ms, max_bytes = _retention(options)
    new_head = Head(seq, when, 0, total + nbytes, retention_ms, max_bytes)
    bases = list(history.bases) + [Base(seq, when, total, False, size)]
    batch.put(HISTORY_HEAD_KEY, new_head.encode())
    batch.put(HISTORY_BASES_KEY, encode_bases(bases))
    write(batch)
    history.head, history.bases = new_head, bases
    log.debug("history: base image of commit %d, %d chunks", seq, copied)
    return copied


# ---------------------------------------------------------------- bookmarks
def encode_bookmark(seq: int, when_ms: int) -> str:
    """The opaque bookmark of the state after commit ``seq`` (committed at ``when_ms``)."""
    return f"{_BOOKMARK_PREFIX}{seq:x}-{when_ms:x}"


def decode_bookmark(bookmark: str) -> tuple[int, int]:
    """``(seq, time_ms)`` of a bookmark.

    :raises HistoryError: not a bookmark.
    """
    if not isinstance(bookmark, str) or not bookmark.startswith(_BOOKMARK_PREFIX):
        raise HistoryError(f"{bookmark!r} is not a bookmark")
    parts = bookmark[len(_BOOKMARK_PREFIX):].split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        seq, when = int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        raise HistoryError(f"{bookmark!r} is not a bookmark") from None
    return seq, when


def to_ms(t: float | datetime) -> int:
    """Milliseconds since the epoch of ``t`` (epoch seconds or an aware datetime).

    :raises HistoryError: a naive datetime (its zone is unknown).
    """
    if isinstance(t, datetime):
        if t.tzinfo is None or t.tzinfo.utcoffset(t) is None:
            raise HistoryError("a datetime for history must be timezone-aware")
        return int(t.timestamp() * 1000)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise HistoryError(f"a time must be epoch seconds or an aware datetime, not {type(t).__name__}")
    return int(t * 1000)


def _load(get: Callable[[list[bytes]], list[bytes | None]]) -> History:
    head, bases = get([HISTORY_HEAD_KEY, HISTORY_BASES_KEY])
    history = History(Policy("follow"))
    history.load(head, bases)
    return history


def current_bookmark(get: Callable[[list[bytes]], list[bytes | None]]) -> str:
    """The bookmark of the committed state (1 round trip).

    :raises HistoryError: the database keeps no history.
    """
    history = _load(get)
    if history.head is None:
        raise HistoryError("this database keeps no history (history=False, or nothing recorded yet)")
    return encode_bookmark(history.head.last_seq, history.head.last_time_ms)


def _scan_all(scan: Scanner, start: bytes, end: bytes, per_call: int) -> Iterator[tuple[bytes, bytes]]:
    while True:
        pairs = scan(start, end, per_call)
        yield from pairs
        if len(pairs) < per_call:
            return
        start = pairs[-1][0] + b"\x00"


def seq_at_time(get: Callable[[list[bytes]], list[bytes | None]], scan: Scanner, t_ms: int) -> tuple[int, int]:
    """``(seq, time_ms)`` of the last state committed at or before ``t_ms``.

    Reads the head and bases (1 round trip) and the entries from the latest base at or
    before ``t_ms`` on (a bounded scan).

    :raises HistoryError: no history, or ``t_ms`` is before the oldest retained state.
    """
    history = _load(get)
    head = history.head
    if head is None:
        raise HistoryError("this database keeps no history")
    if t_ms >= head.last_time_ms:
        return head.last_seq, head.last_time_ms
    usable = [b for b in history.bases if b.time_ms <= t_ms]
    if not usable:
        oldest = history.bases[0].time_ms if history.bases else head.last_time_ms
        raise HistoryError(f"{t_ms / 1000:.3f} is before the oldest retained state ({oldest / 1000:.3f})")
    found = (usable[-1].seq, usable[-1].time_ms)
    for key, raw in _scan_all(scan, *history_entry_range(usable[-1].seq + 1), 1024):
        seq = history_seq(key)[0]
        entry = Entry.decode(seq, raw)
        if entry.time_ms > t_ms:
            break
        found = (seq, entry.time_ms)
    return found


def read_state(get: Callable[[list[bytes]], list[bytes | None]], scan: Scanner, seq: int,
               limits: KVLimits | None = None) -> tuple[int, dict[int, bytes]]:
    """The database as it was after commit ``seq``: ``(size in bytes, chunk index ->
    4096 bytes)`` (a chunk absent from the dict reads as zeros). Reads the latest base
    at or before ``seq`` and replays the entries after it.

    :raises HistoryError: ``seq`` is not retained (pruned, or never committed).
    """
    history = _load(get)
    head = history.head
    if head is None:
        raise HistoryError("this database keeps no history")
    if seq > head.last_seq or seq < 0:
        raise HistoryError(f"commit {seq} is not in this database's history (the last is {head.last_seq})")
    usable = [b for b in history.bases if b.seq <= seq]
    if not usable:
        raise HistoryError(f"commit {seq} is older than the oldest retained state "
                           f"(commit {history.bases[0].seq if history.bases else head.last_seq})")
    base = usable[-1]
    per_call = chunks_per_batch(limits or KVLimits())
    entries: dict[int, Entry] = {}
    for key, raw in _scan_all(scan, *history_entry_range(base.seq, seq + 1), 1024):
        s = history_seq(key)[0]
        entries[s] = Entry.decode(s, raw)
    chunks: dict[int, bytes] = {}
    size = base.size
    source = (history_delta_range if base.in_delta else history_base_range)(base.seq, base.seq + 1)
    for key, value in _scan_all(scan, *source, per_call):
        chunks[history_seq(key)[1]] = value
    expected = base.seq + 1
    deltas = _scan_all(scan, *history_delta_range(base.seq + 1, seq + 1), per_call)
    pending_pair: tuple[bytes, bytes] | None = next(deltas, None)
    for s in range(base.seq + 1, seq + 1):
        entry = entries.get(s)
        if entry is None:
            raise HistoryError(f"the entry of commit {s} is missing: history is damaged")
        entry.drop(chunks)
        while pending_pair is not None:
            ds, index = history_seq(pending_pair[0])
            if ds > s:
                break
            if ds == s:
                chunks[index] = pending_pair[1]
            pending_pair = next(deltas, None)
        size = entry.size
        expected = s + 1
    assert expected == seq + 1 or seq == base.seq
    return size, chunks


def image(size: int, chunks: dict[int, bytes]) -> bytes:
    """The database file of ``size`` bytes made of ``chunks`` (zeros where absent)."""
    zero = bytes(CHUNK_SIZE)
    data = b"".join(chunks.get(i, zero) for i in range(chunk_count(size)))
    return data[:size]
