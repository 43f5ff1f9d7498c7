"""Small helpers shared by the storage tests."""

from __future__ import annotations

from typing import Any

import apsw

import vfs
from vfs.protocol import KV, PreloadRequest


def full_preload(kv: KV, max_bytes: int = 768 * 1024) -> vfs.PreloadMap:
    """The one-call startup preload of an actor's database (1 round trip)."""
    return kv.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges(max_bytes)))


def integrity(con: apsw.Connection) -> str:
    return "\n".join(str(r[0]) for r in con.execute("PRAGMA integrity_check"))


def rows(con: apsw.Connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in con.execute(sql, args)]


def dump(con: apsw.Connection) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every user table's rows, ordered, for before/after comparisons."""
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")]
    return [(t, rows(con, f'SELECT * FROM "{t}" ORDER BY rowid')) for t in tables]
