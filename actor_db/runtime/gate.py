"""Output gates and write coalescing (Cloudflare Durable Objects' storage model).

:class:`OutputGate` is the actor-scoped KV view the actor's SQLite connection writes
through. Its :meth:`~OutputGate.write` does not wait for the KV: it appends the batch to
the actor's queue of *pending* batches, numbered ``1, 2, 3, ...`` (the *sequence*), and
returns. A *flusher* job on the runtime's pool writes pending batches in order; every
batch queued while one write is in flight goes out in the NEXT single write, merged
into one atomic :class:`~vfs.protocol.WriteBatch` (later operations win, as
:meth:`WriteBatch.merge` applies them) for as long as the merged batch fits the driver's
limits (:meth:`KVLimits.batch_fits`). The write goes through the actor's fenced view,
so a merged batch is applied whole or refused whole.

Group commit: on a store whose ``write_many`` is one round trip (LMDB, one Redis
server), the gate does not run a flusher of its own. It joins the store's
:class:`~actor_db.runtime.group_commit.GroupCommitter`, whose round writes the next merged
batch of every joined gate in ONE KV call, each batch still fenced, checked and atomic
on its own, each gate getting its own result. Stores that apply writes instantly
(``MemoryKV``) are written in the committing thread; wrappers and clusters keep a
flusher per gate.

The runtime releases an action's caller only when :attr:`OutputGate.durable` reaches the
sequence the action ended at (:meth:`OutputGate.wait`): its result never reveals data
that is not durable yet, while the actor runs its next action at once.

Invariants:

- Batches reach the KV in sequence order; a merged write holds consecutive batches
  only. So the KV always holds a prefix of the actor's commits: after any crash it is
  the state after some commit, and every commit whose caller got a result is in it.
- Reads never see a stale value: :meth:`get_many` answers a key from the newest pending
  batch touching it (put, delete, or range delete) and reads the KV only for keys no
  pending batch touches (pending batches only reach the KV, in order, so those keys
  cannot change meanwhile: the actor's own strand is the only writer). Scans and
  preloads first wait until every pending batch is durable (:meth:`drain`).
- After a failed write the gate is *broken* for good: :attr:`failure` is set, pending
  batches are dropped (never written), every waiter and every later ``write``, read or
  wait raises :class:`~actor_db.errors.CommitFailedError` (a
  :class:`~actor_db.errors.FencedError` when another runtime took the actor over), and
  the runtime discards the actor's SQLite connection; the next call re-opens it from
  the KV, the only truth.
- A conditional batch (:attr:`WriteBatch.expect`) is not queued: :meth:`write` waits
  until every pending batch is durable, then writes it in the calling thread and raises
  its :class:`~vfs.protocol.ConditionFailedError` to the caller (nothing was applied,
  so the gate stays whole); its expectations are checked against the state after every
  earlier batch, and it is never merged behind other batches (:func:`merge_run`).
- Waiting never deadlocks the pool: a thread that must wait for pending batches
  (:meth:`drain`, or :meth:`write` over :attr:`max_pending_bytes`) writes them itself
  when no flusher runs, and withdraws the gate from a group round that has not taken
  it yet (that round could need the very thread that waits, e.g. the event loop).
- Speculation (a new actor's first call, :mod:`actor_db.runtime.instance`): a gate made
  ``speculative`` stands for an actor assumed EMPTY. It never touches the KV: batches
  queue as in a held gate, a read of a key no pending batch touches answers absent,
  and anything that needs the KV (a scan, a preload, a conditional write, a drain,
  backpressure) aborts the speculation (:class:`SpeculationAbortedError`, and
  :attr:`speculation_aborted` stays set even if the caller swallows it). Then either
  :meth:`commit_speculation` sends every pending batch as the actor's creation in ONE
  conditional round trip (created: they are all durable; the gate is an ordinary
  held gate from then on), or :meth:`discard_speculation` drops them unwritten.
- One writer at a time: ``_flushing`` is the right to write. Its holder is a flusher
  (:meth:`_flush`), a conditional write, or the committer while the gate is joined
  (``_joined``) or in a round; only the holder removes pending batches.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence, Union

from vfs.preload import PreloadMap
from vfs.protocol import ConditionFailedError, KVLimits, PreloadRequest, WriteBatch

from actor_db.errors import CommitFailedError, FencedError, KVLimitError, SpeculationAbortedError
from actor_db.kv.due import DUE_MARK
from actor_db.kv.fencing import fenced_cause
from actor_db.runtime.group_commit import GroupCommitter, committer_for
from actor_db.runtime.inbox import inbox_for
from actor_db.runtime.loops import running_loop

if TYPE_CHECKING:
    from actor_db.kv.base import ActorKV
    from actor_db.runtime.metrics import CountingKV
    from actor_db.runtime.pool import ThreadPool

log = logging.getLogger(__name__)

__all__ = ["OutputGate", "DEFAULT_MAX_PENDING_BYTES", "merge_run"]

DEFAULT_MAX_PENDING_BYTES = 16 * 1024 * 1024
"""Pending (not yet durable) payload bytes per actor above which :meth:`OutputGate.write`
waits for the KV (backpressure)."""


_Pending = Union["collections.deque[tuple[int, WriteBatch, int]]", tuple[()]]
"""An output gate's pending batches: a deque, or the empty tuple when there are none."""


