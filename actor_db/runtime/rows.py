"""Query result rows that index both by position and by column name."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

__all__ = ["Row", "column_index"]


def column_index(names: tuple[str, ...]) -> dict[str, int]:
    """Name → position for one result shape; a duplicated name maps to its first column."""
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)
    return index


class Row:
    """One result row: ``row[0]`` by position, ``row["col"]`` by column name.

    Rows of one result set share one name index, so a row costs one tuple and one
    small object. A row compares equal to the tuple of its values.

    >>> r = Row((1, "x"), column_index(("id", "name")))
    >>> r[0], r["name"], tuple(r), dict(r.items())
    (1, 'x', (1, 'x'), {'id': 1, 'name': 'x'})
    """

    __slots__ = ("_values", "_index")

    def __init__(self, values: tuple[Any, ...], index: Mapping[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key]]
            except KeyError:
                raise KeyError(f"no column named {key!r}; columns are {list(self._index)}") from None
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def keys(self) -> list[str]:
        """Column names, in column order (duplicates appear once)."""
        return list(self._index)

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs, in column order."""
        return [(name, self._values[i]) for name, i in self._index.items()]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items())

    def __repr__(self) -> str:
        return f"Row({', '.join(f'{k}={v!r}' for k, v in self.items())})"
