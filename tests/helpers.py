"""Small helpers shared by the storage tests."""

from __future__ import annotations

import time
from typing import Any, Callable

import apsw
import pytest

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


def view_dump(view: KV) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """:func:`dump` of the database in ``view`` through a read-only connection, after
    asserting that its ``integrity_check`` is ok."""
    con = vfs.connect(view, readonly=True)
    try:
        assert integrity(con) == "ok"
        return dump(con)
    finally:
        con.close()


class LockSpy:
    """Counts the lock requests :class:`vfs.locks.DatabaseShare` refused, per connection,
    so a test can assert that a connection WAITED (SQLite's busy handler retried) by
    counting refusals instead of timing it.

    Install with pytest's ``monkeypatch``: ``spy = LockSpy(monkeypatch)``.
    """

    def __init__(self, monkeypatch: Any) -> None:
        import collections

        from vfs.locks import DatabaseShare

        self.refusals: collections.Counter[int] = collections.Counter()
        original = DatabaseShare.lock
        spy = self

        def lock(share: DatabaseShare, fid: int, level: int) -> int:
            try:
                return original(share, fid, level)
            except apsw.BusyError:
                spy.refusals[fid] += 1
                raise

        monkeypatch.setattr(DatabaseShare, "lock", lock)

    @staticmethod
    def _fid(con: Any) -> int:
        raw = getattr(con, "apsw_connection", con)
        return raw.kv_file._fid  # type: ignore[no-any-return]

    def of(self, con: Any) -> int:
        """Lock requests of ``con`` (a drop-in or apsw KV connection) refused so far."""
        return self.refusals[self._fid(con)]

    def wait_for(self, con: Any, count: int, hang_guard_s: float = 60.0) -> None:
        """Block until ``con`` has been refused ``count`` times."""
        poll_until(lambda: self.of(con) >= count, lambda: f"the connection was refused only {self.of(con)} times",
                   hang_guard_s)


def poll_until(predicate: Callable[[], bool], what: Callable[[], str] | str, hang_guard_s: float = 60.0) -> None:
    """Poll ``predicate`` until it holds. A hang guard, not a timing: nothing is asserted
    about how long it takes; only a test that would otherwise hang forever fails (with
    ``what``) after ``hang_guard_s``."""
    deadline = time.monotonic() + hang_guard_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"hang guard ({hang_guard_s} s): {what() if callable(what) else what}")
        time.sleep(0.001)
