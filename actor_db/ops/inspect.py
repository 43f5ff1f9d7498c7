"""Read-only looks at a store: the actors it holds (``list_actors``) and what one actor's
database looks like in the KV and what its start costs (``inspect_actor``).

Invariants: nothing here writes to the store; every multi-call read of an actor goes
through one snapshot (:func:`~actor_db.ops.common.read_consistently`), so a live actor
may be inspected while its owner commits.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import vfs
from vfs.keys import CHUNK_SIZE, COMMIT_RECORD_KEY, FILE_MAIN, chunk_range, staged_range

from actor_db.ops.common import actor_id_for, database_size, read_consistently, require_database

log = logging.getLogger(__name__)

__all__ = ["list_actors", "inspect_actor", "list_snapshot_copies"]


def list_actors(store: Any, actor_type: str | None = None) -> list[dict[str, Any]]:
    """One row per actor, sorted by actor id, with keys: ``actor``, ``db_bytes``
    (``None``: no database), ``chunks`` (the size in 4096-byte chunks). ``actor_type``
    keeps that type's actors. One round trip per actor plus the listing."""
    rows: list[dict[str, Any]] = []
    prefix = None if actor_type is None else actor_id_for("x", actor_type)[:-1]
    for actor_id in sorted(store.actor_ids()):
        if prefix is not None and not actor_id.startswith(prefix):
            continue
        size = database_size(store.actor(actor_id))
        rows.append({"actor": actor_id, "db_bytes": size,
                     "chunks": None if size is None else -(-size // CHUNK_SIZE)})
    return rows


def list_snapshot_copies(store: Any, actor_id: str | None = None) -> list[dict[str, Any]]:
    """Pinned snapshot copies the store holds (Redis: server-side copies that a reader
    such as ``export`` took of a busy actor; one killed mid-read leaves its copy until
    it expires): dicts with ``actor``, ``key``, ``ttl_s``, ``stale``. ``[]`` for stores
    without such copies (memory, LMDB)."""
    listing = getattr(store, "snapshot_copies", None)
    return [] if listing is None else list(listing(actor_id))


def _count_keys(kv: Any, start: bytes, end: bytes, batch: int = 1024) -> tuple[int, list[int]]:
    """Number of keys in ``[start, end)`` and their chunk indices (scans in batches)."""
    indices: list[int] = []
    while True:
        pairs = kv.scan(start, end, limit=batch)
        if not pairs:
            return len(indices), indices
        indices.extend(int.from_bytes(k[-4:], "big") for k, _ in pairs)
        start = pairs[-1][0] + b"\x00"
        if len(pairs) < batch:
            return len(indices), indices


def inspect_actor(kv: Any, *, preload_sqlite_bytes: int | None = None,
                  preload_total_bytes: int | None = None) -> dict[str, Any]:
    """What an actor's database looks like in the KV and what its start would cost.

    Everything is read from ONE committed state (a snapshot, retried when a commit lands
    in between) and nothing is written, so inspecting a live actor is safe.
    The startup figures are measured now: the runtime's one-call preload request for
    the given budgets (defaults: the runtime's, 768 KiB of SQLite chunks within 1 MiB),
    then an open and a read of the schema on that preload, counting KV round trips.

    :raises ActorNotFoundError: the actor has no database.
    """
    from actor_db.runtime.actor import ActorOptions
    from actor_db.runtime.keys import STATE_KEY
    from actor_db.runtime.metrics import CountingKV
    from actor_db.runtime.startup import preload_request

    options = ActorOptions(**{k: v for k, v in (("preload_max_sqlite_bytes", preload_sqlite_bytes),
                                                 ("preload_max_bytes", preload_total_bytes)) if v is not None})

    def read(snap: Any) -> dict[str, Any]:
        size = require_database(snap)
        n_chunks, indices = _count_keys(snap, *chunk_range(FILE_MAIN))
        staged, _ = _count_keys(snap, *staged_range())
        record, state = snap.get_many([COMMIT_RECORD_KEY, STATE_KEY])
        head = snap.get_many([chunk_range(FILE_MAIN)[0]])[0] or b""
        counting = CountingKV(snap)
        preload = counting.preload(preload_request(options, has_db=True))
        start, end = chunk_range(FILE_MAIN)
        preloaded = preload.items(start, end)
        con = vfs.connect(counting, preload=preload, readonly=True)
        try:
            con.execute("PRAGMA user_version").fetchall()
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
            stats = con.stats.snapshot()
        finally:
            con.close()
        return dict(size=size, n_chunks=n_chunks, indices=indices, staged=staged, record=record, state=state,
                    head=head, preloaded=preloaded, tables=tables, stats=stats, round_trips=counting.round_trips)

    seen = read_consistently(kv, read)
    size, n_chunks, indices, staged = seen["size"], seen["n_chunks"], seen["indices"], seen["staged"]
    record, state, head, preloaded = seen["record"], seen["state"], seen["head"], seen["preloaded"]
    tables, stats = seen["tables"], seen["stats"]
    expected = -(-size // CHUNK_SIZE)
    page_size = int.from_bytes(head[16:18], "big") if len(head) >= 18 else 0
    page_size = 65536 if page_size == 1 else page_size
    state_info: dict[str, Any] | None = None
    if state is not None:
        try:
            decoded = json.loads(state)
            state_info = {"type": decoded.get("type"), "key": decoded.get("key"),
                          "created_ms": decoded.get("created_ms"), "bytes": len(state)}
        except (ValueError, AttributeError):
            state_info = {"bytes": len(state), "format": "unknown"}
    return {
        "actor": kv.actor_id,
        "meta": {"format_version": 1, "db_bytes": size},
        "page_size": page_size,
        "pages": size // page_size if page_size else None,
        "chunks": n_chunks,
        "chunks_expected": expected,
        "orphan_chunks": sum(1 for i in indices if i >= expected),
        "missing_chunks": expected - sum(1 for i in indices if i < expected),
        "redo": {"commit_record": record is not None, "staged_chunks": staged},
        "state_record": state_info,
        "tables": tables,
        "preload": {
            "sqlite_budget_bytes": options.preload_max_sqlite_bytes,
            "total_budget_bytes": options.preload_max_bytes,
            "chunks": len(preloaded),
            "bytes": sum(len(v) for _, v in preloaded),
            "coverage": round(len(preloaded) / expected, 4) if expected else 1.0,
            "whole_database": len(preloaded) >= expected,
        },
        "startup": {
            "kv_round_trips": seen["round_trips"],
            "preload_round_trips": 1,
            "live_reads": stats.live_reads,
            "preload_hits": stats.preload_hits,
            "cache_hits": stats.cache_hits,
        },
    }
