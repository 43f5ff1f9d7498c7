"""``actor-db backup`` (the work is :mod:`actor_db.ops.backup`; ``restore --from`` is in
:mod:`actor_db.cli.history`).

Invariants: a run ships only what the bucket does not hold yet, in commit order, so it
can be stopped (Ctrl-C, ``kill -9``) and restarted at any point without gaps or
duplicates; ``--follow`` repeats it every ``--interval`` seconds.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from actor_db.cli.common import Parents, opened_store
from actor_db.ops import backup
from actor_db.ops.common import actor_id_for

__all__ = ["register"]


def register(sub: Any, parents: Parents) -> None:
    """Add ``backup`` to the subcommands."""
    p = sub.add_parser("backup", parents=[parents.common, parents.actor_type],
                       help="ship actors' databases and history to S3-compatible storage",
                       usage="%(prog)s [options] --to s3://BUCKET/PREFIX [ACTOR ...] [--follow]",
                       description="Ship base images and every commit's changes of ACTORs (default: every "
                                   "actor with a database) to s3://BUCKET/PREFIX; restartable. "
                                   "`actor-db restore --from URL` rebuilds them.")
    p.add_argument("actors", nargs="*", metavar="ACTOR", help="actor ids (or keys, with --actor-type)")
    p.add_argument("--to", required=True, metavar="URL", help="s3://BUCKET/PREFIX")
    p.add_argument("--endpoint-url", metavar="URL", help="an S3-compatible endpoint (default: AWS, $AWS_ENDPOINT_URL)")
    p.add_argument("--follow", action="store_true", help="keep shipping new commits")
    p.add_argument("--interval", type=float, default=0.2, metavar="S", help="--follow: seconds between runs (0.2)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="--follow: stop after S seconds")
    p.set_defaults(handler=_run_backup)


def _run_backup(args: argparse.Namespace) -> int:
    loc = backup.parse_location(args.to, endpoint_url=args.endpoint_url)
    with opened_store(args) as store:
        actors = [actor_id_for(a, args.actor_type) for a in args.actors] or None
        if args.follow:
            runs = backup.follow(store, loc, interval_s=args.interval, duration_s=args.duration, actors=actors)
            sys.stderr.write(f"backup: {runs} runs\n")
            return 0
        results = backup.backup_store(store, loc, actors)
        for r in results:
            sys.stdout.write(f"{r.actor_id}\tbases={r.bases}\tcommits={r.logs}\tbytes={r.bytes}\n")
        return 0
