"""``actor-db serve``: the command group that serves a Registry over HTTP (issue 22).

The command itself lives with the server, in :mod:`actor_db.serve.command`; this module
only registers it in the ``actor-db`` parser.
"""

from __future__ import annotations

import argparse
from typing import Any

from actor_db.cli.common import Parents

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from actor_db.serve import command

    return command.run(args)


def register(sub: Any, parents: Parents) -> None:
    """Add ``serve`` to the subcommands."""
    from actor_db.serve import command

    p = command.add_parser(sub, [parents.common])
    p.set_defaults(handler=_run)
