"""Durable schedules: ``c.schedule`` and ``c.cron`` inside actions (issue 23).

An entry is kept in its actor's own key space (:mod:`actor_db.runtime.keys`)::

    [7, 1] + entry id   the entry's record (UTF-8 JSON, :class:`Entry`)
    [7, 0] + entry id   its due mark: u64 BE due time, ms since the epoch, mirrored by
                        the driver into the store-wide due index (:mod:`actor_db.kv.due`)

A failed entry keeps its record (``status: "failed"``) and has no due mark.

Invariants:

- Setting, cancelling or deleting an entry changes nothing at once: the change is added
  to the running action's :class:`PendingSchedule` and rides the action's commit (the
  same atomic batch as its database writes and its state: 0 extra round trips). If the
  action raises, the pending changes are dropped with its other writes.
- Everything an entry needs at fire time is checked when it is set: the action exists,
  the arguments are JSON that comes back the same (:func:`~actor_db.runtime.state.find_non_json`),
  the time is a finite number or an aware ``datetime``, the cron expression has 5
  fields and parses, the time zone exists. A refusal raises
  :class:`~actor_db.errors.ScheduleError` at once.
- A fired entry is removed (one-shot) or moved to its next time (cron, every) by the
  fired action's own commit (:func:`fired_changes`), so its effects on the database
  happen exactly once: a crash before that commit leaves the entry, which fires again.
- Times are the store's (:meth:`~actor_db.kv.KVStore.now_ms`: the local clock plus the
  offset to the store's clock learned by the due-index polls).

Left out: schedules set outside an action (use an action that sets them), per-entry
retry settings (they are the actor type's: :class:`~actor_db.runtime.actor.ActorOptions`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from vfs.protocol import WriteBatch

from actor_db.errors import ScheduleError
from actor_db.kv.due import DUE_MARK, due_mark, due_value
from actor_db.runtime.keys import SCHEDULE_RECORDS
from actor_db.runtime.state import find_non_json

if TYPE_CHECKING:
    from actor_db.runtime.actor import ActorDefinition

log = logging.getLogger(__name__)

__all__ = ["Entry", "PendingSchedule", "ScheduleAPI", "CronAPI", "FIRE_ACTION", "record_key", "next_cron",
           "fired_changes", "failure_changes", "MAX_NAME_BYTES"]

FIRE_ACTION = "__actor_db_fire__"
"""The reserved action name a due entry is fired through (same call path and placement
as any call; refused from outside: HTTP callers cannot name it)."""

MAX_NAME_BYTES = 200
"""Longest cron name (UTF-8 bytes); an entry id is ``cron:<name>`` or 32 hex digits."""

_RECORD_VERSION = 1


def record_key(entry_id: str) -> bytes:
    """The actor-relative key of entry ``entry_id``'s record."""
    return SCHEDULE_RECORDS.start + entry_id.encode("utf-8")


def _mark(entry_id: str) -> bytes:
    return due_mark(entry_id.encode("utf-8"))


@dataclass
class Entry:
    """One schedule entry (its record).

    :ivar id: ``cron:<name>`` for cron/every entries, else a random 32-hex-digit id.
    :ivar kind: ``"once"``, ``"cron"`` or ``"every"``.
    :ivar due_ms: when it fires next (ms since the epoch, store time).
    :ivar attempts: failed runs of the current occurrence so far.
    :ivar status: ``"scheduled"`` or ``"failed"`` (a one-shot entry out of attempts).
    :ivar error: the last failure's ``Type: message`` (``None`` after a success).
    """

    id: str
    kind: str
    action: str
    args: list[Any]
    due_ms: int
    name: str | None = None
    cron: str | None = None
    timezone: str | None = None
    every_s: float | None = None
    attempts: int = 0
    status: str = "scheduled"
    error: str | None = None
    failures: int = 0
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def _fields(self) -> dict[str, Any]:
        # (not dataclasses.asdict: it deep-copies every value, ~0.2 ms per entry)
        return {name: getattr(self, name) for name in _FIELDS}

    def copy(self) -> Entry:
        """An independent copy (its own ``args`` list)."""
        fields = self._fields()
        fields["args"] = json.loads(json.dumps(self.args))
        return Entry(**fields)

    def encode(self) -> bytes:
        record = self._fields()
        record["v"] = _RECORD_VERSION
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        record = json.loads(raw)
        record.pop("v", None)
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def public(self) -> dict[str, Any]:
        """What ``list()`` shows: the record, with ``due`` as an aware UTC datetime."""
        out = self.copy()._fields()
        out["due"] = _dt.datetime.fromtimestamp(self.due_ms / 1000.0, _dt.timezone.utc)
        return out


_FIELDS = tuple(Entry.__dataclass_fields__)


V = TypeVar("V")


