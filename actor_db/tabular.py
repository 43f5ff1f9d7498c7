"""Import CSV, TSV and JSON-lines files into a table of an actor's database.

The parsing and the inserts are sqlite-utils' (``sqlite_utils.utils.rows_from_file``,
``TypeTracker``, ``Table.insert_all``), run over the drop-in ``sqlite3``-style
connection of :func:`actor_db.connect` on the actor's KV-backed database.

Invariants:

- All or nothing: the whole import is ONE transaction (``Database.atomic()``), so the
  database changes only at its single commit (one atomic KV batch, or the redo
  protocol's commit record for large files). A failure or an interrupt leaves the
  table as it was (or absent).
- CSV/TSV: the first row is the header unless ``header=False`` (then the columns are
  ``untitled_1``, ``untitled_2``, ...). Column types are detected over the whole file
  first (sqlite-utils' ``TypeTracker``: INTEGER, FLOAT, else TEXT), the table is
  created with them, and empty cells of INTEGER/FLOAT columns are stored as NULL.
- JSON lines: one object per line; value types are kept (nested values are stored as
  JSON text); keys seen later add columns.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from actor_db.errors import ActorDBError

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "TabularImportError", "TabularResult", "format_for", "import_table", "default_table_name"]

FORMATS = ("csv", "tsv", "jsonl")
"""The tabular formats :func:`import_table` reads."""

_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

BATCH_ROWS = 1000
"""Rows per INSERT batch (sqlite-utils ``batch_size``)."""

MAX_DIRTY_BYTES = 8 * 1024 * 1024
"""Dirty bytes the KV VFS holds during an import before staging them (bounds memory)."""


class TabularImportError(ActorDBError):
    """The file cannot be imported as asked (bad row, existing table, ...); nothing was written."""


@dataclass(frozen=True)
class TabularResult:
    """What :func:`import_table` wrote.

    :ivar table: the table name.
    :ivar rows: rows inserted.
    :ivar columns: ``{column: declared SQLite type}`` of the table afterwards.
    :ivar created: the table was created by this import.
    """

    table: str
    rows: int
    columns: dict[str, str]
    created: bool


def format_for(path: str | os.PathLike[str]) -> str | None:
    """The tabular format a file name implies (``csv``, ``tsv``, ``jsonl``), or ``None``."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def default_table_name(path: str | os.PathLike[str]) -> str:
    """The table a file goes to by default: its name without the extension."""
    stem = Path(path).stem
    return stem or "data"


def _sqlite_type(detected: str) -> str:
    return {"integer": "INTEGER", "float": "FLOAT"}.get(detected, "TEXT")


