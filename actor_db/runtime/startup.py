"""Starting an actor: ONE KV call for everything it needs, then open, create, migrate.

The sequence (DESIGN.md sections 2-4, issue 3):

1. **preload** — takes single-writer ownership (a fencing token, see
   :mod:`actor_db.kv.fencing`) and runs one ``PreloadRequest`` in the same call: the state key ``[1]`` and the VFS's exact keys
   (main meta, commit record), then the SQLite chunks (partial, lowest first, 768 KiB),
   connections (64 KiB) and workflows (128 KiB, both all-or-nothing), all under the
   1 MiB total, then the schedule records (:data:`PRELOAD_SCHEDULE_BYTES`, all-or-nothing,
   within the total). Budgets come from :class:`~actor_db.runtime.actor.ActorOptions`.
2. **load state** — the state key is found (existing actor) or confirmed absent (new
   actor: the state factory runs).
3. **open db** — ``vfs.connect(kv, preload=...)``: 0 round trips when the preload
   covers the meta, record and head chunk.
4. **create** (new actors only) — the database's first page, its meta and the state
   record go out in ONE atomic batch (the VFS commit hook carries the record).
5. **migrate** — if a version is pending or ``on_migrate`` is set, the preload's
   SQLite chunks are cleared first; otherwise the preload is kept, so the first query
   after a wake is still answered from it.

Waking an existing actor whose database fits the budget therefore costs exactly 1 KV
round trip before its first query; creating one costs 2 (preload + one batch) before
migrations. A read beyond the preload before migrations is logged as a warning.

A *speculative* start (a new actor's first call, :mod:`actor_db.runtime.instance`) skips
step 1: the preload is the one an EMPTY actor would get (:func:`empty_preload`, no KV
call), the view is a speculative output gate, and steps 2-5 run with no round trip; the
runtime then sends the creation with the ownership claim in one call. A start may also
be given the preload another call already brought (the actor turned out to exist).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import vfs
from vfs.preload import ABSENT, NOT_LOADED, PreloadMap, evaluate_preload
from vfs.protocol import PrefixBudget, PreloadRequest

from actor_db.runtime.database import ActorConnection, Database
from actor_db.runtime.keys import CONNECTIONS_RANGE, SCHEDULE_RECORDS, STATE_KEY, WORKFLOWS_RANGE
from actor_db.runtime.gate import OutputGate
from actor_db.runtime.metrics import CountingKV, StartupMetrics
from actor_db.runtime.migrations import DEFAULT_APPLICATION_ID, run_migrations
from actor_db.runtime.schedule import decode_records
from actor_db.runtime.state import PersistedState

if TYPE_CHECKING:
    from actor_db.runtime.actor import ActorDefinition, ActorOptions
    from actor_db.runtime.worker import Worker

log = logging.getLogger(__name__)

__all__ = ["preload_request", "empty_preload", "preloaded_entries", "start_actor", "PRELOAD_SCHEDULE_BYTES"]

PRELOAD_SCHEDULE_BYTES = 32 * 1024
"""Budget of the schedule records in the startup preload (all-or-nothing, after the
other ranges, within the total): an actor with up to ~150 entries gets them with its
ownership, so the due entry that wakes it fires with no extra read."""


@functools.lru_cache(maxsize=256)
def preload_request(options: ActorOptions, has_db: bool) -> PreloadRequest:
    """The one-call startup request for an actor with these budgets (frozen: one
    object per type's options, made once, not at every wake)."""
    keys: tuple[bytes, ...] = (STATE_KEY,)
    ranges: list[PrefixBudget] = []
    if has_db:
        keys += vfs.sqlite_preload_keys()
        ranges.extend(vfs.sqlite_preload_ranges(options.preload_max_sqlite_bytes,
                                                interior_max_bytes=options.preload_max_interior_bytes))
    ranges.append(PrefixBudget(CONNECTIONS_RANGE, options.preload_max_connections_bytes, partial=False))
    ranges.append(PrefixBudget(WORKFLOWS_RANGE, options.preload_max_workflow_bytes, partial=False))
    ranges.append(PrefixBudget(SCHEDULE_RECORDS, PRELOAD_SCHEDULE_BYTES, partial=False))
    return PreloadRequest(keys=keys, ranges=tuple(ranges), max_total_bytes=options.preload_max_bytes)


def preloaded_entries(preload: PreloadMap) -> dict[str, bytes] | None:
    """The actor's committed schedule records by entry id (:func:`decode_records`) from
    its startup preload, or ``None`` when
    the preload does not cover them all (more than :data:`PRELOAD_SCHEDULE_BYTES`, or
    a preload without the range): they are read at their first need then. The preload
    was read in the same atomic step as the ownership, so these are exactly the
    committed ones (the awake actor is their only writer from then on)."""
    start, end = SCHEDULE_RECORDS.start, SCHEDULE_RECORDS.end
    if preload.covers(start, end):
        return decode_records(preload.items(start, end))
    return None


def empty_preload(request: PreloadRequest) -> PreloadMap:
    """The preload ``request`` brings for an actor that has no key at all (no KV call):
    every requested key and scanned range confirmed absent, as a driver would report."""
    return evaluate_preload(request, lambda key: None, lambda start, end: iter(()))


def _preload(kv: CountingKV | OutputGate, request: PreloadRequest, metrics: StartupMetrics) -> PreloadMap:
    with metrics.internal("preload"):
        # Ownership (the fencing token) and the preload come in the same single call.
        return kv.acquire_and_preload(request)


def _open(core: ActorConnection, preload: PreloadMap, config_options: dict[str, Any], is_new: bool,
          metrics: StartupMetrics, cache_pages: int | None) -> int:
    """Open (and for a new actor create) the database; returns its user_version."""
    with metrics.internal("open_db"):
        core.open(preload, config_options, cache_pages)
    if is_new:
        with metrics.internal("create"):
            core.create(DEFAULT_APPLICATION_ID)
    return core.user_version()


def _preload_and_open(kv: CountingKV | OutputGate, request: PreloadRequest, metrics: StartupMetrics,
                      definition: ActorDefinition, key: str, core_factory: Any, vfs_options: dict[str, Any],
                      cache_pages: int | None) -> tuple[PreloadMap, int, ActorConnection | None, int]:
    """(One worker job.) Steps 1-3 for an actor that exists: the preload, its state,
    the database's open, with no hop back to the event loop between them (they need
    nothing of it: no user code runs for an existing actor before its migrations).

    :returns: ``(preload, reads after it, core, user_version)``; ``core`` is ``None``
        (nothing done after the preload) when the state record is absent (a new actor:
        its state factory runs on the event loop) or was not answered.
    """
    preload = _preload(kv, request, metrics)
    reads0 = kv.reads
    raw = preload.lookup(STATE_KEY)
    if not isinstance(raw, bytes):
        return preload, reads0, None, 0
    with metrics.internal("load_state"):
        state = PersistedState.decode(definition.name, key, raw)
    core = _core_for(core_factory, state, preload)
    return preload, reads0, core, _open(core, preload, vfs_options, False, metrics, cache_pages)


def _core_for(core_factory: Any, state: PersistedState, preload: PreloadMap) -> ActorConnection:
    """The actor's connection object for ``state``, knowing its committed schedule
    entries from the preload when it holds them all (a due entry that wakes the actor
    then fires with no read: issue 23)."""
    core: ActorConnection = core_factory(state)
    if core.schedule.known is None:
        core.schedule.known = preloaded_entries(preload)
    return core


def _create_without_db(core: ActorConnection, metrics: StartupMetrics) -> None:
    with metrics.internal("create"):
        core.create_without_db()


async def _load_and_open(definition: ActorDefinition, key: str, kv: CountingKV | OutputGate, worker: Worker,
                         core_factory: Any, preload: PreloadMap, metrics: StartupMetrics,
                         vfs_options: dict[str, Any]) -> tuple[ActorConnection, bool, int]:
    """Steps 2-4 after the preload: the state (the state factory of a new actor runs
    here, on the event loop), then the database's open (and a new one's creation) on
    the worker. Returns ``(core, is_new, user_version)``."""
    label = f"{definition.name}/{key}"
    with metrics.internal("load_state"):
        raw = preload.lookup(STATE_KEY)
        if raw is NOT_LOADED:  # an exact key is always answered; a driver bug if not
            log.warning("actor %s: the preload did not answer the state key; reading it live", label)
            live = (await worker.run(kv.get_many, [STATE_KEY]))[0]
            raw = ABSENT if live is None else live
    is_new = raw is ABSENT
    metrics.is_new = is_new
    if is_new:
        with metrics.user("state_factory"):
            initial = definition.state_factory() if definition.state_factory is not None else None
        state = PersistedState.new(definition.name, key, initial)
        state.encode()  # a non-JSON initial state fails here, before anything is written
    else:
        assert isinstance(raw, bytes)
        state = PersistedState.decode(definition.name, key, raw)
    core = _core_for(core_factory, state, preload)
    version = 0
    if definition.database is not None:
        version = await worker.run(_open, core, preload, vfs_options, is_new, metrics,
                                   definition.options.sqlite_cache_pages)
    elif is_new:
        await worker.run(_create_without_db, core, metrics)
    return core, is_new, version


async def start_actor(
    definition: ActorDefinition,
    key: str,
    kv: CountingKV | OutputGate,
    worker: Worker,
    core_factory: Any,
    database: Database,
    *,
    preload: PreloadMap | None = None,
    speculative: bool = False,
) -> tuple[ActorConnection, StartupMetrics]:
    """Run steps 1-5 above on ``worker``; returns the ready connection and the metrics.

    The caller closes the worker (and the connection) if this raises.

    :param preload: the startup preload, already brought (with ownership) by another
        call: step 1 is skipped.
    :param speculative: start as a new, empty actor with no KV call (``kv`` must be a
        speculative :class:`OutputGate`); step 1 is skipped.

    :param core_factory: ``core_factory(state) -> ActorConnection`` (the instance keeps
        a reference so ``database`` finds it).
    :raises MigrationError: a migration failed.
    :raises ConfigurationError: the stored record belongs to another actor type.
    :raises KVError: the preload or a write failed.
    """
    metrics = StartupMetrics()
    started = time.perf_counter()
    trips0 = kv.round_trips
    label = f"{definition.name}/{key}"
    config = definition.database

    request = preload_request(definition.options, config is not None)
    vfs_options: dict[str, Any] = {}
    if config is not None:
        vfs_options = dict(config.vfs_options, hint_interior_max_bytes=definition.options.preload_max_interior_bytes,
                           history=config.history)
    opened: ActorConnection | None = None
    version = 0
    if speculative:
        preload = empty_preload(request)
        reads0 = kv.reads
    elif preload is None and config is not None:
        # An existing actor's preload, state and open in one worker job (one hop).
        preload, reads0, opened, version = await worker.run(
            _preload_and_open, kv, request, metrics, definition, key, core_factory, vfs_options,
            definition.options.sqlite_cache_pages)
    else:
        if preload is None:
            preload = await worker.run(_preload, kv, request, metrics)
        reads0 = kv.reads
    if opened is not None:
        core = opened
        metrics.is_new = is_new = False
    else:
        assert preload is not None
        core, is_new, version = await _load_and_open(definition, key, kv, worker, core_factory, preload, metrics,
                                                      vfs_options)
    extra_reads = kv.reads - reads0
    if extra_reads > 0:
        log.warning("actor %s: startup made %d KV read(s) beyond the preload before migrations "
                    "(the preload missed data it should cover; raise preload_max_sqlite_bytes?)", label, extra_reads)

    if config is not None and (version != config.version or config.on_migrate is not None):
        # Migrations may rewrite any page: from here on reads go to the cache/KV.
        await worker.run(core.clear_sqlite_preload)
        with metrics.internal("migrate"):
            await run_migrations(worker, core, database, config, version, metrics.user)

    metrics.total_ms = (time.perf_counter() - started) * 1000.0
    metrics.kv_round_trips = kv.round_trips - trips0
    log.debug("actor %s started (new=%s) in %.3f ms with %d KV round trips", label, is_new,
              metrics.total_ms, metrics.kv_round_trips)
    return core, metrics
