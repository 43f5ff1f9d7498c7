"""``Row``: a result row indexable by position and by column name."""

from __future__ import annotations

import collections.abc
from typing import Any, Iterator

from .cursor import Cursor

_PACKAGE = "actor_db.dbapi"

class Row:
    """A result row indexable by position and (case-insensitively) by column name."""

    __slots__ = ("_description", "_data")

    def __init__(self, cursor: Cursor, data: tuple[Any, ...], /) -> None:
        if not issubclass(type(cursor), Cursor):
            raise TypeError(f"Row() argument 1 must be {_PACKAGE}.Cursor, not {type(cursor).__name__}")
        if not isinstance(data, tuple):
            raise TypeError(f"Row() argument 2 must be tuple, not {type(data).__name__}")
        self._description = cursor.description
        self._data = data

    def __repr__(self) -> str:
        # The stdlib's text: tools print rows and compare with it.
        return f"<sqlite3.Row object at {id(self):#x}>"

    def keys(self) -> list[str]:
        return [] if self._description is None else [d[0] for d in self._description]

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            folded = key.casefold() if key.isascii() else key
            for i, d in enumerate(self._description or ()):
                name = d[0]
                if name == key or (name.isascii() and name.casefold() == folded):
                    return self._data[i]
            raise IndexError("No item with that key")
        if isinstance(key, slice):
            return self._data[key]
        if hasattr(key, "__index__"):
            return self._data[key]
        raise IndexError("Index must be int or string")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self._description == other._description and self._data == other._data

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__

    def __hash__(self) -> int:
        return hash(self._description) ^ hash(self._data)



collections.abc.Sequence.register(Row)
