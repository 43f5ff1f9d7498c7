"""The ``actor-db`` parser and dispatch: builds one subparser per command from the
command-group modules in :data:`COMMAND_GROUPS` and runs the chosen command's handler.

Invariants: a user mistake is ONE line on stderr and exit status 1 (2 for bad
command-line syntax), never a traceback; Ctrl-C is exit status 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from types import ModuleType
from typing import Any, Sequence

import apsw

from actor_db.cli import backup, bench, history, inspect, maintenance, serve, shell, transfer
from actor_db.cli.common import Interrupted, Parents
from actor_db.errors import ActorDBError
from actor_db.ops.common import describe_error

log = logging.getLogger(__name__)

__all__ = ["main", "COMMAND_GROUPS", "build_parser"]

COMMAND_GROUPS: tuple[ModuleType, ...] = (shell, transfer, history, backup, inspect, maintenance, serve, bench)
"""The modules whose ``register(sub, parents)`` add the commands, in help order."""


class _Formatter(argparse.HelpFormatter):
    """Option help in a column at 30 characters, so that every help fits one screen."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            # The commands alone, without a "COMMAND" line above them (one screen).
            return "".join(self._format_action(sub) for sub in self._iter_indented_subactions(action))
        return super()._format_action(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # one line, exit 2 (argparse's status for syntax)
        self.exit(2, f"{self.prog}: error: {message}{_suggestion(self, message)} (see {self.prog} --help)\n")


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """``"; did you mean 'X'?"`` for a mistyped command (argparse's "invalid choice")."""
    import difflib

    found = re.search(r"invalid choice: '([^']*)'", message)
    if found is None:
        return ""
    choices = [c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices]
    close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _version() -> str:
    from actor_db import __version__

    return (f"actor-db {__version__} (SQLite {apsw.sqlite_lib_version()} via apsw {apsw.apsw_version()}, "
            f"Python {sys.version.split()[0]})")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``actor-db`` parser; each command's parser sets ``handler``."""
    common = _Parser(add_help=False)
    common.add_argument("--kv", default=argparse.SUPPRESS, metavar="STORE",
                        help="lmdb:PATH, memory:, redis://… (default: $ACTOR_DB_KV)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log INFO (-v) or DEBUG (-vv) messages to stderr")
    actor_type = _Parser(add_help=False)
    actor_type.add_argument("--actor-type", metavar="NAME", help="ACTOR is a key of this type (id NAME/ACTOR)")

    parser = _Parser(prog="actor-db", parents=[common],
                     description="Operate actor-db stores: per-actor SQLite databases in a KV store.")
    parser.add_argument("--version", action="version", version=_version())
    parser._positionals.title = "commands"
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parents = Parents(common=common, actor_type=actor_type)
    for group in COMMAND_GROUPS:
        group.register(sub, parents)
    return parser


def _setup_logging(verbose: int) -> None:
    """Warnings always reach stderr (one line each); ``-v``/``-vv`` add INFO/DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    if verbose <= 0:
        handler.setFormatter(logging.Formatter("actor-db: %(levelname)s: %(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
        # The VFS logs the details of an error the command reports as one line anyway.
        for name in ("vfs", "native"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.INFO if verbose == 1 else logging.DEBUG, handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``actor-db`` command with ``argv`` (default ``sys.argv[1:]``).

    :returns: the exit status: 0 success (and bare ``actor-db``: the help), 1 an error
        (one line on stderr), 2 bad syntax, 130 interrupted (Ctrl-C), 141 the reader of
        stdout went away (``actor-db ls | head``).
    """
    import sqlite3

    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not arguments:  # bare `actor-db`: the help, not an error
        parser.print_help()
        return 0
    args = parser.parse_args(arguments)
    _setup_logging(getattr(args, "verbose", 0))
    try:
        status = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
        return status
    except BrokenPipeError:
        # `actor-db ls | head`: the reader left. No traceback, no "Exception ignored"
        # at exit (stdout is pointed at /dev/null); 141 = 128 + SIGPIPE, as a shell tool.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except Interrupted as exc:
        sys.stderr.write(f"actor-db {args.command}: {exc}\n")
        return 130
    except (ActorDBError, apsw.Error, sqlite3.Error, OSError) as exc:
        sys.stderr.write(f"actor-db {args.command}: error: {describe_error(exc)}\n")
        log.debug("details", exc_info=True)
        return 1
    except KeyboardInterrupt:
        done = ": nothing was imported" if args.command == "import" else ""  # before it started writing
        sys.stderr.write(f"actor-db {args.command}: interrupted{done}\n")
        return 130
