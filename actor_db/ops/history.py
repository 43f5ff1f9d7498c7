"""Bookmarks, point-in-time restore and branches of an actor's database (docs/history.md).

Invariants:

- A restore is a new commit made by an owner: it takes the actor's writer lease and
  single-writer ownership (a runtime serving the actor is fenced off, exactly as by
  ``actor-db import``), then writes the past state through SQLite (the backup API) as
  ONE transaction, which the history records like any other. So a restore can itself
  be undone by restoring the bookmark taken before it.
- Reads of the history by a non-owner (bookmarks, branches) run on a snapshot
  (:func:`~actor_db.ops.common.read_consistently`): pruning by a live owner can never
  make them see half an era.
- A branch is a copy: the new actor's database is the chosen state, written as its
  first commit (one transaction), with history of its own from there on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import apsw

import vfs
from vfs import history as vh
from vfs import redo
from vfs.chunks import chunk_count
from vfs.keys import FILE_MAIN, chunk_range, decode_meta, meta_key

from actor_db.errors import FencedError, HistoryError, OperationError, WriterBusyError, find_cause
from actor_db.ops.common import describe_error, read_consistently, require_database, take_ownership
from actor_db.ops.lease import DEFAULT_LEASE_TIMEOUT_S, writer_lease
from actor_db.ops.transfer import copy_database

log = logging.getLogger(__name__)

__all__ = ["RestoreResult", "bookmark", "bookmark_for_time", "restore", "branch", "read_past", "write_state"]

_MAX_DIRTY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RestoreResult:
    """What a restore or branch did.

    :ivar restored: the bookmark of the state that was made current.
    :ivar before: the bookmark of the state just before the restore (restore it to undo),
        ``None`` for a branch.
    :ivar after: the bookmark of the new current state (the restore's own commit).
    :ivar size: the database size in bytes.
    :ivar round_trips: KV round trips of the write (the history reads not included).
    """

    restored: str
    before: str | None
    after: str
    size: int
    round_trips: int


def _scanner(kv: Any) -> vh.Scanner:
    return lambda start, end, limit: kv.scan(start, end, limit=limit)


def _history_error(exc: vh.HistoryError, kv: Any) -> HistoryError:
    return HistoryError(f"actor {getattr(kv, 'actor_id', '?')!r}: {exc}")


def bookmark(kv: Any) -> str:
    """The bookmark of the actor's committed state (1 round trip).

    :raises HistoryError: the actor keeps no history.
    """
    try:
        return vh.current_bookmark(kv.get_many)
    except vh.HistoryError as exc:
        raise _history_error(exc, kv) from None


def bookmark_for_time(kv: Any, t: float | datetime) -> str:
    """The bookmark of the last state committed at or before ``t`` (epoch seconds or an
    aware ``datetime``).

    :raises HistoryError: ``t`` is before the oldest retained state, or no history.
    """
    try:
        t_ms = vh.to_ms(t)
        seq, when = read_consistently(kv, lambda snap: vh.seq_at_time(snap.get_many, _scanner(snap), t_ms))
    except vh.HistoryError as exc:
        raise _history_error(exc, kv) from None
    return vh.encode_bookmark(seq, when)


def _target(kv: Any, bookmark_: str | None, at: float | datetime | None) -> tuple[int, str]:
    if (bookmark_ is None) == (at is None):
        raise OperationError("give exactly one of a bookmark and a time (at=)")
    if bookmark_ is not None:
        try:
            seq, _ = vh.decode_bookmark(bookmark_)
        except vh.HistoryError as exc:
            raise _history_error(exc, kv) from None
        return seq, bookmark_
    assert at is not None
    mark = bookmark_for_time(kv, at)
    return vh.decode_bookmark(mark)[0], mark


def read_past(kv: Any, seq: int) -> bytes:
    """The database file as it was after commit ``seq`` (reads the nearest base and the
    commits after it; on a snapshot unless ``kv`` is the owner's view).

    :raises HistoryError: the state is not retained.
    """
    try:
        size, chunks = vh.read_state(kv.get_many, _scanner(kv), seq, getattr(kv, "limits", None))
    except vh.HistoryError as exc:
        raise _history_error(exc, kv) from None
    if size == 0:
        raise HistoryError(f"actor {getattr(kv, 'actor_id', '?')!r}: the database was empty at that point")
    return vh.image(size, chunks)


def _current_image(snap: Any) -> bytes:
    """The committed database file, read from the chunk keys of a snapshot."""
    raw = snap.get_many([meta_key(FILE_MAIN)])[0]
    if raw is None or not decode_meta(raw):
        raise OperationError(f"actor {getattr(snap, 'actor_id', '?')!r} has no database")
    size = decode_meta(raw)
    end = chunk_count(size)
    chunks: dict[int, bytes] = {}
    start, stop = chunk_range(FILE_MAIN)
    while True:
        pairs = snap.scan(start, stop, limit=1024)
        for key, value in pairs:
            index = int.from_bytes(key[-4:], "big")
            if index < end:
                chunks[index] = value
        if len(pairs) < 1024:
            break
        start = pairs[-1][0] + b"\x00"
    return vh.image(size, chunks)


def _write_image(leased: Any, data: bytes, history: vh.HistorySetting) -> tuple[vfs.KVConnection, int]:
    """Write ``data`` (a database file) as ONE transaction of a new owner connection."""
    source = apsw.Connection(":memory:")
    try:
        source.deserialize("main", data)
        try:
            dest = vfs.connect(leased, max_dirty_bytes=_MAX_DIRTY_BYTES, history=history)
        except apsw.BusyError as exc:
            raise WriterBusyError(f"actor {getattr(leased, 'actor_id', '?')!r}: its database is open in this "
                                  f"process ({describe_error(exc)}); nothing was written") from exc
        try:
            before = dest.stats.round_trips
            copy_database(dest, source)
            return dest, dest.stats.round_trips - before
        except BaseException:
            dest.close()
            raise
    finally:
        source.close()


def _fenced(kv: Any, exc: BaseException, what: str) -> None:
    fenced = find_cause(exc, FencedError)
    if fenced is not None and fenced is not exc:
        raise FencedError(f"actor {getattr(kv, 'actor_id', '?')!r}: another owner took it back during the {what}; "
                          "nothing was changed") from exc


def restore(kv: Any, *, bookmark: str | None = None, at: float | datetime | None = None,
            lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> RestoreResult:
    """Make a past state of the actor's database current, as a new commit.

    The caller must make sure no runtime serves the actor (the runtime's
    :meth:`~actor_db.ActorHandle.restore` puts it to sleep first); one that does is
    fenced off and fails its next commit.

    :param bookmark: a bookmark from :func:`bookmark` (or ``c.db.bookmark()``).
    :param at: or a time: the last state committed at or before it.
    :raises HistoryError: that state is not retained, or the actor keeps no history.
    :raises OperationError: neither or both of ``bookmark`` and ``at``.
    :raises WriterBusyError: a drop-in writer held the lease for ``lease_timeout_s``.
    :raises FencedError: another owner took the actor during the restore (nothing changed).
    """
    require_database(kv)
    with writer_lease(kv, timeout_s=lease_timeout_s) as leased:
        try:
            take_ownership(leased)
            head = vh.current_bookmark(leased.get_many)
        except vh.HistoryError as exc:
            raise _history_error(exc, kv) from None
        seq, mark = _target(leased, bookmark, at)
        data = read_past(leased, seq)
        try:
            dest, trips = _write_image(leased, data, None)
            try:
                after_head = dest.kv_file.history.head
                assert after_head is not None, "a restore of a database with history records it"
                after = vh.encode_bookmark(after_head.last_seq, after_head.last_time_ms)
                size = dest.kv_file.committed_size
            finally:
                dest.close()
            redo.recover(leased)  # a large commit is applied, not only durable
        except BaseException as exc:
            _fenced(kv, exc, "restore")
            raise
    log.info("actor %r restored to %s (was %s; now %s)", getattr(kv, "actor_id", "?"), mark, head, after)
    return RestoreResult(mark, head, after, size, trips)


def _write_new(dest: Any, data: bytes, history: vh.HistorySetting, force: bool, lease_timeout_s: float,
               what: str) -> tuple[int, vh.Head | None, int]:
    """Write the database file ``data`` as actor ``dest``'s database (its first commit,
    or replacing one with ``force``): ``(size, history head, round trips)``."""
    with writer_lease(dest, timeout_s=lease_timeout_s) as leased:
        raw = leased.get_many([meta_key(FILE_MAIN)])[0]
        if raw is not None and decode_meta(raw) and not force:
            raise OperationError(f"actor {getattr(dest, 'actor_id', '?')!r} already has a database "
                                 "(--force replaces it)")
        try:
            take_ownership(leased)
            con, trips = _write_image(leased, data, history)
            try:
                head = con.kv_file.history.head
                size = con.kv_file.committed_size
            finally:
                con.close()
            redo.recover(leased)
        except BaseException as exc:
            _fenced(dest, exc, what)
            raise
    return size, head, trips


def write_state(dest: Any, data: bytes, *, history: vh.HistorySetting = True, force: bool = False,
                lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> int:
    """Write the database file ``data`` as actor ``dest``'s database in ONE commit (a
    restore from a backup); returns its size in bytes.

    :raises OperationError: ``dest`` has a database and not ``force``.
    """
    return _write_new(dest, data, history, force, lease_timeout_s, "restore")[0]


def branch(source: Any, dest: Any, *, bookmark: str | None = None, at: float | datetime | None = None,
           history: vh.HistorySetting = True, force: bool = False,
           lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> RestoreResult:
    """Create actor ``dest`` whose database is ``source``'s state at ``bookmark`` / ``at``
    (default: its current state). The copy is the new actor's first commit; the source
    is only read (on a snapshot).

    :param history: the new actor's history setting (default: on, 7 days).
    :param force: replace a database ``dest`` already has (else refused).
    :raises OperationError: ``dest`` has a database and not ``force``.
    :raises HistoryError: the state is not retained.
    """
    if bookmark is None and at is None:
        data = read_consistently(source, _current_image)
        mark = None
    else:
        seq, mark = _target(source, bookmark, at)
        data = read_consistently(source, lambda snap: read_past(snap, seq))
    size, head, trips = _write_new(dest, data, history, force, lease_timeout_s, "branch")
    after = vh.encode_bookmark(head.last_seq, head.last_time_ms) if head is not None else ""
    if mark is None:
        mark = after
    log.info("branched actor %r from %r at %s", getattr(dest, "actor_id", "?"), getattr(source, "actor_id", "?"), mark)
    return RestoreResult(mark, None, after, size, trips)

