"""The ``actor-db`` command: a SQL shell, import/export, ``ls``, ``inspect`` and ``bench``.

Usage (``actor-db --help`` and ``actor-db COMMAND --help`` say more)::

    actor-db [--kv lmdb:PATH | memory: | redis://HOST:PORT/DB] COMMAND ...
    actor-db shell ACTOR [--actor-type NAME] [-c SQL]...   # apsw's shell on the KV VFS
    actor-db import FILE.db ACTOR [--force]                # SQLite file -> actor database
    actor-db export ACTOR FILE.db [--force]                # actor database -> SQLite file
    actor-db ls                                            # actors and database sizes
    actor-db inspect ACTOR                                 # meta, chunks, preload coverage, startup cost
    actor-db bench [-- ARGS]                               # the benchmark report

Actors: ``ACTOR`` is the actor id that :meth:`actor_db.kv.KVStore.actor` takes. With
``--actor-type NAME`` it is the key of an actor of that type, whose id is
``"NAME/ACTOR"`` (the mapping :class:`actor_db.Registry` uses).

Invariants:

- A user mistake (unknown actor, bad ``--kv``, a file that is not SQLite, an existing
  target without ``--force``) is ONE line on stderr and exit status 1 (2 for bad
  command-line syntax); never a traceback.
- ``import`` copies the file with SQLite's backup API into ONE write transaction of
  the KV VFS: pages past the VFS's dirty-byte bound are staged under the redo range,
  and the database only changes at the final commit (one atomic KV batch, or the
  redo protocol's commit record). A failed import therefore leaves the previous
  database (or none) in place, and its staged chunks are deleted.
- ``export`` writes a temporary file next to the target and renames it over the target
  only when the copy is complete (``os.replace``), so a failed export leaves no partial
  file.
- Writing commands (``shell``, ``import``) take single-writer ownership of the actor
  (its fencing token) when the driver supports it: a runtime that still holds the
  actor then fails its next commit loudly instead of overwriting the CLI's writes.

Left out: ``--kv`` URLs for drivers that do not exist; listing actors of a Redis
store with a namespace other than the URL's ``?namespace=`` parameter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence, TextIO, cast

import apsw

import vfs
from vfs.keys import CHUNK_SIZE, COMMIT_RECORD_KEY, FILE_MAIN, chunk_range, decode_meta, meta_key, staged_range

from actor_db.errors import ActorDBError, ActorNotFoundError, ConfigurationError, KVError

log = logging.getLogger(__name__)

__all__ = ["main", "open_store", "actor_id_for", "import_database", "export_database", "ImportResult",
           "DEFAULT_KV", "SQLITE_HEADER"]

DEFAULT_KV = "lmdb:./.actor-db"
"""The store used when neither ``--kv`` nor ``$ACTOR_DB_KV`` is given."""

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

_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class CLIError(ActorDBError):
    """A user mistake or an unusable store: reported as one line, exit status 1."""


# ---------------------------------------------------------------------------- stores
def open_store(spec: str, *, create: bool = True) -> Any:
    """Open the :class:`~actor_db.kv.KVStore` a ``--kv`` value names.

    :param spec: ``lmdb:PATH``, ``memory:`` (a new empty store), or a
        ``redis://``/``rediss://``/``unix://`` URL (optional ``?namespace=NS``).
    :param create: allow creating a missing LMDB directory (``False`` for commands
        that only read).
    :raises ConfigurationError: unknown scheme, missing store, or driver unavailable.
    """
    if spec == "memory:" or spec == "memory":
        from actor_db.kv import MemoryKV

        return MemoryKV()
    if spec.startswith("lmdb:"):
        path = spec[len("lmdb:"):]
        if not path:
            raise ConfigurationError("--kv lmdb: needs a directory, e.g. lmdb:./.actor-db")
        path = os.path.abspath(os.path.expanduser(path))
        if not create and not os.path.isdir(path):
            raise ConfigurationError(f"no LMDB store at {path} (nothing imported or created there yet)")
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigurationError(f"--kv lmdb:{path} is not a directory")
        from actor_db.kv import LmdbKV

        return LmdbKV(path)
    scheme = spec.split(":", 1)[0].lower() if ":" in spec else ""
    if scheme in ("redis", "rediss", "unix"):
        return _open_redis(spec)
    raise ConfigurationError(
        f"unknown --kv {spec!r}: expected lmdb:PATH, memory: or redis://HOST:PORT/DB")


def _open_redis(url: str) -> Any:
    try:
        from actor_db import kv as kv_module

        redis_kv = getattr(kv_module, "RedisKV")
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"the Redis driver is not available ({exc}); install it with: pip install 'actor-db[redis]'") from None
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    namespace = [v for k, v in query if k == "namespace"]
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "namespace"])
    clean = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    kwargs: dict[str, Any] = {"namespace": namespace[-1]} if namespace else {}
    try:
        return redis_kv(clean, **kwargs)
    except ActorDBError:
        raise
    except Exception as exc:  # redis-py raises its own types for a bad URL
        raise ConfigurationError(f"cannot open Redis store {url!r}: {exc}") from exc


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
        raise CLIError(f"{p}: not a SQLite database (no 'SQLite format 3' header)")


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
) -> ImportResult:
    """Copy the SQLite file ``source_path`` into the actor database of ``kv``.

    All-or-nothing: the copy is ONE write transaction on the KV VFS, so readers (and a
    crash) see the previous database until its single commit point.

    :param kv: the actor-scoped view (e.g. ``store.actor("a1")``).
    :param force: replace an existing database instead of refusing.
    :param progress: show a progress bar (``None``: on a terminal, for large files).
    :param max_dirty_bytes: dirty bytes held before staging (smaller: less memory).
    :raises CLIError: not a SQLite file, or the actor has a database and not ``force``.
    :raises apsw.Error: the copy failed (a KV failure is an ``apsw.IOError`` whose
        ``__cause__`` is a :class:`~actor_db.errors.KVError`); nothing was changed.
    """
    check_sqlite_file(source_path)
    try:
        source = apsw.Connection(os.fspath(source_path), flags=apsw.SQLITE_OPEN_READONLY)
        source.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except apsw.Error as exc:
        raise CLIError(f"{source_path}: not a usable SQLite database: {exc}") from exc
    try:
        existing = _database_size(kv)
        if existing and not force:
            raise CLIError(f"actor {getattr(kv, 'actor_id', '?')!r} already has a database "
                           f"({existing} bytes); use --force to replace it")
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
    finally:
        source.close()
    log.info("imported %s: %d pages of %d bytes, %d KV round trips", source_path, pages, page_size,
             used.round_trips)
    return ImportResult(pages, page_size, size, used.round_trips, used.large_commits > 0)


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
        vfs.connect(kv).close()
        if kv.get_many([COMMIT_RECORD_KEY])[0] is None and kv.scan(*staged_range(), limit=1):
            batch = vfs.WriteBatch()
            batch.delete_range(*staged_range())
            kv.write(batch)
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
    source = vfs.connect(kv)
    try:
        dest = apsw.Connection(tmp_name)
        try:
            pages = _copy(dest, source, "export", progress)
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    finally:
        source.close()
    return pages


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

    The startup figures are measured now: the runtime's one-call preload request for
    the given budgets (defaults: the runtime's, 768 KiB of SQLite chunks within 1 MiB),
    then an open and a read of the schema on that preload, counting KV round trips.

    :raises ActorNotFoundError: the actor has no database.
    """
    from actor_db.runtime.actor import ActorOptions
    from actor_db.runtime.keys import STATE_KEY
    from actor_db.runtime.metrics import CountingKV
    from actor_db.runtime.startup import preload_request

    size = _require_database(kv)
    options = ActorOptions(**{k: v for k, v in (("preload_max_sqlite_bytes", preload_sqlite_bytes),
                                                 ("preload_max_bytes", preload_total_bytes)) if v is not None})
    n_chunks, indices = _count_keys(kv, *chunk_range(FILE_MAIN))
    expected = -(-size // CHUNK_SIZE)
    staged, _ = _count_keys(kv, *staged_range())
    record, state = kv.get_many([COMMIT_RECORD_KEY, STATE_KEY])
    head = kv.get_many([chunk_range(FILE_MAIN)[0]])[0] or b""
    page_size = int.from_bytes(head[16:18], "big") if len(head) >= 18 else 0
    page_size = 65536 if page_size == 1 else page_size

    counting = CountingKV(kv)
    preload = counting.preload(preload_request(options, has_db=True))
    start, end = chunk_range(FILE_MAIN)
    preloaded = preload.items(start, end)
    con = vfs.connect(counting, preload=preload)
    try:
        con.execute("PRAGMA user_version").fetchall()
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
        stats = con.stats.snapshot()
    finally:
        con.close()
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
            "kv_round_trips": counting.round_trips,
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


def run_shell(kv: Any, commands: Sequence[str], *, create: bool, stdin: IO[str] | None = None,
              stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """apsw's shell on the actor database of ``kv``; returns the exit status.

    With ``commands`` each is run in turn (SQL or a dot command) and the first failure
    stops with status 1; otherwise SQL is read from ``stdin`` (interactive on a
    terminal) and the status is 1 if any statement failed.
    """
    if not create:
        _require_database(kv)
    _take_ownership(kv)
    con = vfs.connect(kv)
    shell = _Shell.make(con, stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    try:
        if commands:
            shell.bail = True
            for command in commands:
                try:
                    shell.process_complete_line(command)
                except SystemExit as exc:  # ".exit N"
                    return exc.code if isinstance(exc.code, int) else 0
                except Exception:
                    if not shell.failed:  # an error the shell did not already report
                        shell.failed = True
                        shell.handle_exception()
                    return 1
            return 0
        try:
            shell.cmdloop(intro=f"actor-db shell on actor {kv.actor_id!r} "
                                f"(SQLite {apsw.sqlite_lib_version()}, KV VFS)\n"
                                "Enter \".help\" for instructions\n")
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 0
        return 1 if shell.failed else 0
    finally:
        if con.in_transaction:  # an unfinished BEGIN: never commit half of it
            con.execute("ROLLBACK")
        con.close()


# ---------------------------------------------------------------------------- bench
def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def bench_command(extra: Sequence[str], directory: str | None) -> list[str]:
    """The command ``actor-db bench`` runs: ``python -m benchmarks.report`` when the
    project has it, else pytest-benchmark over ``benchmarks/``."""
    root = Path(directory).resolve() if directory else _project_root() / "benchmarks"
    if not root.is_dir():
        raise CLIError(f"{root}: no benchmarks directory (run from a source checkout, or pass --dir)")
    if (root / "report.py").is_file() and (root / "__init__.py").is_file():
        return [sys.executable, "-m", f"{root.name}.report", *extra]
    return [sys.executable, "-m", "pytest", str(root), "-q", "-p", "no:cacheprovider",
            "-o", "python_files=bench_*.py test_*.py", "--benchmark-only", *extra]


# ---------------------------------------------------------------------------- argument parsing
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (argparse's status for syntax)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    kv_help = ("the store: lmdb:PATH (default: $ACTOR_DB_KV, else lmdb:./.actor-db), "
               "memory: (a new empty in-memory store), or redis://HOST:PORT/DB[?namespace=NS]")
    common = _Parser(add_help=False)
    common.add_argument("--kv", default=argparse.SUPPRESS, metavar="STORE", help=kv_help)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log INFO (-v) or DEBUG (-vv) messages to stderr")
    actor_type = _Parser(add_help=False)
    actor_type.add_argument("--actor-type", metavar="NAME",
                            help="ACTOR is a key of this actor type (the actor id is NAME/ACTOR)")

    parser = _Parser(prog="actor-db", description="Operate actor-db stores: per-actor SQLite databases in a KV store.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("shell", parents=[common, actor_type], help="SQL shell on an actor's database (apsw shell)",
                       description="An interactive SQL shell (apsw.shell.Shell) on one actor's KV-backed "
                                   "database. Non-interactive: -c SQL (repeatable), or SQL on stdin.")
    p.add_argument("actor", metavar="ACTOR", help="actor id (or key, with --actor-type)")
    p.add_argument("-c", "--command", dest="commands", action="append", default=[], metavar="SQL",
                   help="run this SQL or dot command and exit (repeatable; stops at the first error)")
    p.add_argument("--create", action="store_true", help="create the database if the actor has none")

    p = sub.add_parser("import", parents=[common, actor_type], help="copy a SQLite file into an actor's database",
                       description="Copy an ordinary SQLite database file into an actor's database, "
                                   "all or nothing (one KV VFS transaction).")
    p.add_argument("file", metavar="FILE.db", help="the SQLite file to read")
    p.add_argument("actor", metavar="ACTOR", help="actor id (or key, with --actor-type)")
    p.add_argument("--force", action="store_true", help="replace the actor's existing database")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: on a terminal, for files of 1 MiB or more)")

    p = sub.add_parser("export", parents=[common, actor_type], help="copy an actor's database into a SQLite file",
                       description="Copy an actor's database into an ordinary SQLite file (opens with "
                                   "the stdlib sqlite3). The file appears only when complete.")
    p.add_argument("actor", metavar="ACTOR", help="actor id (or key, with --actor-type)")
    p.add_argument("file", metavar="FILE.db", help="the SQLite file to write")
    p.add_argument("--force", action="store_true", help="overwrite FILE.db if it exists")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: on a terminal, for databases of 1 MiB or more)")

    p = sub.add_parser("ls", parents=[common], help="list actors and their database sizes",
                       description="List the actors in the store with their database sizes "
                                   "(bytes and 4096-byte chunks; '-' = no database).")
    p.add_argument("--actor-type", metavar="NAME", help="only actors of this type")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("inspect", parents=[common, actor_type], help="meta, chunks, preload coverage, startup cost",
                       description="Show an actor database's meta record, chunk count, redo-log state, "
                                   "preload coverage for a budget, and the KV round trips a cold start "
                                   "costs (measured now).")
    p.add_argument("actor", metavar="ACTOR", help="actor id (or key, with --actor-type)")
    p.add_argument("--preload-sqlite-bytes", type=int, metavar="BYTES",
                   help="SQLite chunk budget of the startup preload (default 786432 = 768 KiB)")
    p.add_argument("--preload-total-bytes", type=int, metavar="BYTES",
                   help="total startup preload budget (default 1048576 = 1 MiB)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("bench", parents=[common], help="run the benchmark report",
                       description="Run the benchmark report (python -m benchmarks.report when the "
                                   "checkout has it, else pytest-benchmark over benchmarks/). "
                                   "Arguments after -- are passed on.")
    p.add_argument("--dir", metavar="DIR", help="the benchmarks directory (default: the checkout's)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for the report (after --)")
    return parser


def _setup_logging(verbose: int) -> None:
    if verbose <= 0:
        level = logging.WARNING
    else:
        level = logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose <= 0:
        logging.getLogger("actor_db").setLevel(logging.ERROR)  # one line per error: ours
        logging.getLogger("vfs").setLevel(logging.CRITICAL)


def _run(args: argparse.Namespace) -> int:
    command = args.command
    spec = getattr(args, "kv", None) or os.environ.get("ACTOR_DB_KV") or DEFAULT_KV
    if command == "bench":
        extra = [a for a in args.extra if a != "--"] if args.extra[:1] == ["--"] else list(args.extra)
        cmd = bench_command(extra, args.dir)
        env = dict(os.environ)
        # The benchmarks are not an installed package: make the checkout importable.
        root = str(Path(args.dir).resolve().parent if args.dir else _project_root())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        return subprocess.call(cmd, env=env)
    if command == "import":
        check_sqlite_file(args.file)  # before the store is created
    writes = command == "import" or (command == "shell" and args.create)
    store = open_store(spec, create=writes)
    try:
        if command == "ls":
            rows = list_actors(store, args.actor_type)
            for row in rows:
                if args.json:
                    sys.stdout.write(json.dumps(row) + "\n")
                else:
                    size = "-" if row["db_bytes"] is None else str(row["db_bytes"])
                    chunks = "-" if row["chunks"] is None else str(row["chunks"])
                    sys.stdout.write(f"{row['actor']}\t{size}\t{chunks}\n")
            return 0
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        if command == "shell":
            return run_shell(kv, args.commands, create=args.create)
        if command == "import":
            result = import_database(args.file, kv, force=args.force, progress=args.progress)
            sys.stderr.write(f"imported {args.file} into actor {kv.actor_id!r}: {result.pages} pages, "
                             f"{result.size_bytes} bytes, {result.kv_round_trips} KV round trips\n")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``actor-db`` command with ``argv`` (default ``sys.argv[1:]``).

    :returns: the exit status: 0 success, 1 an error (one line on stderr), 2 bad syntax.
    """
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    _setup_logging(getattr(args, "verbose", 0))
    try:
        return _run(args)
    except (ActorDBError, apsw.Error, OSError) as exc:
        sys.stderr.write(f"actor-db {args.command}: error: {_describe(exc)}\n")
        log.debug("details", exc_info=True)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"actor-db {args.command}: interrupted\n")
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
