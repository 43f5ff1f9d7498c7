"""The KV-level redo protocol for transactions larger than one atomic batch.

A commit that fits the driver's atomic-batch limit is one batch (see
:mod:`vfs.file`). A larger one, or one whose dirty chunks outgrew the memory bound
and were spilled, commits in three phases:

1. **Stage**: chunks are written under the staging range (``[8, 1, 2, ...]``) in as
   many batches as needed. The first staging batch of a transaction also deletes
   anything left in the staging range and puts :data:`STAGING_MARKER` at the record
   key, so an open knows from the record key alone (which it reads anyway) whether
   staging exists.
2. **Commit point**: ONE small atomic batch writes the commit record (``[8, 1, 3]``:
   new file size, first chunk to drop) together with any extra writes the caller
   wants atomic with the transaction (e.g. the actor's state).
3. **Apply**: staged chunks are copied to their chunk keys in batches; the last batch
   writes the new meta and deletes the commit record and the staging range.

Crash rules (all tested by failing every write call in turn):

- Before the commit point the chunk keys are untouched: the transaction never happened.
  The record key holds :data:`STAGING_MARKER`, and the next open drops the staging
  range and the marker in one batch (:func:`drop_staging`).
- After it, opening the database rolls the record forward (:func:`roll_forward`).
  Applying is idempotent: the truncation range delete is repeated and every staged
  chunk is copied again, and staging is only deleted in the final batch.
"""

from __future__ import annotations

import logging
import struct
from typing import Callable, Iterable, Mapping

from vfs.chunks import chunk_count
from vfs.keys import (
    CHUNK_SIZE, COMMIT_RECORD_KEY, MAX_CHUNK_INDEX, chunk_index, chunk_key, chunk_range, encode_meta,
    meta_key, staged_key, staged_range,
)
from vfs.protocol import KV, KVLimits, WriteBatch

log = logging.getLogger(__name__)

__all__ = ["CommitRecord", "STAGING_MARKER", "chunks_per_batch", "stage", "drop_staging",
           "write_commit_record", "roll_forward", "recover", "truncate"]

_RECORD = struct.Struct("<HQq")
_RECORD_VERSION = 1
_RESERVED_OPS = 7
"""Operations kept free in every apply batch: the truncation's two range deletes, the
meta put, the record's delete (or rewrite), the staging range delete, and the lease
release (its delete and the last-commit put) of the batch that ends the transaction."""
_UNLIMITED_CHUNKS_PER_BATCH = 1024
"""Chunks per batch when the driver has no limit (bounds each call at ~4 MiB)."""


_MIN_PAGE_BYTES = 512
_MAX_FILE_BYTES = (MAX_CHUNK_INDEX + 1) * CHUNK_SIZE
"""Largest file the chunk keys address (as :data:`vfs.file.MAX_FILE_BYTES`)."""


STAGING_MARKER = b"\x00\x00staging"
"""Value of the record key while a transaction stages chunks, before its commit point
(never a valid :class:`CommitRecord`: those start with version 1)."""


class CommitRecord:
    """The commit point of a large transaction.

    :ivar size: the file size in bytes after the transaction.
    :ivar truncate_from: first chunk index to delete before applying (the transaction
        shrank the file below its committed size), or ``None``.
    """

    __slots__ = ("size", "truncate_from")

    def __init__(self, size: int, truncate_from: int | None) -> None:
        self.size = size
        self.truncate_from = truncate_from

    def encode(self) -> bytes:
        return _RECORD.pack(_RECORD_VERSION, self.size, -1 if self.truncate_from is None else self.truncate_from)

    @classmethod
    def decode(cls, value: bytes) -> CommitRecord:
        """The record stored in ``value``, checked like a meta (issue 29, item 5).

        :raises ValueError: wrong length or version; a size of 0 bytes (a large
            transaction never leaves an empty file: rolling it forward would turn a
            database into an empty one over its chunks), not a multiple of 512 (the
            smallest page size) or past the largest file the chunk keys address; a first
            chunk to drop past the last chunk index.
        """
        if len(value) != _RECORD.size:
            raise ValueError(f"commit record has {len(value)} bytes, expected {_RECORD.size}")
        version, size, truncate_from = _RECORD.unpack(value)
        if version != _RECORD_VERSION:
            raise ValueError(f"commit record version {version} is not supported")
        if size == 0 or size % _MIN_PAGE_BYTES or size > _MAX_FILE_BYTES:
            raise ValueError(f"commit record declares {size} bytes: not a database size (a positive multiple of "
                             f"{_MIN_PAGE_BYTES} up to {_MAX_FILE_BYTES})")
        if truncate_from > MAX_CHUNK_INDEX + 1:
            raise ValueError(f"commit record drops chunks from {truncate_from}, past the last chunk index")
        return cls(size, None if truncate_from < 0 else truncate_from)


