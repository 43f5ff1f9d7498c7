"""Backups of actors' databases and history to S3-compatible object storage (boto3).

Layout under ``s3://BUCKET/PREFIX/`` (one folder per actor, its id percent-encoded)::

    ACTOR/base/<seq: 16 hex>-<time ms: 12 hex>   the database file as it was after commit seq
    ACTOR/log/<first seq: 16 hex>-<last seq: 16 hex>-<time ms of the last: 12 hex>
                                                 commits first..last: each one's history entry
                                                 and changed chunks (one object per run, at
                                                 most MAX_LOG_BYTES)

Invariants:

- Objects of one actor are shipped in sequence-number order, one PUT each (atomic per
  object), and a run resumes after the highest one already stored: a crash or restart
  leaves no gap and ships nothing twice. When the actor's history no longer holds the
  commits after the last shipped one (pruned, or the actor keeps no history), a new
  base image of its current state is shipped instead, so a restore never needs a
  missing commit.
- Everything is read from a snapshot of the actor (one committed state), so a live
  owner committing or pruning meanwhile never makes a backup see half a commit.
- A restore from a backup writes the chosen state as ONE new commit of the target actor
  (through the writer lease and ownership, like ``import``), with history of its own.

Left out: encryption and compression of objects (use the bucket's), deleting old
objects (use the bucket's lifecycle rules).
"""

from __future__ import annotations

import logging
import struct
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable

from vfs import history as vh
from vfs.keys import HISTORY_HEAD_KEY, history_delta_range, history_entry_key, history_seq

from actor_db.errors import HistoryError, OperationError
from actor_db.ops.common import read_consistently

log = logging.getLogger(__name__)

__all__ = ["S3Location", "parse_location", "backup_actor", "backup_store", "restore_actor", "restore_store",
           "list_backed_up", "follow", "BackupResult"]

