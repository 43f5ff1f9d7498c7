"""``ATTACH`` on a KV-backed drop-in connection: the name goes through ``connect``'s mapping.

On a KV-backed connection, ``ATTACH 'orders' AS o`` attaches the database that
``connect('orders')`` (with the connection's ``kv=`` and ``uri``) would open: an actor's
KV-backed database when the name maps to one (:func:`actor_db.dbapi.database.route`),
set up by :func:`vfs.attach` (1 round trip, its preload), and otherwise the plain file
SQLite would open, exactly as before. With ``uri=True``, ``ATTACH 'file:orders?mode=ro'``
is read as a URI (read-only), as SQLite reads it. ``:memory:``, ``''`` (a temporary
database) and ``mode=memory`` URIs stay SQLite's own.

Recognised forms: ``ATTACH [DATABASE] <string literal | parameter | name | quoted name>
AS <name | quoted name | string literal | parameter>`` (an optional ``;``); an identifier
in the first place is the string it spells, as SQLite reads it (``ATTACH "file:x?mode=ro"
AS x``: Datasette's cross-database queries). Anything else (an expression, a
``KEY`` clause) runs unchanged, as SQLite reads it. A transaction writing to several
KV-backed databases commits each atomically, not all together (see :func:`vfs.attach`).
"""

from __future__ import annotations

import collections.abc
import re
from dataclasses import dataclass
from typing import Any

import vfs

from .routing import _parse_uri
from .sql import _skip_space_and_comments

__all__ = ["AttachRouting", "AttachPlan", "plan", "run"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_PARAM = re.compile(r"\?(\d*)|[:@$]([A-Za-z0-9_]+)")
_ATTACH_OPTIONS = ("locking", "cache_chunks", "readahead_max_chunks", "max_dirty_bytes", "lease_ttl_s",
                   "large_commits", "hint_interior_max_bytes")
"""``vfs_options`` keys of ``connect`` that :func:`vfs.attach` takes too."""


@dataclass(frozen=True)
class AttachRouting:
    """What a KV-backed connection was opened with: the inputs of ``connect``'s mapping."""

    uri: bool
    kv: Any
    vfs_options: collections.abc.Mapping[str, Any] | None
    readonly: bool


@dataclass(frozen=True)
class AttachPlan:
    """An ``ATTACH`` of an actor's database: ``view`` attached as ``schema``."""

    view: Any
    name: str
    schema: str
    readonly: bool


class _Scanner:
    """Tokens of one ``ATTACH`` statement, with the statement's parameter numbering."""

    def __init__(self, sql: str, bindings: Any) -> None:
        self.sql = sql
        self.i = 0
        self.bindings = bindings
        self.next_index = 1  # what the next bare ``?`` is numbered, as SQLite numbers them

    def skip(self) -> bool:
        self.i = _skip_space_and_comments(self.sql, self.i)
        return self.i >= 0

    def keyword(self, word: str) -> bool:
        if not self.skip():
            return False
        m = _WORD.match(self.sql, self.i)
        if m is None or m.group(0).lower() != word:
            return False
        self.i = m.end()
        return True

    def value(self, *, identifier: bool) -> tuple[bool, Any]:
        """``(ok, value)`` of the next string literal or parameter (or identifier)."""
        if not self.skip() or self.i >= len(self.sql):
            return False, None
        ch = self.sql[self.i]
        if ch == "'" or (identifier and ch in '"`['):
            close = "]" if ch == "[" else ch
            j, out = self.i + 1, []
            while True:
                k = self.sql.find(close, j)
                if k < 0:
                    return False, None
                out.append(self.sql[j:k])
                if close != "]" and self.sql.startswith(close * 2, k):
                    out.append(close)
                    j = k + 2
                    continue
                self.i = k + 1
                return True, "".join(out)
        m = _PARAM.match(self.sql, self.i)
        if m is not None:
            self.i = m.end()
            return self._parameter(m)
        if identifier:
            m = _WORD.match(self.sql, self.i)
            if m is not None:
                self.i = m.end()
                return True, m.group(0)
        return False, None

    def _parameter(self, m: re.Match[str]) -> tuple[bool, Any]:
        b = self.bindings
        if m.group(2) is not None:  # :name, @name, $name
            if isinstance(b, collections.abc.Mapping) and m.group(2) in b:
                return True, b[m.group(2)]
            return False, None
        index = int(m.group(1)) if m.group(1) else self.next_index
        self.next_index = index + 1
        if isinstance(b, collections.abc.Sequence) and 1 <= index <= len(b):
            return True, b[index - 1]
        return False, None

    def at_end(self) -> bool:
        if not self.skip():
            return False
        if self.i < len(self.sql) and self.sql[self.i] == ";":
            self.i += 1
            if not self.skip():
                return False
        return self.i >= len(self.sql)


def _stays_sqlite(name: str, uri: bool) -> bool:
    """Names that are SQLite's own whatever the mapping: memory and temporary databases."""
    if name in ("", ":memory:"):
        return True
    parsed = _parse_uri(name) if uri else None
    return parsed is not None and (parsed[0] in ("", ":memory:") or parsed[1].get("mode") == "memory")


def plan(sql: str, bindings: Any, routing: AttachRouting) -> AttachPlan | None:
    """The actor database an ``ATTACH`` statement names, or ``None`` to run ``sql`` as is.

    No round trip (the mapping only builds an actor view).
    """
    from .database import route

    scan = _Scanner(sql, bindings)
    if not scan.keyword("attach"):
        return None
    mark = scan.i
    if not scan.keyword("database"):
        scan.i = mark
    ok, name = scan.value(identifier=True)  # SQLite reads an identifier here as a string
    if not ok or not isinstance(name, str) or not scan.keyword("as"):
        return None
    ok, schema = scan.value(identifier=True)
    if not ok or not isinstance(schema, str) or not scan.at_end():
        return None
    if "\0" in name or _stays_sqlite(name, routing.uri):
        return None
    view, actor_name, readonly = route(name, routing.uri, routing.kv)
    if view is None:
        return None
    return AttachPlan(view, actor_name, schema, readonly or routing.readonly)


def run(raw: Any, attach: AttachPlan, routing: AttachRouting) -> None:
    """Attach ``attach.view`` to the apsw connection ``raw`` (its lock held).

    :raises apsw.Error: as :func:`vfs.attach` (translated by the caller).
    """
    options = {k: v for k, v in (routing.vfs_options or {}).items() if k in _ATTACH_OPTIONS}
    options.setdefault("locking", "in-process" if getattr(attach.view, "instant_writes", False) else "cross-process")
    vfs.attach(raw, attach.view, attach.schema, name=attach.name, readonly=attach.readonly, **options)
