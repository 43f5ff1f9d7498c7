"""``actor-db shell``: apsw's SQL shell on one actor's KV-backed database.

Invariants:

- A shell that only reads (``-c`` or interactive) never takes the actor's ownership
  (fencing token) nor its writer lease: each command line reads ONE committed state
  through a snapshot (:meth:`~actor_db.kv.ActorKV.snapshot`, as ``export`` does; a
  line is retried on a fresh snapshot when the driver reports a commit in between, and
  a read transaction spanning lines keeps its snapshot until it ends). A runtime or a
  drop-in writing the actor meanwhile is never disturbed.
- The first write statement (SQLite's ``sqlite3_stmt_readonly``, plus ``BEGIN
  IMMEDIATE``/``EXCLUSIVE`` and the dot commands that write) switches the shell to a
  writer: it takes ownership (fencing token) and from then on runs on a live
  connection with ``locking="cross-process"``, so each of its write transactions takes
  the drop-in's writer lease (:mod:`vfs.lease`): it waits for a drop-in's transaction
  (up to ``--timeout``) and never overwrites it.
- ``--readonly``: writes are refused with a one-line error; nothing is written.
- ``-c`` commands stop at the first failure, reported as ONE line (a
  :class:`~actor_db.cli.common.CLIError`); an unfinished ``BEGIN`` is rolled back,
  never half committed.

- A shell that would write to an actor served by a live ``actor-db serve`` node (its
  owner record names a node whose heartbeat is current) is refused with a message
  naming that node, unless ``--force`` (which fences the node off: its next commit
  fails with ``FencedError``). Call the actor through its node to change it live.

Left out: a runtime that is not serving (a plain ``Registry`` in an app) writes no owner
record, so the shell cannot tell it is live; a write fences it off as above.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from typing import IO, Any, Sequence, TextIO, cast

import apsw

import vfs

from actor_db.cli.common import CLIError, Parents, opened_store
from actor_db.kv.snapshot import DEFAULT_SNAPSHOT_ATTEMPTS, PINNED_AFTER, read_snapshot, snapshot_changed
from actor_db.ops.common import (
    actor_id_for, database_size, describe_error, live_owner, require_database, take_ownership,
)
from actor_db.ops.lease import DEFAULT_LEASE_TIMEOUT_S

__all__ = ["register", "run_shell", "WRITING_DOT_COMMANDS"]

WRITING_DOT_COMMANDS = frozenset({"import", "autoimport", "read", "restore", "load", "open", "connection",
                                  "ftsq", "ftsindex"})
"""Dot commands that may write (or run arbitrary SQL): they run on the writer."""

_BEGIN_WRITE = re.compile(r"^\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE)\b", re.IGNORECASE)


def register(sub: Any, parents: Parents) -> None:
    """Add ``shell`` to the subcommands."""
    p = sub.add_parser("shell", parents=[parents.common, parents.actor_type], help="SQL shell on an actor's database",
                       description="apsw's SQL shell on one actor's KV-backed database: interactive, "
                                   "-c SQL (repeatable), or SQL on stdin. Reads use a snapshot and never "
                                   "disturb a running app; the first write takes ownership.")
    parents.add_actor(p)
    p.add_argument("-c", "--command", dest="commands", action="append", default=[], metavar="SQL",
                   help="run this SQL or dot command (repeatable; stops at the first error)")
    p.add_argument("--create", action="store_true", help="create the database if the actor has none")
    p.add_argument("--readonly", action="store_true", help="refuse every write (reads only, from a snapshot)")
    p.add_argument("--force", action="store_true", help="write even to an actor a live serve node owns")
    parents.add_timeout(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.create and args.readonly:
        raise CLIError("--create and --readonly exclude each other")
    with opened_store(args, create=args.create) as store:
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        return run_shell(kv, args.commands, create=args.create, readonly=args.readonly, timeout_s=args.timeout,
                         force=args.force)


class _NeedsWriter(Exception):
    """A statement of a line would write while the shell reads a snapshot."""


class _Session:
    """The shell's connection: a snapshot reader until the first write, then a writer.

    :ivar writer: the live writing connection, once the shell wrote (``None`` before).
    """

    def __init__(self, kv: Any, *, readonly: bool, create: bool, timeout_s: float, force: bool = False) -> None:
        self.kv = kv
        self.readonly = readonly
        self.force = force
        self.timeout_s = timeout_s
        self.writer: vfs.KVConnection | None = None
        self._snapshot: Any = None
        self._reader: vfs.KVConnection | None = None
        self._attempt = 0
        if create and not database_size(kv):
            self.become_writer()  # creating the database is a write
        else:
            require_database(kv)

    # -- connections -------------------------------------------------------------
    @property
    def connection(self) -> apsw.Connection:
        if self.writer is not None:
            return self.writer
        if self._reader is None:
            self._open_reader()
        assert self._reader is not None
        return self._reader

    def _open_reader(self) -> None:
        """A read-only connection on a fresh snapshot (pinned after repeated changes)."""
        self._close_reader()
        if hasattr(self.kv, "snapshot"):
            self._snapshot = read_snapshot(self.kv, pinned=self._attempt >= PINNED_AFTER)
            view = self._snapshot
        else:  # a wrapping view without snapshots (tests): read it live
            view = self.kv
        self._reader = vfs.connect(view, readonly=True)
        self._reader.exec_trace = self._refuse_writes

    def _close_reader(self) -> None:
        reader, snapshot, self._reader, self._snapshot = self._reader, self._snapshot, None, None
        try:
            if reader is not None:
                reader.close(True)
        finally:
            if snapshot is not None:
                snapshot.close()

    def _refuse_writes(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        """The reader's safety net (SQL that a dot command runs itself)."""
        if not cursor.is_readonly:
            raise _NeedsWriter(sql)
        return True

    def become_writer(self) -> None:
        """Take ownership and open the live, lease-taking writer connection.

        :raises CLIError: ``--readonly``, or a read transaction of an earlier line is open
            on the snapshot (its reads could not be part of the write transaction).
        """
        if self.readonly:
            raise CLIError("this shell is read-only (--readonly): writes are refused; nothing was written")
        if self._reader is not None and self._reader.in_transaction:
            raise CLIError("a write inside a transaction that began reading a snapshot: ROLLBACK, then start "
                           "it with BEGIN IMMEDIATE (or write without BEGIN); nothing was written")
        if not self.force:
            node = live_owner(self.kv)
            if node is not None:
                raise CLIError(f"actor {self.kv.actor_id!r} is served by the live node {node!r} (actor-db serve): "
                               "a write here would fence it off; call the actor through that node, or pass "
                               "--force; nothing was written")
        self._close_reader()
        take_ownership(self.kv)
        self.writer = vfs.connect(self.kv, locking="cross-process", timeout=self.timeout_s)
        self.writer.set_busy_timeout(int(self.timeout_s * 1000))

    def close(self) -> None:
        try:
            if self.writer is not None:
                if self.writer.in_transaction:  # an unfinished BEGIN: never commit half of it
                    self.writer.execute("ROLLBACK")
                self.writer.close()
        finally:
            self._close_reader()

    # -- per statement and per line ---------------------------------------------
    def check_statement(self, shell: Any, query: str) -> None:
        """Before each statement the shell runs: switch to the writer at the first write."""
        if self.writer is not None:
            return
        if _BEGIN_WRITE.match(query) or not _is_readonly(self.connection, query):
            raise _NeedsWriter(query)

    def run_line(self, shell: Any, line: str, run: Any) -> None:
        """Run one complete line (SQL or a dot command) with ``run(line)``."""
        if self.writer is not None:
            return run(line)  # type: ignore[no-any-return]
        stripped = line.lstrip()
        if stripped.startswith("."):
            name = stripped[1:].split(None, 1)[0] if stripped[1:].split() else ""
            if name in WRITING_DOT_COMMANDS:
                return self._as_writer(shell, line, run)
        if self._reader is not None and self._reader.in_transaction:
            try:  # a read transaction spanning lines: its one snapshot, no retry
                return run(line)  # type: ignore[no-any-return]
            except _NeedsWriter:
                self.become_writer()  # refuses (in a transaction)
                raise AssertionError("unreachable")  # pragma: no cover
        stdout = shell.stdout
        for attempt in range(DEFAULT_SNAPSHOT_ATTEMPTS):
            self._attempt = attempt
            self._open_reader()  # each line reads the latest committed state
            shell._db = self._reader
            buffer = io.StringIO()  # shown once the line read one consistent state
            shell.stdout = buffer
            try:
                run(line)
            except _NeedsWriter:
                shell.stdout = stdout
                self._close_reader()  # the line runs again from its start, on the writer
                return self._as_writer(shell, line, run)
            except BaseException as exc:
                shell.stdout = stdout
                if attempt + 1 < DEFAULT_SNAPSHOT_ATTEMPTS and snapshot_changed(exc):
                    time.sleep(0.005 * 2 ** attempt)
                    continue
                stdout.write(buffer.getvalue())
                raise
            finally:
                shell.stdout = stdout
                if self._reader is not None and not self._reader.in_transaction:
                    self._close_reader()  # an LMDB snapshot pins pages while it is open
            stdout.write(buffer.getvalue())
            return None
        return None  # pragma: no cover

    def _as_writer(self, shell: Any, line: str, run: Any) -> None:
        self.become_writer()
        shell._db = self.writer
        run(line)