def merge_run(batches: Sequence[WriteBatch], limits: KVLimits) -> tuple[WriteBatch, int]:
    """Merge the longest prefix of ``batches`` whose merge fits ``limits``.

    The first batch is always taken (alone, it is what the VFS would have written). A
    later batch with expectations (a conditional write, :attr:`WriteBatch.expect`) ends
    the run: merged, its expectations would be checked before the earlier batches'
    operations instead of after them.

    :returns: the batch to write and how many of ``batches`` it holds (>= 1).
    """
    first = batches[0]
    if len(batches) == 1:
        return first, 1
    merged = WriteBatch()
    merged.merge(first)
    ops, nbytes = merged.op_count, merged.payload_bytes
    taken = 1
    for batch in batches[1:]:
        if batch.expect:
            break
        # A merge never has more operations or bytes than its two parts: when the sum
        # fits, merge in place; otherwise check the exact merge on a copy.
        add_ops, add_bytes = batch.op_count, batch.payload_bytes
        if limits.batch_fits(ops + add_ops, nbytes + add_bytes):
            merged.merge(batch)
            ops, nbytes = ops + add_ops, nbytes + add_bytes
        else:
            candidate = WriteBatch(dict(merged.puts), set(merged.deletes), list(merged.delete_ranges),
                                   dict(merged.expect))
            candidate.merge(batch)
            ops, nbytes = candidate.op_count, candidate.payload_bytes
            if not limits.batch_fits(ops, nbytes):
                break
            merged = candidate
        taken += 1
    return merged, taken


def _lookup(batch: WriteBatch, key: bytes) -> tuple[bool, bytes | None]:
    """What ``batch`` does to ``key``: ``(True, value)`` for a put, ``(True, None)`` for a
    delete (exact or range), ``(False, None)`` if it does not touch it."""
    value = batch.puts.get(key)
    if value is not None:
        return True, value
    if key in batch.deletes:
        return True, None
    for r in batch.delete_ranges:
        if r.start <= key < r.end:
            return True, None
    return False, None


