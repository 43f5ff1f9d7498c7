"""How the VFS reports failures: as SQLite errors, through apsw's exception classes.

A VFS method that raises makes apsw return the matching SQLite error code to SQLite and
re-raise the same exception to the Python caller, so the user sees, for example,
``apsw.IOError: actor-db: KV write of the commit batch failed: KVError: ...`` with the
driver's exception as ``__cause__``.
"""

from __future__ import annotations

import apsw

from vfs.interrupts import interrupt_in

__all__ = ["sqlite_error", "kv_failure", "describe_kv", "CHANGED_DURING_READ", "changed_during_read"]

CHANGED_DURING_READ = "another process committed during this read transaction"
"""In the ``SQLITE_BUSY`` error of a ``cross-process`` read that found the database
changed since its transaction began: retrying the whole transaction succeeds."""


def changed_during_read(exc: BaseException) -> bool:
    """Whether ``exc`` is that error (nothing of the transaction was wrong but its timing)."""
    return isinstance(exc, apsw.BusyError) and CHANGED_DURING_READ in str(exc)


def sqlite_error(code: int, message: str) -> Exception:
    """An apsw exception for SQLite (extended) result ``code`` carrying ``message``."""
    exc = apsw.exception_for(code)
    exc.args = (message,)
    return exc


def kv_failure(code: int, what: str, cause: BaseException) -> Exception:
    """The I/O error for a failed KV call; the message names the KV cause.

    :param code: an ``SQLITE_IOERR_*`` extended code.
    :param what: what the VFS was doing, e.g. ``"read of 3 chunks"``.
    :returns: the I/O error; or, if ``cause`` is (or was caused by) an interrupt, that
        interrupt as :func:`vfs.interrupts.as_io_error` made it (so ``except
        KeyboardInterrupt`` still catches a Ctrl-C that landed inside a KV driver).
    """
    interrupt = interrupt_in(cause)
    if interrupt is not None:  # Ctrl-C inside the KV call: still an I/O error for SQLite
        return interrupt  # type: ignore[return-value]
    exc = sqlite_error(code, f"actor-db: KV {what} failed: {type(cause).__name__}: {cause}")
    exc.__cause__ = cause
    return exc


def describe_kv(kv: object) -> str:
    """``"actor 'a1'"`` for an actor-scoped view (following ``inner`` through wrappers
    that have one), else the view's ``repr``: how error messages name a database."""
    seen = 0
    view: object = kv
    while view is not None and seen < 8:
        actor_id = getattr(view, "actor_id", None)
        if isinstance(actor_id, str):
            return f"actor {actor_id!r}"
        view = getattr(view, "inner", None)
        seen += 1
    return repr(kv)