_LOG_MAGIC = b"ADBL2"
MAX_LOG_BYTES = 8 << 20
"""A log object holds consecutive commits up to about this many bytes."""


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` and the client that reaches it."""

    bucket: str
    prefix: str
    client: Any = field(compare=False)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix.strip("/"), *parts) if p)


def parse_location(url: str, *, endpoint_url: str | None = None, client: Any = None) -> S3Location:
    """An :class:`S3Location` from ``s3://bucket/prefix`` (boto3's usual credentials and
    ``$AWS_ENDPOINT_URL``, or ``endpoint_url``, reach any S3-compatible store).

    :raises OperationError: not an ``s3://`` URL, or boto3 is not installed.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise OperationError(f"{url!r} is not an s3://BUCKET/PREFIX location")
    if client is None:
        try:
            import boto3
        except ImportError:
            raise OperationError("backups to S3 need boto3 (pip install boto3)") from None
        client = boto3.client("s3", endpoint_url=endpoint_url)
    return S3Location(parsed.netloc, parsed.path.lstrip("/"), client)


def _actor_folder(actor_id: str) -> str:
    return urllib.parse.quote(actor_id, safe="")


def _name(seq: int, when_ms: int) -> str:
    return f"{seq:016x}-{when_ms:012x}"


def _parse_name(name: str) -> tuple[int, int]:
    seq, when = name.rsplit("/", 1)[-1].split("-")
    return int(seq, 16), int(when, 16)


def _list(loc: S3Location, prefix: str) -> list[str]:
    keys: list[str] = []
    token: dict[str, Any] = {}
    while True:
        page = loc.client.list_objects_v2(Bucket=loc.bucket, Prefix=prefix, **token)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _log_name(first: int, last: int, when_ms: int) -> str:
    return f"{first:016x}-{last:016x}-{when_ms:012x}"


def _parse_log_name(name: str) -> tuple[int, int, int]:
    first, last, when = name.rsplit("/", 1)[-1].split("-")
    return int(first, 16), int(last, 16), int(when, 16)


def _shipped(loc: S3Location, actor_id: str) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """``(bases, logs)`` already stored for the actor: sorted ``(seq, time ms)`` and
    ``(first seq, last seq, time ms of the last)``."""
    folder = _actor_folder(actor_id)
    bases = sorted(_parse_name(k) for k in _list(loc, loc.key(folder, "base") + "/"))
    logs = sorted(_parse_log_name(k) for k in _list(loc, loc.key(folder, "log") + "/"))
    return bases, logs


def _encode_commit(entry_raw: bytes, chunks: list[tuple[int, bytes]]) -> bytes:
    out = [struct.pack("<I", len(entry_raw)), entry_raw, struct.pack("<I", len(chunks))]
    for index, data in chunks:
        out.append(struct.pack("<II", index, len(data)))
        out.append(data)
    return b"".join(out)


def _decode_log(first: int, raw: bytes) -> list[tuple[vh.Entry, dict[int, bytes]]]:
    """The commits ``first, first + 1, ...`` of a log object, in order."""
    if not raw.startswith(_LOG_MAGIC):
        raise OperationError(f"backup object of commit {first} is not an actor-db log object")
    pos = len(_LOG_MAGIC)
    out: list[tuple[vh.Entry, dict[int, bytes]]] = []
    seq = first
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        entry = vh.Entry.decode(seq, raw[pos:pos + n])
        pos += n
        (count,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        chunks: dict[int, bytes] = {}
        for _ in range(count):
            index, size = struct.unpack_from("<II", raw, pos)
            pos += 8
            chunks[index] = raw[pos:pos + size]
            pos += size
        out.append((entry, chunks))
        seq += 1
    return out


@dataclass
class BackupResult:
    """What one backup run shipped for one actor."""

    actor_id: str
    bases: int = 0
    logs: int = 0
    bytes: int = 0
    last_seq: int | None = None


def _scan(view: Any) -> vh.Scanner:
    return lambda start, end, limit: view.scan(start, end, limit=limit)


def backup_actor(view: Any, loc: S3Location) -> BackupResult:
    """Ship what ``loc`` does not hold yet of the actor's history (or a base image).

    :raises OperationError: the actor has no database.
    """
    from actor_db.ops.history import _current_image, read_past

    actor_id = view.actor_id
    result = BackupResult(actor_id)
    bases, logs = _shipped(loc, actor_id)
    last = max([s for s, _ in bases] + [last for _, last, _ in logs], default=None)
    folder = _actor_folder(actor_id)

    def ship(snap: Any) -> None:
        head_raw = snap.get_many([HISTORY_HEAD_KEY])[0]
        if head_raw is None:
            # No history: a full image each run (there is nothing finer to ship).
            data = _current_image(snap)
            when = vh.time_ms()
            seq = (last or 0) + 1
            _put(loc, loc.key(folder, "base", _name(seq, when)), data, result)
            result.bases += 1
            result.last_seq = seq
            return
        head = vh.Head.decode(head_raw)
        if last is not None and last >= head.last_seq:
            result.last_seq = last
            return
        first_needed = (last + 1) if last is not None else None
        have_entry = first_needed is not None and snap.get_many([history_entry_key(first_needed)])[0] is not None
        if not have_entry:
            data = read_past(snap, head.last_seq)
            _put(loc, loc.key(folder, "base", _name(head.last_seq, head.last_time_ms)), data, result)
            result.bases += 1
            result.last_seq = head.last_seq
            return
        assert first_needed is not None
        parts: list[bytes] = [_LOG_MAGIC]
        size = 0
        start = first_needed
        for seq in range(first_needed, head.last_seq + 1):
            entry_raw = snap.get_many([history_entry_key(seq)])[0]
            if entry_raw is None:
                raise OperationError(f"actor {actor_id!r}: commit {seq} is missing from its history")
            chunks = [(history_seq(k)[1], v) for k, v in _scan_all(snap, *history_delta_range(seq, seq + 1))]
            part = _encode_commit(entry_raw, chunks)
            parts.append(part)
            size += len(part)
            if size >= MAX_LOG_BYTES or seq == head.last_seq:
                when = vh.Entry.decode(seq, entry_raw).time_ms
                _put(loc, loc.key(folder, "log", _log_name(start, seq, when)), b"".join(parts), result)
                result.logs += seq - start + 1
                result.last_seq = seq
                parts, size, start = [_LOG_MAGIC], 0, seq + 1

    read_consistently(view, ship)
    return result


def _scan_all(view: Any, start: bytes, end: bytes) -> Iterable[tuple[bytes, bytes]]:
    while True:
        pairs = view.scan(start, end, limit=1024)
        yield from pairs
        if len(pairs) < 1024:
            return
        start = pairs[-1][0] + b"\x00"


def _put(loc: S3Location, key: str, data: bytes, result: BackupResult) -> None:
    loc.client.put_object(Bucket=loc.bucket, Key=key, Body=data)
    result.bytes += len(data)


def backup_store(store: Any, loc: S3Location, actors: Iterable[str] | None = None) -> list[BackupResult]:
    """:func:`backup_actor` for ``actors`` (default: every actor with a database)."""
    from actor_db.ops.inspect import list_actors

    ids = list(actors) if actors is not None else [row["actor"] for row in list_actors(store)
                                                    if row.get("db_bytes")]
    return [backup_actor(store.actor(actor_id), loc) for actor_id in ids]


def follow(store: Any, loc: S3Location, *, interval_s: float = 0.2, duration_s: float | None = None,
           actors: Iterable[str] | None = None, stop: Callable[[], bool] | None = None) -> int:
    """Ship new history every ``interval_s`` seconds until ``duration_s`` passed or
    ``stop()`` is true; returns the number of runs. Restartable at any point."""
    started = time.monotonic()
    runs = 0
    wanted = list(actors) if actors is not None else None
    while True:
        backup_store(store, loc, wanted)
        runs += 1
        if (duration_s is not None and time.monotonic() - started >= duration_s) or (stop is not None and stop()):
            return runs
        time.sleep(interval_s)


def list_backed_up(loc: S3Location) -> list[str]:
    """Actor ids with objects under ``loc``."""
    prefix = loc.key() + "/" if loc.key() else ""
    folders: set[str] = set()
    for key in _list(loc, prefix):
        rest = key[len(prefix):]
        if "/" in rest:
            folders.add(urllib.parse.unquote(rest.split("/", 1)[0]))
    return sorted(folders)


def _state(loc: S3Location, actor_id: str, at_ms: int | None) -> tuple[bytes, int, int]:
    """The database file, seq and time of the actor's last backed-up state at or before ``at_ms``."""
    bases, logs = _shipped(loc, actor_id)
    if not bases:
        raise HistoryError(f"actor {actor_id!r}: no base image in the backup")
    usable = [b for b in bases if at_ms is None or b[1] <= at_ms]
    if not usable:
        raise HistoryError(f"actor {actor_id!r}: the backup holds nothing at or before that time")
    base_seq, base_time = usable[-1]
    folder = _actor_folder(actor_id)
    data = loc.client.get_object(Bucket=loc.bucket, Key=loc.key(folder, "base", _name(base_seq, base_time)))
    image = data["Body"].read()
    size = len(image)
    chunks = {i: image[i * 4096:(i + 1) * 4096] for i in range((size + 4095) // 4096)}
    seq, when = base_seq, base_time
    for first, last, _ in logs:
        if last <= base_seq:
            continue
        if first != seq + 1:
            raise OperationError(f"actor {actor_id!r}: the backup misses commit {seq + 1}")
        name = _log_name(first, last, _)
        raw = loc.client.get_object(Bucket=loc.bucket, Key=loc.key(folder, "log", name))
        stop = False
        for entry, delta in _decode_log(first, raw["Body"].read()):
            if at_ms is not None and entry.time_ms > at_ms:
                stop = True
                break
            entry.drop(chunks)
            chunks.update(delta)
            size = entry.size
            seq, when = entry.seq, entry.time_ms
        if stop:
            break
    return vh.image(size, chunks), seq, when


def restore_actor(loc: S3Location, actor_id: str, dest: Any, *, at: float | datetime | None = None,
                  force: bool = False, history: vh.HistorySetting = True) -> int:
    """Rebuild actor ``actor_id`` of the backup into ``dest`` (an actor view), at its
    last backed-up state or the last one at or before ``at``; returns its size in bytes.

    :raises OperationError: ``dest`` has a database and not ``force``, or the backup is damaged.
    :raises HistoryError: the backup holds no state of the actor at that time.
    """
    from actor_db.ops.history import write_state

    at_ms = vh.to_ms(at) if at is not None else None
    data, seq, when = _state(loc, actor_id, at_ms)
    size = write_state(dest, data, history=history, force=force)
    log.info("restored actor %r from the backup at commit %d (%d bytes)", actor_id, seq, size)
    return size


def restore_store(loc: S3Location, store: Any, *, at: float | datetime | None = None,
                  force: bool = False) -> dict[str, int]:
    """:func:`restore_actor` for every actor of the backup, into the same ids of ``store``."""
    return {actor_id: restore_actor(loc, actor_id, store.actor(actor_id), at=at, force=force)
            for actor_id in list_backed_up(loc)}
