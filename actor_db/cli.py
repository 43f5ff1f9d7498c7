"""The ``actor-db`` command: SQL shell, import/export, ``ls``, ``rm``, ``inspect``,
``integrity``, ``compact`` and ``bench``.

Usage (``actor-db --help`` and ``actor-db COMMAND --help`` say more)::

    actor-db [--kv lmdb:PATH | memory: | redis://HOST:PORT/DB] COMMAND ...
    actor-db shell ACTOR [--actor-type NAME] [-c SQL]...   # apsw's shell on the KV VFS
    actor-db import FILE ACTOR [--force]                   # SQLite file (or CSV/TSV/JSON lines) -> actor
    actor-db export ACTOR FILE.db [--force]                # actor database -> SQLite file
    actor-db ls                                            # actors and database sizes
    actor-db rm ACTOR [-y]                                 # delete an actor's keys
    actor-db inspect ACTOR                                 # meta, chunks, preload coverage, startup cost
    actor-db integrity [ACTOR]                             # PRAGMA integrity_check, one or all actors
    actor-db compact                                       # give an LMDB store's free pages back
    actor-db bench [--out DIR] [-- ARGS]                   # the benchmark report

The store: ``--kv``, else the rule of :mod:`actor_db.defaults` (``$ACTOR_DB_KV``, else
``lmdb:./.actor-db``), the same rule the drop-in and ``Registry()`` follow.

Actors: ``ACTOR`` is the actor id that :meth:`actor_db.kv.KVStore.actor` takes. With
``--actor-type NAME`` it is the key of an actor of that type, whose id is
``"NAME/ACTOR"`` (the mapping :class:`actor_db.Registry` uses).

Invariants:

- A user mistake (unknown actor, bad ``--kv``, a file that is not SQLite, an existing
  target without ``--force``) is ONE line on stderr and exit status 1 (2 for bad
  command-line syntax); never a traceback. ``shell -c`` reports a failing command the
  same way. Warnings of the library (e.g. unsafe Redis persistence settings) are
  printed to stderr as log lines without ``-v``.
- ``import`` of a SQLite file first runs ``PRAGMA integrity_check`` on it (``--no-check``
  skips it), then copies it with SQLite's backup API into ONE write transaction of
  the KV VFS: pages past the VFS's dirty-byte bound are staged under the redo range,
  and the database only changes at the final commit (one atomic KV batch, or the
  redo protocol's commit record). A failed or interrupted import therefore leaves the
  previous database (or none) in place, its staged chunks are deleted, and an actor
  that had no database before has no keys afterwards (it does not show in ``ls``).
  CSV/TSV/JSON-lines files go through :mod:`actor_db.tabular` (sqlite-utils over the
  drop-in connection), also in one transaction.
- Ctrl-C during ``import``: the import is rolled back as above (further Ctrl-Cs are
  ignored until that is done), one line says whether anything was imported, exit 130.
- ``export`` writes a temporary file next to the target and renames it over the target
  only when the copy is complete (``os.replace``), so a failed export leaves no partial
  file.
- Writing commands (``shell``, ``import``, ``rm``) take single-writer ownership of the
  actor (its fencing token) when the driver supports it: a runtime that still holds
  the actor then fails its next commit loudly instead of overwriting the CLI's writes.
- ``bench`` writes its report into ``--out`` (default: the current directory), never
  into the checkout.

Left out: ``--kv`` URLs for drivers that do not exist; listing actors of a Redis
store with a namespace other than the URL's ``?namespace=`` parameter; ``compact``
for drivers other than LMDB (Redis frees memory itself).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, Callable, Iterator, Sequence, TextIO, TypeVar, cast

import apsw

import vfs
from vfs import redo
from vfs.keys import (CHUNK_SIZE, COMMIT_RECORD_KEY, FILE_MAIN, chunk_key, chunk_range, decode_meta, meta_key,
                      staged_range)

from actor_db.defaults import DEFAULT_KV, default_store_spec, open_store
from actor_db.errors import ActorDBError, ActorNotFoundError, ConfigurationError, KVError
from actor_db.kv.snapshot import retry_on_change

log = logging.getLogger(__name__)

__all__ = ["main", "open_store", "actor_id_for", "import_database", "export_database", "ImportResult",
           "DEFAULT_KV", "SQLITE_HEADER", "check_integrity", "remove_actor"]

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

IMPORT_STEP_PAGES = 256
"""Pages copied per backup step (the progress bar advances per step)."""

IMPORT_MAX_DIRTY_BYTES = 8 * 1024 * 1024
"""Dirty bytes the VFS holds during an import before staging them (redo protocol)."""

IMPORT_CACHE_KIB = 2048
"""SQLite page cache of the import connection, KiB (bounds memory; pages past it spill
to the VFS buffer, then to the staging range)."""

PROGRESS_MIN_PAGES = 256
"""Files with fewer pages (1 MiB at 4 KiB pages) get no progress bar."""

INTEGRITY_MAX_ERRORS = 20
"""Problems ``PRAGMA integrity_check`` reports at most per database."""

_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class CLIError(ActorDBError):
    """A user mistake or an unusable store: reported as one line, exit status 1."""


class _Interrupted(ActorDBError):
    """Ctrl-C stopped a command; the message says what was left (exit status 130)."""


# ---------------------------------------------------------------------------- stores
def actor_id_for(actor: str, actor_type: str | None) -> str:
    """The actor id for ``actor`` (an id, or a key of ``actor_type``).

    :raises ConfigurationError: an empty id or an invalid type name.
    """
    if not actor:
        raise ConfigurationError("the actor id must not be empty")
    if actor_type is None:
        return actor
    if not _TYPE_NAME.match(actor_type):
        raise ConfigurationError(f"actor type name {actor_type!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
    # The runtime's mapping (actor_db.Registry.get_or_create): "<type>/<key>".
    return f"{actor_type}/{actor}"


def _database_size(kv: Any) -> int | None:
    """The main database's size in bytes, or ``None`` if the actor has none (1 round trip)."""
    raw = kv.get_many([meta_key(FILE_MAIN)])[0]
    if raw is None:
        return None
    try:
        return decode_meta(raw)
    except ValueError as exc:
        raise CLIError(f"actor {kv.actor_id!r}: the database meta record is corrupt: {exc}") from exc