def _is_readonly(con: apsw.Connection, query: str) -> bool:
    """Whether SQLite says the (first) statement of ``query`` only reads (prepared, not run)."""
    readonly = True

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        nonlocal readonly
        readonly = bool(cursor.is_readonly)
        return False  # prepared and inspected: do not run it

    cursor = con.cursor()
    cursor.exec_trace = trace
    try:
        cursor.execute(query)
    except apsw.ExecTraceAbort:
        pass
    except apsw.Error:
        return True  # the shell reports the error itself when it runs the statement
    return readonly


def _make_shell(session: _Session, stdin: IO[str], stdout: IO[str], stderr: IO[str]) -> Any:
    """An :class:`apsw.shell.Shell` on ``session`` that remembers whether any command failed."""
    import apsw.shell

    class Shell(apsw.shell.Shell):
        failed = False

        def handle_exception(self) -> None:
            if not isinstance(sys.exc_info()[1], SystemExit):
                self.failed = True
            super().handle_exception()  # type: ignore[no-untyped-call]

        def process_complete_line(self, command: str) -> None:
            session.run_line(self, command, super().process_complete_line)

        def _query_details(self, sql: str, bindings: Any) -> Any:
            details = super()._query_details(sql, bindings)  # type: ignore[misc]
            if details.error_text is None and details.query is not None:
                session.check_statement(self, details.query)
            return details

    return Shell(stdin=cast(TextIO, stdin), stdout=cast(TextIO, stdout), stderr=cast(TextIO, stderr),
                 db=session.connection)


