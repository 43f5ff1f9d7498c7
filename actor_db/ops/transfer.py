"""Import and export: SQLite (and CSV/TSV/JSON-lines) files in and out of an actor.

Invariants:

- ``import_database`` of a SQLite file first runs ``PRAGMA integrity_check`` on it
  (``check=False`` skips it), then copies it with SQLite's backup API into ONE write
  transaction of the KV VFS: pages past the VFS's dirty-byte bound are staged under the
  redo range, and the database only changes at the final commit (one atomic KV batch,
  or the redo protocol's commit record). A failed or interrupted import therefore
  leaves the previous database (or none) in place, its staged chunks are deleted, and
  an actor that had no database before has no keys afterwards.
- ``export_database`` writes a temporary file next to the target and renames it over
  the target only when the copy is complete (``os.replace``), so a failed export
  leaves no partial file; it reads ONE committed state (a snapshot) and never writes
  to the actor.
- A source in WAL mode (header bytes 18-19 = 2, 2, or a live ``-wal`` file) is first
  copied into a private rollback-journal copy (:mod:`actor_db.walcopy`: one consistent
  state, the ``-wal``'s commits included; the user's file is never modified), so the
  imported database always says rollback mode (bytes 18-19 = 1, 1) and opens.
- Writers (imports) take single-writer ownership of the actor (its fencing token)
  when the driver supports it.

Nothing here prints; progress is reported through a :data:`ProgressCallback`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

import vfs
from vfs import redo

from actor_db.errors import FencedError, OperationError, WriterBusyError, find_cause
from actor_db.ops.common import (ProgressCallback, database_size, describe_error, drop_if_no_database,
                                 read_consistently, require_database, take_ownership)
from actor_db.ops.lease import DEFAULT_LEASE_TIMEOUT_S, writer_lease
from actor_db.walcopy import is_wal, rollback_copy

log = logging.getLogger(__name__)

__all__ = ["SQLITE_HEADER", "IMPORT_STEP_PAGES", "IMPORT_MAX_DIRTY_BYTES", "IMPORT_CACHE_KIB",
           "INTEGRITY_MAX_ERRORS", "ImportResult", "check_sqlite_file", "validate_source",
           "check_source_integrity", "import_database", "import_tabular", "export_database", "copy_database"]

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

IMPORT_STEP_PAGES = 256
"""Pages copied per backup step (progress is reported per step)."""

IMPORT_MAX_DIRTY_BYTES = 8 * 1024 * 1024
"""Dirty bytes the VFS holds during an import before staging them (redo protocol)."""

IMPORT_CACHE_KIB = 2048
"""SQLite page cache of the import connection, KiB (bounds memory; pages past it spill
to the VFS buffer, then to the staging range)."""

INTEGRITY_MAX_ERRORS = 20
"""Problems ``PRAGMA integrity_check`` reports at most per database."""


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote.

    :ivar pages: pages copied.
    :ivar page_size: bytes per page of the imported database.
    :ivar size_bytes: size of the actor's database afterwards, bytes.
    :ivar kv_round_trips: KV calls the import's connection made (open, staging, commit);
        the existence check and the ownership claim add one each.
    :ivar large_commit: the redo protocol carried the commit (it did not fit one batch).
    """

    pages: int
    page_size: int
    size_bytes: int
    kv_round_trips: int
    large_commit: bool


def check_sqlite_file(path: str | os.PathLike[str]) -> None:
    """Refuse anything that is not a readable SQLite database file.

    :raises OperationError: missing, unreadable, empty, or without the SQLite header.
    """
    p = Path(path)
    if not p.exists():
        raise OperationError(f"{p}: no such file")
    if not p.is_file():
        raise OperationError(f"{p}: not a regular file")
    try:
        with p.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise OperationError(f"{p}: cannot read: {exc.strerror}") from exc
    if not head:
        raise OperationError(f"{p}: empty file, not a SQLite database")
    if head != SQLITE_HEADER:
        raise OperationError(f"{p}: not a SQLite database (no 'SQLite format 3' header; CSV, TSV and "
                             "JSON lines need a .csv/.tsv/.jsonl name or --format)")


