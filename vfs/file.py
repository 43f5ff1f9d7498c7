"""One actor's main database file, stored as chunks in the KV (an apsw VFS file).

State and invariants (``idx`` is a chunk index, sizes are in bytes):

- ``_committed_size`` is the size in the KV's meta; ``_size`` includes pending writes.
- ``_low_water`` is the smallest size the file had since the last commit
  (``<= _committed_size``). Chunk bytes at or past it are not taken from the KV: the
  transaction truncated them, so they read as zeros until written.
- ``_dirty`` holds every chunk written since the last commit, whole (``CHUNK_SIZE``
  bytes); reads see it. ``_staged`` holds indices spilled to the KV staging range when
  the dirty bytes outgrew ``max_dirty_bytes`` (their newest copy is staged).
- Bytes of a chunk past the end of the file are zero (truncation zeroes the tail).
- The chunk cache and the preload only ever hold committed chunk values; they are
  updated after a commit succeeds and cleared when a KV call fails, because the KV's
  state is then unknown.

The commit point is ``xSync`` (SQLite sends it once per commit with
``journal_mode=MEMORY``): dirty chunks and the new meta go out as ONE atomic batch, or
through :mod:`vfs.redo` when they do not fit. A failed commit drops the buffer and
re-reads the meta before the next operation, so the file matches the KV again.

Locking: with ``locking="exclusive"`` (the default; the actor runtime) the file is the
only pager on its database in this process (``locking_mode=EXCLUSIVE``; across
processes the KV driver's fencing keeps one writer). With ``"in-process"`` or
``"cross-process"`` several connections share the database through a
:class:`vfs.locks.DatabaseShare`: SQLite's SHARED/RESERVED/PENDING/EXCLUSIVE locks, a
commit log each file applies when it takes SHARED, and for ``"cross-process"`` the KV
validation and writer lease of :mod:`vfs.lease`.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import apsw
from vfs import chunk_cache, hint, interrupts, journal, lease, pragmas, redo
from vfs import history as vhistory
from vfs.chunks import chunk_count, spans
from vfs.errors import CHANGED_DURING_READ, describe_kv, kv_failure, sqlite_error
from vfs.interrupts import is_interrupt
from vfs.keys import (
    CHUNK_SIZE, COMMIT_RECORD_KEY, FILE_JOURNAL, FILE_MAIN, HISTORY_BASES_KEY, HISTORY_HEAD_KEY, SQLITE_PREFIX, SQLITE_RANGE_END, CorruptMetaError, chunk_index, chunk_key, chunk_range,
    MAX_CHUNK_INDEX, decode_meta, encode_meta, history_delta_key, meta_key, staged_key, staged_range,
)
from vfs.locks import LOCK_NONE, LOCK_RESERVED, CommitNote, DatabaseShare, KVState, note_busy
from vfs.preload import ABSENT, NOT_LOADED, PreloadMap
from vfs.protocol import KV, ConditionFailedError, KVLimits, WriteBatch, holds_ownership
from vfs.startup import DEFAULT_SQLITE_PRELOAD_BYTES
from vfs.stats import VFSStats

log = logging.getLogger(__name__)

__all__ = ["FileOptions", "KVFile"]

_ZERO_CHUNK = bytes(CHUNK_SIZE)
_MIN_PAGE_SIZE = 512
FIRST_READAHEAD_CHUNKS = 64
"""Read-ahead window on the first sequential miss (then doubled per sequential miss)."""
MAX_READAHEAD_CHUNKS = 65536
"""Hard cap of the read-ahead window (256 MiB per KV call)."""

_pack_index = struct.Struct(">I").pack
"""A chunk key's 4-byte index suffix (:func:`vfs.keys.chunk_key`)."""


def _payload_bytes(batch: WriteBatch) -> int:
    """``batch.payload_bytes``; a batch of puts only (a commit's) is summed in C."""
    if batch.deletes or batch.delete_ranges or batch.expect:
        return batch.payload_bytes
    puts = batch.puts
    return sum(map(len, puts)) + sum(map(len, puts.values()))


def _merged(first: WriteBatch, second: WriteBatch) -> WriteBatch:
    """A new batch: ``first``'s operations, then ``second``'s (neither is changed)."""
    out = WriteBatch()
    out.merge(first)
    out.merge(second)
    return out


