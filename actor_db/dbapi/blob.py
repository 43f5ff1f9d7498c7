"""``Blob``: incremental I/O on one BLOB value (``Connection.blobopen``)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Literal

import apsw

from .database import orphan_raw_of
from .errors import ProgrammingError, _translate

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

class Blob:
    """Incremental I/O on one BLOB value (``Connection.blobopen``).

    Every apsw call holds the database lock (the threading rule of
    :class:`~actor_db.dbapi.connection.Connection`), even ``length``/``tell``.
    """

    _connection: Connection
    _raw: apsw.Blob | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Blob:
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__name__}' instances")

    @classmethod
    def _make(cls, connection: Connection, raw: apsw.Blob) -> Blob:
        self = object.__new__(cls)
        self._connection = connection
        self._raw = raw
        return self

    def _blob(self) -> apsw.Blob:
        self._connection._check()
        if self._raw is None:
            raise ProgrammingError("Cannot operate on a closed blob.")
        return self._raw

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._connection._check().lock:
            try:
                return fn(*args)
            except apsw.Error as exc:
                raise _translate(exc) from None

    def _state(self, blob: apsw.Blob) -> tuple[int, int]:
        """``(length, position)`` of ``blob``, read under the lock."""
        with self._connection._check().lock:
            return int(blob.length()), int(blob.tell())

    def __del__(self) -> None:
        orphan_raw_of(self)

    def close(self) -> None:
        """Close the blob (idempotent); a pending error of a refused write is dropped."""
        self._connection._check()
        if self._raw is not None:
            raw, self._raw = self._raw, None
            with self._connection._check().lock:
                try:
                    raw.close(True)
                except apsw.Error:
                    log.debug("blob close reported an earlier error", exc_info=True)

    __iter__ = None  # like the stdlib's Blob: not iterable, no sequence protocol

    def __len__(self) -> int:
        return self._state(self._blob())[0]

    def tell(self) -> int:
        return self._state(self._blob())[1]

    def seek(self, offset: int, origin: int = os.SEEK_SET, /) -> None:
        blob = self._blob()
        length, pos = self._state(blob)
        if origin == os.SEEK_SET:
            base = 0
        elif origin == os.SEEK_CUR:
            base = pos
        elif origin == os.SEEK_END:
            base = length
        else:
            raise ValueError("'origin' should be os.SEEK_SET, os.SEEK_CUR, or os.SEEK_END")
        target = base + offset
        if target > 2**31 - 1:
            raise OverflowError("seek offset results in overflow")
        if target < 0 or target > length:
            raise ValueError("offset out of blob range")
        self._call(blob.seek, target)

    def read(self, length: int = -1, /) -> bytes:
        blob = self._blob()
        size, pos = self._state(blob)
        remaining = size - pos
        if length < 0 or length > remaining:
            length = remaining
        return bytes(self._call(blob.read, length))

    def write(self, data: Any, /) -> None:
        blob = self._blob()
        view = memoryview(data)
        size, pos = self._state(blob)
        if view.nbytes > size - pos:
            raise ValueError("data longer than blob")
        self._call(blob.write, view.tobytes())

    def _readat(self, offset: int, length: int) -> bytes:
        blob = self._blob()
        with self._connection._check().lock:
            pos = blob.tell()
            try:
                self._call(blob.seek, offset)
                return bytes(self._call(blob.read, length))
            finally:
                blob.seek(pos)

    def _writeat(self, offset: int, data: bytes) -> None:
        blob = self._blob()
        with self._connection._check().lock:
            pos = blob.tell()
            try:
                self._call(blob.seek, offset)
                self._call(blob.write, data)
            finally:
                blob.seek(pos)

    def _index(self, index: Any) -> int:
        if not hasattr(index, "__index__"):
            raise TypeError("Blob indices must be integers")
        i = index.__index__()
        n = len(self)
        if i < 0:
            i += n
        if i >= 2**63:
            raise IndexError("cannot fit 'int' into an index-sized integer")
        if i < 0 or i >= n:
            raise IndexError("Blob index out of range")
        return int(i)

    def __getitem__(self, key: Any) -> Any:
        self._blob()
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._readat(start, max(0, stop - start)) if stop > start else b""
            data = self._readat(0, len(self))
            return data[start:stop:step]
        return self._readat(self._index(key), 1)[0]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._blob()
        if not isinstance(key, slice) and not hasattr(key, "__index__"):
            raise TypeError("Blob indices must be integers")
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            view = memoryview(value)
            if not view.contiguous:
                raise BufferError("underlying buffer is not C-contiguous")
            data = view.tobytes()
            count = len(range(start, stop, step))
            if len(data) != count:
                raise IndexError("Blob slice assignment is wrong size")
            if count == 0:
                return
            if step == 1:
                self._writeat(start, data)
            else:
                current = bytearray(self._readat(0, len(self)))
                current[start:stop:step] = data
                self._writeat(0, bytes(current))
            return
        if not isinstance(value, int):
            raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
        i = self._index(key)
        if not 0 <= value <= 255:
            raise ValueError("byte must be in range(0, 256)")
        self._writeat(i, bytes((value,)))

    def __delitem__(self, key: Any) -> None:
        raise TypeError("Blob doesn't support item deletion" if not isinstance(key, slice)
                        else "Blob doesn't support slice deletion")

    def __enter__(self) -> Blob:
        self._blob()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self._blob()
        self.close()
        return False
