"""``actor-db shell``: apsw's SQL shell on one actor's KV-backed database.

Invariants: ``-c`` commands stop at the first failure, reported as ONE line (a
:class:`~actor_db.cli.common.CLIError`); an unfinished ``BEGIN`` is rolled back, never
half committed.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any, Sequence, TextIO, cast

import apsw

import vfs

from actor_db.cli.common import CLIError, Parents, opened_store
from actor_db.ops.common import actor_id_for, describe_error, require_database, take_ownership

__all__ = ["register", "run_shell"]


def register(sub: Any, parents: Parents) -> None:
    """Add ``shell`` to the subcommands."""
    p = sub.add_parser("shell", parents=[parents.common, parents.actor_type], help="SQL shell on an actor's database",
                       description="apsw's SQL shell on one actor's KV-backed database: interactive, "
                                   "-c SQL (repeatable), or SQL on stdin.")
    parents.add_actor(p)
    p.add_argument("-c", "--command", dest="commands", action="append", default=[], metavar="SQL",
                   help="run this SQL or dot command (repeatable; stops at the first error)")
    p.add_argument("--create", action="store_true", help="create the database if the actor has none")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    with opened_store(args, create=args.create) as store:
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        return run_shell(kv, args.commands, create=args.create)


class _Shell:
    """Build an :class:`apsw.shell.Shell` that remembers whether any command failed."""

    @staticmethod
    def make(con: apsw.Connection, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> Any:
        import apsw.shell

        class Shell(apsw.shell.Shell):
            failed = False

            def handle_exception(self) -> None:
                if not isinstance(sys.exc_info()[1], SystemExit):
                    self.failed = True
                super().handle_exception()  # type: ignore[no-untyped-call]

        return Shell(stdin=cast(TextIO, stdin), stdout=cast(TextIO, stdout), stderr=cast(TextIO, stderr), db=con)


def _shell_error(command: str, exc: BaseException) -> str:
    """One line for a failed ``-c`` command."""
    if isinstance(exc, apsw.Error):
        return describe_error(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if command.lstrip().startswith(".import"):
        text += " (`actor-db import FILE.csv ACTOR` creates the table from the header row)"
    return text


def _run_commands(con: apsw.Connection, commands: Sequence[str], stdin: IO[str], stdout: IO[str],
                  stderr: IO[str]) -> int:
    """Run ``-c`` commands in turn; the first failure is ONE line (a :class:`CLIError`)."""
    import io

    buffer = io.StringIO()  # the shell's own error text (multi-line, with a caret): not shown
    shell = _Shell.make(con, stdin, stdout, buffer)
    shell.bail = True
    for command in commands:
        try:
            shell.process_complete_line(command)
        except SystemExit as exc:  # ".exit N"
            return exc.code if isinstance(exc.code, int) else 0
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise CLIError(_shell_error(command, exc)) from exc
        if buffer.getvalue():
            stderr.write(buffer.getvalue())  # notes of a command that succeeded
            buffer.seek(0)
            buffer.truncate()
    return 0


def run_shell(kv: Any, commands: Sequence[str], *, create: bool, stdin: IO[str] | None = None,
              stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """apsw's shell on the actor database of ``kv``; returns the exit status.

    With ``commands`` each is run in turn (SQL or a dot command); the first failure
    raises :class:`CLIError` (one line). Otherwise SQL is read from ``stdin``: on a
    terminal the shell is interactive and its status is 0 (errors were shown as they
    happened; ``.exit N`` sets it); from a pipe the status is 1 if any statement failed.
    """
    if not create:
        require_database(kv)
    take_ownership(kv)
    con = vfs.connect(kv)
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        if commands:
            return _run_commands(con, commands, stdin, stdout, stderr)
        shell = _Shell.make(con, stdin, stdout, stderr)
        interactive = stdin.isatty() and stdout.isatty()
        try:
            shell.cmdloop(intro=f"actor-db shell on actor {kv.actor_id!r} "
                                f"(SQLite {apsw.sqlite_lib_version()}, KV VFS)\n"
                                "Enter \".help\" for instructions\n")
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 0
        return 0 if interactive or not shell.failed else 1
    finally:
        if con.in_transaction:  # an unfinished BEGIN: never commit half of it
            con.execute("ROLLBACK")
        con.close()