def _fold(batch: WriteBatch, into: dict[str, V], convert: Callable[[bytes], V]) -> dict[str, V]:
    """``into`` (by entry id) with ``batch``'s schedule-record deletes and puts applied,
    each put's value passed through ``convert``; returns ``into``."""
    start = SCHEDULE_RECORDS.start
    for key in batch.deletes:
        if key.startswith(start):
            into.pop(key[len(start):].decode("utf-8"), None)
    for key, value in batch.puts.items():
        if key.startswith(start):
            into[key[len(start):].decode("utf-8")] = convert(value)
    return into


class PendingSchedule:
    """The schedule changes of the running action: a batch committed with it.

    ``batch`` is ``None`` while there are none (the common case costs nothing).
    """

    __slots__ = ("batch", "known")

    def __init__(self) -> None:
        self.batch: WriteBatch | None = None
        self.known: dict[str, bytes] | None = None
        """Committed entries by id, as their records (JSON bytes: an awake actor's entries
        are no objects the garbage collector tracks; :func:`decode_record` when one is
        needed). ``None``: not read since the wake. Kept up to date by this actor's own
        commits (their only writer while it is awake, fenced)."""

    def _batch(self) -> WriteBatch:
        if self.batch is None:
            self.batch = WriteBatch()
        return self.batch

    def put(self, entry: Entry) -> None:
        """Write ``entry`` with its due mark (or without one if it failed)."""
        batch = self._batch()
        batch.put(record_key(entry.id), entry.encode())
        if entry.status == "scheduled":
            batch.put(_mark(entry.id), due_value(entry.due_ms))
        else:
            batch.delete(_mark(entry.id))

    def remove(self, entry_id: str) -> None:
        batch = self._batch()
        batch.delete(record_key(entry_id))
        batch.delete(_mark(entry_id))

    def take(self) -> WriteBatch | None:
        batch, self.batch = self.batch, None
        return batch

    def committed(self) -> None:
        """The pending batch was committed (queued in the output gate, or durable):
        fold it into :attr:`known` and start afresh."""
        known, batch = self.known, self.batch
        if known is not None and batch is not None:
            _fold(batch, known, bytes)
        self.batch = None

    def clear(self) -> None:
        self.batch = None

    def overlay(self, known: dict[str, bytes]) -> dict[str, Entry]:
        """The committed records ``known`` (by id; not changed), decoded, as this action's
        changes leave them (a record that does not decode is logged and left out)."""
        entries = {}
        for entry_id, raw in known.items():
            entry = decode_record(entry_id, raw)
            if entry is not None:
                entries[entry_id] = entry
        return entries if self.batch is None else _fold(self.batch, entries, Entry.decode)


# ---------------------------------------------------------------------- checks
def _check_action(definition: ActorDefinition, action: Any) -> str:
    if not isinstance(action, str) or action not in definition.actions:
        raise ScheduleError(f"actor type {definition.name!r} has no action {action!r} to schedule "
                            f"(actions: {sorted(definition.actions)})")
    return action