class OutputGate:
    """An actor's KV view with an output gate (see the module docstring).

    :param inner: the actor's counting, fenced view (every real KV call goes through it).
    :param pool: where flusher jobs run.
    :param loop: the event loop waiting callers run on.
    :param label: ``"type/key"`` for messages.
    :param on_failure: ``on_failure(gate)``, called on the event loop once, when the
        gate breaks (its error is :attr:`failure`).
    :param max_pending_bytes: backpressure bound (payload bytes not yet durable).
    :param held: start *held*: batches are queued but not written until :meth:`open`
        (or until something must wait for them: :meth:`drain`, backpressure). The
        runtime holds the gate while an actor starts, so a new actor's creation batch
        and its migrations go out as one write.
    :param speculative: start speculative (implies held): the actor is assumed empty
        and nothing reaches the KV until :meth:`commit_speculation` (module docstring).
    """

    __slots__ = (
        "speculative", "speculation_aborted", "inner", "label", "max_pending_bytes", "_pool", "_loop", "_inbox",
        "_on_failure", "_limits", "_checked", "_lock", "_cond", "_inline", "_committer", "_group_view", "_joined",
        "_loop_round", "_pending", "_pending_bytes", "_flushing", "_sleepers", "_held", "_release_scheduled",
        "_waiters", "enqueued", "durable", "failure", "flushes", "merged_batches", "__weakref__",
    )
    """(One gate per awake actor: no ``__dict__``, and the condition and the waiter list
    exist only while used, so an idle awake actor's gate is 3 objects the garbage
    collector tracks: itself, its lock and its queue.)"""

    def __init__(self, inner: CountingKV, pool: ThreadPool, loop: asyncio.AbstractEventLoop, label: str,
                 on_failure: Callable[[OutputGate], None] | None = None,
                 max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES, held: bool = False,
                 speculative: bool = False) -> None:
        self.speculative = speculative
        """The actor is assumed empty and nothing reaches the KV (see the module docstring)."""
        self.speculation_aborted = False
        """A speculative gate was asked for something only the KV can answer."""
        self.inner = inner
        self.label = label
        self.max_pending_bytes = max_pending_bytes
        self._pool = pool
        self._loop = loop
        self._inbox = inbox_for(loop)
        self._on_failure = on_failure
        self._limits = inner.limits
        limits = self._limits
        self._checked = any(limit is not None for limit in (limits.max_key_bytes, limits.max_value_bytes,
                                                             limits.max_batch_keys, limits.max_batch_bytes))
        """The driver has a limit :meth:`_check` must enforce before a batch is queued
        (else a batch's bytes are counted only when it waits in the queue)."""
        self._lock = threading.Lock()
        """Guards the gate's state. ``with self._lock`` is the same lock as ``_cond``'s
        (a C-level enter, not the Condition's Python wrapper: taken several times per action)."""
        self._cond: threading.Condition | None = None
        """The condition on ``_lock`` threads wait with (:meth:`_sleep`); made by the first
        one (it exists whenever ``_sleepers`` > 0)."""
        self._inline = inner.instant_writes
        """The store applies a write in microseconds without I/O (``MemoryKV``): write
        it in the committing thread instead of handing it to a pool thread (the hand-off
        would cost more CPU than the write; nothing is waiting on a network)."""
        grouped = None if self._inline else committer_for(inner, pool)
        self._committer: GroupCommitter | None = None if grouped is None else grouped[0]
        """Where this gate's writes go when no thread must wait for them: the store's
        group commit (:mod:`actor_db.runtime.group_commit`), or ``None``: a flusher job
        of its own on the pool."""
        self._group_view: ActorKV | None = None if grouped is None else grouped[1]
        """The store's view of this actor, which a group write goes through."""
        self._joined = False
        """(Lock.) The gate holds the right to write (``_flushing``) and has joined its
        committer's next round, which has not taken it yet: a thread that must wait may
        withdraw it (clear this) and write itself instead."""
        self._loop_round: Any = None
        """The committer's round on the event loop that holds this gate's next batches
        (:class:`~actor_db.runtime.group_commit._LoopRound`), or ``None``."""
        self._pending: _Pending = ()
        """(Lock.) ``(sequence, batch, payload bytes)`` of every batch not durable yet (the
        one in flight too): a deque while there are any, the empty tuple when none (an
        idle awake actor's gate holds no queue object; :meth:`_enqueue`)."""
        self._pending_bytes = 0
        self._flushing = False
        self._sleepers = 0
        """Threads waiting on ``_cond`` (:meth:`drain`, backpressure)."""
        self._held = held or speculative
        self._release_scheduled = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] | None = None
        """(Event loop.) ``(sequence, future)`` of each caller waiting; ``None`` when none."""
        self.enqueued = 0
        """Sequence of the last batch handed to :meth:`write`."""
        self.durable = 0
        """Sequence of the last batch the KV acknowledged (all before it too)."""
        self.failure: BaseException | None = None
        """The error that broke the gate, or ``None``."""
        self.flushes = 0
        """KV writes the gate made (round trips; a failed one too)."""
        self.merged_batches = 0
        """Batches that went out merged into another one's write (round trips saved;
        counted when the write is made, so a refused merged write counts too)."""

    # ------------------------------------------------------------ KV protocol
    @property
    def identity(self) -> Hashable:
        return self.inner.identity

    @property
    def limits(self) -> KVLimits:
        return self._limits

    @property
    def fence_token(self) -> int | None:
        """The inner view's token; while speculative, 0: the ownership the creation will
        take with the commit (:meth:`commit_speculation`), so the database opened on
        this gate is its owner's, as it will be (:func:`vfs.protocol.holds_ownership`)."""
        token = self.inner.fence_token
        return 0 if token is None and self.speculative else token

    @property
    def reads(self) -> int:
        return self.inner.reads

    @property
    def writes(self) -> int:
        return self.inner.writes

    @property
    def round_trips(self) -> int:
        return self.inner.round_trips

    @property
    def pending(self) -> int:
        """Batches not durable yet."""
        return self.enqueued - self.durable if self.failure is None else 0

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def write(self, batch: WriteBatch) -> None:
        """Queue ``batch`` to be written after every batch queued before it; returns at
        once unless :attr:`max_pending_bytes` are pending (then it waits for the KV).

        A conditional batch (with expectations) is written before this returns:
        :meth:`_write_conditional`.

        :raises CommitFailedError: the gate is broken (an earlier write failed).
        :raises KVLimitError: the batch breaks the driver's limits (checked here, so the
            commit fails at once, as it would without a gate, and the gate stays whole).
        :raises ConditionFailedError: (a conditional batch) an expectation did not hold;
            nothing of it was applied and the gate stays whole.
        """
        size = self._check(batch) if self._checked else -1  # (-1: not counted yet; no limit to check)
        if self.speculative:
            self._write_speculative(batch, size if size >= 0 else batch.payload_bytes)
            return
        if batch.expect:
            self._write_conditional(batch)
            return
        join = False
        with self._lock:
            self._raise_if_failed()
            self.enqueued += 1
            seq = self.enqueued
            if self._inline and not self._flushing and not self._held and not self._pending:
                # Instant store, nothing queued: write it now, with no queue round
                # (and no count of its bytes: nothing waits behind it).
                self._flushing = True
                direct = True
            else:
                direct = False
                if size < 0:
                    size = batch.payload_bytes
                self._enqueue((seq, batch, size))
                self._pending_bytes += size
                over = self._pending_bytes > self.max_pending_bytes
                start = not self._flushing and (over or not self._held)
                if start:
                    self._flushing = True
                    if not (over or self._inline) and self._committer is not None:
                        join = self._mark_joined()
        if direct:
            self._write_now(batch, seq)
            return
        if join:
            self._committer.join(self)  # type: ignore[union-attr]
        elif start:
            if over or self._inline:
                self._flush()  # write it here: we wait for it anyway, or it costs nothing
            else:
                self._hand_off()
        if over:
            self._wait_below(self.max_pending_bytes)

    # ------------------------------------------------------------ speculation
    def _abort_speculation(self, why: str) -> SpeculationAbortedError:
        """Mark the speculation aborted; the error to raise (the VFS reports it to
        SQLite as an I/O error; the runtime then discards the speculation)."""
        self.speculation_aborted = True
        log.debug("actor %s: speculative first call aborted: %s", self.label, why)
        return SpeculationAbortedError(f"actor {self.label}: speculative first call needs the KV ({why})")

    def _write_speculative(self, batch: WriteBatch, size: int) -> None:
        """Queue ``batch`` on the empty image (never written before the commit)."""
        if self.speculation_aborted:
            raise self._abort_speculation("the speculation was discarded")
        if batch.expect:
            raise self._abort_speculation("a conditional write")
        with self._lock:
            if self._pending_bytes + size > self.max_pending_bytes:
                over = True
            else:
                over = False
                self.enqueued += 1
                self._enqueue((self.enqueued, batch, size))
                self._pending_bytes += size
        if over:
            raise self._abort_speculation(f"more than {self.max_pending_bytes} bytes to create")

    def commit_speculation(self, request: PreloadRequest) -> PreloadMap | None:
        """(Pool thread.) Send every pending batch as the actor's creation with the
        ownership claim, in ONE conditional round trip
        (:meth:`~actor_db.kv.ActorKV.create_or_preload`).

        :returns: ``None``: the actor did not exist and was created (every pending
            batch is durable; the gate is an ordinary held gate now); else the preload
            of ``request`` that came back (the actor exists; nothing was written and the
            speculation is discarded).
        :raises SpeculationAbortedError: the speculation was aborted, or the creation
            does not fit one atomic batch (nothing was sent).
        :raises KVError: the round trip failed (whether the creation was applied is
            unknown); :class:`~actor_db.errors.ActorOwnedElsewhereError`: the placement
            claim was refused.
        """
        if not self.speculative or self.speculation_aborted:
            raise self._abort_speculation("the speculation was aborted before its commit")
        with self._lock:
            batches = [batch for _, batch, _ in self._pending]
        image = WriteBatch()
        for batch in batches:
            image.merge(batch)
        # The actor is empty: its deletes change nothing, the merged puts are its keys.
        creation = WriteBatch(puts=image.puts)
        if any(key.startswith(DUE_MARK) for key in creation.puts):
            # The store-wide due index (actor_db.kv.due) is kept by the drivers' ordinary
            # writes, not by the creation step: a first call that schedules runs the
            # ordinary way, so its entries reach the index in the same atomic write.
            raise self._abort_speculation("the first call scheduled an entry")
        if not self._limits.batch_fits(creation.op_count, creation.payload_bytes):
            raise self._abort_speculation("the creation does not fit one atomic batch")
        self.flushes += 1
        self.merged_batches += max(len(batches) - 1, 0)
        found = self.inner.create_or_preload(request, creation)
        if found is None:
            with self._lock:
                self._pending = ()
                self._pending_bytes = 0
                self.durable = self.enqueued
                self.speculative = False
        else:
            self.discard_speculation()
        return found

    def discard_speculation(self) -> None:
        """Drop every pending batch of a speculative gate unwritten; later writes are
        refused (:class:`SpeculationAbortedError`). No-op for other gates."""
        if not self.speculative:
            return
        with self._lock:
            self.speculation_aborted = True
            self._pending = ()
            self._pending_bytes = 0
            self.enqueued = self.durable = 0  # (never written: nothing to count or wait for)
            self.flushes = self.merged_batches = 0

    def _write_now(self, batch: WriteBatch, seq: int) -> None:
        """(Holding the right to write, nothing else pending.) Write ``batch``, number
        ``seq``, in this thread; a failure breaks the gate as a flusher's would."""
        self.flushes += 1
        if not self._send(batch):
            return
        with self._lock:
            self.durable = seq
            self._flushing = False
            if self._sleepers:
                self._notify()
            schedule = bool(self._waiters) and not self._release_scheduled
            self._release_scheduled = self._release_scheduled or schedule
        if schedule:
            self._call_soon(self._release)

    def _write_conditional(self, batch: WriteBatch) -> None:
        """Write a conditional ``batch`` now, in this thread, after every pending batch
        is durable (its expectations see the state the caller's earlier batches made),
        with no flusher running meanwhile. A refused condition is the caller's error and
        leaves the gate whole; any other failure breaks it, as a failed flush does."""
        while True:
            self.drain()
            with self._lock:
                self._raise_if_failed()
                if not self._pending and not self._flushing:
                    self._flushing = True  # no flusher starts while this write is out
                    self.enqueued += 1
                    seq = self.enqueued
                    break
        self.flushes += 1
        try:
            self.inner.write(batch)
        except ConditionFailedError:
            with self._lock:
                self.durable = seq  # nothing to wait for: the batch was refused whole
                start = self._done_writing()
            if start:
                self._hand_off()
            raise
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise
            raise self.error() from exc
        with self._lock:
            self.durable = seq
            start = self._done_writing()
            schedule = bool(self._waiters) and not self._release_scheduled
            self._release_scheduled = self._release_scheduled or schedule
        if schedule:
            self._call_soon(self._release)
        if start:
            self._hand_off()

    def _done_writing(self) -> bool:
        """(Lock held.) End :meth:`_write_conditional`'s hold on flushing; whether a
        flusher must start for batches queued meanwhile (then it is marked running)."""
        start = bool(self._pending) and not self._held and self.failure is None
        self._flushing = start
        if self._sleepers:
            self._notify()
        return start

    def _check(self, batch: WriteBatch) -> int:
        """``batch``'s payload bytes, after checking it against the driver's limits."""
        limits = self._limits
        size = batch.payload_bytes
        max_value, max_key = limits.max_value_bytes, limits.max_key_bytes
        puts = batch.puts
        if max_value is not None and puts and max(map(len, puts.values())) > max_value:
            key, value = next((k, v) for k, v in puts.items() if len(v) > max_value)
            raise KVLimitError(f"value of {len(value)} bytes for key {key!r} exceeds the driver's limit "
                               f"of {max_value} bytes")
        if max_key is not None:
            for keys in (puts, batch.deletes, batch.expect):
                if keys and max(map(len, keys)) > max_key:
                    key = next(k for k in keys if len(k) > max_key)
                    raise KVLimitError(f"key of {len(key)} bytes exceeds the driver's limit of {max_key} bytes")
        if not limits.batch_fits(batch.op_count, size):
            raise KVLimitError(
                f"batch of {batch.op_count} operations / {size} bytes exceeds the driver's atomic-batch limit "
                f"({limits.max_batch_keys} operations / {limits.max_batch_bytes} bytes)")
        return size

    def open(self) -> None:
        """Stop holding (see ``held``): write what is queued, and every later batch.
        (No-op while speculative: only :meth:`commit_speculation` writes then.)"""
        if self.speculative:
            return
        with self._lock:
            self._held = False
            start = bool(self._pending) and not self._flushing and self.failure is None
            self._flushing = self._flushing or start
        if start:
            if self._inline:
                self._flush()
            else:
                self._hand_off()

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values for ``keys``, pending batches first; one KV round trip for the keys no
        pending batch touches (none when every key is answered)."""
        with self._lock:
            self._raise_if_failed()
            pending = [batch for _, batch, _ in self._pending]
            speculative = self.speculative
        if speculative and self.speculation_aborted:
            raise self._abort_speculation("a read after the speculation was discarded")
        if not pending and not speculative:
            return self.inner.get_many(keys)
        out: list[bytes | None] = [None] * len(keys)
        missing: list[int] = []
        for i, key in enumerate(keys):
            for batch in reversed(pending):
                hit, value = _lookup(batch, key)
                if hit:
                    out[i] = value
                    break
            else:
                missing.append(i)
        if missing and not speculative:  # (speculative: the actor is empty, so absent)
            values = self.inner.get_many([keys[i] for i in missing])
            for i, value in zip(missing, values):
                out[i] = value
        return out

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None,
             max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        """The KV's scan once every pending batch is durable (rare: the redo log's)."""
        self.drain()
        return self.inner.scan(start, end, limit=limit, max_bytes=max_bytes)

    def preload(self, request: PreloadRequest) -> PreloadMap:
        self.drain()
        return self.inner.preload(request)

    def acquire_and_preload(self, request: PreloadRequest) -> PreloadMap:
        self.drain()
        return self.inner.acquire_and_preload(request)

    def delete_all(self) -> None:
        self.drain()
        self.inner.delete_all()

    # ------------------------------------------------------------ flushing
    def _raise_if_failed(self) -> None:
        """(Lock held.) Raise the gate's error if it is broken."""
        if self.failure is not None:
            raise self.error()

    def error(self) -> BaseException:
        """The exception callers get from a broken gate: the :class:`FencedError` when
        another runtime took the actor over, else a :class:`CommitFailedError`."""
        failure = self.failure
        assert failure is not None
        fenced = fenced_cause(failure)
        if fenced is not None:
            exc: BaseException = FencedError(f"{fenced} (a write of actor {self.label} was refused whole: another "
                                             "runtime owns it now; the actor was closed here)")
        else:
            exc = CommitFailedError(
                f"actor {self.label}: a KV write that this action depends on failed "
                f"({type(failure).__name__}: {failure}); the actor's in-memory state was discarded and it "
                "re-opens from the KV on its next call; writes of actions that did not return are not "
                "known to be stored")
        exc.__cause__ = failure
        return exc

    def _hand_off(self) -> None:
        """(The caller just took the right to write, ``_flushing``.) Have the pending
        batches written without waiting here: in the committer's next round, or by a
        flusher job of this gate's own."""
        committer = self._committer
        if committer is None:
            self._pool.submit(self._flush)
            return
        with self._lock:
            self._mark_joined()
        committer.join(self)

    def _mark_joined(self) -> bool:
        """(Lock held, right to write taken.) Mark the gate joined to its committer's
        next round (the caller then calls ``committer.join``); a thread waiting for the
        writer may take the right back now (:meth:`_withdraw`). Returns True."""
        self._joined = True
        if self._sleepers:
            self._notify()
        return True

    def _withdraw(self) -> bool:
        """(Lock held.) Take the right to write back from the committer if this gate
        joined a round that has not taken it yet; whether it did (the caller then
        writes the pending batches itself)."""
        if self._joined:
            self._joined = False
            return True
        return False

    def _take_for_round(self) -> tuple[WriteBatch, int] | None:
        """(Committer, pool thread.) The merged batch this gate sends in the round that
        is starting and how many pending batches it holds, or ``None`` when the gate
        left (withdrawn, broken, nothing pending). Counted as the actor's KV write."""
        with self._lock:
            if not self._joined:
                return None
            self._joined = False
            if self.failure is not None or not self._pending:
                self._stop_flushing()
                return None
        step = self._next_write()
        self.inner.count_write()
        return step

    def _next_write(self) -> tuple[WriteBatch, int]:
        """(The writer.) The next write: the pending batches merged while they fit, and
        how many it holds. Only the writer removes batches, so the head stays put."""
        pending = self._pending  # (not replaced meanwhile: it holds batches, and only the writer removes them)
        assert isinstance(pending, collections.deque), "the writer writes only when batches are pending"
        if len(pending) == 1:
            merged, taken = pending[0][1], 1
        else:
            merged, taken = merge_run([batch for _, batch, _ in list(pending)], self._limits)
        self.flushes += 1
        self.merged_batches += taken - 1
        return merged, taken

    def _written(self, taken: int, error: BaseException | None) -> bool:
        """(Committer, pool thread.) The round's result for this gate's first ``taken``
        pending batches: durable, or ``error`` (the gate breaks). Whether waiters must
        be released: the committer then calls :meth:`_release` on the loop, one
        callback for the whole round
        (:func:`~actor_db.runtime.group_commit.release_all`)."""
        if error is not None:
            self._fail(error)
            return False
        done, release = self._retire(taken, rejoin=True, post=False)
        if not done:
            committer = self._committer
            assert committer is not None
            committer.join(self)
        return release

    def _retire(self, taken: int, rejoin: bool = False, post: bool = True) -> tuple[bool, bool]:
        """The first ``taken`` pending batches are durable: drop them, advance
        :attr:`durable`, wake threads that wait. Returns whether the writer's turn ends
        (nothing left, or broken; otherwise the writer keeps the right to write, and
        with ``rejoin`` the gate is marked joined in the same step, for the caller to
        join the committer's next round) and whether :meth:`_release` must run for
        waiting callers (with ``post`` it is posted to the loop here)."""
        with self._lock:
            pending = self._pending
            assert isinstance(pending, collections.deque), "batches were written: they were queued"
            freed = 0
            for _ in range(taken):
                seq, _, size = pending.popleft()
                freed += size
            if not pending:
                self._pending = ()
            self._pending_bytes -= freed
            self.durable = seq
            done = self.failure is not None or not pending
            if done:
                self._flushing = False
            else:
                self._joined = rejoin
            if self._sleepers:
                self._notify()
            schedule = bool(self._waiters) and not self._release_scheduled
            self._release_scheduled = self._release_scheduled or schedule
        if schedule and post:
            self._call_soon(self._release)
        return done, schedule

    def _flush(self) -> None:
        """The flusher: write pending batches (merged while they fit) until none is left
        or a write fails. Exactly one flusher runs at a time (``_flushing``)."""
        with self._lock:
            if self.failure is not None or not self._pending:
                self._stop_flushing()
                return
        while True:
            merged, taken = self._next_write()
            if not self._send(merged):
                return
            if self._retire(taken)[0]:
                return

    def _send(self, batch: WriteBatch) -> bool:
        """(The writer.) Write ``batch`` through the actor's view; whether it was
        applied. A failure breaks the gate (:meth:`_fail`); a ``BaseException`` that
        is not an ``Exception`` (KeyboardInterrupt) is re-raised after that."""
        try:
            self.inner.write(batch)
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise
            return False
        return True

    def _stop_flushing(self) -> None:
        """(Lock held.) The flusher stops; wake threads waiting for it."""
        self._flushing = False
        if self._sleepers:
            self._notify()

    def _enqueue(self, item: tuple[int, WriteBatch, int]) -> None:
        """(Lock held.) Append ``item`` to the pending batches (their deque is made here
        when there were none)."""
        pending = self._pending
        if not isinstance(pending, collections.deque):
            pending = self._pending = collections.deque()
        pending.append(item)

    def _notify(self) -> None:
        """(Lock held, ``_sleepers`` > 0.) Wake the threads waiting in :meth:`_sleep`."""
        cond = self._cond
        assert cond is not None, "a sleeper made the condition"
        cond.notify_all()

    def _sleep(self) -> None:
        """(Lock held.) Wait for the flusher's next step (counted, so it notifies only
        when someone waits)."""
        cond = self._cond
        if cond is None:
            cond = self._cond = threading.Condition(self._lock)
        self._sleepers += 1
        try:
            cond.wait()
        finally:
            self._sleepers -= 1

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            lost = len(self._pending)
            self.failure = exc
            self._pending = ()
            self._pending_bytes = 0
            self._joined = False
            self._stop_flushing()
        log.warning("actor %s: KV write failed with %d batch(es) not durable; the actor is reset: %s",
                    self.label, lost, exc)
        self._call_soon(self._broken)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        self._inbox.post(fn)  # (a closed loop drops it: nobody waits any more)

    def _release(self) -> None:
        """(Event loop.) Resolve the waiters whose sequence is durable now."""
        with self._lock:
            self._release_scheduled = False
            durable = self.durable
        waiters = self._waiters
        if waiters is None:
            return
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for seq, fut in waiters:
            if seq <= durable:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((seq, fut))
        self._waiters = keep or None

    def _broken(self) -> None:
        """(Event loop.) Fail every waiter, then tell the runtime."""
        waiters, self._waiters = self._waiters, None
        for _, fut in waiters or ():
            if not fut.done():
                fut.set_exception(self.error())
        if self._on_failure is not None and self.failure is not None:
            self._on_failure(self)

    # ------------------------------------------------------------ waiting
    async def wait(self, seq: int) -> None:
        """(Event loop.) Return once batch ``seq`` (and every one before it) is durable.

        :raises CommitFailedError: the gate broke before that (or
            :class:`FencedError`: another runtime owns the actor).
        """
        fut = self.waiter(seq)
        if fut is not None:
            await fut

    def waiter(self, seq: int) -> asyncio.Future[None] | None:
        """(Event loop.) A future resolved once batch ``seq`` (and every one before it)
        is durable, or failed with the gate's error if it breaks first; ``None`` when
        ``seq`` is durable already. (:meth:`wait` without a coroutine of its own: the
        runtime awaits it once per action.)

        :raises CommitFailedError: the gate is broken (or :class:`FencedError`).
        """
        if self.failure is not None:
            raise self.error()
        if seq <= self.durable:
            return None
        # Callers of one actor run on one loop at a time; follow it if the application
        # moved to another one (e.g. a second asyncio.run with the same registry).
        loop = running_loop(self._loop)  # (no system call when it is the gate's loop)
        if loop is None:
            raise RuntimeError("no running event loop")
        if loop is not self._loop:
            self._loop, self._inbox = loop, inbox_for(loop)
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters = [(seq, fut)]
        else:
            waiters.append((seq, fut))
        with self._lock:  # a flush may have finished before we registered
            if seq <= self.durable and not self._release_scheduled:
                self._release_scheduled = True
                loop.call_soon(self._release)
        return fut

    async def settle(self) -> None:
        """(Event loop.) Wait until nothing is pending or in flight (durable or broken);
        never raises the gate's error. Opens a held gate; discards a speculation."""
        self.discard_speculation()
        self.open()
        try:
            await self.wait(self.enqueued)
        except Exception:  # broken: nothing is in flight any more (the write returned)
            pass

    def drain(self) -> None:
        """(Any thread.) Block until every batch queued so far is durable, writing them
        here when no flusher runs.

        :raises CommitFailedError: the gate broke (or :class:`FencedError`).
        :raises SpeculationAbortedError: the gate is speculative (nothing may be written).
        """
        if self.speculative:
            raise self._abort_speculation("something must wait for the KV")
        with self._lock:
            self._raise_if_failed()
            target = self.enqueued
            if target <= self.durable:
                return
            self._wait_until(lambda: self.durable >= target)

    def _wait_below(self, bound: int) -> None:
        with self._lock:
            self._wait_until(lambda: self._pending_bytes <= bound)

    def _wait_until(self, done: Callable[[], bool]) -> None:
        """(Lock held.) Wait until ``done()`` or the gate breaks (then raise its error),
        writing the pending batches in this thread whenever no one else holds the
        right to write, or the gate joined a round that has not taken it yet, and
        finishing a round on the event loop that holds them when this thread is that
        loop's (:mod:`actor_db.runtime.group_commit`)."""
        while not done() and self.failure is None:
            if not self._flushing or self._withdraw():
                self._flushing = True
                self._unlocked(self._flush)
                continue
            round_ = self._loop_round
            if round_ is not None and round_.may_finish_here():
                # A round on the event loop holds our batches and this thread is that
                # loop's (or the loop stopped): nobody else would finish it.
                self._unlocked(round_.finish)
                continue
            self._sleep()
        self._raise_if_failed()

    def _unlocked(self, work: Callable[[], None]) -> None:
        """(Lock held.) Run ``work`` with the lock released (it takes the lock itself)."""
        self._lock.release()
        try:
            work()
        finally:
            self._lock.acquire()

    def describe(self) -> dict[str, Any]:
        """Counters for ``handle.metrics()``."""
        return {"enqueued": self.enqueued, "durable": self.durable, "flushes": self.flushes,
                "merged": self.merged_batches}
