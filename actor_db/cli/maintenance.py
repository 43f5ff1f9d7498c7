"""``actor-db rm``, ``actor-db integrity`` and ``actor-db compact`` (the work is
:mod:`actor_db.ops.maintenance` and :mod:`actor_db.compact`).

Invariants: ``rm`` asks first (reads y on stdin) unless ``-y``; ``integrity`` exits 1
if any database fails; actor ids are printed through :func:`~actor_db.cli.common.safe`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

from actor_db.cli.common import CLIError, Parents, confirm, human, opened_store, safe, store_spec
from actor_db.ops.common import actor_has_keys, actor_id_for, database_size, not_found
from actor_db.ops.inspect import list_actors, list_snapshot_copies
from actor_db.ops.maintenance import check_integrity, remove_actor

__all__ = ["register"]


def register(sub: Any, parents: Parents) -> None:
    """Add ``rm``, ``integrity`` and ``compact`` to the subcommands."""
    p = sub.add_parser("rm", parents=[parents.common, parents.actor_type], help="delete an actor (all its keys)",
                       description="Delete every key of an actor: its database, state and staging. "
                                   "Asks first (reads y on stdin) unless -y.")
    parents.add_actor(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    parents.add_timeout(p)
    p.set_defaults(handler=_run_rm)

    p = sub.add_parser("integrity", parents=[parents.common, parents.actor_type],
                       help="PRAGMA integrity_check, one or all actors",
                       description="Run PRAGMA integrity_check on one actor's database, or on every "
                                   "actor's; exit status 1 if any fails.")
    p.add_argument("actor", nargs="?", metavar="ACTOR", help="actor id (default: every actor with a database)")
    p.set_defaults(handler=_run_integrity)

    p = sub.add_parser("compact", parents=[parents.common], help="shrink an LMDB store's file to its data",
                       description="Copy the LMDB store without its free pages (lmdb's compacting copy) "
                                   "and swap the copy in. No other process may have the store open.")
    p.set_defaults(handler=_run_compact)


def _run_rm(args: argparse.Namespace) -> int:
    with opened_store(args) as store:
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        copies = [row for row in list_snapshot_copies(store, kv.actor_id) if row["stale"]]
        if not actor_has_keys(kv):
            if not copies:
                raise not_found(kv)
            what = f"no keys, {len(copies)} leftover snapshot cop{'ies' if len(copies) != 1 else 'y'}"
        else:
            size = database_size(kv)
            what = "no database" if not size else f"a database of {size} bytes"
            what += ", its state and all its keys"
        if not args.yes and not confirm(f"delete actor {kv.actor_id!r} ({what})?"):
            raise CLIError(f"actor {kv.actor_id!r} not deleted (answer y, or pass -y)")
        dropped = remove_actor(kv, lease_timeout_s=args.timeout)
        extra = f" and {dropped} leftover snapshot cop{'ies' if dropped != 1 else 'y'}" if dropped else ""
        sys.stderr.write(f"deleted actor {kv.actor_id!r}{extra}\n")
        return 0


def _run_integrity(args: argparse.Namespace) -> int:
    with opened_store(args) as store:
        return run_integrity(store, args.actor, args.actor_type, sys.stdout)


def run_integrity(store: Any, actor: str | None, actor_type: str | None, out: IO[str]) -> int:
    """Check one actor (or every actor with a database), one line each on ``out``.

    :raises CLIError: any failed (after all were printed).
    """
    if actor is not None:
        ids = [actor_id_for(actor, actor_type)]
    else:
        ids = [row["actor"] for row in list_actors(store, actor_type) if row["db_bytes"]]
    failed = 0
    for actor_id in ids:
        problems = check_integrity(store.actor(actor_id))
        if problems == ["ok"]:
            out.write(f"{safe(actor_id)}: ok\n")
            continue
        failed += 1
        out.write(f"{safe(actor_id)}: FAILED ({len(problems)} problem{'s' if len(problems) != 1 else ''})\n")
        out.writelines(f"    {safe(problem)}\n" for problem in problems)
    if failed:
        raise CLIError(f"{failed} of {len(ids)} database{'s' if len(ids) != 1 else ''} failed PRAGMA integrity_check")
    if not ids:
        out.write("no actor has a database\n")
    return 0


def _run_compact(args: argparse.Namespace) -> int:
    from actor_db.compact import CompactError, compact_lmdb

    spec = store_spec(args)
    if not spec.startswith("lmdb:") or not spec[len("lmdb:"):]:
        raise CLIError(f"compact works on LMDB stores (--kv lmdb:PATH), not {spec!r}")
    path = os.path.abspath(os.path.expanduser(spec[len("lmdb:"):]))
    try:
        result = compact_lmdb(path)
    except CompactError as exc:
        raise CLIError(str(exc)) from exc
    sys.stderr.write(f"compacted {result.path}: {human(result.bytes_before)} -> {human(result.bytes_after)}\n")
    return 0
