"""The native (C) VFS fast path: ``vfs.connect(..., vfs="native")``.

:data:`AVAILABLE` is ``True`` when the cffi extension ``native._kvvfs`` was built (by
``pip install``; see ``native/build_native.py``). Without it, importing this package
logs one warning and :func:`vfs.connect` uses the pure-Python VFS by default.
:data:`BUILD_ERROR` says why it is missing. This package never imports ``actor_db``.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

__all__ = ["AVAILABLE", "BUILD_ERROR"]

AVAILABLE: bool
BUILD_ERROR: str | None

try:
    from native import _kvvfs  # noqa: F401  (the compiled module)
except ImportError as exc:  # no C compiler at install time, or a stale build
    AVAILABLE = False
    BUILD_ERROR = f"{type(exc).__name__}: {exc}"
    log.warning("actor-db native VFS is not built (%s); falling back to the pure-Python VFS", BUILD_ERROR)
else:
    AVAILABLE = True
    BUILD_ERROR = None