def chunks_per_batch(limits: KVLimits) -> int:
    """How many chunk puts fit one batch next to the reserved operations."""
    n = _UNLIMITED_CHUNKS_PER_BATCH
    if limits.max_batch_keys is not None:
        n = min(n, limits.max_batch_keys - _RESERVED_OPS)
    if limits.max_batch_bytes is not None:
        n = min(n, (limits.max_batch_bytes - 256) // (CHUNK_SIZE + 16))
    if n < 1:
        raise ValueError(f"KV batch limits {limits} cannot hold even one chunk per batch")
    return n


Writer = Callable[[WriteBatch], None]
Scanner = Callable[[bytes, bytes, int], list[tuple[bytes, bytes]]]


def stage(write: Writer, limits: KVLimits, tag: int, chunks: Mapping[int, bytes], *, first: bool) -> int:
    """Write ``chunks`` under the staging range; returns the number of batches.

    :param first: this is the transaction's first staging, so clear old staging first.
    """
    per_batch = chunks_per_batch(limits)
    items = sorted(chunks.items())
    batches = 0
    for i in range(0, max(len(items), 1 if first else 0), per_batch):
        batch = WriteBatch()
        if first and i == 0:
            batch.delete_range(*staged_range())
            batch.put(COMMIT_RECORD_KEY, STAGING_MARKER)
        for index, data in items[i:i + per_batch]:
            batch.put(staged_key(tag, index), data)
        write(batch)
        batches += 1
    return batches


def drop_staging(write: Writer) -> None:
    """Delete an uncommitted transaction's staging range and marker (one batch)."""
    batch = WriteBatch()
    batch.delete_range(*staged_range())
    batch.delete(COMMIT_RECORD_KEY)
    write(batch)


def truncate(batch: WriteBatch, tag: int, first_gone: int, new_end: int, *, keep_tail: bool) -> None:
    """Add a shrink to ``batch``: delete chunks ``[first_gone, new_end)`` (holes the
    transaction left inside the new file size) and, unless ``keep_tail``, every chunk
    from ``max(first_gone, new_end)`` on (past the new end)."""
    end_of_file = chunk_range(tag)[1]
    if first_gone < new_end:
        batch.delete_range(chunk_key(tag, first_gone), chunk_key(tag, new_end) if new_end <= MAX_CHUNK_INDEX
                           else end_of_file)
    tail = max(first_gone, new_end)
    if not keep_tail and tail <= MAX_CHUNK_INDEX:
        batch.delete_range(chunk_key(tag, tail), end_of_file)


def write_commit_record(write: Writer, record: CommitRecord, extra: WriteBatch | None) -> None:
    """The commit point: one atomic batch with the record and ``extra``."""
    batch = WriteBatch()
    if extra is not None:
        batch.merge(extra)
    batch.put(COMMIT_RECORD_KEY, record.encode())
    write(batch)


def roll_forward(
    write: Writer,
    scan: Scanner,
    limits: KVLimits,
    tag: int,
    record: CommitRecord,
    in_memory: Mapping[int, bytes] | None = None,
    *,
    keep_tail: bool = False,
) -> int:
    """Apply a committed large transaction; returns the number of chunks applied.

    :param scan: ``scan(start, end, limit)`` over the KV, one round trip per call.
    :param in_memory: every staged chunk, if the caller still holds them all (saves
        reading the staging range back); ``None`` reads staging from the KV.
    :param keep_tail: a shrinking transaction's chunks past its new end are left in
        place (orphans past the meta's size, never read) instead of deleted: the
        committing file deletes them once SQLite has seen the commit succeed (see
        :meth:`vfs.file.KVFile.commit`). Holes inside the new size are deleted anyway.
    Safe to run again after it fails part-way: each apply batch deletes the staged
    copies of the chunks it puts (one range delete: a group is a run of consecutive
    staged keys), so a large transaction never needs its staging and its chunks in full
    at once (LMDB reuses the staging's pages as the apply goes); and the
    first one, when it truncates, rewrites the record without the truncation, so a rerun
    never drops chunks whose staged copies are already gone. A caller retrying must
    therefore read the record again from the KV, never reuse ``record`` after a failure.
    """
    per_batch = chunks_per_batch(limits)
    last_chunk = chunk_count(record.size)  # chunks at or past this are beyond the end

    def source() -> Iterable[list[tuple[int, bytes]]]:
        if in_memory is not None:
            items = sorted((i, d) for i, d in in_memory.items() if i < last_chunk)
            for i in range(0, len(items), per_batch):
                yield items[i:i + per_batch]
            return
        start, end = staged_range()
        while True:
            pairs = scan(start, end, per_batch)
            if not pairs:
                return
            yield [(chunk_index(k), v) for k, v in pairs if chunk_index(k) < last_chunk]
            if len(pairs) < per_batch:
                return
            start = pairs[-1][0] + b"\x00"

    applied = 0
    pending: list[tuple[int, bytes]] | None = None
    first = True
    for group in source():
        if pending is not None:
            _apply(write, tag, record, pending, first=first, final=False, keep_tail=keep_tail)
            first = False
        applied += len(group)
        pending = group
    _apply(write, tag, record, pending or [], first=first, final=True, keep_tail=keep_tail)
    log.debug("rolled forward a large commit: %d chunks, size %d bytes", applied, record.size)
    return applied


def _apply(write: Writer, tag: int, record: CommitRecord, group: list[tuple[int, bytes]], *, first: bool,
           final: bool, keep_tail: bool) -> None:
    batch = WriteBatch()
    truncating = first and record.truncate_from is not None
    if truncating:
        assert record.truncate_from is not None
        truncate(batch, tag, record.truncate_from, chunk_count(record.size), keep_tail=keep_tail)
    for index, data in group:
        batch.put(chunk_key(tag, index), data)
    if group and not final:
        # The group's staged copies: their pages are free for the next batches.
        batch.delete_range(staged_key(tag, group[0][0]), staged_key(tag, group[-1][0]) + b"\x00")
    if final:
        batch.put(meta_key(tag), encode_meta(record.size))
        batch.delete(COMMIT_RECORD_KEY)
        batch.delete_range(*staged_range())
    elif truncating:
        batch.put(COMMIT_RECORD_KEY, CommitRecord(record.size, None).encode())  # truncated: never again
    write(batch)


def recover(kv: KV, tag: int = 0) -> str:
    """Finish what an interrupted large transaction left in ``kv``: roll a commit record
    forward, or drop uncommitted staging. The WRITER's job only (an owner, or a process
    that knows no other writer runs): another writer may be staging right now.

    :returns: ``"rolled-forward"``, ``"dropped-staging"`` or ``"clean"``.
    :raises Exception: whatever the KV raises (safe to call again).
    """
    record = kv.get_many([COMMIT_RECORD_KEY])[0]
    if record is None:
        return "clean"
    if record == STAGING_MARKER:
        drop_staging(kv.write)
        return "dropped-staging"
    roll_forward(kv.write, lambda start, end, limit: kv.scan(start, end, limit=limit), kv.limits, tag,
                 CommitRecord.decode(record))
    return "rolled-forward"