def _check_args(action: str, args: tuple[Any, ...]) -> list[Any]:
    values = list(args)
    found = find_non_json(values, "args")
    if found is not None:
        path, reason = found
        raise ScheduleError(f"arguments of scheduled action {action!r} must be JSON: {path}: {reason}")
    try:
        json.dumps(values, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ScheduleError(f"arguments of scheduled action {action!r} must be JSON: {exc}") from None
    return values


def _check_seconds(seconds: Any, what: str, positive: bool = False) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise ScheduleError(f"{what} must be a finite number of seconds, not {seconds!r}")
    if seconds < 0 or (positive and seconds <= 0):
        raise ScheduleError(f"{what} must be {'> 0' if positive else '>= 0'} seconds, not {seconds!r}")
    return float(seconds)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise ScheduleError(f"a cron name must be a non-empty str of at most {MAX_NAME_BYTES} bytes, not {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ScheduleError(f"cron name {name!r} is not valid Unicode") from None
    return name


def _zone(timezone: Any) -> _dt.tzinfo:
    import zoneinfo

    if not isinstance(timezone, str) or not timezone:
        raise ScheduleError(f"timezone must be an IANA zone name such as 'UTC' or 'Europe/Paris', not {timezone!r}")
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {timezone!r}: {exc}") from None


def _check_cron(expression: Any) -> str:
    from croniter import croniter

    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise ScheduleError(f"a cron expression must be a str of 5 fields (minute hour day month weekday), "
                            f"not {expression!r}")
    if not croniter.is_valid(expression):
        raise ScheduleError(f"invalid cron expression {expression!r}")
    return expression


def next_cron(expression: str, timezone: str, after_ms: int) -> int:
    """The first time strictly after ``after_ms`` (ms since the epoch) that the 5-field
    ``expression`` matches in ``timezone`` (wall-clock fields, so ``0 9 * * *`` is 09:00
    local on both sides of a DST change), in ms since the epoch. A wall-clock time the
    spring change skips runs at the first valid time after it (croniter); a fixed-hour
    time the autumn change repeats runs once, at its first pass."""
    from croniter import croniter

    zone = _zone(timezone)
    start = _dt.datetime.fromtimestamp(after_ms / 1000.0, zone)
    times = croniter(expression, start)
    hour = expression.split()[1]
    fixed_hours = "*" not in hour and "/" not in hour
    for _ in range(4):
        nxt = times.get_next(_dt.datetime)
        local = _dt.datetime.fromtimestamp(nxt.timestamp(), zone)
        # A fixed-hour job runs once in the hour a DST change repeats (as cron does):
        # the second pass over the same wall-clock time (fold=1) is skipped.
        if not (fixed_hours and local.fold == 1
                and local.replace(fold=0).utcoffset() != local.utcoffset()):
            break
    return int(round(nxt.timestamp() * 1000))


def _next_time(entry: Entry, now_ms: int) -> int:
    """The next due time of a repeating entry after its occurrence at ``entry.due_ms``
    (occurrences missed while nothing ran are skipped: it never fires a backlog)."""
    if entry.kind == "every":
        period = max(1, int(round((entry.every_s or 0) * 1000)))
        due = entry.due_ms + period
        if due <= now_ms:
            due += ((now_ms - due) // period + 1) * period
        return due
    assert entry.cron is not None
    return next_cron(entry.cron, entry.timezone or "UTC", max(now_ms, entry.due_ms))


def fired_changes(pending: PendingSchedule, entry: Entry, now_ms: int) -> None:
    """Add to ``pending`` what a successful run of ``entry`` commits: a one-shot entry
    is removed; a repeating one moves to its next time, its attempts reset."""
    if entry.kind == "once":
        pending.remove(entry.id)
        return
    entry.due_ms = _next_time(entry, now_ms)
    entry.attempts, entry.error = 0, None
    pending.put(entry)


def failure_changes(pending: PendingSchedule, entry: Entry, error: BaseException, now_ms: int, *,
                    max_attempts: int, backoff_s: float, max_backoff_s: float) -> str:
    """Add to ``pending`` what a failed run of ``entry`` commits (after the action's own
    writes were rolled back): a retry ``backoff_s * 2**(attempts-1)`` seconds later
    (capped at ``max_backoff_s``), or, after ``max_attempts`` runs, the failure: a
    one-shot entry becomes ``failed`` (kept, with no due mark), a repeating one moves on
    to its next time. Returns ``"retry"`` or ``"failed"``."""
    entry.attempts += 1
    entry.error = f"{type(error).__name__}: {error}"[:1000]
    if entry.attempts < max_attempts:
        delay = min(max_backoff_s, backoff_s * (2 ** (entry.attempts - 1)))
        entry.due_ms = now_ms + int(delay * 1000)
        pending.put(entry)
        return "retry"
    entry.failures += 1
    if entry.kind == "once":
        entry.status = "failed"
    else:
        entry.due_ms = _next_time(entry, now_ms)
        entry.attempts = 0
    pending.put(entry)
    return "failed"


# ---------------------------------------------------------------------- the API
class _Host:
    """What the API objects need from the awake actor (the instance provides it)."""

    definition: ActorDefinition
    pending: PendingSchedule
    now_ms: Callable[[], int]
    set_due: Callable[[int], None]
    read_entries: Callable[[], Awaitable[dict[str, Entry]]]


class ScheduleAPI:
    """``c.schedule``: one-shot entries. Setting and cancelling are synchronous (no I/O:
    they ride the action's commit); :meth:`list` reads.

    Example, inside an action::

        reminder = c.schedule.after(3600, "remind", "call Bob")
        c.schedule.cancel(reminder)
    """

    __slots__ = ("_host",)

    def __init__(self, host: _Host) -> None:
        self._host = host

    def _add(self, due_ms: int, action: Any, args: tuple[Any, ...]) -> str:
        host = self._host
        name = _check_action(host.definition, action)
        entry = Entry(uuid.uuid4().hex, "once", name, _check_args(name, args), due_ms)
        host.pending.put(entry)
        host.set_due(due_ms)
        log.debug("actor type %s: scheduled %s at %d ms (entry %s)", host.definition.name, name, due_ms, entry.id)
        return entry.id

    def after(self, seconds: float, action: str, *args: Any) -> str:
        """Run ``action(c, *args)`` on this actor ``seconds`` from now; returns the entry id.

        :raises ScheduleError: unknown action, non-JSON arguments, a negative or
            non-finite delay (nothing is scheduled).
        """
        delay = _check_seconds(seconds, "the delay")
        return self._add(self._host.now_ms() + int(delay * 1000), action, args)

    def at(self, when: _dt.datetime | float, action: str, *args: Any) -> str:
        """Run ``action(c, *args)`` on this actor at ``when``: an aware ``datetime`` or
        epoch seconds (a time in the past fires at once); returns the entry id.

        :raises ScheduleError: a naive datetime, a bad time, unknown action, non-JSON
            arguments (nothing is scheduled).
        """
        if isinstance(when, _dt.datetime):
            if when.tzinfo is None or when.utcoffset() is None:
                raise ScheduleError(f"c.schedule.at needs an aware datetime (with tzinfo), not {when!r}")
            due = int(round(when.timestamp() * 1000))
        else:
            if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when) or when < 0:
                raise ScheduleError(f"when must be an aware datetime or epoch seconds >= 0, not {when!r}")
            due = int(round(when * 1000))
        return self._add(due, action, args)

    def cancel(self, id: str) -> None:
        """Remove entry ``id`` (with the action's commit; an unknown id is ignored)."""
        if not isinstance(id, str) or not id:
            raise ScheduleError(f"an entry id is a non-empty str, not {id!r}")
        self._host.pending.remove(id)

    async def list(self) -> list[dict[str, Any]]:
        """Every one-shot entry of this actor (failed ones too), earliest first, as
        this action sees them (its own changes included): dicts with ``id``,
        ``action``, ``args``, ``due`` (aware UTC datetime), ``due_ms``, ``attempts``,
        ``status`` (``"scheduled"`` / ``"failed"``), ``error``. One KV read."""
        entries = await self._host.read_entries()
        return [e.public() for e in sorted(entries.values(), key=lambda e: (e.due_ms, e.id)) if e.kind == "once"]


class CronAPI:
    """``c.cron``: named repeating entries (setting a name again replaces it)."""

    __slots__ = ("_host",)

    def __init__(self, host: _Host) -> None:
        self._host = host

    def _put(self, entry: Entry) -> str:
        self._host.pending.put(entry)
        self._host.set_due(entry.due_ms)
        return entry.id

    def set(self, name: str, expression: str, action: str, *args: Any, timezone: str = "UTC") -> str:
        """Run ``action(c, *args)`` at every time the 5-field cron ``expression`` matches
        in ``timezone`` (an IANA name; wall-clock times, DST included); returns the
        entry id (``cron:<name>``).

        :raises ScheduleError: bad name, expression, time zone, action or arguments.
        """
        host = self._host
        name = _check_name(name)
        expression = _check_cron(expression)
        _zone(timezone)
        action = _check_action(host.definition, action)
        values = _check_args(action, args)
        due = next_cron(expression, timezone, host.now_ms())
        return self._put(Entry(f"cron:{name}", "cron", action, values, due, name=name, cron=expression,
                               timezone=timezone))

    def every(self, name: str, seconds: float, action: str, *args: Any) -> str:
        """Run ``action(c, *args)`` every ``seconds`` (first run ``seconds`` from now);
        returns the entry id (``cron:<name>``).

        :raises ScheduleError: bad name, period, action or arguments.
        """
        host = self._host
        name = _check_name(name)
        period = _check_seconds(seconds, "the period", positive=True)
        action = _check_action(host.definition, action)
        values = _check_args(action, args)
        due = host.now_ms() + max(1, int(round(period * 1000)))
        return self._put(Entry(f"cron:{name}", "every", action, values, due, name=name, every_s=period))

    def delete(self, name: str) -> None:
        """Remove the repeating entry ``name`` (an unknown name is ignored)."""
        self._host.pending.remove(f"cron:{_check_name(name)}")

    async def list(self) -> list[dict[str, Any]]:
        """Every repeating entry of this actor, by name, as :meth:`ScheduleAPI.list`
        shows them plus ``name``, ``cron``, ``timezone``, ``every_s``, ``failures``."""
        entries = await self._host.read_entries()
        return [e.public() for e in sorted(entries.values(), key=lambda e: e.id) if e.kind != "once"]


def decode_records(pairs: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    """Records by entry id from a scan of :data:`SCHEDULE_RECORDS` (kept as bytes,
    decoded when needed: :func:`decode_record`)."""
    start = SCHEDULE_RECORDS.start
    return {key[len(start):].decode("utf-8", "replace"): value for key, value in pairs}


def decode_record(entry_id: str, raw: bytes) -> Entry | None:
    """Entry ``entry_id`` from its record, or ``None`` if the record does not decode
    (logged: such a record is skipped, as if absent)."""
    try:
        return Entry.decode(raw)
    except (ValueError, TypeError) as exc:
        log.warning("schedule record of entry %r does not decode: %s", entry_id, exc)
        return None


assert DUE_MARK == bytes([7, 0]) and SCHEDULE_RECORDS.start == bytes([7, 1])