def _require_database(kv: Any) -> int:
    size = _database_size(kv)
    if not size:
        raise ActorNotFoundError(f"actor {kv.actor_id!r} has no database in this store "
                                 "(see `actor-db ls`; --actor-type NAME if ACTOR is a key)")
    return size


def _take_ownership(kv: Any) -> None:
    """Fence off any other owner of the actor, if the driver supports fencing."""
    acquire = getattr(kv, "acquire_ownership", None)
    if acquire is None:
        return
    try:
        token = acquire()
    except NotImplementedError:
        return
    log.debug("actor %r: the CLI holds fencing token %s", kv.actor_id, token)


def _fingerprint(kv: Any) -> tuple[bytes | None, bytes | None]:
    """The database's meta record and first chunk (one round trip): they change with
    every commit (chunk 0 holds SQLite's file change counter)."""
    meta, head = kv.get_many([meta_key(FILE_MAIN), chunk_key(FILE_MAIN, 0)])
    return meta, head


def _drop_if_no_database(kv: Any) -> None:
    """After a failed import into an actor that had no database: delete whatever keys
    the attempt left (a meta record of size 0, staging), so no half-created actor
    shows in ``ls``. Best effort: the original error is what the user must see."""
    try:
        if _database_size(kv) or kv.get_many([COMMIT_RECORD_KEY])[0] is not None:
            return  # a database, or a durable commit the next open rolls forward
        if not kv.scan(b"", b"", limit=1):
            return
        delete_all = getattr(kv, "delete_all", None)
        if delete_all is not None:
            delete_all()
        else:  # a wrapping view: the same range delete, relative to the actor
            batch = vfs.WriteBatch()
            batch.delete_range(b"\x00", b"\xff" * 8)  # every actor-relative key
            kv.write(batch)
    except Exception as exc:
        log.warning("could not remove the keys of the failed import of actor %r (%s)",
                    getattr(kv, "actor_id", "?"), exc)


