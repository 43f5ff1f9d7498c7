"""What every driver shares: round-trip counting, limits, and the actor-scoped view.

A driver subclasses :class:`KVStore` and implements five raw operations on full store
keys (``_get_many``, ``_scan``, ``_write``, ``_preload``, ``_close``). Each raw call must
be one round trip and atomic. :class:`ActorKV` (what :meth:`KVStore.actor` returns)
adds the actor's prefix, checks limits before anything is sent, counts the call, and
satisfies :class:`vfs.protocol.KV`.

Single-writer fencing (drivers implement ``_acquire`` and honour ``_write``'s ``fence``):
:meth:`ActorKV.acquire_ownership` (or :meth:`ActorKV.acquire_and_preload`) bumps the
actor's fencing counter atomically and keeps the new token; from then on every write of
that view is applied only if the stored counter still equals the token, checked inside
the same atomic step as the write, else :class:`~actor_db.errors.FencedError` is raised
and nothing is applied. The counter lives outside the actor's key range (it survives
``delete_all``, so a token is never handed out twice). Reads are not fenced, and views
that never acquired ownership write unconditionally. See :mod:`actor_db.kv.fencing`.

Conditional writes (drivers honour ``batch.expect`` in ``_write``): every expected key
must hold its expected value (``None``: absent) when the batch applies, checked in the
same atomic step, after the fence and before any operation, else
:class:`~actor_db.errors.KVConditionFailedError` is raised and nothing is applied.
Drivers report the full store key; :meth:`ActorKV.write` re-raises it with the
actor-relative key the caller used.

Group writes (:meth:`KVStore.write_many`): several actors' batches in ONE round trip,
each batch still atomic, fenced and checked on its own, with its own result. Drivers
that can do this for real set :attr:`KVStore.groups_writes` and implement
``_write_many`` (LMDB: one write transaction, one fsync; Redis: one pipeline of the
write scripts; MemoryKV: one lock); the runtime's group commit
(:mod:`actor_db.runtime.group_commit`) uses it only then.

Group writes the event loop waits for (:meth:`KVStore.start_write_many`): a driver whose
round trip is a network reply (one Redis server) or a modelled delay sets
:attr:`KVStore.loop_writes` and implements ``_start_write_many``: the batches are sent
at once and a :class:`GroupWrite` tells the loop when its reply is there
(:meth:`GroupWrite.notify`); :meth:`GroupWrite.finish` then reads it. The runtime waits for it
on its event loop, so a round costs no thread hand-off.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Mapping, NamedTuple, Sequence

from vfs.preload import PreloadMap
from vfs.protocol import HintSpec, KeyRange, KVLimits, PrefixBudget, PreloadRequest, WriteBatch

from actor_db.kv.acquire_group import AcquireGroup
from actor_db.kv.due import DueEntry
from actor_db.errors import ActorKeyTooLongError, KVConditionFailedError, KVError, KVLimitError
from actor_db.kv.namespace import (
    ACTORS_END, ACTORS_START, actor_prefix, encode_actor_id, max_actor_id_bytes, parse_actor_key, prefix_end,
)

if TYPE_CHECKING:
    from actor_db.kv.snapshot import SnapshotKV

log = logging.getLogger(__name__)

__all__ = ["KVStore", "ActorKV", "Fence", "GroupWrite", "check_actor_id", "check_expectations", "condition_failed"]

GroupItem = tuple[WriteBatch, "Fence | None"]
"""One batch of a group write (full keys) and the fence it carries."""


class GroupWrite:
    """A group write that was sent and whose reply is not read yet.

    :meth:`notify` tells an event loop when the reply can be read without blocking (a
    deadline, or a driver's own signal, e.g. a socket turning readable); then
    :meth:`finish` reads it. ``finish`` may also be called early: it then blocks until
    the reply is there. It never raises: a failed round trip gives every batch that
    error.

    :param finish: reads the reply; returns one result per batch, as
        :meth:`KVStore.write_many` does.
    :param deadline: ``time.monotonic()`` seconds when the reply is there.
    :param subscribe: ``subscribe(loop, callback)`` arranges ``callback()`` on ``loop``
        when the reply can be read and returns a function that cancels that.
    """

    __slots__ = ("deadline", "_subscribe", "_finish", "_results")

    def __init__(self, finish: Callable[[], list[Exception | None]], *, deadline: float | None = None,
                 subscribe: Callable[[Any, Callable[[], None]], Callable[[], None]] | None = None) -> None:
        self.deadline = deadline
        self._subscribe = subscribe
        self._finish = finish
        self._results: list[Exception | None] | None = None

    @classmethod
    def done(cls, results: list[Exception | None]) -> GroupWrite:
        """A group write whose results are known already (nothing to wait for)."""
        return cls(lambda: results)

    def then(self, convert: Callable[[Callable[[], list[Exception | None]]], list[Exception | None]]) -> GroupWrite:
        """The same write, notified the same way, whose :meth:`finish` is
        ``convert(read)``: ``read()`` reads this one's reply (and may raise)."""
        return GroupWrite(lambda: convert(self._finish), deadline=self.deadline, subscribe=self._subscribe)

    def notify(self, loop: Any, callback: Callable[[], None]) -> Callable[[], None]:
        """(On ``loop``'s thread.) Call ``callback()`` on ``loop`` once :meth:`finish`
        will not block; returns a function that cancels it (safe to call late)."""
        if self._subscribe is not None:
            return self._subscribe(loop, callback)
        if self.deadline is not None:
            handle = loop.call_at(loop.time() + max(0.0, self.deadline - time.monotonic()), callback)
        else:
            handle = loop.call_soon(callback)
        return handle.cancel  # type: ignore[no-any-return]

    def finish(self) -> list[Exception | None]:
        """The result of each batch (``None``: applied), reading the reply if needed."""
        if self._results is None:
            self._results = self._finish()
        return self._results


class Fence(NamedTuple):
    """The condition a fenced write carries: ``actor_id``'s counter must equal ``token``."""

    actor_id: str
    token: int


class KVStore(ABC):
    """A KV driver instance: one store, many actors.

    :ivar round_trips: KV calls made through this instance, all actors together.
    """

    instant_writes = False
    """Whether a write is applied in memory, in microseconds, with no I/O to wait for
    (the runtime's output gate then writes in the committing thread)."""

    groups_writes = False
    """Whether :meth:`write_many` sends its batches in ONE round trip (the driver
    implements ``_write_many``); otherwise it makes one round trip per batch and the
    runtime does not group commits."""

    loop_writes = False
    """Whether :meth:`start_write_many` sends a group write without waiting for its
    reply (the driver implements ``_start_write_many``): the runtime's event loop then
    waits for the reply itself, with no thread per round."""

    def __init__(self, limits: KVLimits) -> None:
        self._limits = limits
        self._round_trips = 0
        self._count_lock = threading.Lock()
        self._clock_offset_ms = 0.0
        """The store's clock minus this process's (ms), learned by :meth:`due`."""

    # -- counting -----------------------------------------------------------
    @property
    def round_trips(self) -> int:
        """KV calls made through this driver instance so far (all actors)."""
        return self._round_trips

    def _count(self) -> None:
        with self._count_lock:
            self._round_trips += 1

    @property
    def limits(self) -> KVLimits:
        """Limits on full store keys, values and atomic batches."""
        return self._limits

    @property
    def identity(self) -> Hashable:
        """Equal for two driver objects on the same underlying store."""
        return ("store", id(self))

    def actor(self, actor_id: str) -> ActorKV:
        """The view of ``actor_id``'s namespace (creates nothing)."""
        return ActorKV(self, actor_id)

    def actor_ids(self) -> list[str]:
        """Ids of actors with at least one key, in key order (scans the store)."""
        ids: list[str] = []
        start = ACTORS_START
        while True:
            pairs = self._scan(start, ACTORS_END, 1, None)
            self._count()
            if not pairs:
                return ids
            parsed = parse_actor_key(pairs[0][0])
            if parsed is None:
                return ids
            ids.append(parsed[0])
            start = prefix_end(pairs[0][0][:parsed[1]])

    # -- raw operations, one round trip each -----------------------------------
    @abstractmethod
    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    @abstractmethod
    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]: ...

    @abstractmethod
    def _write(self, batch: WriteBatch, fence: Fence | None = None) -> None:
        """Apply a batch of full keys atomically: range deletes, deletes, then puts.

        :param fence: when given, apply the batch only if the actor's fencing counter
            equals ``fence.token`` (checked in the same atomic step), else raise
            :class:`~actor_db.errors.FencedError` and apply nothing.

        ``batch.expect`` (full keys) is checked in the same atomic step, after the fence
        and before any operation: the first expected key not holding its expected value
        raises :class:`~actor_db.errors.KVConditionFailedError` (``key`` = that full
        key; :func:`condition_failed`) and nothing is applied. A batch with
        expectations and no operation is checked all the same.
        """

    def _write_many(self, items: Sequence[GroupItem]) -> list[Exception | None]:
        """Apply several independent batches (full keys); each is atomic, fenced and
        checked on its own, exactly as :meth:`_write` would, and the result list holds
        ``None`` (applied) or the exception of that batch (nothing of it applied), in
        order. A driver with :attr:`groups_writes` does it in ONE round trip; raising
        means the whole call failed and any batch may or may not have been applied.

        This default makes one :meth:`_write` per batch.
        """
        results: list[Exception | None] = []
        for batch, fence in items:
            try:
                self._write(batch, fence)
            except Exception as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    def write_many(self, writes: Sequence[tuple[ActorKV, WriteBatch]]) -> list[Exception | None]:
        """Write several actors' batches, each atomic and fenced by its own view, in
        ONE round trip when :attr:`groups_writes` (else one per batch); counted as the
        round trips it makes.

        Never raises for a batch: the result list holds, in order, ``None`` for a batch
        that was applied or the exception :meth:`ActorKV.write` would have raised for it
        (:class:`~actor_db.errors.KVLimitError`, :class:`~actor_db.errors.FencedError`,
        :class:`~actor_db.errors.KVConditionFailedError` with the actor-relative key, a
        :class:`~actor_db.errors.KVError` for anything else). When the round trip
        itself fails, every batch sent in it gets that failure (wrapped as a
        ``KVError``): it may or may not have been applied, as with a failed ``write``.
        """
        results, items, sent = self._group_items(writes)
        if not items:
            return results
        self._count_group(len(items))
        try:
            outcome = self._write_many(items)
        except Exception as exc:
            outcome = [exc] * len(items)
        return self._group_results(writes, results, sent, outcome)

    def start_write_many(self, writes: Sequence[tuple[ActorKV, WriteBatch]]) -> GroupWrite | None:
        """:meth:`write_many`, sent now, its reply read later (:class:`GroupWrite`); or
        ``None`` when the driver cannot (:attr:`loop_writes` is False): then use
        :meth:`write_many`. Checked and counted as :meth:`write_many`; the results
        :meth:`GroupWrite.finish` returns are the ones it would return."""
        if not self.loop_writes:
            return None
        results, items, sent = self._group_items(writes)
        if not items:
            return GroupWrite.done(results)
        self._count_group(len(items))
        try:
            raw = self._start_write_many(items)
        except Exception as exc:
            return GroupWrite.done(self._group_results(writes, results, sent, [exc] * len(items)))

        def finish(outcome: Callable[[], list[Exception | None]]) -> list[Exception | None]:
            try:
                raw_results = outcome()
            except Exception as exc:  # a failed round trip: every batch gets its error
                raw_results = [exc] * len(items)
            return self._group_results(writes, results, sent, raw_results)

        return raw.then(finish)

    def _start_write_many(self, items: Sequence[GroupItem]) -> GroupWrite:
        """Send ``_write_many(items)``'s batches (ONE round trip) and return what to wait
        for; its ``finish`` returns ``_write_many``'s outcome list (it may raise: then
        every batch gets that error). Only drivers with :attr:`loop_writes`."""
        raise NotImplementedError(f"{type(self).__name__} has no loop-driven group writes")

    def _group_items(self, writes: Sequence[tuple[ActorKV, WriteBatch]]
                     ) -> tuple[list[Exception | None], list[GroupItem], list[int]]:
        """Check each batch: the results so far (a refused batch's error), the batches
        to send (full keys, fences) and their positions in ``writes``."""
        results: list[Exception | None] = [None] * len(writes)
        items: list[GroupItem] = []
        sent: list[int] = []
        for i, (view, batch) in enumerate(writes):
            if view.store is not self:
                raise ValueError(f"{view!r} is not a view of {self!r}")
            try:
                items.append((view._check_batch(batch), view._fence))
            except KVError as exc:
                results[i] = exc
                continue
            sent.append(i)
        return results, items, sent

    def _count_group(self, batches: int) -> None:
        if self.groups_writes:
            self._count()
        else:
            for _ in range(batches):
                self._count()

    def _group_results(self, writes: Sequence[tuple[ActorKV, WriteBatch]], results: list[Exception | None],
                       sent: list[int], outcome: Sequence[Exception | None]) -> list[Exception | None]:
        """``results`` with the outcome of each sent batch, as the view would raise it."""
        for i, error in zip(sent, outcome):
            if error is None:
                continue
            view, batch = writes[i]
            if isinstance(error, KVConditionFailedError):
                relative = view._condition_error(error, batch)
                relative.__cause__ = error
                error = relative
            elif not isinstance(error, KVError):
                wrapped = KVError(f"{type(self).__name__} write failed for actor {view.actor_id!r}: {error}")
                wrapped.__cause__ = error
                error = wrapped
            results[i] = error
        return results

    def _acquire(self, actor_id: str, request: PreloadRequest | None) -> tuple[int, PreloadMap | None]:
        """Bump ``actor_id``'s fencing counter atomically and return the new token (the
        first is 1); with ``request`` (full keys), evaluate that preload in the same
        atomic step. One round trip."""
        raise NotImplementedError(f"{type(self).__name__} does not support single-writer fencing")

    groups_acquires = False
    """Whether :meth:`acquire_and_preload_many` takes several actors' ownership (with
    their preloads) in ONE round trip (the driver implements ``_acquire_many``): then
    concurrent :meth:`ActorKV.acquire_and_preload` calls (wakes) share store calls
    (:mod:`actor_db.kv.acquire_group`); otherwise each is its own round trip."""

    def _acquire_many(self, items: Sequence[tuple[str, PreloadRequest]]) -> list[tuple[int, PreloadMap] | Exception]:
        """:meth:`_acquire` of each ``(actor id, request of full keys)``: each atomic on
        its own, answered in order with ``(token, preload)`` or that item's exception.
        A driver with :attr:`groups_acquires` does it in ONE round trip; raising means
        the whole call failed (any item may or may not have taken ownership).

        This default makes one :meth:`_acquire` per item."""
        out: list[tuple[int, PreloadMap] | Exception] = []
        for actor_id, request in items:
            try:
                token, found = self._acquire(actor_id, request)
            except Exception as exc:
                out.append(exc)
            else:
                assert found is not None
                out.append((token, found))
        return out

    def acquire_and_preload_many(self, requests: Sequence[tuple[ActorKV, PreloadRequest]]
                                 ) -> list[PreloadMap | Exception]:
        """:meth:`ActorKV.acquire_and_preload` for several actors: ONE round trip when
        :attr:`groups_acquires` (else one per actor), counted as the round trips it
        makes. Each actor's acquisition is atomic on its own (its fencing counter bumped,
        its preload read in the same step) and sets its view's fence, exactly as
        :meth:`ActorKV.acquire_and_preload` does.

        Never raises for one actor: the result list holds, in order, the actor's preload
        (actor-relative keys) or the exception its own call would have raised (a
        :class:`~actor_db.errors.KVError`; when the round trip itself fails, every
        actor sent in it gets that failure).

        :raises ValueError: a view of another store, a view with a placement ``claim``
            (claims go one by one: :meth:`ActorKV.acquire_and_preload`), or one actor
            twice.
        """
        ids = set()
        for view, _ in requests:
            if view.store is not self:
                raise ValueError(f"{view!r} is not a view of {self!r}")
            if view.claim is not None:
                raise ValueError(f"{view!r} takes ownership through its placement claim: not in a group")
            if view.actor_id in ids:
                raise ValueError(f"actor {view.actor_id!r} appears twice in one group acquisition")
            ids.add(view.actor_id)
        if not requests:
            return []
        return self._acquire_group_call([(view, view._full_request(request)) for view, request in requests])

    def _acquire_group_call(self, items: Sequence[tuple[ActorKV, PreloadRequest]]) -> list[PreloadMap | Exception]:
        """Send ``items`` (views, full requests) in one :meth:`_acquire_many`, count it,
        set the fences of those that took ownership; their preloads or errors, in order."""
        if self.groups_acquires:
            self._count()
        else:
            for _ in items:
                self._count()
        try:
            raw: Sequence[tuple[int, PreloadMap] | Exception] = self._acquire_many(
                [(view.actor_id, request) for view, request in items])
        except Exception as exc:
            raw = [exc] * len(items)
        out: list[PreloadMap | Exception] = []
        for (view, _), answer in zip(items, raw):
            if isinstance(answer, Exception):
                if not isinstance(answer, KVError):
                    wrapped = KVError(f"{type(self).__name__} acquire failed for actor {view.actor_id!r}: {answer}")
                    wrapped.__cause__ = answer
                    answer = wrapped
                out.append(answer)
                continue
            token, found = answer
            view._fence = Fence(view.actor_id, token)
            log.debug("actor %r: acquired ownership with fencing token %d (grouped, with preload)",
                      view.actor_id, token)
            out.append(found.without_prefix(view.prefix))
        return out

    def _acquire_grouper(self) -> AcquireGroup[tuple[ActorKV, PreloadRequest], PreloadMap | Exception]:
        """The group concurrent :meth:`ActorKV.acquire_and_preload` calls share (made
        at the first; only with :attr:`groups_acquires`)."""
        group = self.__dict__.get("_acquire_group")
        if group is None:
            with self._count_lock:
                group = self.__dict__.get("_acquire_group")
                if group is None:
                    group = self.__dict__["_acquire_group"] = AcquireGroup(self._acquire_group_call)
        return group

    @abstractmethod
    def _preload(self, request: PreloadRequest) -> PreloadMap:
        """Evaluate a request of full keys; the map holds full keys."""

    supports_create = False
    """Whether the driver implements ``_create`` (:meth:`ActorKV.create_or_preload`):
    a new actor's creation riding its ownership claim, in one round trip."""

    def _create(self, actor_id: str, request: PreloadRequest, puts: Mapping[bytes, bytes],
                claim: tuple[bytes, Sequence[bytes]] | None
                ) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        """Take ownership of ``actor_id`` and create it if it does not exist, in ONE
        atomic step (one round trip).

        With ``claim = (owner, replace)`` the owner record is claimed first, exactly as
        :meth:`_claim` does (refused: nothing changes, ``(0, None, current owner record,
        None)`` is returned). Then the fencing counter is bumped (the new token). Then,
        if the actor holds no key at all in its range, ``puts`` (full keys) are written
        and ``(token, None, None, replaced)`` is returned: created. Otherwise nothing
        of ``puts`` is written and ``(token, preload, None, replaced)`` is returned, the
        preload ``request`` (full keys) evaluated in the same step, as :meth:`_acquire`
        does."""
        raise NotImplementedError(f"{type(self).__name__} cannot create an actor in its ownership claim")

    # -- the due index (actor_db.kv.due; schedules) ------------------------------------
    due_index = False
    """Whether the driver mirrors due marks into a store-wide index in the same atomic
    step as every write (:mod:`actor_db.kv.due`) and implements ``_due``."""

    def _due(self, limit: int) -> tuple[int, list[DueEntry], int | None]:
        """``(now_ms, due, next_ms)``: the store's time (ms since the epoch; the server's
        clock where the driver has one), the index entries due by then, earliest first,
        at most ``limit``, and the due time of the first entry not yet due (``None``:
        none, or not looked for because ``limit`` entries are due). One read."""
        raise NotImplementedError(f"{type(self).__name__} keeps no due index")

    def due(self, limit: int = 256) -> tuple[int, list[DueEntry], int | None]:
        """What is due now, store-wide (see ``_due``); its cost is bounded by ``limit``
        whatever the number of actors and entries: ONE round trip (a Redis Cluster: one
        per primary node).

        :raises ValueError: ``limit`` < 1.
        :raises KVError: the store failed (``KVUnavailableError``: unreachable).
        """
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, not {limit!r}")
        self._count()
        sent = time.time() * 1000.0
        try:
            found = self._due(limit)
        except KVError:
            raise
        except Exception as exc:
            raise KVError(f"{type(self).__name__} due-index read failed: {exc}") from exc
        received = time.time() * 1000.0
        # The store read its clock about half way through the round trip.
        self._clock_offset_ms = found[0] - (sent + received) / 2.0
        return found

    def now_ms(self) -> int:
        """The store's time now, ms since the epoch, without a round trip: this process's
        clock plus the offset the last :meth:`due` measured (0 before the first; within
        half a round trip plus 1 ms of the store's clock after it)."""
        return int(time.time() * 1000.0 + self._clock_offset_ms)

    # -- placement: owner records and node heartbeats (actor_db.serve) -------------
    supports_placement = False
    """Whether the driver implements the placement operations below (one round trip
    and one atomic step each; :mod:`actor_db.kv.leases` states the rules)."""

    def _claim(self, actor_id: str, request: PreloadRequest, owner: bytes,
               replace: Sequence[bytes]) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        """:meth:`_acquire` with a preload, done only if ``actor_id``'s owner record is
        absent, equals ``owner`` or is in ``replace``: then the record becomes ``owner``
        in the same atomic step and ``(token, preload, None, replaced)`` is returned
        (``replaced``: the record of ``replace`` it overwrote, else ``None``). Otherwise
        nothing changes and ``(0, None, current owner record, None)`` is returned."""
        raise NotImplementedError(f"{type(self).__name__} does not support placement")

    def _release(self, actor_id: str, owner: bytes) -> bool:
        """Delete ``actor_id``'s owner record if it is ``owner``; whether it was."""
        raise NotImplementedError(f"{type(self).__name__} does not support placement")

    def _owner(self, actor_id: str) -> bytes | None:
        """``actor_id``'s owner record (``None``: none)."""
        raise NotImplementedError(f"{type(self).__name__} does not support placement")

    def _heartbeat(self, node_id: str, instance: bytes, payload: bytes, lease_ms: int, join: bool) -> bool:
        """Write node ``node_id``'s heartbeat (``instance``, ``payload``) with a lease of
        ``lease_ms`` ms: a renewal (``join=False``) only while the unexpired record is
        ``instance``'s; a join unless an unexpired record of another instance holds it."""
        raise NotImplementedError(f"{type(self).__name__} does not support placement")

    def _nodes(self) -> dict[str, tuple[bytes, bytes]]:
        """``{node_id: (instance, payload)}`` of every unexpired heartbeat."""
        raise NotImplementedError(f"{type(self).__name__} does not support placement")

    def _leave(self, node_id: str, instance: bytes) -> bool:
        """Delete node ``node_id``'s heartbeat if it is ``instance``'s; whether it was."""
        raise NotImplementedError(f"{type(self).__name__} does not support placement")

    def _placement_call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        self._count()
        try:
            return fn(*args)
        except KVError:
            raise
        except Exception as exc:
            raise KVError(f"{type(self).__name__} {what} failed: {exc}") from exc

    def heartbeat(self, node_id: str, instance: bytes, payload: bytes, lease_ms: int, join: bool = False) -> bool:
        """Join or renew node ``node_id``'s lease (one round trip); see :meth:`_heartbeat`.

        :returns: ``False`` when refused: a renewal whose lease ran out (the instance is
            dead for every other node: it must drop its actors and join anew), or a join
            while another live instance holds the node id.
        """
        if lease_ms <= 0:
            raise ValueError(f"lease_ms must be > 0, not {lease_ms!r}")
        return bool(self._placement_call("heartbeat", self._heartbeat, node_id, instance, payload, lease_ms, join))

    def nodes(self) -> dict[str, tuple[bytes, bytes]]:
        """Live nodes: ``{node_id: (instance, payload)}`` (one round trip)."""
        return self._placement_call("node listing", self._nodes)  # type: ignore[no-any-return]

    def leave(self, node_id: str, instance: bytes) -> bool:
        """End ``instance``'s lease now (one round trip): its actors are free at once."""
        return bool(self._placement_call("leave", self._leave, node_id, instance))

    def owner_of(self, actor_id: str) -> bytes | None:
        """``actor_id``'s owner record, ``b"<node>\\0<instance>"`` (one round trip)."""
        return self._placement_call("owner read", self._owner, actor_id)  # type: ignore[no-any-return]

    def release_owner(self, actor_id: str, owner: bytes) -> bool:
        """Delete ``actor_id``'s owner record if it is still ``owner`` (one round trip)."""
        return bool(self._placement_call("release", self._release, actor_id, owner))

    def close(self) -> None:
        """Release the store's resources (idempotent)."""

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan_with_limits(items: Iterator[tuple[bytes, bytes]], limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
    """Take pairs until ``limit`` pairs or ``max_bytes`` value bytes (shared by drivers)."""
    out: list[tuple[bytes, bytes]] = []
    used = 0
    for key, value in items:
        if limit is not None and len(out) >= limit:
            break
        if max_bytes is not None and used + len(value) > max_bytes:
            break
        out.append((key, value))
        used += len(value)
    return out


def condition_failed(key: bytes, expected: bytes | None, found: bytes | None = None, *,
                     found_known: bool = True) -> KVConditionFailedError:
    """The error a driver raises when ``key`` (a full store key) does not hold
    ``expected`` (``None``: absent) in a conditional write; ``found`` is what it holds
    (when ``found_known``)."""
    def describe(value: bytes | None) -> str:
        return "absent" if value is None else f"a value of {len(value)} bytes"

    seen = f", found {describe(found)}" if found_known else ""
    return KVConditionFailedError(
        f"conditional write refused: key {key!r} was expected {describe(expected)}{seen}; nothing of the "
        "batch was applied", key=key)


def check_expectations(expect: Mapping[bytes, bytes | None], get: Callable[[bytes], bytes | None]) -> None:
    """Raise :func:`condition_failed` for the first key of ``expect`` whose value (read
    with ``get``, inside the driver's atomic step) is not the expected one."""
    for key, expected in expect.items():
        found = get(key)
        if found != expected:
            raise condition_failed(key, expected, found)


def check_actor_id(store: KVStore, actor_id: str) -> int:
    """Check that ``actor_id`` can name an actor in ``store``; returns its UTF-8 length.

    :raises InvalidActorKeyError: not a ``str``, empty, or not encodable as UTF-8.
    :raises ActorKeyTooLongError: longer than
        :func:`~actor_db.kv.namespace.max_actor_id_bytes` allows for the store's key limit.
    """
    length = len(encode_actor_id(actor_id))
    driver_limit = store.limits.max_key_bytes
    longest = max_actor_id_bytes(driver_limit)
    if length > longest:
        where = (f"its keys are limited to {driver_limit} bytes" if driver_limit is not None
                 else "the key layout stores an id's length in 2 bytes")
        raise ActorKeyTooLongError(
            f"actor id of {length} bytes is too long for {type(store).__name__}: {where}, so actor ids "
            f"to {longest} bytes", length=length, max_length=longest, driver_limit=driver_limit)
    return length


class ActorKV:
    """One actor's namespace in a :class:`KVStore`; satisfies :class:`vfs.protocol.KV`.

    Keys passed in and returned are relative to the actor; the prefix never leaks.

    :raises InvalidActorKeyError: ``actor_id`` is empty, not a ``str`` or not valid
        Unicode encodable as UTF-8.
    :raises ActorKeyTooLongError: ``actor_id`` is so long that its prefix leaves too
        little room under the driver's key limit for the keys an actor stores
        (:data:`~actor_db.kv.namespace.ACTOR_KEY_ROOM`); also a ``KVLimitError``.
    """

    def __init__(self, store: KVStore, actor_id: str) -> None:
        self.store = store
        self.actor_id = actor_id
        check_actor_id(store, actor_id)
        self._prefix = actor_prefix(actor_id)
        self._end = prefix_end(self._prefix)
        self._fence: Fence | None = None
        self.claim: Callable[[], tuple[bytes, Sequence[bytes]]] | None = None
        """Placement (:mod:`actor_db.serve`): when set, :meth:`acquire_and_preload`
        takes ownership only through the store's conditional claim: ``claim()`` gives
        ``(owner record, records it may replace)`` (it may raise to refuse at once)."""
        self.replaced: bytes | None = None
        """After a claim: the dead owner's record it replaced (a takeover), else ``None``
        (a serve node sets it back to ``None`` once it counted the takeover)."""
        base = store.limits
        self._limits = KVLimits(
            None if base.max_key_bytes is None else base.max_key_bytes - len(self._prefix),
            base.max_value_bytes,
            base.max_batch_keys,
            None if base.max_batch_bytes is None else base.max_batch_bytes,
        )

    def __repr__(self) -> str:
        return f"<ActorKV {self.actor_id!r} of {type(self.store).__name__}>"

    @property
    def identity(self) -> Hashable:
        return (self.store.identity, self.actor_id)

    @property
    def limits(self) -> KVLimits:
        return self._limits

    @property
    def instant_writes(self) -> bool:
        """The store's :attr:`KVStore.instant_writes`."""
        return self.store.instant_writes

    @property
    def prefix(self) -> bytes:
        """This actor's store-level key prefix."""
        return self._prefix

    def _full(self, key: bytes) -> bytes:
        max_key = self._limits.max_key_bytes
        if max_key is not None and len(key) > max_key:
            raise KVLimitError(f"key of {len(key)} bytes exceeds the driver's limit of {max_key} bytes")
        return self._prefix + key

    def _check_batch(self, batch: WriteBatch) -> WriteBatch:
        """``batch`` with full store keys, after checking it against the limits (every
        commit passes here: the sums are taken only for the limits a driver has)."""
        limits = self._limits
        max_value = limits.max_value_bytes
        if max_value is not None and batch.puts and max(map(len, batch.puts.values())) > max_value:
            key, value = next((k, v) for k, v in batch.puts.items() if len(v) > max_value)
            raise KVLimitError(
                f"value of {len(value)} bytes for key {key!r} exceeds the driver's limit of {max_value} bytes")
        if limits.max_batch_keys is not None or limits.max_batch_bytes is not None:
            ops, nbytes = batch.op_count, batch.payload_bytes
            if not limits.batch_fits(ops, nbytes):
                raise KVLimitError(
                    f"batch of {ops} operations / {nbytes} bytes exceeds the driver's "
                    f"atomic-batch limit ({limits.max_batch_keys} operations / {limits.max_batch_bytes} bytes)")
        prefix, max_key = self._prefix, limits.max_key_bytes
        if max_key is not None:
            for keys in (batch.puts, batch.deletes, batch.expect):
                if keys and max(map(len, keys)) > max_key:
                    key = next(k for k in keys if len(k) > max_key)
                    raise KVLimitError(f"key of {len(key)} bytes exceeds the driver's limit of {max_key} bytes")
        return WriteBatch(
            {prefix + k: v if type(v) is bytes else bytes(v) for k, v in batch.puts.items()},
            {prefix + k for k in batch.deletes} if batch.deletes else set(),
            [KeyRange(self._full(r.start), prefix + r.end if r.end else self._end) for r in batch.delete_ranges]
            if batch.delete_ranges else [],
            {prefix + k: v if v is None or type(v) is bytes else bytes(v) for k, v in batch.expect.items()}
            if batch.expect else {})

    def _call(self, what: str, fn, *args):  # type: ignore[no-untyped-def]
        self.store._count()
        try:
            return fn(*args)
        except KVError:
            raise
        except Exception as exc:
            raise KVError(f"{type(self.store).__name__} {what} failed for actor {self.actor_id!r}: {exc}") from exc

    # -- the protocol ----------------------------------------------------------
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self._get_many_from(self.store, "get", keys)

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None, max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        return self._scan_from(self.store, "scan", start, end, limit, max_bytes)

    def _get_many_from(self, source: Any, what: str, keys: Sequence[bytes]) -> list[bytes | None]:
        """:meth:`get_many` through ``source``'s raw ``_get_many`` (the store, or a
        snapshot reader: :mod:`actor_db.kv.snapshot`)."""
        return self._call(what, source._get_many, [self._full(k) for k in keys])  # type: ignore[no-any-return]

    def _scan_from(self, source: Any, what: str, start: bytes, end: bytes, limit: int | None,
                   max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        """:meth:`scan` through ``source``'s raw ``_scan`` (every driver's scans, and
        every snapshot's, come here: the one place their arguments are checked).

        :raises ValueError: ``limit`` or ``max_bytes`` is negative (drivers disagreed on
            what it meant: nothing, or everything); no round trip is made.
        """
        for name, value in (("limit", limit), ("max_bytes", max_bytes)):
            if value is not None and value < 0:
                raise ValueError(f"scan of actor {self.actor_id!r}: {name} must be >= 0 (or None for no bound), "
                                 f"not {value!r}")
        n = len(self._prefix)
        pairs = self._call(what, source._scan, self._full(start), self._prefix + end if end else self._end, limit, max_bytes)
        return [(k[n:], v) for k, v in pairs]

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically (one round trip), if its expectations hold.

        A batch with only expectations (:attr:`WriteBatch.expect`) is an atomic check:
        it writes nothing and raises if an expectation fails.

        :raises FencedError: this view acquired ownership and another view has taken it
            since; nothing was applied (checked before the expectations).
        :raises KVConditionFailedError: an expected key did not hold its expected value
            (``.key`` is that actor-relative key); nothing was applied.
        """
        try:
            self._call("write", self.store._write, self._check_batch(batch), self._fence)
        except KVConditionFailedError as exc:
            raise self._condition_error(exc, batch) from exc

    def _condition_error(self, exc: KVConditionFailedError, batch: WriteBatch) -> KVConditionFailedError:
        """``exc`` (naming a full store key) as the caller sees it: the actor-relative key."""
        key = exc.key
        if key is not None and key.startswith(self._prefix):
            key = key[len(self._prefix):]
        if key is None or key not in batch.expect:
            return KVConditionFailedError(f"actor {self.actor_id!r}: a conditional write was refused (an "
                                          "expected key did not hold its expected value); nothing of the batch "
                                          "was applied", key=key)
        expected = batch.expect[key]
        what = "absent" if expected is None else f"to hold a value of {len(expected)} bytes"
        return KVConditionFailedError(f"actor {self.actor_id!r}: conditional write refused: key {key!r} was "
                                      f"expected {what} and was not; nothing of the batch was applied", key=key)

    def _full_request(self, request: PreloadRequest) -> PreloadRequest:
        return PreloadRequest(
            keys=tuple(self._full(k) for k in request.keys),
            ranges=tuple(
                PrefixBudget(KeyRange(self._full(b.range.start), self._prefix + b.range.end), b.max_bytes, b.partial,
                             None if b.hint is None else HintSpec(self._full(b.hint.key),
                                                                  self._prefix + b.hint.chunk_prefix,
                                                                  b.hint.interior_max_bytes))
                for b in request.ranges
            ),
            max_total_bytes=request.max_total_bytes,
        )

    def preload(self, request: PreloadRequest) -> PreloadMap:
        found: PreloadMap = self._call("preload", self.store._preload, self._full_request(request))
        return found.without_prefix(self._prefix)

    # -- single-writer fencing ---------------------------------------------------
    @property
    def fence_token(self) -> int | None:
        """The fencing token this view holds, or ``None`` (writes are unconditional)."""
        return None if self._fence is None else self._fence.token

    def acquire_ownership(self) -> int:
        """Take ownership of the actor: bump its fencing counter (one round trip).

        Every later :meth:`write` of this view (the VFS's commits included) is applied
        only while no other view has acquired ownership since.

        :returns: the new token (1 for the first owner ever, then 2, 3, ...).
        """
        token, _ = self._call("acquire", self.store._acquire, self.actor_id, None)
        self._fence = Fence(self.actor_id, token)
        log.debug("actor %r: acquired ownership with fencing token %d", self.actor_id, token)
        return int(token)

    def check_ownership(self) -> None:
        """Raise :class:`~actor_db.errors.FencedError` if another view took ownership of
        the actor since this view acquired it (ONE round trip: an empty write carrying
        this view's fence, which the driver checks as for any write; nothing is written).
        No round trip for a view that never acquired ownership.

        Reads are not fenced, so a runtime that lost its actor reads the new owner's
        pages mixed with its own cached ones, which SQLite reports as corruption; this
        tells that case apart from real damage (:mod:`actor_db.runtime.instance`).
        """
        if self._fence is None:
            return
        self._call("ownership check", self.store._write, WriteBatch(), self._fence)

    def acquire_and_preload(self, request: PreloadRequest) -> PreloadMap:
        """:meth:`acquire_ownership` and :meth:`preload` in ONE atomic round trip.

        The preload sees every write of every earlier owner that will ever be applied
        (they are fenced from this point on). The token is then :attr:`fence_token`.
        """
        if self.claim is not None:
            owner, replace = self.claim()
            token, found, current, self.replaced = self._call("claim", self.store._claim, self.actor_id,
                                                              self._full_request(request), owner, replace)
            if current is not None:
                from actor_db.errors import ActorOwnedElsewhereError

                raise ActorOwnedElsewhereError(f"actor {self.actor_id!r} is owned by {current!r}", owner=current)
        elif self.store.groups_acquires:
            # Concurrent wakes share one store call (actor_db.kv.acquire_group); alone, it
            # is this actor's own call. The group sets this view's fence.
            answer = self.store._acquire_grouper().run((self, self._full_request(request)))
            if isinstance(answer, Exception):
                raise answer
            return answer
        else:
            token, found = self._call("acquire", self.store._acquire, self.actor_id, self._full_request(request))
        self._fence = Fence(self.actor_id, token)
        log.debug("actor %r: acquired ownership with fencing token %d (with preload)", self.actor_id, token)
        assert found is not None
        return found.without_prefix(self._prefix)  # type: ignore[no-any-return]

    def create_or_preload(self, request: PreloadRequest, batch: WriteBatch) -> PreloadMap | None:
        """Take ownership of the actor and, if it does not exist (no key at all in its
        range), create it with ``batch``'s puts: ONE atomic round trip (the driver's
        :meth:`KVStore._create`; only when :attr:`KVStore.supports_create`).

        Ownership is taken as :meth:`acquire_and_preload` takes it (the fencing counter
        bumped, the placement ``claim`` checked first when set), in the same atomic step
        as the existence check and the creation, so two views racing to create one
        actor cannot both create it: the later one finds it and gets its preload.

        :param batch: the new actor's complete key set (puts only: the actor is empty,
            so deletes would change nothing; expectations are refused).
        :returns: ``None`` when the actor was created with ``batch``; else the preload of
            ``request`` (nothing of ``batch`` was applied), as :meth:`acquire_and_preload`
            returns it.
        :raises ActorOwnedElsewhereError: the placement claim was refused (nothing changed).
        :raises KVLimitError: ``batch`` breaks the driver's limits (nothing sent).
        :raises ValueError: ``batch`` has expectations.
        """
        if batch.expect:
            raise ValueError("a creation batch cannot carry expectations (the actor is absent or not created)")
        full = self._check_batch(batch)
        claim = self.claim() if self.claim is not None else None
        token, found, current, self.replaced = self._call("create", self.store._create, self.actor_id,
                                                          self._full_request(request), full.puts, claim)
        if current is not None:
            from actor_db.errors import ActorOwnedElsewhereError

            raise ActorOwnedElsewhereError(f"actor {self.actor_id!r} is owned by {current!r}", owner=current)
        self._fence = Fence(self.actor_id, token)
        log.debug("actor %r: acquired ownership with fencing token %d (%s)", self.actor_id, token,
                  "created" if found is None else "it exists: preloaded")
        return None if found is None else found.without_prefix(self._prefix)

    def delete_all(self) -> None:
        """Delete every key of this actor in one atomic batch (one round trip).

        The fencing counter is kept (it lives outside the actor's key range).
        """
        batch = WriteBatch()
        batch.delete_ranges.append(KeyRange(self._prefix, self._end))
        self._call("write", self.store._write, batch, self._fence)

    def snapshot(self) -> SnapshotKV:
        """A read-only view of this actor at ONE consistent committed state (one round
        trip to take it). Every reader of a live actor (export, inspect, backups) must
        read through one: see :mod:`actor_db.kv.snapshot` for what each driver does.
        Close it (or use ``with``) when done."""
        from actor_db.kv.snapshot import read_snapshot

        return read_snapshot(self)