def _csv_rows(fp: BinaryIO, fmt: str, header: bool, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
    """Dicts from a CSV/TSV byte stream (the stdlib ``csv`` parser, as sqlite-utils uses it)."""
    from sqlite_utils.utils import Format, rows_from_file

    if header and delimiter is None:
        rows, _ = rows_from_file(fp, Format.TSV if fmt == "tsv" else Format.CSV)
        yield from rows
        return
    text = io.TextIOWrapper(fp, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, dialect="excel-tab" if fmt == "tsv" else "excel",
                        **({} if delimiter is None else {"delimiter": delimiter}))
    first = next(reader, None)
    if first is None:
        return
    if header:
        for row in reader:
            if len(row) > len(first):
                raise TabularImportError(f"row {reader.line_num} has {len(row)} fields, the header {len(first)}")
            yield dict(zip(first, row))
        return
    names = [f"untitled_{i + 1}" for i in range(len(first))]
    for row in itertools.chain([first], reader):
        if len(row) > len(names):
            raise TabularImportError(f"row {reader.line_num} has {len(row)} fields, the first row {len(names)}")
        yield dict(zip(names, row))


def _rows(path: Path, fmt: str, header: bool, on_bytes: Callable[[int], None] | None = None,
          delimiter: str | None = None) -> Iterator[dict[str, Any]]:
    """The file's rows as dicts; ``on_bytes(offset)`` is called every :data:`BATCH_ROWS` rows."""
    from sqlite_utils.utils import Format, RowError, rows_from_file

    n = 0
    with path.open("rb") as fp:
        try:
            if fmt == "jsonl":
                rows: Iterable[dict[str, Any]] = rows_from_file(fp, Format.NL)[0]
            else:
                rows = _csv_rows(fp, fmt, header, delimiter)
            for n, row in enumerate(rows, 1):
                if fmt == "jsonl" and not isinstance(row, dict):
                    raise TabularImportError(f"line {n}: expected a JSON object, got {type(row).__name__}")
                if None in row:  # csv.DictReader puts extra fields under None
                    raise TabularImportError(f"row {n + 1}: more fields than the header has")
                yield row
                if on_bytes is not None and n % BATCH_ROWS == 0:
                    on_bytes(fp.tell())
        except RowError as exc:
            raise TabularImportError(f"{path.name}: data row {n + 1} has more fields than the header ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise TabularImportError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except csv.Error as exc:
            raise TabularImportError(f"{path.name}: CSV error: {exc}") from exc
        except ValueError as exc:  # json.JSONDecodeError
            if isinstance(exc, TabularImportError):
                raise
            raise TabularImportError(f"{path.name}: not JSON lines: {exc}") from exc
    if on_bytes is not None:
        on_bytes(path.stat().st_size)


def _detect_types(path: Path, fmt: str, header: bool, on_bytes: Callable[[int], None] | None = None,
                  delimiter: str | None = None) -> dict[str, str]:
    """``{column: SQLite type}`` over the whole CSV/TSV file (first pass, no writes)."""
    from sqlite_utils.utils import TypeTracker

    tracker = TypeTracker()
    for _ in tracker.wrap(_rows(path, fmt, header, on_bytes, delimiter)):
        pass
    types = {column: _sqlite_type(kind) for column, kind in tracker.types.items()}
    if not types and header:  # a header and no rows: an empty table of TEXT columns
        with path.open(encoding="utf-8-sig", newline="") as f:
            first = next(csv.reader(f, dialect="excel-tab" if fmt == "tsv" else "excel",
                                    **({} if delimiter is None else {"delimiter": delimiter})), [])
        types = {column: "TEXT" for column in first if column}
    return types


_IDENT = re.compile(r"\S")


def import_table(
    path: str | os.PathLike[str],
    kv: Any,
    *,
    table: str | None = None,
    fmt: str | None = None,
    header: bool = True,
    append: bool = False,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
    delimiter: str | None = None,
) -> TabularResult:
    """Import a CSV/TSV/JSON-lines file into ``table`` of the actor database of ``kv``.

    :param path: the file (UTF-8; a BOM is skipped).
    :param kv: the actor-scoped KV view (e.g. ``store.actor("a1")``); the database is
        created if the actor has none.
    :param table: the table (default: the file name without its extension).
    :param fmt: ``csv``, ``tsv`` or ``jsonl`` (default: from the file's extension).
    :param header: CSV/TSV only: the first row names the columns.
    :param append: add the rows to an existing table (new columns are added).
    :param replace: drop an existing table first (in the same transaction).
    :param progress: called as ``progress(done, total)`` now and then, in bytes read of
        ``total`` = the file's size times the passes over it (CSV/TSV: two, the type
        detection then the insert; JSON lines: one).
    :param delimiter: CSV/TSV only: the field separator (one character; default ``,``
        for CSV, a tab for TSV).
    :raises TabularImportError: unknown format, a bad row, or the table exists and
        neither ``append`` nor ``replace``; nothing was written.
    :raises sqlite3.Error: the database refused the data (a KV failure is a
        ``sqlite3.OperationalError`` caused by a :class:`~actor_db.errors.KVError`);
        nothing was written.
    """
    import sqlite_utils

    from actor_db.dbapi import connect

    source = Path(path)
    fmt = fmt or format_for(source)
    if fmt not in FORMATS:
        raise TabularImportError(f"{source}: unknown tabular format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if append and replace:
        raise TabularImportError("append and replace exclude each other")
    name = table or default_table_name(source)
    if not _IDENT.search(name):
        raise TabularImportError("the table name must not be empty")
    if delimiter is not None and (fmt == "jsonl" or len(delimiter) != 1):
        raise TabularImportError("the delimiter must be one character, for CSV/TSV files only")
    size = source.stat().st_size
    passes = 1 if fmt == "jsonl" else 2

    def reporter(done_before: int) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda offset: progress(done_before + offset, passes * size)

    types = _detect_types(source, fmt, header, reporter(0), delimiter) if fmt != "jsonl" else {}
    numeric = {column for column, kind in types.items() if kind != "TEXT"}

    def clean(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            if numeric:
                row = {k: (None if k in numeric and v == "" else v) for k, v in row.items()}
            yield row

    # One connection, the single writer (the caller holds the writer lease): no KV lock round trips.
    con = connect(getattr(kv, "actor_id", "database"), kv=kv,
                  vfs_options={"max_dirty_bytes": MAX_DIRTY_BYTES, "locking": "exclusive"})
    try:
        db = sqlite_utils.Database(con, execute_plugins=False)
        target = db.table(name)
        counted = 0

        def count(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            nonlocal counted
            for row in rows:
                counted += 1
                yield row

        with db.atomic():
            existed = target.exists()
            if existed and not (append or replace):
                raise TabularImportError(f"table {name!r} already exists; use --append to add rows "
                                         "or --force to replace it")
            if existed and replace:
                target.drop()
            created = not existed or replace
            if created and types:
                target.create(types, strict=False)
            rows = count(clean(_rows(source, fmt, header, reporter((passes - 1) * size), delimiter)))
            target.insert_all(rows, batch_size=BATCH_ROWS, alter=True)
        columns = {c.name: c.type for c in target.columns} if target.exists() else {}
    finally:
        con.close()
    log.info("imported %s into table %r: %d rows", source, name, counted)
    return TabularResult(name, counted, columns, created)
