"""``actor-db restore`` and ``actor-db branch`` (the work is :mod:`actor_db.ops.history`;
docs/history.md; ``actor-db inspect ACTOR`` prints the current bookmark).

Invariants: a restore or branch is one new commit made through the writer lease and
ownership (a runtime still serving the actor is fenced off and fails its next commit;
a live ``actor-db serve`` node is refused unless ``--force``); a TIME is epoch seconds
or an ISO 8601 time with a zone (``Z`` or ``+01:00``): a time without a zone is
refused rather than guessed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from actor_db.cli.common import CLIError, Parents, opened_store
from actor_db.ops import history as ops_history
from actor_db.ops.common import actor_id_for, live_owner

__all__ = ["register", "parse_time"]


def parse_time(text: str) -> float | datetime:
    """``TIME`` of the command line: epoch seconds, or ISO 8601 with a zone.

    :raises CLIError: neither, or no zone.
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CLIError(f"{text!r} is not a time: give epoch seconds or ISO 8601 with a zone "
                       "(2026-12-07T10:00:00Z)") from None
    if when.tzinfo is None:
        raise CLIError(f"{text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return when


def register(sub: Any, parents: Parents) -> None:
    """Add ``restore`` and ``branch`` to the subcommands."""
    p = sub.add_parser("restore", parents=[parents.common, parents.actor_type],
                       help="make a past state of an actor's database current",
                       usage="%(prog)s [options] ACTOR (--bookmark B | --at TIME)\n"
                             "       %(prog)s [options] [ACTOR] --from s3://BUCKET/PREFIX [--at TIME]",
                       description="Make a past state current, as a new commit (undo it by restoring the "
                                   "bookmark printed as 'before'). Stop or sleep the app serving the actor first. "
                                   "With --from: rebuild ACTOR (default: every actor) from a backup.")
    p.add_argument("actor", nargs="?", metavar="ACTOR", help="actor id (or key, with --actor-type)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--bookmark", metavar="B", help="a bookmark (actor-db inspect, c.db.bookmark())")
    target.add_argument("--at", metavar="TIME", help="the last state at or before TIME")
    p.add_argument("--from", dest="source", metavar="URL", help="s3://BUCKET/PREFIX of an actor-db backup")
    p.add_argument("--endpoint-url", metavar="URL", help="with --from: an S3-compatible endpoint")
    p.add_argument("--force", action="store_true",
                   help="even if a live serve node owns the actor; with --from: replace existing databases")
    parents.add_timeout(p)
    p.set_defaults(handler=_run_restore)

    p = sub.add_parser("branch", parents=[parents.common, parents.actor_type],
                       help="create a new actor from an actor's current or past state",
                       usage="%(prog)s [options] ACTOR NEW [--at TIME | --bookmark B]",
                       description="Create actor NEW whose database is ACTOR's state (now, at a bookmark or "
                                   "at a time); ACTOR is only read.")
    parents.add_actor(p)
    p.add_argument("new", metavar="NEW", help="the new actor (id, or key with --actor-type)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--bookmark", metavar="B", help="a bookmark of ACTOR")
    target.add_argument("--at", metavar="TIME", help="the last state at or before TIME")
    p.add_argument("--force", action="store_true", help="replace NEW's database if it has one")
    parents.add_timeout(p)
    p.set_defaults(handler=_run_branch)


def _run_restore(args: argparse.Namespace) -> int:
    at = parse_time(args.at) if args.at is not None else None
    if args.source is not None:
        return _restore_from_backup(args, at)
    if args.actor is None or (args.bookmark is None and at is None):
        raise CLIError("restore needs ACTOR and --bookmark B or --at TIME (or --from s3://... for a backup)")
    with opened_store(args) as store:
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        if not args.force:
            node = live_owner(kv)
            if node is not None:
                raise CLIError(f"actor {kv.actor_id!r} is served by the live node {node!r} (actor-db serve): "
                               "restore through that node's handle, or pass --force; nothing was changed")
        result = ops_history.restore(kv, bookmark=args.bookmark, at=at, lease_timeout_s=args.timeout)
        sys.stderr.write(f"restored actor {kv.actor_id!r} to {result.restored} ({result.size} bytes)\n")
        sys.stdout.write(f"before {result.before}\nafter {result.after}\n")
        return 0


def _run_branch(args: argparse.Namespace) -> int:
    at = parse_time(args.at) if args.at is not None else None
    with opened_store(args) as store:
        source = store.actor(actor_id_for(args.actor, args.actor_type))
        dest = store.actor(actor_id_for(args.new, args.actor_type))
        result = ops_history.branch(source, dest, bookmark=args.bookmark, at=at, force=args.force,
                                    lease_timeout_s=args.timeout)
        sys.stderr.write(f"branched actor {dest.actor_id!r} from {source.actor_id!r} at {result.restored} "
                         f"({result.size} bytes)\n")
        sys.stdout.write(result.after + "\n")
        return 0


def _restore_from_backup(args: argparse.Namespace, at: float | datetime | None) -> int:
    from actor_db.ops import backup

    if args.bookmark is not None:
        raise CLIError("--bookmark names a state of the store's own history; with --from use --at TIME")
    loc = backup.parse_location(args.source, endpoint_url=args.endpoint_url)
    with opened_store(args, create=True) as store:  # an empty machine: the store is made here
        if args.actor is not None:
            actor_id = actor_id_for(args.actor, args.actor_type)
            sizes = {actor_id: backup.restore_actor(loc, actor_id, store.actor(actor_id), at=at, force=args.force)}
        else:
            sizes = backup.restore_store(loc, store, at=at, force=args.force)
        for actor_id, size in sizes.items():
            sys.stdout.write(f"{actor_id}\t{size}\n")
        sys.stderr.write(f"restored {len(sizes)} actor(s) from {args.source}\n")
        return 0
