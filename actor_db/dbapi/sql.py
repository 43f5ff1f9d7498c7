"""SQL text helpers of the drop-in ``sqlite3``: the first statement of a string, whether
it is DML (implicit ``BEGIN``), and ``complete_statement``."""

from __future__ import annotations

import apsw

def _skip_space_and_comments(sql: str, i: int) -> int:
    """Index of the first character at or after ``i`` that is not whitespace/comment;
    ``-1`` when something that is neither starts an incomplete token (``-``, ``/``)."""
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in " \t\r\n\f\v":
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            return i
    return n


_DML = ("insert", "update", "delete", "replace")


class _Parsed:
    __slots__ = ("sql", "is_dml", "extra", "empty")

    def __init__(self, sql: str, is_dml: bool, extra: bool, empty: bool) -> None:
        self.sql = sql
        self.is_dml = is_dml
        self.extra = extra
        self.empty = empty


_parse_cache: dict[str, _Parsed] = {}


def _parse(sql: str) -> _Parsed:
    """Split ``sql`` into its first statement and whether anything but comments follows.

    Leading empty statements (``"; begin"``, ``";;select 1"``) are skipped, as SQLite's
    prepare does in the stdlib; like the stdlib, DML is recognised by the first keyword
    of the string itself (``"; insert ..."`` starts no implicit transaction).
    """
    parsed = _parse_cache.get(sql)
    if parsed is not None:
        return parsed
    start = _skip_space_and_comments(sql, 0)
    head = sql[start:start + 7].lower()
    is_dml = head.startswith(_DML)
    while start < len(sql) and sql[start] == ";":
        start = _skip_space_and_comments(sql, start + 1)
    first, extra = sql[start:], False
    pos = sql.find(";", start)
    while pos >= 0:
        if apsw.complete(sql[start:pos + 1]):
            first = sql[start:pos + 1]
            rest = _skip_space_and_comments(sql, pos + 1)
            extra = rest < len(sql)
            break
        pos = sql.find(";", pos + 1)
    parsed = _Parsed(first, is_dml, extra, start >= len(sql))
    if len(_parse_cache) > 512:
        _parse_cache.clear()
    _parse_cache[sql] = parsed
    return parsed


def complete_statement(statement: str) -> bool:
    """True if ``statement`` holds one or more complete SQL statements."""
    if not isinstance(statement, str):
        raise TypeError(f"complete_statement() argument 'statement' must be str, not {type(statement).__name__}")
    return bool(apsw.complete(statement))
