"""The native (C) VFS fast path: ``vfs.connect(..., vfs="native")``.

:data:`AVAILABLE` is ``True`` when the cffi extension ``native._kvvfs`` was built (by
``pip install``; see ``native/build_native.py``). Without it, importing this package
logs one warning and :func:`vfs.connect` uses the pure-Python VFS by default.
:data:`BUILD_ERROR` says why it is missing. This package never imports ``actor_db``.
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)

__all__ = ["AVAILABLE", "BUILD_ERROR"]

AVAILABLE: bool
BUILD_ERROR: str | None

if importlib.util.find_spec("native._kvvfs") is None:
    BUILD_ERROR = "the C extension native._kvvfs was not built at install time (no C compiler?)"
else:
    try:
        from native import _kvvfs  # noqa: F401  (the compiled module)
        BUILD_ERROR = None
    except ImportError as exc:  # e.g. built for another Python
        BUILD_ERROR = f"native._kvvfs does not load: {type(exc).__name__}: {exc}"
AVAILABLE = BUILD_ERROR is None
if not AVAILABLE:
    log.warning("actor-db native VFS unavailable (%s); falling back to the pure-Python VFS", BUILD_ERROR)