def _open_source(path: str | os.PathLike[str]) -> apsw.Connection:
    """Open a SQLite file to import, read-only, and read its schema.

    :raises OperationError: not a SQLite file, or SQLite cannot read it.
    """
    check_sqlite_file(path)
    try:
        source = apsw.Connection(os.fspath(path), flags=apsw.SQLITE_OPEN_READONLY)
        source.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except apsw.Error as exc:
        raise OperationError(f"{path}: not a usable SQLite database: {exc}") from exc
    return source


def validate_source(path: str | os.PathLike[str], *, check: bool = True) -> None:
    """Everything :func:`import_database` checks about the file, before any store is
    opened: a readable SQLite database that passes ``PRAGMA integrity_check``.

    :raises OperationError: it does not.
    """
    source = _open_source(path)
    try:
        if check:
            check_source_integrity(source, path)
    finally:
        source.close()


def check_source_integrity(source: apsw.Connection, path: str | os.PathLike[str]) -> None:
    """``PRAGMA integrity_check`` of the file to import, before anything is written.

    :raises OperationError: SQLite found a problem (the first one is in the message).
    """
    problems: list[Any] = []
    try:
        for row in source.execute(f"PRAGMA integrity_check({INTEGRITY_MAX_ERRORS})"):
            problems.append(row[0])
    except apsw.Error as exc:
        if not problems or problems == ["ok"]:
            raise OperationError(f"{path}: PRAGMA integrity_check failed: {type(exc).__name__}: {exc}; nothing "
                                 "was imported (--no-check imports it anyway)") from exc
        problems.append(f"{type(exc).__name__}: {exc}")  # after the problems it found: show those first
    if problems != ["ok"]:
        # SQLite heads each database's list with "*** in database main ***": say what failed.
        details = [line.strip() for problem in map(str, problems) for line in problem.splitlines()
                   if line.strip() and not (line.startswith("*** in database ") and line.endswith(" ***"))]
        details = details or [str(problems[0])]
        more = f" (+{len(details) - 1} more)" if len(details) > 1 else ""
        raise OperationError(f"{path}: PRAGMA integrity_check failed: {' '.join(details[0].split())}{more}; "
                             "nothing was imported (--no-check imports it anyway)")


def copy_database(dest: apsw.Connection, source: apsw.Connection, progress: ProgressCallback | None = None) -> int:
    """Copy ``source`` into ``dest`` with the backup API; returns the page count.

    :param progress: called with (pages copied, total pages) after each step.
    """
    backup = dest.backup("main", source, "main")
    try:
        backup.step(0)  # learn the page count without copying
        total = int(backup.page_count)
        if progress is not None:
            progress(0, total)
        while not backup.done:
            backup.step(IMPORT_STEP_PAGES)
            if progress is not None:
                progress(int(backup.page_count) - int(backup.remaining), int(backup.page_count))
        pages = int(backup.page_count)
    except BaseException:
        # Not the context manager: after a failed step, apsw's Backup.__exit__ reports the
        # finish's own error as a SystemError hiding the real one (issue 29, item 6).
        with contextlib.suppress(Exception):
            backup.finish()
        raise
    backup.finish()
    return pages