def readahead_cap(limits: KVLimits, configured: int | None) -> int:
    """The largest read-ahead window for a driver with ``limits``, in chunks: a read
    call is kept within the driver's batch limits (keys, bytes) and a quarter of the
    chunk cache's budget (read-ahead beyond what the cache holds would evict itself)."""
    if configured is not None:
        return configured
    cap = MAX_READAHEAD_CHUNKS
    if limits.max_batch_keys is not None:
        cap = min(cap, limits.max_batch_keys)
    if limits.max_batch_bytes is not None:
        cap = min(cap, limits.max_batch_bytes // (CHUNK_SIZE + 64))
    cap = min(cap, max(chunk_cache.shared.budget_chunks // 4, FIRST_READAHEAD_CHUNKS))
    return max(cap, 1)

MAX_FILE_BYTES = (MAX_CHUNK_INDEX + 1) * CHUNK_SIZE
"""Largest file the chunk key format addresses (2**32 chunks of 4096 bytes: 16 TiB)."""


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception along its ``__cause__``/``__context__`` chain is a ``kind``."""
    seen = 0
    while exc is not None and seen < 32:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _page_size(page1: bytes | bytearray | None) -> int | None:
    """The page size page 1's header declares, or ``None`` without a valid header."""
    if page1 is None or len(page1) < 100 or page1[:16] != b"SQLite format 3\x00":
        return None
    size = int.from_bytes(page1[16:18], "big")
    size = 65536 if size == 1 else size
    if size < _MIN_PAGE_SIZE or size > 65536 or size & (size - 1):
        return None
    return size


def _declares_pages(meta: bytes | None) -> bool:
    """Whether ``meta`` (a meta value, or ``None``: missing) declares a non-empty file.
    A missing or zero meta needs chunk 0 read with it: chunks must not exist then
    (:meth:`KVFile._validated_size`). A malformed meta counts as non-empty (it is refused)."""
    try:
        return meta is not None and decode_meta(meta) > 0
    except CorruptMetaError:
        return True


@dataclass(frozen=True)
class FileOptions:
    """Tuning of one database file.

    :ivar cache_chunks: this file's cap on its share of the process-wide chunk cache
        (:mod:`vfs.chunk_cache`), in chunks; ``None`` (default): only the process's byte
        budget bounds it; 0 disables caching for this file.
    :ivar readahead_max_chunks: largest read-ahead window, in chunks; ``None``
        (default): as large as the driver's per-call limits and a quarter of the cache
        budget allow (at most :data:`MAX_READAHEAD_CHUNKS`). The window starts at
        :data:`FIRST_READAHEAD_CHUNKS` on the first sequential miss and doubles on each
        next one, so a cold scan of N chunks costs O(log N) + N / cap round trips.
    :ivar max_dirty_bytes: bytes of dirty chunks held in memory before they are spilled
        to the KV staging range (the transaction then commits through the redo log).
    :ivar open_prefetch_chunks: chunks from offset 0 fetched with the meta when an open
        is not answered by the preload (same round trip; 0 fetches none).
    :ivar read_only: the file never writes to the KV (a write is refused with
        ``SQLITE_READONLY``); set by ``vfs.connect(readonly=True)``.
    :ivar hint_max_chunks: most chunks the hot-set hint lists besides the B-tree
        interior pages (:mod:`vfs.hint`; the SQLite preload budget in chunks); 0 never
        writes a hint.
    :ivar hint_max_interior_chunks: most B-tree interior pages the hint lists (they
        have their own preload allowance, ``HintSpec.interior_max_bytes``).
    :ivar lease_ttl_s: ``locking="cross-process"`` only: seconds the KV writer lease
        lives if its holder disappears (:mod:`vfs.lease`).
    :ivar large_commits: how a commit larger than one atomic batch is made atomic:
        ``"journal"`` (default) writes the before-images of the pages it rewrites as a
        SQLite rollback journal in file tag 1 first, then the pages in place, and
        deletes the journal in the commit point's batch (any SQLite VFS, RivetKit's
        included, then reads a committed state at every point); ``"redo"`` always uses
        the redo log of :mod:`vfs.redo` (staging, commit record, apply). The redo log is
        used anyway for spilled transactions, a new database's first commit, and
        ``locking`` other than ``"exclusive"`` (other connections of the process must
        never find a journal they were not told about).
    :ivar history: whether commits record the database's history (:mod:`vfs.history`).
    """

    cache_chunks: int | None = None
    readahead_max_chunks: int | None = None
    max_dirty_bytes: int = 32 * 1024 * 1024
    open_prefetch_chunks: int = 8
    read_only: bool = False
    hint_max_chunks: int = DEFAULT_SQLITE_PRELOAD_BYTES // CHUNK_SIZE
    hint_max_interior_chunks: int = hint.DEFAULT_INTERIOR_MAX_BYTES // CHUNK_SIZE
    lease_ttl_s: float = lease.DEFAULT_LEASE_TTL_S
    large_commits: str = "journal"
    history: vhistory.Policy = vhistory.Policy("follow")

    def __post_init__(self) -> None:
        if self.large_commits not in ("journal", "redo"):
            raise ValueError(f"large_commits must be 'journal' or 'redo', not {self.large_commits!r}")
        if (self.cache_chunks is not None and self.cache_chunks < 0) or \
                (self.readahead_max_chunks is not None and self.readahead_max_chunks < 0):
            raise ValueError("cache_chunks and readahead_max_chunks must be >= 0 (or None)")
        if self.max_dirty_bytes < CHUNK_SIZE:
            raise ValueError(f"max_dirty_bytes must be at least {CHUNK_SIZE}")
        if not 0 < self.lease_ttl_s <= lease.MAX_LEASE_TTL_S:
            raise ValueError(f"lease_ttl_s must be > 0 and at most {lease.MAX_LEASE_TTL_S:g} seconds, "
                             f"not {self.lease_ttl_s!r}")


CommitHook = Callable[[], "WriteBatch | None"]


@dataclass
class Repair:
    """What the KV must be changed to before this database reads as committed: a hot
    rollback journal in tag 1 played back (:mod:`vfs.journal`) and/or page 1's WAL flag
    cleared. Until applied (in ONE atomic batch, or the redo protocol when it does not
    fit), reads are served from :attr:`chunks` (the file's overlay).

    :ivar old_size: the main file's size in bytes in the KV.
    :ivar size: the size in bytes after the repair.
    :ivar chunks: chunk index → ``CHUNK_SIZE`` bytes to write (and to read meanwhile).
    :ivar journal: the journal's meta exists and is deleted (with its chunks) by the repair.
    """

    old_size: int
    size: int
    chunks: dict[int, bytes]
    journal: bool


class KVFile:
    """The apsw file object for an actor's main database (see the module docstring).

    :param kv: the actor-scoped KV view.
    :param preload: the startup preload map (shared with the caller, who may
        :meth:`~vfs.preload.PreloadMap.clear` it, e.g. before migrations).
    :param on_close: called once when SQLite closes the file.
    :param share: the database's lock table and commit log when several connections of
        this process may open it (``locking`` other than ``"exclusive"``).
    :param seen_generation: the share's generation read before ``preload`` was fetched.
    """

    def __init__(
        self,
        kv: KV,
        preload: PreloadMap,
        options: FileOptions,
        stats: VFSStats,
        on_close: Callable[[], None] | None = None,
        share: DatabaseShare | None = None,
        seen_generation: int = 0,
    ) -> None:
        self._kv = kv
        self._limits = kv.limits
        self._unlimited = self._limits.max_batch_keys is None and self._limits.max_batch_bytes is None
        """The driver has no atomic-batch limit: a commit needs no count of its operations and bytes."""
        self._deltas_clean_head: vhistory.Head | None = None
        """The history head this file's last commit made, when it was a small commit that
        landed: while the head is still that object (a reload, a failure or another
        connection replaces it), no delta key of the next sequence number can exist
        and a commit skips the range delete that clears them (``vhistory.delta_puts``)."""
        self._tag = FILE_MAIN
        self._meta_key = meta_key(FILE_MAIN)
        self._chunk_key_prefix = chunk_key(FILE_MAIN, 0)[:-4]
        """``chunk_key(tag, i)`` is this prefix + ``i`` as u32 BE (:data:`_pack_index`)."""
        self.preload = preload
        self.options = options
        self.stats = stats
        self._on_close = on_close
        self._cache: Any
        self._dirty: dict[int, bytearray]
        self._staged: set[int]
        self._cache, self._dirty, self._staged = self._new_state(options)
        self._size = 0
        self._committed_size = 0
        self._low_water = 0
        self._meta_stale = True
        self._pending_record: redo.CommitRecord | None = None
        self._overlay: redo.CommitRecord | None = None
        """A committed large transaction not yet applied, read through (:meth:`_read_through`)."""
        self._repair: Repair | None = None
        """A hot journal's playback or page 1's WAL flag, not yet written (:meth:`_check_journal`)."""
        self._journal_seen = False
        """A journal meta was found once: every refresh looks for it again."""
        self._stale_staging = False
        """An earlier writer's uncommitted staging is in the KV: this file's next commit drops it."""
        self._ambiguous = False
        """The last commit failed: its batch may or may not have landed, and SQLite rolls
        back in place (see :meth:`commit`); cleared by the next successful commit."""
        self._tail_from: int | None = None
        """First chunk past the end of a successful shrinking commit, still in the KV
        until SQLite's commit phase two (:meth:`_drop_tail`)."""
        self._owner = holds_ownership(kv)
        """This view took single-writer ownership (fencing), so it may recover at open."""
        self._history = self._history_state(options.history, share)
        """The database's history head (:mod:`vfs.history`), loaded with the meta; shared
        by this process's connections to the database (``locking`` other than
        ``"exclusive"``), whose commits SQLite's locks serialize."""
        self._next_sequential = -1
        self._stream_end = -1
        self._readahead = 0
        self._readahead_cap = readahead_cap(self._limits, options.readahead_max_chunks)
        self._hot = hint.HotSet()
        self._hint_inserts_seen = 0
        self._persisted_hint = self._hint_from_preload()
        self._seed_interior()
        self._closed = False
        self.lock_level = 0
        self.commit_hook: CommitHook | None = None
        """Called at each commit; the batch it returns is written atomically with it."""
        self.after_commit: Callable[[], None] | None = None
        """Called after each successful commit (e.g. to mark state as saved)."""
        self.defer_bases = False
        """Set by a runtime that may run this file's calls on its event loop's thread: a
        history base a commit makes due is then not built inside that commit (a drain
        and a scan, two or three KV round trips that would stall every actor of the
        loop) but flagged in :attr:`base_due`, and the runtime builds it off the loop,
        between SQLite calls, with :meth:`build_due_base`."""
        self.base_due = False
        """A commit made a history base due and :attr:`defer_bases` kept it for later."""
        self._share = share
        self._fid = id(self)
        self._seen_generation = 0
        """The share's generation this file's committed state reflects."""
        self._tx_state: KVState | None = None
        """cross-process: the KV state (meta, chunk 0, record) this transaction reads."""
        self._cross_process = share is not None and share.cross_process
        self._validation_keys = (self._meta_key, chunk_key(self._tag, 0), COMMIT_RECORD_KEY, HISTORY_HEAD_KEY,
                                 HISTORY_BASES_KEY)
        """cross-process: the keys whose values say which committed state the KV holds
        (the history's head and bases too, so a reload after another process's commit
        reads nothing more: :mod:`vfs.history`)."""
        self._fresh_head: dict[bytes, bytes | None] | None = None
        """Those keys' values just read by :meth:`_validate`: the next meta load uses them
        instead of reading them again."""
        self.sigint_scope = False
        """Set by the Python VFS's ``xOpen`` after :func:`vfs.interrupts.file_opened`;
        :meth:`xClose` then calls :func:`vfs.interrupts.file_closed`."""
        self.opening = False
        """Set by :func:`vfs.connect` while it runs its setup PRAGMAs right after the
        open's own read of the KV: their transactions need no check of their own."""
        self._lease_uncertain = False
        """cross-process: a commit that would have released the lease failed without a
        certain outcome (a lost reply): the next write first reads which it was
        (:meth:`_resolve_uncertain_commit`)."""
        self._lease_lost = False
        """cross-process: this transaction's lease expired and another process took it:
        every write is refused until the transaction ends (SQLite's pager then resets)."""
        self._released_id: bytes | None = None
        """cross-process: holder id of the lease this transaction's commit released, until
        the lock drops below RESERVED (commit phase two writes expect it, see
        :meth:`_write_under_lease`)."""
        # The preload (and the open's own reads below) reflect at least this generation:
        # later commits of peers are applied at the first SHARED lock (notes carry whole
        # chunks, so applying one the KV already showed is harmless).
        self._seen_generation = seen_generation
        self._refresh(first_open=True)

    @staticmethod
    def _history_state(policy: vhistory.Policy, share: DatabaseShare | None) -> vhistory.History:
        if share is None:
            return vhistory.History(policy)
        with share.mu:
            if share.history is None:
                share.history = vhistory.History(policy)
            elif policy.mode != "follow":
                share.history.policy = policy  # the last explicit setting wins
            return share.history  # type: ignore[no-any-return]

    def _new_state(self, options: FileOptions) -> tuple[Any, dict[int, bytearray], set[int]]:
        """The chunk cache (this file's view of the process-wide cache, ``None`` when
        disabled), dirty buffer and staged set.

        The native VFS (:mod:`native.file`) overrides this to return views of the same
        containers held in C, so the methods below run unchanged on its state.
        """
        cache = None if options.cache_chunks == 0 else chunk_cache.shared.open_file(options.cache_chunks)
        return cache, {}, set()

    # ----------------------------------------------------------------- KV access
    def _kv_get(self, keys: list[bytes], code: int, what: str) -> list[bytes | None]:
        self.stats.round_trips += 1
        self.stats.live_reads += 1
        try:
            return self._kv.get_many(keys)
        except Exception as exc:
            raise kv_failure(code, what, exc) from exc

    def _kv_write(self, batch: WriteBatch, *, release: bool = False) -> None:
        """Write ``batch`` (1 round trip). In ``cross-process`` mode the write is made
        under the writer lease (:meth:`_write_under_lease`); ``release``: this batch
        completes the transaction's commit and releases the lease with it."""
        if self._cross_process:
            self._write_under_lease(batch, release)
            return
        self.stats.round_trips += 1
        self._kv.write(batch)

    def _kv_write_lease(self, batch: WriteBatch) -> None:
        """A write of the lease itself (take, release, renew): never guarded."""
        self.stats.round_trips += 1
        self._kv.write(batch)

    def _write_under_lease(self, batch: WriteBatch, release: bool) -> None:
        """cross-process: write ``batch`` only while this transaction holds the writer
        lease, checked by the KV in the same atomic step (``expect`` on the lease's current
        value, read under :attr:`DatabaseShare.lease_mu` so a renewal cannot slip in
        between). After this transaction's commit released the lease, its commit phase
        two may still write, expecting no lease and its own id as the last commit.

        :raises apsw.IOError: the lease is not this transaction's (lost to another
            process after it expired, or never taken): nothing of ``batch`` is applied.
        """
        share = self._share
        assert share is not None
        if self._lease_uncertain:
            self._resolve_uncertain_commit(share)
        with share.lease_mu, interrupts.deferred():  # a write that landed is always recorded
            held = share.lease_value if share.lease_holder == self._fid and not self._lease_lost else None
            if held is not None:
                batch.expect_value(lease.LEASE_KEY, held)
                if release:
                    batch.delete(lease.LEASE_KEY)
                    batch.put(lease.LAST_COMMIT_KEY, lease.holder_id(held))
            elif self._released_id is not None:
                # After this transaction's commit released the lease: phase two, or a
                # rollback in place over a commit whose reply was lost but that landed.
                batch.expect_value(lease.LEASE_KEY, None)
                batch.expect_value(lease.LAST_COMMIT_KEY, self._released_id)
            else:
                raise self._lost_lease_error("this transaction does not hold the writer lease")
            self.stats.round_trips += 1
            try:
                self._kv.write(batch)
            except ConditionFailedError as exc:
                if exc.key not in (lease.LEASE_KEY, lease.LAST_COMMIT_KEY, None):
                    raise
                if held is not None:
                    self._lose_lease(share)
                else:
                    self._released_id = None
                raise self._lost_lease_error("the writer lease expired and another process took it over") from exc
            except BaseException:
                # A lost reply: a batch that releases the lease may have landed. The next
                # write reads which it was first.
                self._lease_uncertain = held is not None and release
                raise
            if held is not None and release:
                self._released_id = lease.holder_id(held)
                self._drop_lease(share)

    def _lost_lease_error(self, why: str) -> apsw.Error:
        return sqlite_error(apsw.SQLITE_IOERR_LOCK, f"actor-db: {describe_kv(self._kv)}: {why}; this write was "
                                                    "refused and nothing of it applied (the connection re-reads "
                                                    "the database)")

    def _lose_lease(self, share: DatabaseShare) -> None:
        """The lease is no longer this transaction's: forget it, write nothing more until
        the transaction ends, and re-read everything derived from the KV."""
        log.warning("%s: this transaction lost its writer lease (it expired and another process took it)",
                    describe_kv(self._kv))
        self._lease_lost = True
        self._drop_lease(share)

    def _drop_lease(self, share: DatabaseShare) -> None:
        """Forget the lease locally (it was released or lost); stop renewing it."""
        if share.lease_holder == self._fid:
            share.lease_value = share.lease_holder = None
        lease.keeper.cancel(share.lease_renewal)
        share.lease_renewal = None

    def _kv_scan(self, start: bytes, end: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        self.stats.round_trips += 1
        self.stats.live_reads += 1
        return self._kv.scan(start, end, limit=limit)

    # ------------------------------------------------------- meta and recovery
    def _refresh(self, first_open: bool = False) -> None:
        """(Re)load the meta and commit record; never writes unless this view owns the actor.

        On the first open the first ``open_prefetch_chunks`` chunks ride along in the same
        round trip, unless the preload already answers the meta and record. Chunk 0 is
        always part of that call when it is not known yet: it validates the meta (page
        size) and refuses to create a database over chunks whose meta was lost.

        What an interrupted large transaction left behind (see :mod:`vfs.redo`):

        - a staging marker (no commit point): the owner drops the staging range now; any
          other open ignores it (the owner may still be staging) and a writable one
          drops it inside its own next commit;
        - a commit record (committed, not yet applied): the owner rolls it forward now;
          any other open reads through it (staged chunks over chunk keys) and a writable
          one rolls it forward before its own first KV write.
        """
        try:
            self._load_meta(first_open)
        except BaseException:
            self._meta_stale = True
            raise

    def _load_meta(self, first_open: bool) -> None:
        head_key = chunk_key(self._tag, 0)
        journal_key = meta_key(FILE_JOURNAL)
        journal_head = chunk_key(FILE_JOURNAL, 0)
        wanted = [self._meta_key, COMMIT_RECORD_KEY, HISTORY_HEAD_KEY, HISTORY_BASES_KEY]
        # The journal's meta and first chunk ride along (sqlite_preload_keys asks for
        # them) at the first open, or after a journal was seen; other refreshes skip them.
        if first_open or self._journal_seen or self.preload.lookup(journal_key) is not NOT_LOADED:
            wanted += [journal_key, journal_head]
        known: dict[bytes, bytes | None] = {}
        missing: list[bytes] = []
        fresh, self._fresh_head = self._fresh_head or {}, None
        lookup = (lambda key: (ABSENT if fresh[key] is None else fresh[key]) if key in fresh
                  else self.preload.lookup(key))
        for key in wanted:
            found = lookup(key)
            if found is NOT_LOADED:
                missing.append(key)
            else:
                known[key] = None if found is ABSENT else found  # type: ignore[assignment]
        head: list[int] = []
        head_values: list[bytes | None] = []
        first_chunk = lookup(head_key)
        if missing or (first_chunk is NOT_LOADED and not _declares_pages(known.get(self._meta_key))):
            if first_open and self._cache is not None:
                # The first chunks ride along for free: SQLite reads page 1 next, and the
                # roots of the first tables created sit right after it.
                head = [i for i in range(self.options.open_prefetch_chunks)
                        if self.preload.lookup(chunk_key(self._tag, i)) is NOT_LOADED]
            if first_chunk is NOT_LOADED and 0 not in head:
                head.insert(0, 0)
            keys = missing + [chunk_key(self._tag, i) for i in head]
            values = self._kv_get(keys, apsw.SQLITE_IOERR_READ, "read of the database meta")
            known.update(zip(missing, values))
            head_values = values[len(missing):]
        chunk0_known = first_chunk is not NOT_LOADED
        chunk0 = first_chunk if isinstance(first_chunk, bytes) else None
        if head and head[0] == 0:
            chunk0, chunk0_known = head_values[0], True
        record = known[COMMIT_RECORD_KEY]
        try:
            self._history.load(known[HISTORY_HEAD_KEY], known[HISTORY_BASES_KEY])
        except ValueError as exc:
            raise self._corrupt(f"the history records are corrupt: {exc}") from exc
        if self._cross_process and chunk0_known:
            self._remember_kv_state((known[self._meta_key], chunk0, record, known[HISTORY_HEAD_KEY],
                                     known[HISTORY_BASES_KEY]))
        # A committed large transaction being applied may have written chunks before
        # the meta (its final batch): the record, not the meta, then says the size.
        applying = record is not None and record != redo.STAGING_MARKER
        size = self._validated_size(known[self._meta_key], None if applying else chunk0, chunk0_known and not applying)
        self._size = self._committed_size = self._low_water = size
        if chunk0 is not None:
            chunk0 = self._checked_chunk(0, chunk0, head_key)
        self._overlay = None
        self._repair = None
        self._stale_staging = False
        self._meta_stale = False
        if head and self._cache is not None:
            for index, value in zip(head, head_values):
                if value is not None and index * CHUNK_SIZE < size:
                    self._cache[index] = self._checked_chunk(index, value, chunk_key(self._tag, index))
            self.stats.chunks_fetched += len(head)
        journal_meta = known.get(journal_key)
        self._journal_seen = self._journal_seen or journal_meta is not None
        journal_first = known.get(journal_head)
        # cross-process: recovery is the next lease holder's job (_prepare_kv_write).
        may_recover = self._owner and not self.options.read_only and not self._cross_process
        if record is not None and record == redo.STAGING_MARKER:
            if may_recover:
                self._drop_staging()
            else:
                self._stale_staging = True
        elif record is not None:
            if journal_meta is not None and self._journal_size(journal_meta) and \
                    journal.is_hot(journal_first or b"", size):
                raise self._corrupt("both a hot rollback journal (file tag 1, written by another SQLite VFS such "
                                    "as RivetKit's) and an actor-db commit record are stored: two writers ran at "
                                    "once; refusing to guess which state is committed")
            try:
                decoded = redo.CommitRecord.decode(record)
            except ValueError as exc:
                raise self._corrupt(f"the commit record at key {COMMIT_RECORD_KEY!r} is corrupt: {exc}") from exc
            if may_recover:
                self._pending_record = decoded
                self._finish_roll_forward()
            else:
                self._read_through(decoded)
            return
        self._check_journal(journal_meta, journal_first, chunk0 if chunk0_known else None, may_recover)

    def _journal_size(self, journal_meta: bytes) -> int:
        try:
            return decode_meta(journal_meta)
        except CorruptMetaError as exc:
            raise self._corrupt(f"the rollback journal's meta (key {meta_key(FILE_JOURNAL)!r}) is corrupt: "
                                f"{exc}") from exc

    def _read_journal(self, size: int) -> bytes:
        """The journal's first ``size`` bytes (missing or short chunks read as zeros, as
        RivetKit reads them), in as few KV calls as the driver's read limits allow."""
        count = chunk_count(size)
        per_call = max(self._readahead_cap, 1)
        parts: list[bytes] = []
        for start in range(0, count, per_call):
            keys = [chunk_key(FILE_JOURNAL, i) for i in range(start, min(count, start + per_call))]
            for value in self._kv_get(keys, apsw.SQLITE_IOERR_READ, f"read of the rollback journal ({len(keys)} chunks)"):
                parts.append((value or b"")[:CHUNK_SIZE].ljust(CHUNK_SIZE, b"\x00"))
        return b"".join(parts)[:size]

    def _committed_chunks(self, indices: list[int]) -> dict[int, bytes]:
        """Committed values of chunks ``indices`` (preload, cache, else ONE KV call)."""
        out: dict[int, bytes] = {}
        missing: list[int] = []
        for index in indices:
            local = self._local(index)
            if local is None:
                missing.append(index)
            else:
                out[index] = bytes(local)
        if missing:
            keys = [chunk_key(self._tag, i) for i in missing]
            values = self._kv_get(keys, apsw.SQLITE_IOERR_READ, f"read of {len(keys)} chunks")
            for index, key, value in zip(missing, keys, values):
                out[index] = _ZERO_CHUNK if value is None else self._checked_chunk(index, value, key)
        return out

    def _check_journal(self, journal_meta: bytes | None, journal_first: bytes | None, chunk0: bytes | None,
                       may_recover: bool) -> None:
        """Honour a hot rollback journal in tag 1 and page 1's WAL flag (:mod:`vfs.journal`).

        A hot journal is played back in memory; with page 1 asking for WAL mode, page 1
        is set to rollback mode. The owner writes the result now, with the journal's
        deletion, in ONE atomic batch (:meth:`_apply_repair`); any other open reads it
        from memory without writing, and a writable one writes it before its first
        commit. Costs nothing without a journal meta or a WAL flag; with a journal, one
        call for the journal (hot only: its first chunk came with the meta), and one for
        the chunks restored pages cover in part (page sizes below 4096 bytes).
        """
        size = self._committed_size
        play: journal.Playback | None = None
        if journal_meta is not None:
            jsize = self._journal_size(journal_meta)
            if jsize and size and journal.is_hot(journal_first or b"", size):
                play = journal.playback(self._read_journal(jsize))
                log.warning("%s: found a hot rollback journal (%d bytes; an interrupted commit of another "
                            "SQLite VFS): rolling it back (%d pages, size %s bytes)", describe_kv(self._kv), jsize,
                            len(play.pages), play.size)
        chunks: dict[int, bytes] = {}
        new_size = size
        if play is not None:
            base = self._committed_chunks(journal.chunks_needed(play, size))
            new_size, chunks = journal.restore_chunks(play, base, size)
        page1 = chunks.get(0, chunk0)
        if page1 is not None and new_size > 0 and journal.says_wal(page1):
            log.info("%s: page 1 says WAL mode; reading it as rollback mode (the owner rewrites it)",
                     describe_kv(self._kv))
            chunks[0] = journal.without_wal_flag(bytes(page1)[:CHUNK_SIZE].ljust(CHUNK_SIZE, b"\x00"))
        # SQLite deletes a journal left next to an empty database (it would turn hot
        # once the database has pages); so does the owner, or a writer before it writes.
        stale = journal_meta is not None and size == 0 and not self.options.read_only
        if play is None and not chunks and not stale:
            return
        self._repair = Repair(size, new_size, chunks, play is not None or stale)
        if may_recover:
            self._apply_repair()
        else:
            self._overlay_repair()

    def _overlay_repair(self) -> None:
        """Read the pending repair's state without writing it: its size, its chunks over
        the KV's (in the preload, the cache and :meth:`_read_chunks`)."""
        repair = self._repair
        assert repair is not None
        self._size = self._committed_size = self._low_water = repair.size
        for index, data in repair.chunks.items():
            self.preload.update(chunk_key(self._tag, index), data)
            if self._cache is not None:
                self._cache[index] = data

    def _apply_repair(self) -> None:
        """Write the pending repair: restored chunks, meta, truncation and the journal's
        deletion in ONE atomic batch; through :mod:`vfs.redo` (the commit record's batch
        deleting the journal) when that does not fit the driver's limits."""
        repair = self._repair
        assert repair is not None
        tag = self._tag
        new_end = chunk_count(repair.size)
        truncate_from = new_end if repair.size < repair.old_size else None
        cleanup = WriteBatch()
        if repair.journal:
            cleanup.delete(meta_key(FILE_JOURNAL))
            cleanup.delete_range(*chunk_range(FILE_JOURNAL))
        batch = WriteBatch()
        if truncate_from is not None:
            redo.truncate(batch, tag, truncate_from, new_end, keep_tail=False)
        for index, data in repair.chunks.items():
            batch.put(chunk_key(tag, index), data)
        batch.put(self._meta_key, encode_meta(repair.size))
        batch.merge(cleanup)
        try:
            if self._limits.batch_fits(batch.op_count, batch.payload_bytes):
                self._kv_write(batch)
            else:
                redo.stage(self._kv_write, self._limits, tag, repair.chunks, first=True)
                record = redo.CommitRecord(repair.size, truncate_from)
                redo.write_commit_record(self._kv_write, record, cleanup)
                self._pending_record = record
                self._finish_roll_forward(dict(repair.chunks))
        except Exception as exc:
            self._forget_after_failure()
            raise kv_failure(apsw.SQLITE_IOERR_WRITE, "rollback of a hot journal / repair of page 1", exc) from exc
        except BaseException:
            self._forget_after_failure()
            raise
        log.info("%s: wrote the rolled-back state (%d chunks, %d bytes)", describe_kv(self._kv), len(repair.chunks),
                 repair.size)
        self.stats.chunks_written += len(repair.chunks)
        self._repair = None
        self._size = self._committed_size = self._low_water = repair.size
        if truncate_from is not None:
            self.preload.delete_range(*chunk_range(tag, truncate_from))
            if self._cache is not None:
                for index in [i for i in self._cache.keys() if i >= truncate_from]:
                    del self._cache[index]
        self.preload.update_many([(chunk_key(tag, i), d) for i, d in repair.chunks.items()]
                                 + [(self._meta_key, encode_meta(repair.size))])
        if self._cache is not None:
            for index, data in repair.chunks.items():
                self._cache[index] = data
        if repair.journal:
            self._forget_journal()

    def _forget_journal(self) -> None:
        """The journal was deleted: the preload must not answer with its old keys."""
        self.preload.update(meta_key(FILE_JOURNAL), None)
        self.preload.update(chunk_key(FILE_JOURNAL, 0), None)

    def _validated_size(self, meta: bytes | None, chunk0: bytes | None, chunk0_known: bool) -> int:
        """The file size the meta declares, checked against page 1 and the chunk format.

        :raises apsw.CorruptError: the meta is malformed, declares a size that is not a
            whole number of pages or past the largest file the key format can address,
            or is missing while chunk 0 exists (never create a database over chunks).
        """
        if meta is None:
            if chunk0 is not None:
                raise self._corrupt(f"the database meta (key {self._meta_key!r}) is missing but chunk 0 exists; "
                                    "refusing to create a new database over stored pages")
            return 0
        try:
            size = decode_meta(meta)
        except CorruptMetaError as exc:
            raise self._corrupt(f"the database meta is corrupt (key {self._meta_key!r}): {exc}") from exc
        if size > MAX_FILE_BYTES:
            raise self._corrupt(f"the database meta at key {self._meta_key!r} declares {size} bytes, more than "
                                f"the {MAX_FILE_BYTES} bytes the chunk format can address")
        # Page 1's header names the page size; unread, every page size is a multiple
        # of 512; read but not a database header, SQLite itself refuses the file.
        page_size = _page_size(chunk0) if chunk0_known else _MIN_PAGE_SIZE
        if page_size and size % page_size:
            raise self._corrupt(f"the database meta at key {self._meta_key!r} declares {size} bytes, not a whole "
                                f"number of {page_size}-byte pages")
        if not size and chunk0 is not None:
            raise self._corrupt(f"the database meta at key {self._meta_key!r} declares 0 bytes but chunk 0 exists; "
                                "refusing to create a new database over stored pages")
        if size and chunk0 is None and chunk0_known:
            raise self._corrupt(f"the database meta at key {self._meta_key!r} declares {size} bytes but chunk 0 "
                                "(page 1) is missing")
        return size

    def _corrupt(self, what: str) -> Exception:
        """``apsw.CorruptError`` naming this file's actor and ``what`` is wrong."""
        return sqlite_error(apsw.SQLITE_CORRUPT, f"actor-db: {describe_kv(self._kv)}: {what}")

    def _checked_chunk(self, index: int, value: bytes, key: bytes) -> bytes:
        """``value`` padded to ``CHUNK_SIZE``, after checking its length: a chunk holds
        exactly ``CHUNK_SIZE`` bytes, except that the file's last chunk may stop at the
        file's end (older writers).

        :raises apsw.CorruptError: the value is longer than a chunk, or shorter than the
            file bytes it must hold (a truncated value would read as zeros).
        """
        n = len(value)
        if n == CHUNK_SIZE:
            return value
        needed = min(CHUNK_SIZE, max(self._committed_size - index * CHUNK_SIZE, 0))
        if n > CHUNK_SIZE or n < needed:
            raise self._corrupt(f"chunk {index} at key {key!r} holds {n} bytes; expected {CHUNK_SIZE}"
                                + (f" (at least {needed})" if n < needed else ""))
        return value.ljust(CHUNK_SIZE, b"\x00")

    def _read_through(self, record: redo.CommitRecord) -> None:
        """Serve reads from a committed, not yet applied large transaction without
        writing: staged chunks over chunk keys (:meth:`_fetch`), size from the record.

        The preload's and cache's chunk values predate the record, so both are dropped.
        """
        log.info("reading through a committed large transaction that is not applied yet (size %d bytes)",
                 record.size)
        self._overlay = record
        self.preload.clear(*chunk_range(self._tag))
        if self._cache is not None:
            self._cache.clear()
        self._size = self._committed_size = self._low_water = record.size

    def _drop_staging(self) -> None:
        """An interrupted transaction staged chunks but never reached its commit point
        (owner only: another writer may be staging right now)."""
        log.info("dropping the staging of an interrupted, uncommitted large transaction")
        try:
            redo.drop_staging(self._kv_write)
        except BaseException as exc:
            self._meta_stale = True
            if not isinstance(exc, Exception):
                raise
            raise kv_failure(apsw.SQLITE_IOERR_WRITE, "drop of an uncommitted transaction's staging", exc) from exc
        self.preload.update(COMMIT_RECORD_KEY, None)

    def _prepare_kv_write(self) -> None:
        """Before this file's first KV write: refuse a read-only file, and apply the
        committed large transaction it was reading through (its staging must not be
        overwritten by this transaction's own staging)."""
        if self.options.read_only:
            raise sqlite_error(apsw.SQLITE_READONLY, f"actor-db: {describe_kv(self._kv)}: the database is open read-only")
        if self._repair is not None:
            self._apply_repair()
        record = self._overlay
        if record is None:
            return
        log.info("applying a committed large transaction before this one writes (size %d bytes)", record.size)
        try:
            self._roll_forward(record)
        except apsw.Error:
            self._forget_after_failure()
            raise
        # The chunk keys now hold the values read through staging: the cache stays valid.
        self._overlay = None
        self._stale_staging = False
        self.preload.update(COMMIT_RECORD_KEY, None)

    def _roll_forward(self, record: redo.CommitRecord, in_memory: dict[int, bytes] | None = None,
                      keep_tail: bool = False) -> None:
        """Apply ``record`` through this file's counted KV calls (:func:`vfs.redo.roll_forward`).
        A KV failure becomes an SQLite I/O error; an interrupt first drops everything the
        file derived from the KV. The tail past the new end is kept while the last commit
        is ambiguous (see :meth:`_after_failed_commit`)."""
        own = self._pending_record is record and self._cross_process
        # Applying this transaction's own large commit: its last batch releases the lease.
        write = ((lambda batch: self._kv_write(batch, release=COMMIT_RECORD_KEY in batch.deletes)) if own
                 else self._kv_write)
        try:
            applied = redo.roll_forward(write, self._kv_scan, self._limits, self._tag, record, in_memory,
                                        keep_tail=keep_tail or self._ambiguous)
        except BaseException as exc:
            # Part of it may have applied, and each apply batch deletes the staged copies
            # it applied (vfs.redo): the record must be read again from the KV before any
            # retry, never reused from memory. Forgetting the KV state does exactly that.
            self._forget_after_failure()
            interrupt = interrupts.interrupt_in(exc)
            if interrupt is not None:
                raise interrupt
            if not isinstance(exc, Exception):
                raise
            raise kv_failure(apsw.SQLITE_IOERR_WRITE, "roll-forward of a committed large transaction", exc) from exc
        self.stats.roll_forwards += in_memory is None
        self.stats.chunks_written += applied

    def _finish_roll_forward(self, in_memory: dict[int, bytes] | None = None, keep_tail: bool = False) -> None:
        record = self._pending_record
        assert record is not None
        log.info("rolling forward an interrupted large commit (size %d bytes)", record.size)
        self._roll_forward(record, in_memory, keep_tail)  # on failure the record is read again from the KV
        self._pending_record = None
        # Chunk keys changed under the preload and cache: forget what they hold.
        self.preload.clear(*chunk_range(self._tag))
        if self._cache is not None:
            self._cache.clear()
        self._size = self._committed_size = self._low_water = record.size

    def demote_preload(self) -> int:
        """Move the preloaded chunks into the chunk cache, then forget them in the preload.

        Used before migrations: afterwards no read is answered by the preload, yet the
        migration does not pay live reads for pages the startup call already fetched.
        Safe because both hold only committed values (each is updated after every
        commit). Returns the chunks moved (0 when the cache is disabled).
        """
        start, end = chunk_range(self._tag)
        moved = 0
        if self._cache is not None:
            for key, value in self.preload.items(start, end):
                index = chunk_index(key)
                if index not in self._cache and index not in self._dirty:
                    self._cache[index] = value
                    moved += 1
        self.preload.clear(start, end)
        return moved

    def _ensure_ready(self) -> None:
        """Bring the file back in line with the KV after a failure, or raise."""
        if self._meta_stale:
            self._refresh()
        elif self._pending_record is not None:
            share = self._share
            if self._cross_process and share is not None and share.lease_holder != self._fid:
                # No longer holding the lease: whoever takes it next applies the record.
                self._forget_after_failure()
                self._refresh()
                return
            self._finish_roll_forward()

    def _after_failed_commit(self) -> None:
        """A commit failed or was interrupted, and its batch may have landed anyway (a
        lost reply; an interrupt after the commit point). SQLite now rolls back in
        place: it writes back the pages it journaled and relies on every other page of
        its file being as before the transaction. Everything derived from the KV is
        dropped; until a commit succeeds again, no chunk past a file's end is deleted,
        so a shrink that landed leaves the old tail for that rollback to find."""
        with interrupts.deferred():  # all of it, or a second interrupt could skip a step
            self._ambiguous = True
            self._deltas_clean_head = None
            self._forget_after_failure()
            self._failed_to_share()

    def _set_tail(self, first: int) -> None:
        self._tail_from = first
        self._set_tail_flag(True)

    def _drop_tail(self) -> None:
        """SQLite's commit phase two: the shrinking commit is final, delete the chunks
        past the file's end (one batch; on a KV error they stay as orphans past the
        meta's size, never read, and the next growing commit deletes them)."""
        first, self._tail_from = self._tail_from, None
        self._set_tail_flag(False)
        if first is None or self._meta_stale or self.options.read_only:
            return
        first = max(first, chunk_count(self._committed_size))
        if first > MAX_CHUNK_INDEX:
            return
        batch = WriteBatch()
        batch.delete_range(*chunk_range(self._tag, first))
        try:
            self._kv_write(batch)
        except Exception as exc:
            interrupt = interrupts.interrupt_in(exc)
            if interrupt is not None:
                raise interrupt  # the chunks stay as unread orphans; the Ctrl-C is not swallowed
            log.info("could not delete the chunks past the end after a shrink (%s); they stay unread", exc)

    def _set_tail_flag(self, pending: bool) -> None:
        """Tell the native VFS's C side whether phase two has work (no-op here)."""

    def _forget_after_failure(self) -> None:
        """A KV call failed or was interrupted: the KV's state is unknown, so drop
        everything derived from it (the uncommitted writes too: SQLite rolls its
        transaction back, or its pager resets and re-reads the file). Runs with SIGINT
        deferred (:class:`vfs.interrupts.deferred`): it is never left half done."""
        with interrupts.deferred():
            self._meta_stale = True  # first: whatever happens next, the meta is re-read
            self._dirty.clear()
            self._staged.clear()
            if self._cache is not None:
                self._cache.clear()
            # The meta and record too: a write that failed may have applied (a lost reply).
            self.preload.clear(SQLITE_PREFIX, SQLITE_RANGE_END)
            self._pending_record = None  # re-read with the meta: rolled forward or read through
            self._repair = None  # re-derived from the KV with the meta
            self._tail_from = None
            self._set_tail_flag(False)
            self._overlay = None
            self._fresh_head = None
            self._history.forget()

    def _failed(self, exc: BaseException, code: int, what: str) -> BaseException:
        """``exc`` escaped a method that changes the file's state: drop everything
        derived from the KV, and return what the method raises so that SQLite rolls
        back the whole transaction (the state the file is now in).

        An ``apsw.Error`` is returned as is (the KV failures are I/O errors already);
        anything else, an interrupt above all, becomes an I/O error with extended code
        ``code`` (:func:`vfs.interrupts.as_io_error`; an interrupt stays catchable as
        itself). Any other code makes SQLite roll back only the failing statement and
        keep the transaction's earlier pages, which the file has just dropped.
        """
        try:
            self._forget_after_failure()
        except BaseException as late:  # an interrupt held back while the state was dropped: it wins
            exc = late
        if isinstance(exc, apsw.Error):
            return exc
        if is_interrupt(exc):
            return interrupts.as_io_error(exc, code, what)
        failure = sqlite_error(code, f"actor-db: {describe_kv(self._kv)}: {what} failed: {type(exc).__name__}: {exc}")
        failure.__cause__ = exc
        return failure

    # -------------------------------------------------------------- chunk reads
    def _local(self, index: int) -> bytes | bytearray | None:
        """Chunk ``index`` if held locally (``_ZERO_CHUNK`` when known empty), else ``None``."""
        dirty = self._dirty.get(index)
        if dirty is not None:
            return dirty
        if index in self._staged:
            return None
        if index * CHUNK_SIZE >= self._low_water:
            return _ZERO_CHUNK
        found = self.preload.lookup(chunk_key(self._tag, index))
        if found is not NOT_LOADED:
            if found is ABSENT:
                self.stats.preload_hits += 1
                return _ZERO_CHUNK
            if len(found) == CHUNK_SIZE:  # type: ignore[arg-type]
                self.stats.preload_hits += 1
                return found  # type: ignore[return-value]
            # any other length is checked (and refused if damaged) by a live read
        if self._cache is not None:
            cached: bytes | None = self._cache.get(index)
            if cached is not None:
                self.stats.cache_hits += 1
                return cached
        return None

    def _fetch(self, indices: list[int]) -> dict[int, bytes]:
        """Fetch chunks not held locally in ONE KV call, with read-ahead."""
        want = list(indices)
        gap, ahead = self._next_window(indices[0])
        if ahead and self._cache is not None:
            last_committed = chunk_count(self._low_water)
            # The chunks skipped between the stream and this miss (a few pages of another
            # B-tree, or read later), then the window after the miss.
            extra = [i for i in range(max(gap, 0), indices[0]) if self._wanted_ahead(i)]
            nxt = indices[-1] + 1
            while len(extra) < ahead and nxt < last_committed:
                if self._wanted_ahead(nxt):
                    extra.append(nxt)
                nxt += 1
            want += extra
            self._stream_end = nxt
        values = self._read_chunks(want, [i in self._staged for i in want])
        out: dict[int, bytes] = {}
        for index, data in zip(want, values):
            out[index] = data
            if self._cache is not None and index not in self._staged:
                self._cache[index] = data
        return out

    def _wanted_ahead(self, index: int) -> bool:
        """Whether read-ahead should fetch chunk ``index`` (not held locally)."""
        return index not in self._dirty and index not in self._staged and index not in self._cache \
            and self.preload.lookup(chunk_key(self._tag, index)) is NOT_LOADED

    def _next_window(self, first: int) -> tuple[int, int]:
        """The read-ahead for a miss at chunk ``first``: a miss right after the last read,
        or right after the last read-ahead (within a slack of an eighth of the window,
        for the pages of another B-tree in between), is sequential and doubles the window (from
        :data:`FIRST_READAHEAD_CHUNKS` up to the cap); any other miss halves it and
        reads nothing ahead (an interior B-tree page in the middle of a scan costs the
        scan half its window, not all of it). Returns ``(gap, window)``: read-ahead
        also fetches the chunks from ``gap`` (where the stream was) up to the miss.
        Same rule as the native VFS."""
        slack = max(self._readahead // 8, 2)  # pages of another B-tree interleaved
        if 0 <= first - self._next_sequential <= slack:
            gap = self._next_sequential
        elif 0 <= first - self._stream_end <= slack:
            gap = self._stream_end
        else:
            self._readahead //= 2
            return first, 0
        window = self._readahead * 2 if self._readahead else FIRST_READAHEAD_CHUNKS
        self._readahead = min(window, self._readahead_cap)
        return gap, self._readahead

    def _read_chunks(self, indices: list[int], staged: list[bool]) -> list[bytes]:
        """:meth:`_read_kv_chunks`, except that chunks of a pending :class:`Repair` come
        from memory, and page 1 asking for WAL mode reads as rollback mode (a
        repair is then pending: the first commit writes it)."""
        repair = self._repair
        if repair is not None:
            served = [not own and i in repair.chunks for i, own in zip(indices, staged)]
            if any(served):
                rest = [(i, own) for i, own, s in zip(indices, staged, served) if not s]
                fetched = iter(self._read_kv_chunks([i for i, _ in rest], [own for _, own in rest]) if rest else [])
                return [repair.chunks[i] if s else next(fetched) for i, s in zip(indices, served)]
        values = self._read_kv_chunks(indices, staged)
        j = indices.index(0) if 0 in indices else -1
        if j >= 0 and not staged[j] and journal.says_wal(values[j]):
            patched = journal.without_wal_flag(values[j])
            values[j] = patched
            if repair is None:
                self._repair = Repair(self._committed_size, self._committed_size, {0: patched}, False)
            else:
                repair.chunks[0] = patched
        return values

    def _read_kv_chunks(self, indices: list[int], staged: list[bool]) -> list[bytes]:
        """ONE KV call for chunks ``indices`` (``staged[j]``: this transaction's staged
        copy), checked and padded to ``CHUNK_SIZE`` each; a missing chunk reads as zeros.

        While reading through a committed large transaction (:meth:`_read_through`),
        each chunk's staged copy and chunk key come back in the same call, the staged
        copy winning; a chunk at or past the record's truncation point reads as zeros.
        """
        overlay = self._overlay
        keys: list[bytes] = []
        verify = self._cross_process and self._tx_state is not None and \
            self._share is not None and self._share.lease_holder != self._fid
        if verify:
            keys += self._validation_keys
        for index, own in zip(indices, staged):
            if own:
                keys.append(staged_key(self._tag, index))
            elif overlay is not None:
                keys += [staged_key(self._tag, index), chunk_key(self._tag, index)]
            else:
                keys.append(chunk_key(self._tag, index))
        values = self._kv_get(keys, apsw.SQLITE_IOERR_READ, f"read of {len(indices)} chunks")
        self.stats.chunks_fetched += len(indices)
        out: list[bytes] = []
        j = 0
        if verify:
            j = len(self._validation_keys)
            self._verify_unchanged(values[:j])
        for index, own in zip(indices, staged):
            key, value = keys[j], values[j]
            j += 1
            if overlay is not None and not own:
                if value is None:
                    key, value = keys[j], values[j]
                    if overlay.truncate_from is not None and index >= overlay.truncate_from:
                        value = None
                j += 1
            out.append(_ZERO_CHUNK if value is None else self._checked_chunk(index, value, key))
        return out

    def _chunks(self, indices: Iterable[int]) -> dict[int, bytes | bytearray]:
        got: dict[int, bytes | bytearray] = {}
        missing: list[int] = []
        for index in indices:
            data = self._local(index)
            if data is None:
                missing.append(index)
            else:
                got[index] = data
        if missing:
            got.update(self._fetch(missing))
        return got

    def xRead(self, amount: int, offset: int) -> bytes:
        try:
            self._ensure_ready()
            if offset >= self._size:
                return b""
            amount = min(amount, self._size - offset)  # apsw zero-fills a short read
            pieces = list(spans(offset, amount))
            chunks = self._chunks(p.chunk for p in pieces)
            self._next_sequential = pieces[-1].chunk + 1
            for p in pieces:  # the hot set (what the native VFS records in C, same rule)
                self._hot.record(p.chunk, chunks[p.chunk], p.start, p.end)
            if len(pieces) == 1:
                p = pieces[0]
                data = chunks[p.chunk]
                return bytes(data[p.start:p.end]) if (p.start or p.end < len(data)) else bytes(data)
            out = bytearray(amount)
            for p in pieces:
                piece = chunks[p.chunk][p.start:p.end]
                out[p.buffer_offset:p.buffer_offset + len(piece)] = piece
            return bytes(out)
        except BaseException as exc:
            # Nothing changed; an interrupt still must reach SQLite as an I/O error.
            if isinstance(exc, Exception):
                raise
            raise interrupts.as_io_error(exc, apsw.SQLITE_IOERR_READ, "read")

    # ------------------------------------------------------------------ writes
    def _dirty_chunk(self, index: int, whole: bool) -> bytearray:
        buf = self._dirty.get(index)
        if buf is None:
            if whole:
                buf = bytearray(CHUNK_SIZE)
            else:
                base = self._chunks([index])[index]
                buf = bytearray(CHUNK_SIZE)
                buf[:len(base)] = base
            self._dirty[index] = buf
        return buf

    def xWrite(self, data: bytes, offset: int) -> None:
        try:
            self._ensure_ready()
            view = memoryview(data)
            for p in spans(offset, len(data)):
                whole = p.start == 0 and p.end == CHUNK_SIZE
                buf = self._dirty_chunk(p.chunk, whole)
                buf[p.start:p.end] = view[p.buffer_offset:p.buffer_offset + (p.end - p.start)]
            self._size = max(self._size, offset + len(data))
            if len(self._dirty) * CHUNK_SIZE > self.options.max_dirty_bytes:
                self._spill()
        except BaseException as exc:
            # A failed or interrupted write (also one of SQLite's rollback playback)
            # leaves the pager rolling back or reset: no half-written buffer may survive.
            raise self._failed(exc, apsw.SQLITE_IOERR_WRITE, "write")

    def _spill(self) -> None:
        """Move dirty chunks to the KV staging range to bound memory."""
        self._prepare_kv_write()
        chunks = {i: bytes(b) for i, b in self._dirty.items()}
        self._note_written(chunks)
        try:
            if self._history.recording:
                # History chunks ride along with the staging (cleared by its first batch).
                vhistory.write_deltas(self._kv_write, self._limits, self._history.next_seq, chunks,
                                      first=not self._staged)
            redo.stage(self._kv_write, self._limits, self._tag, chunks, first=not self._staged)
        except BaseException as exc:
            self._forget_after_failure()
            if not isinstance(exc, Exception):
                raise
            raise kv_failure(apsw.SQLITE_IOERR_WRITE, f"staging of {len(chunks)} spilled chunks", exc) from exc
        self._stale_staging = False  # the first staging batch cleared the range
        self._staged.update(chunks)
        self._dirty.clear()
        log.debug("spilled %d dirty chunks to the staging range", len(chunks))

    def xTruncate(self, newsize: int) -> None:
        try:
            self._ensure_ready()
            self._truncate(newsize)
        except BaseException as exc:
            raise self._failed(exc, apsw.SQLITE_IOERR_TRUNCATE, "truncate")

    def _truncate(self, newsize: int) -> None:
        if newsize >= self._size:
            self._size = newsize  # extending: the new bytes are zero by the tail invariant
            return
        first_gone = chunk_count(newsize)
        for index in [i for i in self._dirty if i >= first_gone]:
            del self._dirty[index]
        gone = sorted(i for i in self._staged if i >= first_gone)
        if gone:
            # Staged copies past the new end must not be applied if the file grows
            # again in this transaction: delete them now (rare: one extra round trip).
            batch = WriteBatch()
            batch.delete_range(staged_key(self._tag, first_gone), staged_range()[1])
            if self._history.recording:  # their history copies too (a hole must read as zeros)
                seq = self._history.next_seq
                batch.delete_range(history_delta_key(seq, first_gone), history_delta_key(seq + 1, 0))
            try:
                self._kv_write(batch)
            except Exception as exc:
                raise kv_failure(apsw.SQLITE_IOERR_TRUNCATE, f"delete of {len(gone)} staged chunks", exc) from exc
            self._staged.difference_update(gone)
        tail = newsize % CHUNK_SIZE
        if tail:
            buf = self._dirty_chunk(newsize // CHUNK_SIZE, whole=False)
            buf[tail:] = bytes(CHUNK_SIZE - tail)
        self._size = newsize
        self._low_water = min(self._low_water, newsize)

    def xFileSize(self) -> int:
        try:
            self._ensure_ready()
        except BaseException as exc:
            if isinstance(exc, Exception):
                raise
            raise interrupts.as_io_error(exc, apsw.SQLITE_IOERR_FSTAT, "size query")
        return self._size

    # ------------------------------------------------------------------ commit
    def _size_from_header(self) -> int | None:
        """The database size in bytes that page 1, if rewritten in this transaction,
        declares (header offsets 16, 24, 28, 92), or ``None`` if it declares nothing valid.

        SQLite truncates the file AFTER the commit's sync (VACUUM, auto-vacuum); reading
        the size the new header declares lets that truncation join the same atomic batch.
        Pages past the declared size are never read by SQLite, so dropping them is safe.
        """
        return self._declared_size(self._dirty.get(0))

    @staticmethod
    def _declared_size(page1: bytes | bytearray | None) -> int | None:
        """:meth:`_size_from_header` on the first 100 bytes (or more) of page 1."""
        if page1 is None or page1[:16] != b"SQLite format 3\x00":
            return None
        if page1[24:28] != page1[92:96]:  # in-header size valid only if change counter matches
            return None
        page_size = int.from_bytes(page1[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(page1[28:32], "big")
        if pages == 0 or page_size < 512 or page_size & (page_size - 1):
            return None
        return pages * page_size

    def xSync(self, flags: int) -> None:
        try:
            self._ensure_ready()
            declared = self._size_from_header()
            if declared is not None and declared < self._size:
                self.xTruncate(declared)
            try:
                extra = self.commit_hook() if self.commit_hook is not None else None
            except Exception as exc:
                # Only an I/O error code makes SQLite's pager roll back cleanly, so wrap others.
                if isinstance(exc, apsw.Error):
                    raise
                failure = sqlite_error(apsw.SQLITE_IOERR_FSYNC, f"actor-db: the commit hook failed: {type(exc).__name__}: {exc}")
                raise failure from exc
            changes = self._has_pending_changes()
            if not (extra or changes):
                return
            self.commit(extra, changes=changes)
        except BaseException as exc:
            # SQLite rolls back from its memory journal after a failed sync: drop the
            # buffer so the file matches the KV again (as after a failed KV write; a
            # failed commit has dropped it already).
            raise self._failed(exc, apsw.SQLITE_IOERR_FSYNC, "commit")

    def _has_staged(self) -> bool:
        """Whether chunks of this transaction were spilled to the staging range."""
        return bool(self._staged)

    def _has_pending_changes(self) -> bool:
        return bool(self._dirty or self._staged or self._size != self._committed_size
                    or self._low_water != self._committed_size)

    def commit(self, extra: WriteBatch | None = None, *, changes: bool | None = None) -> None:
        """Make every pending write durable: one atomic batch, or the redo protocol.

        :param extra: more operations to apply atomically with this commit.
        :param changes: :meth:`_has_pending_changes`, when the caller just asked it.
        :raises apsw.IOError: the KV failed; nothing of this transaction is applied
            (or, after the redo commit point, it is rolled forward later).

        Any exception, ``KeyboardInterrupt`` and ``SystemExit`` included, leaves the file
        consistent with the KV: everything derived from the KV is dropped and the meta
        is re-read before the next operation (the batch may or may not have landed;
        SQLite's rollback then writes the old pages back as a new commit).
        """
        dirty: dict[int, bytes] | None = None
        build_base = False
        try:
            if self._overlay is not None or self._repair is not None:
                changes = None  # (the roll-forward below may change what is pending: ask again)
            self._prepare_kv_write()
            history = self._history
            on = history.recording
            recording = on and (self._has_pending_changes() if changes is None else changes)
            if recording and self._committed_size > 0 and (history.head is None or not history.bases):
                # (History.needs_first_base, inlined: every recorded commit asks)
                # History starts on a database holding data: its current state first.
                self._build_base(self._committed_size)
            dirty = self._dirty_snapshot()
            self._note_written(dirty)
            size, committed = self._size, self._committed_size
            truncate_from = chunk_count(self._low_water) if self._low_water < committed else None
            pending: vhistory.Pending | None = None
            dropping = not on and history.head is not None  # (history.dropping)
            new_end = chunk_count(size)
            grow_tail = chunk_count(committed) if truncate_from is None and size > committed and not self._ambiguous \
                else None
            staged = self._has_staged()
            if recording:
                written = set(dirty).union(self._staged) if staged else dirty.keys()
                if grow_tail is None and truncate_from is None and not self._ambiguous and \
                        vhistory.covers(written, new_end):
                    grow_tail = new_end  # the whole file rewritten: its tail goes, and it is a base
                hole = (truncate_from, new_end) if truncate_from is not None and truncate_from < new_end else None
                tail_from = grow_tail if truncate_from is None else \
                    (max(truncate_from, new_end) if size == 0 else None)
                pending = history.prepare(size=size, hole=hole, tail_from=tail_from,
                                          chunk_indices=sorted(written) if len(written) > 1 else list(written),
                                          chunk_bytes=len(written) * CHUNK_SIZE)
            elif dropping:
                log.warning("%s: history=False: the database's history is dropped with this commit",
                            describe_kv(self._kv))
                history_ops = WriteBatch()
                history.drop_ops(history_ops)
                extra = history_ops if extra is None else _merged(extra, history_ops)
            batch = WriteBatch()
            if truncate_from is not None:
                # Holes inside the new size now; the tail past the new end only after
                # SQLite has seen the commit succeed (phase two): if this commit fails
                # and SQLite rolls back in place, those pages must still be there. Except
                # when nothing is left (the in-place rollback of a database's creation):
                # a meta of 0 bytes over chunks is refused as damage at the next open.
                redo.truncate(batch, self._tag, truncate_from, new_end, keep_tail=size > 0)
            elif grow_tail is not None:
                # Growing: a tail left past the committed end must not reappear as data.
                batch.delete_range(*chunk_range(self._tag, grow_tail))
            if self._stale_staging and not staged:
                batch.delete_range(*staged_range())  # an earlier writer's uncommitted leftovers
                batch.delete(COMMIT_RECORD_KEY)
            # Chunk keys and the meta key are never in ``batch.deletes`` (it holds the
            # commit record's key at most): plain dict stores are WriteBatch.put here.
            prefix = self._chunk_key_prefix
            chunk_puts = [(prefix + _pack_index(index), data) for index, data in dirty.items()]
            puts = batch.puts
            puts.update(chunk_puts)
            meta = encode_meta(size)
            puts[self._meta_key] = meta
            new_hint = self._hint_to_write(force=False)
            if new_hint is not None:
                extra = WriteBatch() if extra is None else extra
                extra.put(hint.HINT_KEY, hint.encode(*new_hint))
            if extra:
                batch.merge(extra)
            if pending is not None:
                # The history rides in the same batch: the changed chunks again under the
                # commit's sequence number, its entry, the head (vfs.history).
                # A commit's delta keys start with a range delete of that sequence number,
                # for what a failed large commit may have left there; not needed when
                # this file's own last commit was a small one that landed and nothing
                # changed the head since (an exclusive file: only it writes).
                clean = not staged and self._share is None and history.head is not None \
                    and history.head is self._deltas_clean_head
                vhistory.delta_puts(batch, pending.seq, dirty, first=not staged and not clean)
                batch.merge(pending.ops)
            applied = True
            large = False
            lease_ops = 2 if self._cross_process else 0  # the lease's release rides along
            limits = self._limits
            if not staged and (self._unlimited or limits.batch_fits(batch.op_count + lease_ops,
                                                                    _payload_bytes(batch) + 32 * lease_ops)):
                self._kv_write(batch, release=True)
                self.stats.chunks_written += len(dirty)
            else:
                large = True
                self._deltas_clean_head = None
                if pending is not None:  # (the history's operations go with the commit point)
                    extra = pending.ops if extra is None else _merged(extra, pending.ops)
                if pending is not None:
                    # Before the commit point; the entry goes in the commit point's batch.
                    vhistory.write_deltas(self._kv_write, self._limits, pending.seq, dirty, first=not staged)
                if self._journal_commit_possible():
                    self._commit_journaled(dirty, truncate_from, size, committed, extra, grow_tail)
                else:
                    if grow_tail is not None:
                        # As the other paths: the tail past the committed end goes at the
                        # commit point (orphans past the old end, never needed again).
                        tail = WriteBatch()
                        tail.delete_range(*chunk_range(self._tag, grow_tail))
                        extra = tail if extra is None else _merged(tail, extra)
                    applied = self._commit_large(dirty, truncate_from, extra)
            history_keys: list[tuple[bytes, bytes | None]] = []
            if pending is not None or dropping:
                history.applied(pending)
                # No delta key of the next sequence number exists: only this file writes.
                self._deltas_clean_head = history.head if pending is not None and not large else None
                puts = pending.ops.puts if pending is not None else {}
                history_keys.append((HISTORY_HEAD_KEY, puts.get(HISTORY_HEAD_KEY)))
                if pending is None or HISTORY_BASES_KEY in puts:
                    history_keys.append((HISTORY_BASES_KEY, puts.get(HISTORY_BASES_KEY)))
                build_base = pending is not None and pending.build_base
            self._stale_staging = False
            self._ambiguous = False
            if truncate_from is not None:
                self._set_tail(max(truncate_from, new_end))
            if new_hint is not None:
                self._persisted_hint = new_hint.indices
            if applied:
                # The KV now holds exactly these chunks: keep cache and preload current.
                if truncate_from is not None:
                    self.preload.delete_range(*chunk_range(self._tag, truncate_from))
                    if self._cache is not None:
                        for index in [i for i in self._cache.keys() if i >= truncate_from]:
                            del self._cache[index]
                self._cache_committed(dirty)
                chunk_puts.append((self._meta_key, meta))
                if pending is not None:  # (the history's head and bases: one preload update for all)
                    chunk_puts.extend(history_keys)  # type: ignore[arg-type]  (values: bytes)
                    history_keys = []
                self._preload_committed(chunk_puts)
            for key, value in history_keys:  # (dropped history, or a commit not applied yet)
                self.preload.update(key, value)
            self._reset_after_commit()
            self._committed_to_share(None if large or not applied else dirty, truncate_from)
        except apsw.Error:
            self._after_failed_commit()
            raise
        except Exception as exc:
            pending = len(dirty) if dirty is not None else len(self._dirty)
            self._after_failed_commit()
            raise kv_failure(apsw.SQLITE_IOERR_FSYNC, f"write of the commit batch ({pending} chunks)", exc) from exc
        except BaseException:
            self._after_failed_commit()
            raise
        self.stats.commits += 1
        if build_base and self._pending_record is None and self._overlay is None:
            if self.defer_bases:
                self.base_due = True
            else:
                self._base_after_commit()
        if self.after_commit is not None:
            self.after_commit()

    # ------------------------------------------------------------ history
    def _build_base(self, size: int) -> None:
        """Store the committed state as a history base image (:func:`vfs.history.build_base`)."""
        vhistory.build_base(self._kv_write, self._kv_scan, self._limits, self._history, size)
        head = self._history.head
        self.preload.update(HISTORY_HEAD_KEY, None if head is None else head.encode())
        self.preload.update(HISTORY_BASES_KEY, vhistory.encode_bases(self._history.bases))

    def _base_after_commit(self) -> None:
        """A base image is due (the owner, right after a commit: the chunk keys hold the
        head's state). Best effort: a failure is logged and the next commit tries again;
        the commit itself has succeeded either way."""
        try:
            self._build_base(self._committed_size)
        except Exception as exc:
            interrupt = interrupts.interrupt_in(exc)
            if interrupt is not None:
                raise interrupt
            self._history.forget()
            self._meta_stale = True  # re-read the head (a batch may have landed) with the meta
            log.warning("%s: writing a history base image failed (%s); the next commit retries",
                        describe_kv(self._kv), exc)

    def build_due_base(self) -> bool:
        """Build the history base a commit flagged in :attr:`base_due`, if it is still
        due. Only between SQLite calls with no transaction open (the chunk keys must
        hold exactly the head's state once the pending writes are durable: the scan
        drains them first). Best effort, as in a commit: a failure is logged and a
        later commit makes the base due again.

        :returns: whether a build was attempted.
        """
        if not self.base_due:
            return False
        self.base_due = False
        if (self._closed or self._meta_stale or self._pending_record is not None or self._overlay is not None
                or self._has_pending_changes() or not self._history.recording):
            return False
        self._base_after_commit()
        return True

    @property
    def history(self) -> vhistory.History:
        """This file's history state (head, bases), current after each commit."""
        return self._history

    # ------------------------------------------------------------ the hint
    def _hint_from_preload(self) -> list[int] | None:
        """The hint record the startup preload brought (``None``: unknown)."""
        found = self.preload.lookup(hint.HINT_KEY)
        if found is NOT_LOADED:
            return None
        return [] if found is ABSENT else hint.decode(found)  # type: ignore[arg-type]

    def _seed_interior(self) -> None:
        """The interior pages the opening hint lists join the hot set, each checked
        against its preloaded page where the preload brought it (a stale entry costs
        preload bytes, never correctness)."""
        found = self.preload.lookup(hint.HINT_KEY)
        record = hint.decode_hint(found) if isinstance(found, bytes) else None
        if record is None or not record.interior:
            return
        kept: list[int] = []
        for index in record.indices[:record.interior]:
            page = self.preload.lookup(chunk_key(self._tag, index))
            if not isinstance(page, bytes) or hint.is_interior_page(index, page):
                kept.append(index)
        self._hot_seed(kept)

    def _hot_seed(self, indices: list[int]) -> None:
        self._hot.seed_interior(indices)

    def _note_written(self, chunks: dict[int, bytes]) -> None:
        """Chunks about to be committed or staged: their page types keep the hot set's
        interior pages current as commits split and merge pages. (The native VFS
        notes them in C while it takes the commit's snapshot.)"""
        observe = self._hot.observe
        for index, data in chunks.items():
            observe(index, data)

    def _hot_items(self) -> tuple[list[int], list[int], list[int]]:
        """``(recent, interior, schema)`` of the hot set (the native VFS reads C's)."""
        return self._hot.items()

    def _hot_inserts(self) -> int:
        return self._hot.inserts

    _HINT_RECHECK = 8
    """New hot chunks since the last look before a commit looks again (keeps the
    per-commit cost of hints to one integer comparison)."""

    def _hint_to_write(self, force: bool) -> hint.Hint | None:
        """The new hint if it is worth writing now, else ``None``. A commit looks again
        only after :data:`_HINT_RECHECK` new hot chunks and writes a material change;
        the owner's close (``force``) always looks and writes any change, so the next
        wake gets what the last workload read (the recency order moves without new
        chunks)."""
        if self.options.read_only or self.options.hint_max_chunks <= 0:
            return None
        end = chunk_count(self._committed_size)
        if end <= self.options.hint_max_chunks:
            return None  # the lowest chunks already bring the whole file: no write needed
        inserts = self._hot_inserts()
        if not force and inserts - self._hint_inserts_seen < self._HINT_RECHECK:
            return None
        self._hint_inserts_seen = inserts
        recent, interior, schema = self._hot_items()
        new = hint.rank(recent, interior, schema, self.options.hint_max_chunks,
                        self.options.hint_max_interior_chunks, end)
        return new if hint.changed_materially(self._persisted_hint, new.indices, exact=force) else None

    def _write_hint_at_close(self) -> None:
        """The owner saves a changed hint when it closes (an actor's sleep):
        one write, best effort (a failure is logged; the next wake just costs more)."""
        if not self._owner or self._meta_stale or self._overlay is not None:
            return
        new = self._hint_to_write(force=True)
        if new is None:
            return
        batch = WriteBatch()
        batch.put(hint.HINT_KEY, hint.encode(*new))
        try:
            self._kv_write(batch)
            self._persisted_hint = new.indices
        except Exception as exc:
            interrupt = interrupts.interrupt_in(exc)
            if interrupt is not None:
                raise interrupt
            log.info("could not save the hot-set hint at close (%s); the next wake reads more live", exc)

    def _dirty_snapshot(self) -> dict[int, bytes]:
        """Every dirty chunk as immutable bytes (``CHUNK_SIZE`` each), in order of first
        write: what a commit writes. The native VFS overrides it with one bulk copy."""
        return {i: bytes(b) for i, b in self._dirty.items()}

    def _cache_committed(self, dirty: dict[int, bytes]) -> None:
        """Put the chunks a successful commit wrote (``dirty``, in order: LRU order
        matters for later round trips) into the chunk cache."""
        if self._cache is not None:
            for index, data in dirty.items():
                self._cache[index] = data

    def _preload_committed(self, puts: list[tuple[bytes, bytes]]) -> None:
        """A successful commit wrote ``puts`` (its chunk keys and the meta key; the dirty
        buffer still holds the chunks): keep the preload current."""
        self.preload.update_many(puts)

    def _reset_after_commit(self) -> None:
        """Empty the dirty buffer and staged set; the KV now holds ``_size`` bytes."""
        self._dirty.clear()
        self._staged.clear()
        self._committed_size = self._low_water = self._size

    def _journal_commit_possible(self) -> bool:
        """Whether a large commit may go through a rollback journal (see
        :attr:`FileOptions.large_commits`)."""
        return self.options.large_commits == "journal" and not self._has_staged() and self._share is None \
            and self._committed_size > 0

    def _old_chunks(self, indices: list[int]) -> dict[int, bytes]:
        """Committed values of chunks ``indices`` (ignoring this transaction's writes):
        preload, cache, else KV calls of at most the read-ahead cap each."""
        out: dict[int, bytes] = {}
        missing: list[int] = []
        for index in indices:
            if index * CHUNK_SIZE >= self._committed_size:
                out[index] = _ZERO_CHUNK
                continue
            found = self.preload.lookup(chunk_key(self._tag, index))
            if isinstance(found, bytes) and len(found) == CHUNK_SIZE:
                out[index] = found
            elif found is ABSENT:
                out[index] = _ZERO_CHUNK
            else:
                cached = self._cache.get(index) if self._cache is not None else None
                if cached is not None:
                    out[index] = bytes(cached)
                else:
                    missing.append(index)
        per_call = max(self._readahead_cap, 1)
        for start in range(0, len(missing), per_call):
            group = missing[start:start + per_call]
            keys = [chunk_key(self._tag, i) for i in group]
            values = self._kv_get(keys, apsw.SQLITE_IOERR_READ, f"read of {len(keys)} pages' before-images")
            self.stats.chunks_fetched += len(keys)
            for index, key, value in zip(group, keys, values):
                out[index] = _ZERO_CHUNK if value is None else self._checked_chunk(index, value, key)
        return out

    def _commit_journaled(self, dirty: dict[int, bytes], truncate_from: int | None, size: int, committed: int,
                          extra: WriteBatch | None, grow_tail: int | None) -> None:
        """A commit larger than one batch, made atomic with a SQLite rollback journal in
        file tag 1 (:mod:`vfs.journal`), so that every reader, ours or another SQLite
        VFS's (RivetKit's), rolls an interrupted one back:

        1. the before-images of the rewritten pages that existed are read (preload,
           cache, else the KV) and written as a journal, its header chunk and meta in
           the last journal batch (the journal turns hot atomically, with nothing
           rewritten yet); that batch also deletes chunks left past the committed end;
        2. the new chunks are written in place, in as many batches as needed;
        3. the commit point: ONE batch deletes the journal and writes the new meta (with
           the holes a shrink left, and ``extra``).

        A failure before 3 leaves a hot journal: the next open (or this file's refresh)
        rolls it back. Round trips: the before-image reads of chunks not held locally,
        ``ceil((journal chunks + 2 + dirty chunks) / chunks per batch)``, and 1.
        """
        self.stats.large_commits += 1
        tag = self._tag
        page1 = dirty.get(0)
        if page1 is None:
            page1 = self._old_chunks([0])[0]
        page_size = _page_size(page1) or CHUNK_SIZE
        db_pages = committed // page_size
        wanted = journal.journaled_pages(sorted(dirty), page_size, db_pages)
        old = self._old_chunks(sorted({c for chunks in wanted.values() for c in chunks}))
        before: dict[int, bytes] = {}
        for pgno, chunks in wanted.items():
            offset = (pgno - 1) * page_size
            data = b"".join(old[c] for c in chunks)
            start = offset - chunks[0] * CHUNK_SIZE
            before[pgno] = data[start:start + page_size]
        log_bytes = journal.build(page_size, db_pages, before, int.from_bytes(os.urandom(4), "little"))
        self._journal_seen = True  # a failure from here on may leave it hot: every refresh looks
        per_batch = redo.chunks_per_batch(self._limits)
        ops: list[tuple[bytes, bytes | None]] = [
            (chunk_key(FILE_JOURNAL, i), log_bytes[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE])
            for i in range(1, chunk_count(len(log_bytes)))]
        hot_at = len(ops)
        ops.append((chunk_key(FILE_JOURNAL, 0), log_bytes[:CHUNK_SIZE]))
        ops.append((meta_key(FILE_JOURNAL), encode_meta(len(log_bytes))))
        prefix = self._chunk_key_prefix
        ops += [(prefix + _pack_index(index), data) for index, data in dirty.items()]
        batch = WriteBatch()
        for n, (key, value) in enumerate(ops):
            if n == hot_at and grow_tail is not None:
                # Growing: chunks left past the committed end must not reappear as data.
                batch.delete_range(*chunk_range(tag, grow_tail))
            assert value is not None
            batch.put(key, value)
            if batch.op_count >= per_batch:  # batches in order: the header goes after every record
                self._kv_write(batch)
                batch = WriteBatch()
        if batch.op_count:
            self._kv_write(batch)
        point = WriteBatch()
        if truncate_from is not None:
            redo.truncate(point, tag, truncate_from, chunk_count(size), keep_tail=True)
        if self._stale_staging:
            point.delete_range(*staged_range())
            point.delete(COMMIT_RECORD_KEY)
        point.delete(meta_key(FILE_JOURNAL))
        point.delete_range(*chunk_range(FILE_JOURNAL))
        point.put(self._meta_key, encode_meta(size))
        if extra:
            point.merge(extra)
        self._kv_write(point, release=True)  # the commit point: a cross-process lease goes with it
        self._forget_journal()
        self.stats.chunks_written += len(dirty)
        log.debug("journaled large commit: %d chunks, %d journal bytes", len(dirty), len(log_bytes))

    def _commit_large(self, dirty: dict[int, bytes], truncate_from: int | None, extra: WriteBatch | None) -> bool:
        """Commit through :mod:`vfs.redo`; returns whether it was also applied.

        Failures before the commit point raise. After it the transaction is durable:
        if applying fails, the record stays pending and every later call retries the
        roll-forward before touching a chunk (so SQLite is told the commit succeeded).
        """
        self.stats.large_commits += 1
        spilled = bool(self._staged)
        redo.stage(self._kv_write, self._limits, self._tag, dirty, first=not spilled)
        self.stats.chunks_written += len(dirty)
        record = redo.CommitRecord(self._size, truncate_from)
        redo.write_commit_record(self._kv_write, record, extra)
        self._pending_record = record
        try:
            self._finish_roll_forward(None if spilled else dirty, keep_tail=True)
        except apsw.Error as exc:
            if interrupts.is_interrupt(exc):
                raise  # Ctrl-C: reported (the commit's failure path re-reads the KV), never swallowed
            if self._lease_lost:
                # Another process took the lease after this commit's point and rolled it
                # forward itself: it is durable, and this file re-reads the KV.
                log.warning("large commit is durable; another process applied it after this one lost its lease")
                self._forget_after_failure()
                return False
            log.warning("large commit is durable but applying it failed; will retry: %s", exc)
            if self._cache is not None:
                self._cache.clear()
            self.preload.clear(*chunk_range(self._tag))
            return False
        return True

    # --------------------------------------------------------- locking & misc
    def xLock(self, level: int) -> None:
        share = self._share
        if share is None:
            self.lock_level = level
            return
        note_busy(None)
        before = share.lock(self._fid, level)  # apsw.BusyError: SQLite's busy handler retries
        try:
            if before == LOCK_NONE:
                self._begin_transaction(share)
            if level >= LOCK_RESERVED and self._cross_process and share.lease_holder != self._fid:
                self._take_lease(share)
        except BaseException:
            share.unlock(self._fid, before)
            raise
        self.lock_level = level

    def xUnlock(self, level: int) -> None:
        share = self._share
        if share is not None:
            if level < LOCK_RESERVED and share.lease_holder == self._fid:
                self._release_lease(share)  # a rollback (a commit released it in its batch)
            if level < LOCK_RESERVED:
                self._lease_uncertain = self._lease_lost = False
                self._released_id = None
            if level == LOCK_NONE:
                self._tx_state = self._fresh_head = None  # the next transaction checks again
            share.unlock(self._fid, level)
        self.lock_level = level

    def xCheckReservedLock(self) -> bool:
        return self._share is not None and self._share.reserved()

    # ------------------------------------------------- several connections
    def _begin_transaction(self, share: DatabaseShare) -> None:
        """At SHARED (a transaction begins): apply the commits other connections of this
        process made since this file last looked, then (cross-process) check the KV for
        commits of other processes. Runs while holding SHARED, so no commit of this
        process runs meanwhile."""
        generation, notes = share.notes_since(self._seen_generation)
        if notes is None:
            self._drop_committed_state()
        elif notes:
            self._apply_notes(notes)
        self._seen_generation = generation
        if self._cross_process:
            self._validate(share)

    def _apply_notes(self, notes: list[CommitNote]) -> None:
        """Bring the preload, chunk cache and sizes up to the commits in ``notes``."""
        for note in notes:
            if note.chunks is None or note.size is None:
                self._drop_committed_state()
                return
            if note.truncate_from is not None:
                self.preload.delete_range(*chunk_range(self._tag, note.truncate_from))
                if self._cache is not None:
                    for index in [i for i in self._cache.keys() if i >= note.truncate_from]:
                        del self._cache[index]
            for index, data in note.chunks.items():
                if self._cache is not None:
                    self._cache[index] = data
                self.preload.update(chunk_key(self._tag, index), data)
            self.preload.update(self._meta_key, encode_meta(note.size))
            self._size = self._committed_size = self._low_water = note.size
        self._overlay = None  # a commit applied any record this file was reading through
        self._repair = None  # and any repair (a writer applies it before its commit)

    def _drop_committed_state(self) -> None:
        """Another writer changed the database in ways this file cannot replay: forget
        every chunk and the meta (re-read before the next operation)."""
        self._forget_after_failure()
        self._next_sequential = self._stream_end = -1
        self._readahead = 0

    def _validate(self, share: DatabaseShare) -> None:
        """cross-process, at SHARED: make sure this transaction reads the KV's current
        state (1 round trip; free while another connection of this process holds the
        writer lease, as no other process can commit then)."""
        if (share.lease_holder is not None or self.opening) and share.kv_state is not None:
            self._tx_state = share.kv_state
            return
        values = self._kv_get(list(self._validation_keys), apsw.SQLITE_IOERR_READ, "check of the database's state")
        state = tuple(values)
        if share.observe(state):
            generation, _ = share.notes_since(self._seen_generation)
            self._drop_committed_state()
            self._fresh_head = dict(zip(self._validation_keys, values))  # the re-load reads no more
            self._seen_generation = generation
        self._tx_state = state

    def _remember_kv_state(self, state: KVState) -> None:
        """cross-process: the meta, page 1 and record this file just read, as the state
        this process knows, unless a commit happened meanwhile (then the next
        transaction's check decides)."""
        share = self._share
        assert share is not None
        with share.mu:
            if share.generation == self._seen_generation:
                share.kv_state = state

    def _verify_unchanged(self, values: list[bytes | None]) -> None:
        """cross-process: the validation keys read along with chunks must still hold
        this transaction's state, else another process committed during it."""
        state = tuple(values)
        if state == self._tx_state:
            return
        share = self._share
        assert share is not None
        share.observe(state)
        raise sqlite_error(apsw.SQLITE_BUSY, f"database is locked: actor-db: {describe_kv(self._kv)}: "
                                            f"{CHANGED_DURING_READ}; retry the transaction")

    def _take_lease(self, share: DatabaseShare) -> None:
        """cross-process, at the first write: the KV writer lease (see :mod:`vfs.lease`),
        only if the database is still in the state this transaction read."""
        if self.options.read_only:
            return  # the write itself is refused with SQLITE_READONLY
        state = self._tx_state
        keys = self._validation_keys
        value = lease.new_lease(self.options.lease_ttl_s)
        expected: bytes | None = None
        for attempt in range(2):
            batch = WriteBatch()
            batch.put(lease.LEASE_KEY, value)
            batch.expect_value(lease.LEASE_KEY, expected)
            if state is not None:
                for key, known in zip(keys, state):
                    batch.expect_value(key, known)
            # SIGINT held back: a lease that landed is always recorded as this process's.
            with interrupts.deferred():
                try:
                    self._kv_write_lease(batch)
                except ConditionFailedError:
                    pass
                except Exception as exc:
                    raise kv_failure(apsw.SQLITE_IOERR_LOCK, "write of the writer lease", exc) from exc
                else:
                    with share.lease_mu:
                        share.lease_value, share.lease_holder = value, self._fid
                    self._lease_lost = False
                    self._released_id = None
                    self._schedule_renewal(share)
                    return
            current = self._kv_get([lease.LEASE_KEY, *keys], apsw.SQLITE_IOERR_LOCK, "read of the writer lease")
            if state is None or tuple(current[1:]) != state:
                share.observe(tuple(current[1:]))
                raise sqlite_error(apsw.SQLITE_BUSY, f"actor-db: {describe_kv(self._kv)}: the database changed "
                                                    "since this transaction began (another process committed)")
            holder = current[0]
            if holder is not None and not lease.lease_expired(holder):
                reason = f"actor-db: {describe_kv(self._kv)}: another process is writing this database " \
                         f"({lease.describe(holder)})"
                note_busy(reason)
                raise sqlite_error(apsw.SQLITE_BUSY, f"database is locked: {reason}")
            if attempt == 0 and holder is not None:
                log.warning("taking over the expired writer lease %s of %s", lease.describe(holder),
                            describe_kv(self._kv))
            expected = holder
        raise sqlite_error(apsw.SQLITE_BUSY, f"actor-db: {describe_kv(self._kv)}: the writer lease is contended")

    def _schedule_renewal(self, share: DatabaseShare) -> None:
        """Renew the lease every third of its time to live while this transaction holds it."""
        share.lease_renewal = lease.keeper.schedule(self.options.lease_ttl_s / 3, lambda: self._renew_lease(share))

    def _renew_lease(self, share: DatabaseShare) -> None:
        """On the keeper thread: move the held lease's expiry forward (1 round trip), as
        a compare-and-set on its current value, under :attr:`DatabaseShare.lease_mu`."""
        with share.lease_mu:
            value = share.lease_value
            if share.lease_holder != self._fid or value is None or self._lease_lost:
                return
            new = lease.renewed(value, self.options.lease_ttl_s)
            batch = WriteBatch()
            batch.put(lease.LEASE_KEY, new)
            batch.expect_value(lease.LEASE_KEY, value)
            try:
                self._kv.write(batch)
            except ConditionFailedError:
                self._lose_lease(share)  # the next write of the transaction fails
                return
            except Exception as exc:
                log.warning("could not renew the writer lease of %s (%s); retrying", describe_kv(self._kv), exc)
                share.lease_renewal = lease.keeper.schedule(min(1.0, self.options.lease_ttl_s / 10),
                                                            lambda: self._renew_lease(share))
                return
            share.lease_value = new
        self._schedule_renewal(share)

    def _release_lease(self, share: DatabaseShare) -> None:
        """Give the writer lease back after a rollback (best effort: it expires anyway)."""
        with share.lease_mu:
            value = share.lease_value if share.lease_holder == self._fid else None
            self._drop_lease(share)
            if value is None:
                return
            batch = WriteBatch()
            batch.delete(lease.LEASE_KEY)
            batch.expect_value(lease.LEASE_KEY, value)
            try:
                self._kv_write_lease(batch)
            except Exception as exc:
                interrupt = interrupts.interrupt_in(exc)
                if interrupt is not None:
                    raise interrupt  # the lease expires on its own; the Ctrl-C is not swallowed
                log.info("could not release the writer lease of %s (%s); it expires", describe_kv(self._kv), exc)

    def _resolve_uncertain_commit(self, share: DatabaseShare) -> None:
        """cross-process: the last commit batch failed without a certain outcome, and a
        write follows (SQLite rolling back in place). One read of the lease and the last
        commit's id tells which it was:

        - this transaction's id is the last commit: the batch landed and released the
          lease, and nobody took it since; the following writes (the rollback) may land
          on exactly that state, and expect it;
        - the lease still holds this transaction's value: the batch did not land, the
          lease is still held, writes go on under it;
        - anything else: the batch did not land and the lease was lost, or it landed and
          another process has taken the lease since. Either way nothing more may be
          written: the transaction is refused (the user is told its outcome is unknown
          when it may have landed).
        """
        self._lease_uncertain = False
        with share.lease_mu:
            held = share.lease_value
        if held is None:
            return
        current = self._kv_get([lease.LEASE_KEY, lease.LAST_COMMIT_KEY], apsw.SQLITE_IOERR_READ,
                               "read of the writer lease after a failed commit")
        if current[0] == held:
            return
        if current[0] is None and current[1] == lease.holder_id(held):
            self._released_id = lease.holder_id(held)
            with share.lease_mu:
                self._drop_lease(share)
            return
        landed = current[1] == lease.holder_id(held)
        with share.lease_mu:
            self._lose_lease(share)
        raise sqlite_error(apsw.SQLITE_IOERR_LOCK, f"actor-db: {describe_kv(self._kv)}: the commit failed "
                                                  + ("and landed, and another process has written since"
                                                     if landed else "and its outcome is unknown")
                                                  + f" ({lease.describe(current[0]) if current[0] else 'no lease'}); "
                                                  "the database is re-read")

    def _committed_to_share(self, dirty: dict[int, bytes] | None, truncate_from: int | None) -> None:
        """After a successful commit: note it for the other connections (the lease went
        with the commit's batch, or its last apply batch)."""
        share = self._share
        if share is None:
            return
        self._seen_generation = share.record(dirty, self._size, truncate_from)
        if not self._cross_process:
            return
        page1: bytes | None = None
        if dirty is not None and 0 in dirty:
            page1 = dirty[0]
        elif self._tx_state is not None and dirty is not None:
            page1 = self._tx_state[1]
        with share.mu:
            head = self._history.head
            history = (None, None) if head is None else (head.encode(), vhistory.encode_bases(self._history.bases))
            share.kv_state = None if dirty is None or page1 is None else \
                (encode_meta(self._size), page1, None) + history
        self._tx_state = share.kv_state

    def _failed_to_share(self) -> None:
        """After a failed commit: the KV's state is unknown to every connection."""
        share = self._share
        if share is None:
            return
        self._seen_generation = share.record(None, None)
        with share.mu:
            share.kv_state = None
        self._tx_state = None
        if share.lease_holder == self._fid and not self._lease_lost:
            failure = sys.exc_info()[1]
            # A refused condition is certain (nothing applied); anything else may have landed.
            self._lease_uncertain = not _caused_by(failure, ConditionFailedError)

    def xSectorSize(self) -> int:
        return CHUNK_SIZE

    def xDeviceCharacteristics(self) -> int:
        return int(apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE)

    def xFileControl(self, op: int, ptr: int) -> bool:
        if op == apsw.SQLITE_FCNTL_COMMIT_PHASETWO and self._tail_from is not None:
            self._drop_tail()  # an interrupt here reaches the caller after the commit
        if op == apsw.SQLITE_FCNTL_COMMIT_PHASETWO and self._has_pending_changes():
            # Safety net: a change SQLite made after the commit's sync (none is known
            # once the header-declared truncation above is applied). This hint cannot
            # fail the commit, so a KV error here is logged and the file re-reads the KV.
            log.warning("changes after the commit's sync; committing them separately")
            try:
                self.commit()
            except apsw.Error as exc:
                if interrupts.is_interrupt(exc):
                    raise
                log.error("post-sync commit failed; will re-read the KV: %s", exc)
            return True
        if op == apsw.SQLITE_FCNTL_PRAGMA:
            pragma = apsw.VFSFcntlPragma(ptr)
            answer = pragmas.answer(pragma.name, pragma.value)
            if answer is not None:
                pragma.result = answer  # SQLITE_OK with az[0] set: SQLite returns it as the row
                return True
            message = pragmas.refusal(pragma.name, pragma.value, shared=self._share is not None)
            if message is not None:
                raise sqlite_error(apsw.SQLITE_ERROR, message)
        return False

    def xClose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._dirty or self._staged:
                # SQLite closed without syncing writes (it normally never does with
                # journal_mode=MEMORY); flushing keeps file semantics.
                log.warning("database closed with %d unsynced chunks; committing them", len(self._dirty))
                self.commit()
            self._write_hint_at_close()
        finally:
            self._release_cache()
            if self.sigint_scope:
                self.sigint_scope = False
                interrupts.file_closed()
            if self._on_close is not None:
                self._on_close()

    def _release_cache(self) -> None:
        """Drop this file's chunks from the process-wide cache (they may be stale for
        the next open: another process may write the actor meanwhile)."""
        if isinstance(self._cache, chunk_cache.FileChunkCache):
            self._cache.close()

    # ------------------------------------------------------------- inspection
    @property
    def size(self) -> int:
        """Current file size in bytes, pending writes included."""
        return self._size

    @property
    def committed_size(self) -> int:
        """File size in bytes as committed in the KV."""
        return self._committed_size


for _name, _code in (("xRead", apsw.SQLITE_IOERR_READ), ("xWrite", apsw.SQLITE_IOERR_WRITE),
                     ("xTruncate", apsw.SQLITE_IOERR_TRUNCATE), ("xSync", apsw.SQLITE_IOERR_FSYNC),
                     ("xFileSize", apsw.SQLITE_IOERR_FSTAT), ("xLock", apsw.SQLITE_IOERR_LOCK),
                     ("xUnlock", apsw.SQLITE_IOERR_UNLOCK), ("xCheckReservedLock", apsw.SQLITE_IOERR_CHECKRESERVEDLOCK),
                     ("xFileControl", apsw.SQLITE_IOERR), ("xClose", apsw.SQLITE_IOERR_CLOSE),
                     ("xSectorSize", apsw.SQLITE_IOERR), ("xDeviceCharacteristics", apsw.SQLITE_IOERR)):
    # An interrupt landing in any of them reaches SQLite as an I/O error (vfs.interrupts).
    interrupts.register(getattr(KVFile, _name), _code)
