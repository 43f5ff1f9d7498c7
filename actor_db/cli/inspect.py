"""``actor-db ls`` and ``actor-db inspect``: read-only looks at a store and an actor
(the work is :mod:`actor_db.ops.inspect`).

Invariant: actor ids and table names are printed through
:func:`~actor_db.cli.common.safe`, so a stored name cannot forge output lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any, Sequence

from actor_db.cli.common import Parents, opened_store, safe
from actor_db.ops.common import actor_id_for
from actor_db.ops.inspect import inspect_actor, list_actors, list_snapshot_copies

__all__ = ["register", "format_ls"]


def register(sub: Any, parents: Parents) -> None:
    """Add ``ls`` and ``inspect`` to the subcommands."""
    p = sub.add_parser("ls", parents=[parents.common], help="list actors and their database sizes",
                       description="List the actors in the store, sorted by id, with their database sizes "
                                   "(bytes and 4096-byte chunks; '-' = no database).")
    p.add_argument("--actor-type", metavar="NAME", help="only actors of this type")
    p.add_argument("--json", action="store_true", help="one JSON object per line, no header")
    p.add_argument("--all", action="store_true",
                   help="also list pinned snapshot copies (Redis) left by readers, e.g. a killed export")
    p.set_defaults(handler=_run_ls)

    p = sub.add_parser("inspect", parents=[parents.common, parents.actor_type],
                       help="meta, chunks, preload coverage, startup cost",
                       description="An actor database's meta record, chunks, redo-log state, preload "
                                   "coverage for a budget, and the KV round trips a cold start costs.")
    parents.add_actor(p)
    p.add_argument("--preload-sqlite-bytes", type=int, metavar="N",
                   help="SQLite chunk budget of the preload (default 786432 = 768 KiB)")
    p.add_argument("--preload-total-bytes", type=int, metavar="N",
                   help="total preload budget (default 1048576 = 1 MiB)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_run_inspect)


def _run_ls(args: argparse.Namespace) -> int:
    with opened_store(args) as store:
        rows = list_actors(store, args.actor_type)
        copies = list_snapshot_copies(store) if args.all else []
    if args.actor_type is not None:
        prefix = actor_id_for("x", args.actor_type)[:-1]
        copies = [c for c in copies if c["actor"].startswith(prefix)]
    if args.json:
        sys.stdout.writelines(json.dumps(row) + "\n" for row in rows)
        sys.stdout.writelines(json.dumps({"snapshot_copy": c["key"], "actor": c["actor"], "ttl_s": c["ttl_s"],
                                          "stale": c["stale"]}) + "\n" for c in copies)
        return 0
    format_ls(rows, sys.stdout)
    for c in copies:
        state = "stale: `actor-db rm` removes it" if c["stale"] else "in use by a reader"
        sys.stdout.write(f"snapshot copy of {safe(c['actor'])}: {safe(c['key'])} "
                         f"(expires in {c['ttl_s']} s; {state})\n")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    with opened_store(args) as store:
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        info = inspect_actor(kv, preload_sqlite_bytes=args.preload_sqlite_bytes,
                             preload_total_bytes=args.preload_total_bytes)
        info["history"] = _history(kv)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    else:
        _format_inspect(info, sys.stdout)
    return 0


def _history(kv: Any) -> dict[str, Any] | None:
    """The actor's history: the current bookmark (for ``actor-db restore --bookmark``)."""
    from actor_db.errors import HistoryError
    from actor_db.ops.history import bookmark

    try:
        return {"bookmark": bookmark(kv)}
    except HistoryError:
        return None


def format_ls(rows: Sequence[dict[str, Any]], out: IO[str]) -> None:
    """Aligned columns under a header row (``-``: the actor has no database)."""
    table = [("ACTOR", "DB_BYTES", "CHUNKS")] + [
        (safe(r["actor"]), "-" if r["db_bytes"] is None else str(r["db_bytes"]),
         "-" if r["chunks"] is None else str(r["chunks"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for actor, size, chunks in table:
        out.write(f"{actor:<{widths[0]}}  {size:>{widths[1]}}  {chunks:>{widths[2]}}\n")


def _format_inspect(info: dict[str, Any], out: IO[str]) -> None:
    p, s = info["preload"], info["startup"]
    lines = [
        f"actor:          {safe(info['actor'])}",
        f"meta:           format v{info['meta']['format_version']}, {info['meta']['db_bytes']} bytes",
        f"pages:          {info['pages']} x {info['page_size']} bytes",
        f"chunks:         {info['chunks']} stored, {info['chunks_expected']} expected "
        f"({info['orphan_chunks']} orphan, {info['missing_chunks']} missing)",
        f"redo log:       commit record {'PRESENT' if info['redo']['commit_record'] else 'none'}, "
        f"{info['redo']['staged_chunks']} staged chunks",
        "state record:   " + ("none" if info["state_record"] is None else
                              ", ".join(f"{k}={v}" for k, v in info["state_record"].items())),
        f"tables:         {safe(', '.join(info['tables'])) or '(none)'}",
        f"preload:        {p['chunks']} of {info['chunks_expected']} chunks ({p['bytes']} bytes, "
        f"{p['coverage']:.0%}) within {p['sqlite_budget_bytes']} bytes of SQLite budget / "
        f"{p['total_budget_bytes']} total" + (" - whole database" if p["whole_database"] else ""),
        f"startup:        {s['kv_round_trips']} KV round trips to open and read the schema "
        f"(preload 1, live reads {s['live_reads']}, preload hits {s['preload_hits']})",
        "history:        " + ("none" if not info.get("history") else f"bookmark {info['history']['bookmark']}"),
    ]
    out.write("\n".join(lines) + "\n")