def import_database(
    source_path: str | os.PathLike[str],
    kv: Any,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    max_dirty_bytes: int = IMPORT_MAX_DIRTY_BYTES,
    check: bool = True,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
) -> ImportResult:
    """Copy the SQLite file ``source_path`` into the actor database of ``kv``.

    All-or-nothing: the copy is ONE write transaction on the KV VFS, so readers (and a
    crash) see the previous database until its single commit point. If it fails and
    the actor had no database, the actor's keys are deleted.

    :param kv: the actor-scoped view (e.g. ``store.actor("a1")``).
    :param force: replace an existing database instead of refusing.
    :param progress: called with (pages copied, total pages).
    :param max_dirty_bytes: dirty bytes held before staging (smaller: less memory).
    :param check: run ``PRAGMA integrity_check`` on the file first (reads all of it).
    :param lease_timeout_s: how long to wait for a drop-in writer's lease, seconds (the
        import holds the actor's writer lease throughout: :mod:`actor_db.ops.lease`).
    :raises OperationError: not a SQLite file, it fails the integrity check, or the actor
        has a database and not ``force``.
    :raises WriterBusyError: a drop-in connection kept the writer lease for
        ``lease_timeout_s``; nothing was written.
    :raises FencedError: a runtime took the actor back during the import (its next
        ownership claim fenced the import off); nothing was imported.
    :raises apsw.Error: the copy failed (a KV failure is an ``apsw.IOError`` whose
        ``__cause__`` is a :class:`~actor_db.errors.KVError`); nothing was changed.
    """
    source = _open_source(source_path)
    scratch: tempfile.TemporaryDirectory[str] | None = None
    try:
        if check:
            check_source_integrity(source, source_path)
        _refuse_existing(kv, force)  # a refusal costs 1 round trip and writes nothing
        if is_wal(source):
            # WAL mode (header bytes 18-19 = 2, 2): copied as is, the actor could not be
            # opened. A rollback-mode private copy, the -wal's commits included; the
            # user's file is only read (actor_db.walcopy).
            scratch = tempfile.TemporaryDirectory(prefix="actor-db-import-")
            copy_path = rollback_copy(source, scratch.name)
            source.close()
            source = apsw.Connection(copy_path, flags=apsw.SQLITE_OPEN_READONLY)
            log.info("%s is in WAL mode: importing a rollback-journal copy of it", source_path)
        with writer_lease(kv, timeout_s=lease_timeout_s) as leased:
            existing = _refuse_existing(leased, force)  # again, now that no other writer can commit
            try:
                take_ownership(leased)
                try:
                    dest = vfs.connect(leased, max_dirty_bytes=max_dirty_bytes)
                except apsw.BusyError as exc:  # a connection of this process has it open
                    raise WriterBusyError(f"actor {getattr(kv, 'actor_id', '?')!r}: its database is open in this "
                                          f"process ({describe_error(exc)}); nothing was written") from exc
                try:
                    dest.execute(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
                    pages = copy_database(dest, source, progress)
                    used = dest.stats.snapshot()
                    page_size = int(dest.execute("PRAGMA page_size").get)
                    size = dest.kv_file.committed_size
                except BaseException:
                    _close_dropping_staged(dest, leased)
                    raise
                dest.close()
                if used.large_commits:
                    _finish_applying(leased)
            except BaseException as exc:
                if not existing:
                    drop_if_no_database(leased)
                fenced = find_cause(exc, FencedError)
                if fenced is not None and fenced is not exc:
                    raise FencedError(f"actor {getattr(kv, 'actor_id', '?')!r}: another owner (a runtime serving "
                                      "this actor) took it back during the import; nothing was imported. Stop the "
                                      "app that serves it, then retry") from exc
                raise
    finally:
        source.close()
        if scratch is not None:
            scratch.cleanup()
    log.info("imported %s: %d pages of %d bytes, %d KV round trips", source_path, pages, page_size,
             used.round_trips)
    return ImportResult(pages, page_size, size, used.round_trips, used.large_commits > 0)


def _refuse_existing(kv: Any, force: bool) -> int | None:
    """The actor's database size (1 round trip).

    :raises OperationError: it has a database and not ``force``.
    """
    existing = database_size(kv)
    if existing and not force:
        raise OperationError(f"actor {getattr(kv, 'actor_id', '?')!r} already has a database "
                             f"({existing} bytes); use --force to replace it")
    return existing


def import_tabular(source_path: str | os.PathLike[str], kv: Any, *, fmt: str | None, table: str | None,
                   header: bool, append: bool, force: bool, progress: ProgressCallback | None = None,
                   lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S, delimiter: str | None = None) -> Any:
    """Import a CSV/TSV/JSON-lines file into a table (:func:`actor_db.tabular.import_table`),
    with ownership taken first; an actor that had no database keeps no keys on failure.

    :param progress: called with (bytes read, total bytes to read): CSV/TSV files are
        read twice (type detection, then the rows), so the total is twice their size.
    :param delimiter: CSV/TSV field separator (one character), default by format.
    :returns: the :class:`~actor_db.tabular.TabularResult`.
    :param lease_timeout_s: as for :func:`import_database`.
    :raises OperationError: the file is missing or its rows cannot be imported.
    :raises WriterBusyError: as for :func:`import_database`.
    """
    from actor_db.tabular import TabularImportError, import_table

    path = Path(source_path)
    if not path.is_file():
        raise OperationError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    with writer_lease(kv, timeout_s=lease_timeout_s) as leased:
        existing = database_size(leased)
        try:
            take_ownership(leased)
            return import_table(path, leased, table=table, fmt=fmt, header=header, append=append,
                                replace=force, progress=progress, delimiter=delimiter)
        except TabularImportError as exc:
            if not existing:
                drop_if_no_database(leased)
            raise OperationError(str(exc)) from exc
        except BaseException:
            if not existing:
                drop_if_no_database(leased)
            raise


def _finish_applying(kv: Any) -> None:
    """After a large import committed: make sure it is applied, not only durable (the
    apply phase may have failed after the commit point; the importer is the writer, so
    it finishes it rather than leave staging for the actor's next owner)."""
    try:
        redo.recover(kv)
    except Exception as exc:  # durable anyway: the next writer applies it
        log.warning("the import is committed; applying it failed and is left to the next writer (%s)", exc)


def _close_dropping_staged(con: vfs.KVConnection, kv: Any) -> None:
    """After a failed import: close, finish a commit that passed its commit point (a
    reopen rolls the record forward), else delete the staged chunks (one batch).

    The VFS itself leaves staging garbage for its next large commit to clear; an
    import that failed must not leave keys behind (a new actor would otherwise show in
    ``ls``). Safe because this process owns the actor. Best effort: if the KV is down
    the error the user sees is the original one, and the garbage stays unread.
    """
    try:
        con.close()
        redo.recover(kv)
    except Exception as exc:  # the original error is what the user must see
        log.warning("could not drop the staged chunks of the failed import (%s)", exc)


def export_database(
    kv: Any,
    target_path: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> int:
    """Copy the actor database of ``kv`` into a new ordinary SQLite file.

    The file is written under a temporary name in the target's directory and renamed
    into place when complete. It opens with the stdlib ``sqlite3`` (rollback-journal
    mode, the actor's page size).

    It is ONE committed state of the actor even while its owner keeps committing: the
    copy reads through a snapshot (:meth:`~actor_db.kv.ActorKV.snapshot`) and retries
    when the driver reports a commit in between; it never writes to the actor.

    :param progress: called with (pages copied, total pages).
    :returns: pages copied.
    :raises ActorNotFoundError: the actor has no database.
    :raises OperationError: the target exists and not ``force``, or its directory is missing.
    """
    target = Path(target_path)
    if target.exists() and not force:
        raise OperationError(f"{target}: already exists; use --force to overwrite it")
    if not target.parent.is_dir():
        raise OperationError(f"{target.parent}: no such directory")
    require_database(kv)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)

    def copy(snapshot: Any) -> int:
        source = vfs.connect(snapshot, readonly=True)
        try:
            dest = apsw.Connection(tmp_name)
            try:
                copied = copy_database(dest, source, progress)
                dest.execute("PRAGMA journal_mode=DELETE")
            finally:
                dest.close()
        finally:
            source.close()
        return copied

    try:
        pages = read_consistently(kv, copy)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return pages
