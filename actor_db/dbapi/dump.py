"""``iterdump``: the stdlib's own ``sqlite3/dump.py``, loaded by path (it only uses the
DB-API surface)."""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from typing import TYPE_CHECKING, Any, Iterator

from .errors import NotSupportedError

if TYPE_CHECKING:
    from .connection import Connection

_dump_module: Any = None


def _iterdump(connection: Connection) -> Iterator[str]:
    global _dump_module
    if _dump_module is None:
        path = os.path.join(sysconfig.get_paths()["stdlib"], "sqlite3", "dump.py")
        spec = importlib.util.spec_from_file_location("_actor_db_sqlite3_dump", path)
        if spec is None or spec.loader is None or not os.path.exists(path):
            raise NotSupportedError(f"iterdump needs the standard library's sqlite3/dump.py ({path} not found)")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _dump_module = module
    return _dump_module._iterdump(connection)  # type: ignore[no-any-return]
