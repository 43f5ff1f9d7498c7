"""WAL-mode SQLite sources: copy them into rollback-journal mode before they come in.

An actor's database is in rollback-journal mode (the KV VFS has no WAL and no shared
memory): SQLite refuses to open a database whose page 1 says WAL (header bytes 18-19
= 2, 2) on it (``unable to open database file``). SQLite's backup API copies page 1 as
it is, so a copy of a WAL-mode file (the usual mode of application databases) would
arrive unusable. Every way in (``actor-db import``, the drop-in's ``restore_from``,
``backup`` and ``deserialize``) therefore goes through this module when its source is
in WAL mode:

1. :func:`rollback_copy` copies the source through the backup API into a private
   temporary file. The backup reads ONE consistent state of the source, WAL frames
   included (a live ``-wal`` file of a running app's last commits is part of it); the
   user's file is opened read-only and never modified, checkpointed or truncated.
2. :func:`convert_to_rollback` reopens the copy and runs ``PRAGMA journal_mode=DELETE``
   (SQLite checkpoints the copy's WAL into it and writes bytes 18-19 = 1, 1), then
   checks the header bytes.

Costs: a temporary copy as large as the source database, in the directory the caller
gives (``tempfile``'s default, ``$TMPDIR``). Left out: WAL2 and other non-standard
modes (bytes other than 1 or 2 are refused with :class:`~actor_db.errors.OperationError`).
"""

from __future__ import annotations

import logging
import os
import time

import apsw

from actor_db.errors import OperationError

log = logging.getLogger(__name__)

__all__ = ["HEADER_VERSION_OFFSET", "is_wal", "rollback_copy", "convert_to_rollback", "rollback_image",
           "header_versions"]

BUSY_TIMEOUT_S = 5.0
"""Seconds :func:`rollback_copy` retries while a writer of the source holds it locked."""

HEADER_VERSION_OFFSET = 18
"""Bytes 18 and 19 of a SQLite file: write and read format versions (1 rollback, 2 WAL)."""


def header_versions(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Bytes 18 and 19 of the file at ``path``, or ``None`` when it is shorter."""
    with open(path, "rb") as f:
        head = f.read(HEADER_VERSION_OFFSET + 2)
    if len(head) < HEADER_VERSION_OFFSET + 2:
        return None
    return head[HEADER_VERSION_OFFSET], head[HEADER_VERSION_OFFSET + 1]


def is_wal(connection: apsw.Connection, name: str = "main") -> bool:
    """Whether database ``name`` of ``connection`` is in WAL mode (its ``journal_mode``)."""
    mode = connection.execute(f"PRAGMA {_quote(name)}.journal_mode").get
    return str(mode).lower() == "wal"


def rollback_copy(source: apsw.Connection, directory: str | os.PathLike[str], name: str = "main") -> str:
    """Copy database ``name`` of ``source`` into ``directory/copy.db`` in rollback-journal
    mode (see the module docstring) and return the copy's path.

    :raises OperationError: the copy could not be converted (its header still says WAL).
    :raises apsw.Error: reading the source or writing the copy failed (e.g. no space).
    """
    path = os.path.join(os.fspath(directory), "copy.db")
    copy = apsw.Connection(path)
    try:
        with copy.backup("main", source, name) as backup:
            deadline = time.monotonic() + BUSY_TIMEOUT_S
            while True:
                try:
                    backup.step(-1)  # one consistent state of the source, its WAL frames included
                    break
                except (apsw.BusyError, apsw.LockedError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)  # a writer of the source is committing: as SQLite's busy handler
    finally:
        copy.close()
    convert_to_rollback(path)
    return path


def convert_to_rollback(path: str | os.PathLike[str]) -> None:
    """Put the SQLite file at ``path`` (a private copy) in rollback-journal mode: its WAL
    (if any) is checkpointed into it and its header bytes 18-19 become 1, 1.

    :raises OperationError: the header still does not say rollback mode afterwards.
    """
    if header_versions(path) == (1, 1) and not os.path.exists(f"{os.fspath(path)}-wal"):
        return
    # A fresh connection: one that wrote page 1 through the backup API would keep its
    # own idea of the mode and make the PRAGMA a no-op.
    con = apsw.Connection(os.fspath(path))
    try:
        con.execute("PRAGMA journal_mode=DELETE").fetchall()
    finally:
        con.close()
    versions = header_versions(path)
    if versions != (1, 1):
        raise OperationError(f"could not put a copy of the database in rollback-journal mode (header bytes "
                             f"18-19 are {versions}); run `PRAGMA journal_mode=DELETE` on the source with the "
                             "sqlite3 tool, then import it")
    log.info("converted %s from WAL to rollback-journal mode", path)


def rollback_image(data: bytes) -> bytes:
    """A serialized database image (``Connection.serialize``) in rollback-journal mode:
    an image already holds every committed page (WAL frames included), so only its
    header bytes 18-19 change from 2, 2 to 1, 1. Other images are returned as they are."""
    if len(data) >= 100 and data[:16] == b"SQLite format 3\x00" and data[18:20] == b"\x02\x02":
        return data[:18] + b"\x01\x01" + data[20:]
    return data


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
