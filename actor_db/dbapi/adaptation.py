"""Type adaptation of the drop-in ``sqlite3``: adapters (``register_adapter``,
``__conform__``), converters (``register_converter``, ``PARSE_DECLTYPES``,
``PARSE_COLNAMES``), the default date/timestamp ones, and the PEP 249 type constructors."""

from __future__ import annotations

import datetime
import time
from typing import Any, Callable

from .errors import ProgrammingError

class PrepareProtocol:
    """The protocol object adapters are registered for (PEP 246 style)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise TypeError("PrepareProtocol() takes no arguments")


adapters: dict[tuple[type, type], Callable[[Any], Any]] = {}
converters: dict[str, Callable[[bytes], Any]] = {}
_base_type_adapted = False
_BASIC = (int, float, str, bytes, bytearray, memoryview, type(None))


def register_adapter(type_: type, adapter: Callable[[Any], Any], /) -> None:
    """Adapt values of exactly ``type_`` with ``adapter`` before binding."""
    global _base_type_adapted
    if type_ in (int, float, str, bytearray):
        _base_type_adapted = True
    adapters[(type_, PrepareProtocol)] = adapter


def register_converter(typename: str, converter: Callable[[bytes], Any], /) -> None:
    """Convert columns declared (or named ``[typename]``) with ``converter(bytes)``."""
    if not isinstance(typename, str):
        raise TypeError(f"register_converter() argument 1 must be str, not {type(typename).__name__}")
    converters[typename.upper()] = converter


_NOT_GIVEN: Any = object()


def adapt(obj: Any, proto: Any = PrepareProtocol, alt: Any = _NOT_GIVEN, /) -> Any:
    """Adapt ``obj`` like ``sqlite3.adapt``: registered adapter, ``__adapt__``, ``__conform__``."""
    adapter = adapters.get((type(obj), proto))
    if adapter is not None:
        return adapter(obj)
    adapt_method = getattr(proto, "__adapt__", None)
    if adapt_method is not None:
        try:
            adapted = adapt_method(obj)
        except TypeError:
            adapted = None
        if adapted is not None:
            return adapted
    conform = getattr(obj, "__conform__", None)
    if conform is not None:
        try:
            adapted = conform(proto)
        except TypeError:
            adapted = None
        if adapted is not None:
            return adapted
    if alt is not _NOT_GIVEN:
        return alt
    raise ProgrammingError("can't adapt")


def _adapt_date(val: datetime.date) -> str:
    return val.isoformat()


def _adapt_datetime(val: datetime.datetime) -> str:
    return val.isoformat(" ")


def _convert_date(val: bytes) -> datetime.date:
    return datetime.date(*map(int, val.split(b"-")))


def _convert_timestamp(val: bytes) -> datetime.datetime:
    datepart, timepart = val.split(b" ")
    year, month, day = map(int, datepart.split(b"-"))
    timepart_full = timepart.split(b".")
    hours, minutes, seconds = map(int, timepart_full[0].split(b":"))
    microseconds = int("{:0<6.6}".format(timepart_full[1].decode())) if len(timepart_full) == 2 else 0
    return datetime.datetime(year, month, day, hours, minutes, seconds, microseconds)


register_adapter(datetime.date, _adapt_date)
register_adapter(datetime.datetime, _adapt_datetime)
register_converter("date", _convert_date)
register_converter("timestamp", _convert_timestamp)
_base_type_adapted = False

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = memoryview


def DateFromTicks(ticks: float) -> datetime.date:
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:
    return Timestamp(*time.localtime(ticks)[:6])


def _sql_bytes(value: Any) -> bytes:
    """The bytes SQLite's ``sqlite3_column_blob`` would give for a column value."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()
