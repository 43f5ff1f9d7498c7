"""Module constants of the drop-in ``sqlite3`` (PEP 249 and SQLite's ``SQLITE_*`` codes)."""

from __future__ import annotations

import apsw

apilevel = "2.0"
threadsafety = 3  # apsw's SQLite is serialized and every call here holds a lock
paramstyle = "qmark"
version = "2.6.0"
version_info = (2, 6, 0)
sqlite_version: str = apsw.sqlite_lib_version()
sqlite_version_info: tuple[int, ...] = tuple(int(p) for p in sqlite_version.split("."))
PARSE_DECLTYPES = 1
PARSE_COLNAMES = 2

for _name in dir(apsw):
    if _name.startswith("SQLITE_") and isinstance(getattr(apsw, _name), int):
        globals()[_name] = getattr(apsw, _name)
SQLITE_OK = 0
SQLITE_DENY = 1
SQLITE_IGNORE = 2