def _shell_error(command: str, exc: BaseException) -> str:
    """One line for a failed ``-c`` command."""
    if isinstance(exc, apsw.BusyError):
        return (f"{describe_error(exc)}: another connection (a drop-in writer) holds the actor's writer lease "
                "or committed meanwhile; nothing of this command was written (retry, or pass a longer --timeout)")
    if isinstance(exc, apsw.Error):
        return describe_error(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if command.lstrip().startswith(".import"):
        text += " (`actor-db import FILE.csv ACTOR` creates the table from the header row)"
    return text


def _run_commands(session: _Session, commands: Sequence[str], stdin: IO[str], stdout: IO[str],
                  stderr: IO[str]) -> int:
    """Run ``-c`` commands in turn; the first failure is ONE line (a :class:`CLIError`)."""
    buffer = io.StringIO()  # the shell's own error text (multi-line, with a caret): not shown
    shell = _make_shell(session, stdin, stdout, buffer)
    shell.bail = True
    for command in commands:
        try:
            shell.process_complete_line(command)
        except SystemExit as exc:  # ".exit N"
            return exc.code if isinstance(exc.code, int) else 0
        except (KeyboardInterrupt, CLIError):
            raise
        except Exception as exc:
            raise CLIError(_shell_error(command, exc)) from exc
        if buffer.getvalue():
            stderr.write(buffer.getvalue())  # notes of a command that succeeded
            buffer.seek(0)
            buffer.truncate()
    return 0


def run_shell(kv: Any, commands: Sequence[str], *, create: bool, readonly: bool = False,
              timeout_s: float = DEFAULT_LEASE_TIMEOUT_S, stdin: IO[str] | None = None,
              stdout: IO[str] | None = None, stderr: IO[str] | None = None, force: bool = False) -> int:
    """apsw's shell on the actor database of ``kv``; returns the exit status.

    With ``commands`` each is run in turn (SQL or a dot command); the first failure
    raises :class:`CLIError` (one line). Otherwise SQL is read from ``stdin``: on a
    terminal the shell is interactive and its status is 0 (errors were shown as they
    happened; ``.exit N`` sets it); from a pipe the status is 1 if any statement failed.
    Reads come from snapshots; the first write takes ownership (module docstring).

    :param readonly: refuse writes (:class:`CLIError`).
    :param timeout_s: seconds a write transaction waits for a drop-in writer's lease.
    :param force: write even to an actor that a live ``actor-db serve`` node owns.
    """
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    session = _Session(kv, readonly=readonly, create=create, timeout_s=timeout_s, force=force)
    try:
        if commands:
            return _run_commands(session, commands, stdin, stdout, stderr)
        shell = _make_shell(session, stdin, stdout, stderr)
        interactive = stdin.isatty() and stdout.isatty()
        try:
            shell.cmdloop(intro=f"actor-db shell on actor {kv.actor_id!r} "
                                f"(SQLite {apsw.sqlite_lib_version()}, KV VFS"
                                f"{', read-only' if readonly else ''})\n"
                                "Enter \".help\" for instructions\n")
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 0
        return 0 if interactive or not shell.failed else 1
    finally:
        session.close()
