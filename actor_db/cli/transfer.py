"""``actor-db import`` and ``actor-db export`` (the work is :mod:`actor_db.ops.transfer`).

Invariants:

- The file to import is validated (and integrity-checked) before the store is opened,
  so a bad file never creates a store directory.
- Ctrl-C during ``import``: the import is rolled back (further Ctrl-Cs are ignored
  until that is done), one line says whether anything was imported, exit 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vfs.keys import CHUNK_SIZE

from actor_db.cli.common import (CLIError, Interrupted, Parents, SigintGuard, opened_store, progress_bar)
from actor_db.ops.common import actor_id_for, fingerprint
from actor_db.ops.transfer import export_database, import_database, import_tabular, validate_source

__all__ = ["register"]


def register(sub: Any, parents: Parents) -> None:
    """Add ``import`` and ``export`` to the subcommands."""
    p = sub.add_parser("import", parents=[parents.common, parents.actor_type],
                       help="copy a SQLite, CSV, TSV or JSON-lines file in",
                       usage="%(prog)s [options] FILE ACTOR",
                       description="Copy a SQLite file, or CSV/TSV/JSON lines (into a table), in; all or nothing.")
    p.add_argument("file", metavar="FILE", help="FILE.db (SQLite), .csv, .tsv or .jsonl")
    parents.add_actor(p)
    p.add_argument("--force", action="store_true", help="replace the actor's database (tables: the table)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip PRAGMA integrity_check of a SQLite FILE")
    p.add_argument("--format", choices=["sqlite", "csv", "tsv", "jsonl"], metavar="FMT",
                   help="sqlite, csv, tsv or jsonl (default: by name)")
    p.add_argument("--table", metavar="NAME", help="CSV/TSV/JSONL: the table (default: file name)")
    p.add_argument("--append", action="store_true", help="CSV/TSV/JSONL: add rows to an existing table")
    p.add_argument("--no-header", dest="header", action="store_false", help="CSV/TSV: no header row")
    p.add_argument("--delimiter", metavar="C", help="CSV/TSV: the field separator (e.g. ';')")
    parents.add_timeout(p)
    parents.add_progress(p)
    p.set_defaults(handler=_run_import)

    p = sub.add_parser("export", parents=[parents.common, parents.actor_type],
                       help="copy an actor's database into a SQLite file",
                       description="Copy an actor's database into an ordinary SQLite file (opens with "
                                   "the stdlib sqlite3). The file appears only when complete.")
    parents.add_actor(p)
    p.add_argument("file", metavar="FILE.db", help="the SQLite file to write")
    p.add_argument("--force", action="store_true", help="overwrite FILE.db if it exists")
    parents.add_progress(p)
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    with opened_store(args) as store:
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        with progress_bar("export", args.progress) as progress:
            pages = export_database(kv, args.file, force=args.force, progress=progress)
        sys.stderr.write(f"exported actor {kv.actor_id!r} to {args.file}: {pages} pages\n")
        return 0


def _check_import_args(args: argparse.Namespace) -> None:
    from actor_db.tabular import format_for

    fmt = args.format or format_for(args.file) or "sqlite"
    if fmt == "sqlite":
        for flag, given in (("--table", args.table is not None), ("--append", args.append),
                            ("--no-header", not args.header), ("--delimiter", args.delimiter is not None)):
            if given:
                raise CLIError(f"{flag} applies to CSV/TSV/JSON-lines imports, not to a SQLite file")
        validate_source(args.file, check=args.check)  # before the store is created
    elif not Path(args.file).is_file():
        raise CLIError(f"{args.file}: no such file")
    elif args.append and args.force:
        raise CLIError("--append and --force exclude each other")
    elif args.delimiter is not None and (fmt == "jsonl" or len(_unescape(args.delimiter)) != 1):
        raise CLIError(f"--delimiter {args.delimiter!r}: one character (e.g. ';' or '\\t'), for CSV/TSV files")


def _run_import(args: argparse.Namespace) -> int:
    _check_import_args(args)
    with opened_store(args, create=True) as store:
        kv = store.actor(actor_id_for(args.actor, args.actor_type))
        return _import_into(args, kv)


def _import_into(args: argparse.Namespace, kv: Any) -> int:
    from actor_db.tabular import format_for

    fmt = args.format or format_for(args.file) or "sqlite"
    with SigintGuard() as guard:
        before: tuple[bytes | None, bytes | None] | None = None
        try:
            before = fingerprint(kv)
            if fmt == "sqlite":
                # validated (and integrity-checked) by _check_import_args before the store opened
                with progress_bar("import", args.progress) as progress:
                    result = import_database(args.file, kv, force=args.force, progress=progress, check=False,
                                             lease_timeout_s=args.timeout)
                sys.stderr.write(f"imported {args.file} into actor {kv.actor_id!r}: {result.pages} pages, "
                                 f"{result.size_bytes} bytes, {result.kv_round_trips} KV round trips\n")
                return 0
            # bytes, over both passes of a CSV/TSV file (type detection, then the rows)
            with progress_bar("import", args.progress, unit="B", min_total=256 * CHUNK_SIZE) as progress:
                table = import_tabular(args.file, kv, fmt=fmt, table=args.table, header=args.header,
                                       append=args.append, force=args.force, progress=progress,
                                       lease_timeout_s=args.timeout,
                                       delimiter=None if args.delimiter is None else _unescape(args.delimiter))
        except BaseException:
            if not guard.interrupted:
                raise
            try:
                changed = before is not None and fingerprint(kv) != before
            except Exception:
                raise Interrupted(f"interrupted; actor {kv.actor_id!r} could not be checked "
                                  "(the import is all or nothing: see `actor-db inspect`)") from None
            if changed:
                raise Interrupted(f"interrupted after the commit point: the import into actor "
                                  f"{kv.actor_id!r} is complete") from None
            raise Interrupted(f"interrupted: nothing was imported (actor {kv.actor_id!r} is unchanged)") from None
    columns = ", ".join(f"{name} {kind}" for name, kind in table.columns.items())
    sys.stderr.write(f"imported {args.file} into table {table.table!r} of actor {kv.actor_id!r}: "
                     f"{table.rows} rows ({columns})\n")
    return 0


def _unescape(delimiter: str) -> str:
    """``\\t`` (as typed in a shell) is a tab; anything else as given."""
    return "\t" if delimiter in ("\\t", "tab", "TAB") else delimiter