# ---------------------------------------------------------------------------- import / export
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

    :raises CLIError: missing, unreadable, empty, or without the SQLite header.
    """
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{p}: no such file")
    if not p.is_file():
        raise CLIError(f"{p}: not a regular file")
    try:
        with p.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise CLIError(f"{p}: cannot read: {exc.strerror}") from exc
    if not head:
        raise CLIError(f"{p}: empty file, not a SQLite database")
    if head != SQLITE_HEADER:
        raise CLIError(f"{p}: not a SQLite database (no 'SQLite format 3' header; CSV, TSV and "
                       "JSON lines need a .csv/.tsv/.jsonl name or --format)")


def _open_source(path: str | os.PathLike[str]) -> apsw.Connection:
    """Open a SQLite file to import, read-only, and read its schema.

    :raises CLIError: not a SQLite file, or SQLite cannot read it.
    """
    check_sqlite_file(path)
    try:
        source = apsw.Connection(os.fspath(path), flags=apsw.SQLITE_OPEN_READONLY)
        source.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except apsw.Error as exc:
        raise CLIError(f"{path}: not a usable SQLite database: {exc}") from exc
    return source


def validate_source(path: str | os.PathLike[str], *, check: bool = True) -> None:
    """Everything :func:`import_database` checks about the file, before any store is
    opened: a readable SQLite database that passes ``PRAGMA integrity_check``."""
    source = _open_source(path)
    try:
        if check:
            check_source_integrity(source, path)
    finally:
        source.close()


def check_source_integrity(source: apsw.Connection, path: str | os.PathLike[str]) -> None:
    """``PRAGMA integrity_check`` of the file to import, before anything is written.

    :raises CLIError: SQLite found a problem (the first one is in the message).
    """
    try:
        problems = [row[0] for row in source.execute(f"PRAGMA integrity_check({INTEGRITY_MAX_ERRORS})")]
    except apsw.Error as exc:
        raise CLIError(f"{path}: PRAGMA integrity_check failed: {type(exc).__name__}: {exc}; nothing was "
                       "imported (--no-check imports it anyway)") from exc
    if problems != ["ok"]:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CLIError(f"{path}: PRAGMA integrity_check failed: {problems[0]}{more}; nothing was imported "
                       "(--no-check imports it anyway)")


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool | None) -> Iterator[Any]:
    """A tqdm bar on stderr; ``enabled=None`` shows it for large copies on a terminal."""
    from tqdm import tqdm

    if enabled is None:
        enabled = total >= PROGRESS_MIN_PAGES and sys.stderr.isatty()
    bar = tqdm(total=total, desc=desc, unit="page", disable=not enabled, file=sys.stderr, leave=False)
    try:
        yield bar
    finally:
        bar.close()


def _copy(dest: apsw.Connection, source: apsw.Connection, desc: str, progress: bool | None) -> int:
    """Copy ``source`` into ``dest`` with the backup API; returns the page count."""
    with dest.backup("main", source, "main") as backup:
        backup.step(0)  # learn the page count without copying
        with _progress(backup.page_count, desc, progress) as bar:
            while not backup.done:
                before = backup.remaining
                backup.step(IMPORT_STEP_PAGES)
                bar.update(before - backup.remaining)
        pages = int(backup.page_count)
    return pages


def import_database(
    source_path: str | os.PathLike[str],
    kv: Any,
    *,
    force: bool = False,
    progress: bool | None = False,
    max_dirty_bytes: int = IMPORT_MAX_DIRTY_BYTES,
    check: bool = True,
) -> ImportResult:
    """Copy the SQLite file ``source_path`` into the actor database of ``kv``.

    All-or-nothing: the copy is ONE write transaction on the KV VFS, so readers (and a
    crash) see the previous database until its single commit point. If it fails and
    the actor had no database, the actor's keys are deleted.

    :param kv: the actor-scoped view (e.g. ``store.actor("a1")``).
    :param force: replace an existing database instead of refusing.
    :param progress: show a progress bar (``None``: on a terminal, for large files).
    :param max_dirty_bytes: dirty bytes held before staging (smaller: less memory).
    :param check: run ``PRAGMA integrity_check`` on the file first (reads all of it).
    :raises CLIError: not a SQLite file, it fails the integrity check, or the actor has
        a database and not ``force``.
    :raises apsw.Error: the copy failed (a KV failure is an ``apsw.IOError`` whose
        ``__cause__`` is a :class:`~actor_db.errors.KVError`); nothing was changed.
    """
    source = _open_source(source_path)
    try:
        if check:
            check_source_integrity(source, source_path)
        existing = _database_size(kv)
        if existing and not force:
            raise CLIError(f"actor {getattr(kv, 'actor_id', '?')!r} already has a database "
                           f"({existing} bytes); use --force to replace it")
        try:
            _take_ownership(kv)
            dest = vfs.connect(kv, max_dirty_bytes=max_dirty_bytes)
            try:
                dest.execute(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
                pages = _copy(dest, source, "import", progress)
                used = dest.stats.snapshot()
                page_size = int(dest.execute("PRAGMA page_size").get)
                size = dest.kv_file.committed_size
            except BaseException:
                _close_dropping_staged(dest, kv)
                raise
            dest.close()
            if used.large_commits:
                _finish_applying(kv)
        except BaseException:
            if not existing:
                _drop_if_no_database(kv)
            raise
    finally:
        source.close()
    log.info("imported %s: %d pages of %d bytes, %d KV round trips", source_path, pages, page_size,
             used.round_trips)
    return ImportResult(pages, page_size, size, used.round_trips, used.large_commits > 0)


def import_tabular(source_path: str | os.PathLike[str], kv: Any, *, fmt: str | None, table: str | None,
                   header: bool, append: bool, force: bool, progress: bool | None) -> Any:
    """Import a CSV/TSV/JSON-lines file into a table (:func:`actor_db.tabular.import_table`),
    with ownership taken first; an actor that had no database keeps no keys on failure.

    :returns: the :class:`~actor_db.tabular.TabularResult`.
    """
    from actor_db.tabular import TabularImportError, import_table

    path = Path(source_path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    existing = _database_size(kv)
    total = path.stat().st_size
    if progress is None:
        progress = total >= PROGRESS_MIN_PAGES * CHUNK_SIZE and sys.stderr.isatty()
    try:
        _take_ownership(kv)
        with _progress(total, "import", progress) as bar:
            bar.unit, bar.unit_scale, bar.unit_divisor = "B", True, 1024

            def advance(offset: int) -> None:
                bar.update(offset - bar.n)

            return import_table(path, kv, table=table, fmt=fmt, header=header, append=append, replace=force,
                                progress=advance)
    except TabularImportError as exc:
        if not existing:
            _drop_if_no_database(kv)
        raise CLIError(str(exc)) from exc
    except BaseException:
        if not existing:
            _drop_if_no_database(kv)
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
    progress: bool | None = False,
) -> int:
    """Copy the actor database of ``kv`` into a new ordinary SQLite file.

    The file is written under a temporary name in the target's directory and renamed
    into place when complete. It opens with the stdlib ``sqlite3`` (rollback-journal
    mode, the actor's page size).

    It is ONE committed state of the actor even while its owner keeps committing: the
    copy reads through a snapshot (:meth:`~actor_db.kv.ActorKV.snapshot`) and retries
    when the driver reports a commit in between; it never writes to the actor.

    :returns: pages copied.
    :raises ActorNotFoundError: the actor has no database.
    :raises CLIError: the target exists and not ``force``, or its directory is missing.
    """
    target = Path(target_path)
    if target.exists() and not force:
        raise CLIError(f"{target}: already exists; use --force to overwrite it")
    if not target.parent.is_dir():
        raise CLIError(f"{target.parent}: no such directory")
    _require_database(kv)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)

    def copy(snapshot: Any) -> int:
        source = vfs.connect(snapshot, readonly=True)
        try:
            dest = apsw.Connection(tmp_name)
            try:
                copied = _copy(dest, source, "export", progress)
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


T = TypeVar("T")


def read_consistently(kv: Any, read: Callable[[Any], T]) -> T:
    """Run ``read`` on a snapshot of ``kv``'s actor (one committed state), retrying
    when the driver detects a commit in between; a view without snapshots (a test
    wrapper) is read directly."""
    if not hasattr(kv, "snapshot"):
        log.warning("%r cannot take snapshots: reading the live actor", kv)
        return read(kv)
    return retry_on_change(kv, read)


# ---------------------------------------------------------------------------- ls / inspect
def list_actors(store: Any, actor_type: str | None = None) -> list[dict[str, Any]]:
    """One row per actor with keys: ``actor``, ``db_bytes`` (``None``: no database),
    ``chunks`` (the size in 4096-byte chunks). ``actor_type`` keeps that type's actors."""
    rows: list[dict[str, Any]] = []
    prefix = None if actor_type is None else actor_id_for("x", actor_type)[:-1]
    for actor_id in store.actor_ids():
        if prefix is not None and not actor_id.startswith(prefix):
            continue
        size = _database_size(store.actor(actor_id))
        rows.append({"actor": actor_id, "db_bytes": size,
                     "chunks": None if size is None else -(-size // CHUNK_SIZE)})
    return rows


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
        size = _require_database(snap)
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


def _format_inspect(info: dict[str, Any], out: IO[str]) -> None:
    p, s = info["preload"], info["startup"]
    lines = [
        f"actor:          {info['actor']}",
        f"meta:           format v{info['meta']['format_version']}, {info['meta']['db_bytes']} bytes",
        f"pages:          {info['pages']} x {info['page_size']} bytes",
        f"chunks:         {info['chunks']} stored, {info['chunks_expected']} expected "
        f"({info['orphan_chunks']} orphan, {info['missing_chunks']} missing)",
        f"redo log:       commit record {'PRESENT' if info['redo']['commit_record'] else 'none'}, "
        f"{info['redo']['staged_chunks']} staged chunks",
        "state record:   " + ("none" if info["state_record"] is None else
                              ", ".join(f"{k}={v}" for k, v in info["state_record"].items())),
        f"tables:         {', '.join(info['tables']) or '(none)'}",
        f"preload:        {p['chunks']} of {info['chunks_expected']} chunks ({p['bytes']} bytes, "
        f"{p['coverage']:.0%}) within {p['sqlite_budget_bytes']} bytes of SQLite budget / "
        f"{p['total_budget_bytes']} total" + (" - whole database" if p["whole_database"] else ""),
        f"startup:        {s['kv_round_trips']} KV round trips to open and read the schema "
        f"(preload 1, live reads {s['live_reads']}, preload hits {s['preload_hits']})",
    ]
    out.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- ls / rm / integrity output
def _format_ls(rows: Sequence[dict[str, Any]], out: IO[str]) -> None:
    """Aligned columns under a header row (``-``: the actor has no database)."""
    table = [("ACTOR", "DB_BYTES", "CHUNKS")] + [
        (r["actor"], "-" if r["db_bytes"] is None else str(r["db_bytes"]),
         "-" if r["chunks"] is None else str(r["chunks"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for actor, size, chunks in table:
        out.write(f"{actor:<{widths[0]}}  {size:>{widths[1]}}  {chunks:>{widths[2]}}\n")


def _actor_has_keys(kv: Any) -> bool:
    """Whether the actor has any key in the store (one round trip)."""
    return bool(kv.scan(b"", b"", limit=1))


def remove_actor(kv: Any) -> None:
    """Delete every key of the actor (database, state, staging) in one atomic batch,
    after taking its fencing token so a runtime that held it cannot write again.

    :raises ActorNotFoundError: the actor has no keys.
    """
    if not _actor_has_keys(kv):
        raise _not_found(kv)
    _take_ownership(kv)
    kv.delete_all()


def _not_found(kv: Any) -> ActorNotFoundError:
    return ActorNotFoundError(f"actor {kv.actor_id!r} not found in this store "
                              "(see `actor-db ls`; --actor-type NAME if ACTOR is a key)")


def _confirm(question: str) -> bool:
    """Ask on stderr, read one line from stdin (a terminal or a pipe): ``y``/``yes``."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n") or not sys.stdin.isatty():  # nothing echoed the newline
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def check_integrity(kv: Any) -> list[str]:
    """``PRAGMA integrity_check`` of the actor's database: ``["ok"]`` or the problems
    SQLite reports (at most :data:`INTEGRITY_MAX_ERRORS`; an error opening or reading
    the database is one problem). Read-only, on one snapshot of the actor.

    :raises ActorNotFoundError: the actor has no database.
    """
    _require_database(kv)

    def check(view: Any) -> list[str]:
        try:
            con = vfs.connect(view, readonly=True)  # never writes: a live actor may be checked
        except apsw.Error as exc:
            return [_describe(exc)]
        try:
            return [str(row[0]) for row in con.execute(f"PRAGMA integrity_check({INTEGRITY_MAX_ERRORS})")]
        except apsw.Error as exc:
            return [_describe(exc)]
        finally:
            con.close()

    return read_consistently(kv, check)  # one committed state, even while its owner writes


def _run_integrity(store: Any, actor: str | None, actor_type: str | None, out: IO[str]) -> int:
    if actor is not None:
        ids = [actor_id_for(actor, actor_type)]
    else:
        ids = [row["actor"] for row in list_actors(store, actor_type) if row["db_bytes"]]
    failed = 0
    for actor_id in ids:
        problems = check_integrity(store.actor(actor_id))
        if problems == ["ok"]:
            out.write(f"{actor_id}: ok\n")
            continue
        failed += 1
        out.write(f"{actor_id}: FAILED ({len(problems)} problem{'s' if len(problems) != 1 else ''})\n")
        out.writelines(f"    {problem}\n" for problem in problems)
    if failed:
        raise CLIError(f"{failed} of {len(ids)} database{'s' if len(ids) != 1 else ''} failed PRAGMA integrity_check")
    if not ids:
        out.write("no actor has a database\n")
    return 0


# ---------------------------------------------------------------------------- shell
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
        return _describe(exc)
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
        _require_database(kv)
    _take_ownership(kv)
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


# ---------------------------------------------------------------------------- bench
def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def bench_command(extra: Sequence[str], directory: str | None, out: str | os.PathLike[str] = ".") -> list[str]:
    """The command ``actor-db bench`` runs: ``python -m benchmarks.report --out OUT`` when
    the project has it, else pytest-benchmark over ``benchmarks/`` writing
    ``OUT/benchmark-results.json``. Nothing is written into the checkout."""
    root = Path(directory).resolve() if directory else _project_root() / "benchmarks"
    if not root.is_dir():
        raise CLIError(f"{root}: no benchmarks directory (run from a source checkout, or pass --dir)")
    target = Path(out).resolve()
    if (root / "report.py").is_file() and (root / "__init__.py").is_file():
        return [sys.executable, "-m", f"{root.name}.report", "--out", str(target), *extra]
    return [sys.executable, "-m", "pytest", str(root), "-q", "-p", "no:cacheprovider",
            "-o", "python_files=bench_*.py test_*.py", "--benchmark-only",
            f"--benchmark-json={target / 'benchmark-results.json'}", *extra]


def _run_bench(args: argparse.Namespace) -> int:
    extra = list(args.extra[1:] if args.extra[:1] == ["--"] else args.extra)
    out = Path(args.out or ".")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{out}: cannot create the output directory: {exc.strerror}") from exc
    cmd = bench_command(extra, args.dir, out)
    env = dict(os.environ)
    # The benchmarks are not an installed package: make the checkout importable.
    root = str(Path(args.dir).resolve().parent if args.dir else _project_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.call(cmd, env=env)


# ---------------------------------------------------------------------------- argument parsing
class _Formatter(argparse.HelpFormatter):
    """Option help in a column at 30 characters, so that every help fits one screen."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # one line, exit 2 (argparse's status for syntax)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from actor_db import __version__

    return (f"actor-db {__version__} (SQLite {apsw.sqlite_lib_version()} via apsw {apsw.apsw_version()}, "
            f"Python {sys.version.split()[0]})")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--kv", default=argparse.SUPPRESS, metavar="STORE",
                        help="lmdb:PATH, memory: or redis://HOST:PORT/DB "
                             "(default: $ACTOR_DB_KV, else lmdb:./.actor-db)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log INFO (-v) or DEBUG (-vv) messages to stderr")
    actor_type = _Parser(add_help=False)
    actor_type.add_argument("--actor-type", metavar="NAME", help="ACTOR is a key of this type (id NAME/ACTOR)")

    def add_actor(p: argparse.ArgumentParser) -> None:
        p.add_argument("actor", metavar="ACTOR", help="actor id (or key, with --actor-type)")

    def add_progress(p: argparse.ArgumentParser) -> None:
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar (default: on a terminal, from 1 MiB)")

    parser = _Parser(prog="actor-db", parents=[common],
                     description="Operate actor-db stores: per-actor SQLite databases in a KV store.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("shell", parents=[common, actor_type], help="SQL shell on an actor's database",
                       description="apsw's SQL shell on one actor's KV-backed database: interactive, "
                                   "-c SQL (repeatable), or SQL on stdin.")
    add_actor(p)
    p.add_argument("-c", "--command", dest="commands", action="append", default=[], metavar="SQL",
                   help="run this SQL or dot command (repeatable; stops at the first error)")
    p.add_argument("--create", action="store_true", help="create the database if the actor has none")

    p = sub.add_parser("import", parents=[common, actor_type], help="copy a SQLite, CSV, TSV or JSON-lines file in",
                       usage="%(prog)s [options] FILE ACTOR",
                       description="Copy a SQLite file into an actor's database, or a CSV/TSV/JSON-lines "
                                   "file into a table (header row, types detected). All or nothing.")
    p.add_argument("file", metavar="FILE", help="FILE.db (SQLite), .csv, .tsv or .jsonl")
    add_actor(p)
    p.add_argument("--force", action="store_true", help="replace the actor's database (tables: the table)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip PRAGMA integrity_check of a SQLite FILE")
    p.add_argument("--format", choices=["sqlite", "csv", "tsv", "jsonl"], metavar="FMT",
                   help="sqlite, csv, tsv or jsonl (default: by name)")
    p.add_argument("--table", metavar="NAME", help="CSV/TSV/JSONL: the table (default: file name)")
    p.add_argument("--append", action="store_true", help="CSV/TSV/JSONL: add rows to an existing table")
    p.add_argument("--no-header", dest="header", action="store_false", help="CSV/TSV: no header row")
    add_progress(p)

    p = sub.add_parser("export", parents=[common, actor_type], help="copy an actor's database into a SQLite file",
                       description="Copy an actor's database into an ordinary SQLite file (opens with "
                                   "the stdlib sqlite3). The file appears only when complete.")
    add_actor(p)
    p.add_argument("file", metavar="FILE.db", help="the SQLite file to write")
    p.add_argument("--force", action="store_true", help="overwrite FILE.db if it exists")
    add_progress(p)

    p = sub.add_parser("ls", parents=[common], help="list actors and their database sizes",
                       description="List the actors in the store with their database sizes "
                                   "(bytes and 4096-byte chunks; '-' = no database).")
    p.add_argument("--actor-type", metavar="NAME", help="only actors of this type")
    p.add_argument("--json", action="store_true", help="one JSON object per line, no header")

    p = sub.add_parser("rm", parents=[common, actor_type], help="delete an actor (all its keys)",
                       description="Delete every key of an actor: its database, state and staging. "
                                   "Asks first (reads y on stdin) unless -y.")
    add_actor(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = sub.add_parser("inspect", parents=[common, actor_type], help="meta, chunks, preload coverage, startup cost",
                       description="An actor database's meta record, chunks, redo-log state, preload "
                                   "coverage for a budget, and the KV round trips a cold start costs.")
    add_actor(p)
    p.add_argument("--preload-sqlite-bytes", type=int, metavar="N",
                   help="SQLite chunk budget of the preload (default 786432 = 768 KiB)")
    p.add_argument("--preload-total-bytes", type=int, metavar="N",
                   help="total preload budget (default 1048576 = 1 MiB)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("integrity", parents=[common, actor_type], help="PRAGMA integrity_check, one or all actors",
                       description="Run PRAGMA integrity_check on one actor's database, or on every "
                                   "actor's; exit status 1 if any fails.")
    p.add_argument("actor", nargs="?", metavar="ACTOR", help="actor id (default: every actor with a database)")

    p = sub.add_parser("compact", parents=[common], help="shrink an LMDB store's file to its data",
                       description="Copy the LMDB store without its free pages (lmdb's compacting copy) "
                                   "and swap the copy in. No other process may have the store open.")

    p = sub.add_parser("bench", parents=[common], help="run the benchmark report",
                       description="Run the benchmark report (benchmarks.report, else pytest-benchmark "
                                   "over benchmarks/). Arguments after -- are passed on.")
    p.add_argument("--out", metavar="DIR", help="write REPORT.md, plots and JSON here (default: .)")
    p.add_argument("--dir", metavar="DIR", help="the benchmarks directory (default: the checkout's)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for the report (after --)")
    from actor_db.serve import command as serve_command  # issue 22: ``actor-db serve``
    serve_command.add_parser(sub, [common])
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


class _SigintGuard:
    """The first Ctrl-C raises :class:`KeyboardInterrupt` and is remembered (even when the
    VFS turns it into an ``apsw.IOError``); later ones are ignored until the guarded work
    has rolled back."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def __enter__(self) -> _SigintGuard:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            return
        self.interrupted = True
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _run_import(args: argparse.Namespace, kv: Any) -> int:
    from actor_db.tabular import format_for

    fmt = args.format or format_for(args.file) or "sqlite"
    with _SigintGuard() as guard:
        before: tuple[bytes | None, bytes | None] | None = None
        try:
            before = _fingerprint(kv)
            if fmt == "sqlite":
                # validated (and integrity-checked) by _check_import_args before the store opened
                result = import_database(args.file, kv, force=args.force, progress=args.progress, check=False)
                sys.stderr.write(f"imported {args.file} into actor {kv.actor_id!r}: {result.pages} pages, "
                                 f"{result.size_bytes} bytes, {result.kv_round_trips} KV round trips\n")
                return 0
            table = import_tabular(args.file, kv, fmt=fmt, table=args.table, header=args.header,
                                   append=args.append, force=args.force, progress=args.progress)
        except BaseException:
            if not guard.interrupted:
                raise
            try:
                changed = before is not None and _fingerprint(kv) != before
            except Exception:
                raise _Interrupted(f"interrupted; actor {kv.actor_id!r} could not be checked "
                                   "(the import is all or nothing: see `actor-db inspect`)") from None
            if changed:
                raise _Interrupted(f"interrupted after the commit point: the import into actor "
                                   f"{kv.actor_id!r} is complete") from None
            raise _Interrupted(f"interrupted: nothing was imported (actor {kv.actor_id!r} is unchanged)") from None
    columns = ", ".join(f"{name} {kind}" for name, kind in table.columns.items())
    sys.stderr.write(f"imported {args.file} into table {table.table!r} of actor {kv.actor_id!r}: "
                     f"{table.rows} rows ({columns})\n")
    return 0


def _check_import_args(args: argparse.Namespace) -> None:
    from actor_db.tabular import format_for

    fmt = args.format or format_for(args.file) or "sqlite"
    if fmt == "sqlite":
        for flag, given in (("--table", args.table is not None), ("--append", args.append),
                            ("--no-header", not args.header)):
            if given:
                raise CLIError(f"{flag} applies to CSV/TSV/JSON-lines imports, not to a SQLite file")
        validate_source(args.file, check=args.check)  # before the store is created
    elif not Path(args.file).is_file():
        raise CLIError(f"{args.file}: no such file")
    elif args.append and args.force:
        raise CLIError("--append and --force exclude each other")


def _run(args: argparse.Namespace) -> int:
    command = args.command
    if command == "serve":
        from actor_db.serve import command as serve_command
        return serve_command.run(args)
    spec = getattr(args, "kv", None) or default_store_spec()
    if command == "bench":
        return _run_bench(args)
    if command == "compact":
        return _run_compact(spec)
    if command == "import":
        _check_import_args(args)
    writes = command == "import" or (command == "shell" and args.create)
    store = open_store(spec, create=writes)
    try:
        if command == "ls":
            rows = list_actors(store, args.actor_type)
            if args.json:
                sys.stdout.writelines(json.dumps(row) + "\n" for row in rows)
            else:
                _format_ls(rows, sys.stdout)
            return 0
        if command == "integrity":
            return _run_integrity(store, args.actor, args.actor_type, sys.stdout)
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        if command == "shell":
            return run_shell(kv, args.commands, create=args.create)
        if command == "import":
            return _run_import(args, kv)
        if command == "rm":
            if not _actor_has_keys(kv):
                raise _not_found(kv)
            size = _database_size(kv)
            what = "no database" if not size else f"a database of {size} bytes"
            if not args.yes and not _confirm(f"delete actor {kv.actor_id!r} ({what}, its state and all its keys)?"):
                raise CLIError(f"actor {kv.actor_id!r} not deleted (answer y, or pass -y)")
            remove_actor(kv)
            sys.stderr.write(f"deleted actor {kv.actor_id!r}\n")
            return 0
        if command == "export":
            pages = export_database(kv, args.file, force=args.force, progress=args.progress)
            sys.stderr.write(f"exported actor {kv.actor_id!r} to {args.file}: {pages} pages\n")
            return 0
        if command == "inspect":
            info = inspect_actor(kv, preload_sqlite_bytes=args.preload_sqlite_bytes,
                                 preload_total_bytes=args.preload_total_bytes)
            if args.json:
                sys.stdout.write(json.dumps(info, indent=2) + "\n")
            else:
                _format_inspect(info, sys.stdout)
            return 0
        raise AssertionError(f"unhandled command {command!r}")
    finally:
        store.close()


def _run_compact(spec: str) -> int:
    from actor_db.compact import CompactError, compact_lmdb

    if not spec.startswith("lmdb:") or not spec[len("lmdb:"):]:
        raise CLIError(f"compact works on LMDB stores (--kv lmdb:PATH), not {spec!r}")
    path = os.path.abspath(os.path.expanduser(spec[len("lmdb:"):]))
    try:
        result = compact_lmdb(path)
    except CompactError as exc:
        raise CLIError(str(exc)) from exc
    sys.stderr.write(f"compacted {result.path}: {_human(result.bytes_before)} -> {_human(result.bytes_after)}\n")
    return 0


def _human(size: int) -> str:
    """``size`` bytes in B, KiB, MiB or GiB (one decimal)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``actor-db`` command with ``argv`` (default ``sys.argv[1:]``).

    :returns: the exit status: 0 success, 1 an error (one line on stderr), 2 bad syntax,
        130 interrupted (Ctrl-C).
    """
    import sqlite3

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    _setup_logging(getattr(args, "verbose", 0))
    try:
        return _run(args)
    except _Interrupted as exc:
        sys.stderr.write(f"actor-db {args.command}: {exc}\n")
        return 130
    except (ActorDBError, apsw.Error, sqlite3.Error, OSError) as exc:
        sys.stderr.write(f"actor-db {args.command}: error: {_describe(exc)}\n")
        log.debug("details", exc_info=True)
        return 1
    except KeyboardInterrupt:
        done = ": nothing was imported" if args.command == "import" else ""  # before it started writing
        sys.stderr.write(f"actor-db {args.command}: interrupted{done}\n")
        return 130


def _describe(exc: BaseException) -> str:
    """One line: the error, and for a SQLite I/O error its KV cause."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, apsw.Error):
        text = f"{type(exc).__name__}: {text}"
    cause = exc.__cause__
    if isinstance(cause, KVError) and str(cause) not in text:
        text += f" (KV: {str(cause).splitlines()[0]})"
    return text
