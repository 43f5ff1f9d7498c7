"""Interrupts (``KeyboardInterrupt``, ``SystemExit``) inside the VFS's file methods.

A real ``SIGINT`` is delivered between any two bytecodes of the main thread: inside a
spill, between a KV write and the bookkeeping that records it, inside the code that
recovers from a failure, or at the very first instruction of a file method, before any
``try`` of it runs. What SQLite makes of the exception decides whether the transaction
survives (issue 29, item 4):

- apsw reports an exception it does not know (a bare ``KeyboardInterrupt``) to SQLite as
  ``SQLITE_ERROR``. From ``xRead``/``xWrite`` in a write transaction that code leaves
  SQLite's transaction corrupt (measured with apsw 3.54.1, also on a plain file: SQLite
  rolls back only the statement, and the next statements answer ``CorruptError``; a
  later ``COMMIT`` stores a corrupt database). An ``SQLITE_IOERR_*`` puts the pager in
  its error state and rolls the whole transaction back, which is also what the file's
  state is after it dropped what it derived from the KV.

So every interrupt that reaches SQLite from a file method must be an I/O error:

- :func:`as_io_error` makes an exception that is BOTH the interrupt (``except
  KeyboardInterrupt`` catches it) and an ``apsw.IOError`` (what apsw hands SQLite);
  the file methods convert what escapes them (:meth:`vfs.file.KVFile._failed`).
- A signal that lands at a method's first instruction cannot be caught inside it: while
  a Python-VFS file is open (:func:`file_opened` / :func:`file_closed`) the main
  thread's default SIGINT handler is replaced by :func:`_on_sigint`, which raises the
  converted interrupt when the signal lands inside a file method (found by walking
  the frames up to one registered with :func:`register`) and a plain
  ``KeyboardInterrupt`` anywhere else, exactly as the default handler does. An
  application's own SIGINT handler is left alone (then that window stays open).
- Recovery code runs with SIGINT deferred (:class:`deferred`): a second signal cannot
  leave the dropping of derived state half done; it is raised when the section ends.

Invariants: nothing here changes a thread other than the main one (Python runs signal
handlers only there); :func:`_on_sigint` is installed only over
``signal.default_int_handler`` and removed when the last file closes in the main thread.
The native VFS needs none of this: its C methods call Python through cffi callbacks
that turn any exception into an I/O error code (:mod:`native.file`).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable

import apsw

__all__ = ["as_io_error", "deferred", "file_closed", "file_opened", "interrupt_in", "is_interrupt", "register"]

_MAIN_THREAD = threading.main_thread().ident
_classes: dict[type[BaseException], type[BaseException]] = {}


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is an interrupt: ``KeyboardInterrupt``, ``SystemExit`` or any other
    ``BaseException`` that is not an ``Exception``, converted by :func:`as_io_error` or not."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception)


def interrupt_in(exc: BaseException) -> BaseException | None:
    """The interrupt ``exc`` is, or was caused by (a KV driver wraps what it cannot
    handle in its own error class), converted by :func:`as_io_error`; else ``None``."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 16:
        if is_interrupt(cause):
            return cause if isinstance(cause, apsw.Error) else as_io_error(cause, apsw.SQLITE_IOERR, "KV call")
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


def _io_class(kind: type[BaseException]) -> type[BaseException]:
    cls = _classes.get(kind)
    if cls is None:
        cls = type(f"Interrupted{kind.__name__}", (apsw.IOError, kind),
                   {"__module__": __name__,
                    "__doc__": f"A {kind.__name__} inside a VFS method, reported to SQLite as an I/O error."})
        _classes[kind] = cls
    return cls


def as_io_error(exc: BaseException, code: int, what: str) -> BaseException:
    """``exc`` as an exception that is BOTH an ``apsw.IOError`` with extended result
    ``code`` (what apsw hands SQLite) and an instance of ``exc``'s own class (what the
    caller catches); ``exc`` itself if it is an ``Exception`` or already converted.

    :param code: an ``SQLITE_IOERR_*`` extended code.
    :param what: what the VFS was doing, for the message.
    """
    if isinstance(exc, apsw.Error) or not is_interrupt(exc):
        return exc
    converted = _io_class(type(exc))(f"actor-db: {type(exc).__name__} during the {what}; "
                                     "SQLite rolls back the transaction")
    converted.result = apsw.SQLITE_IOERR  # type: ignore[attr-defined]
    converted.extendedresult = code  # type: ignore[attr-defined]
    if isinstance(exc, SystemExit):
        converted.code = exc.code  # type: ignore[attr-defined]
    converted.__cause__ = exc
    return converted


Handler = Callable[[int, "FrameType | None"], Any]


class deferred:
    """``with deferred(): ...`` runs its body with ``SIGINT`` held back: a signal that
    arrives meanwhile is handed to the previous handler when the body ends (so the
    default handler raises ``KeyboardInterrupt`` there). Nests. Costs three
    ``signal`` calls (a few microseconds) in the main thread, nothing elsewhere: for
    recovery paths, not for every page."""

    __slots__ = ("_previous", "_pending")

    def __init__(self) -> None:
        self._previous: Handler | None = None
        self._pending: tuple[int, FrameType | None] | None = None

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self._pending = (signum, frame)

    def __enter__(self) -> deferred:
        if threading.get_ident() != _MAIN_THREAD:
            return self
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):
            return self  # SIG_IGN / SIG_DFL: no Python-level handler to defer
        self._pending = None
        signal.signal(signal.SIGINT, self._hold)
        self._previous = previous
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        previous, self._previous = self._previous, None
        if previous is None:
            return
        signal.signal(signal.SIGINT, previous)
        pending, self._pending = self._pending, None
        if pending is not None:
            previous(*pending)


# ------------------------------------------------------------ SIGINT while a file is open
_methods: dict[Any, int] = {}
"""Code object of each registered file method -> the ``SQLITE_IOERR_*`` code it reports."""
_scope_lock = threading.Lock()
_open_files = 0
MAX_FRAMES = 256
"""Frames :func:`_on_sigint` walks up looking for a file method (KV drivers nest deep)."""


def register(function: Callable[..., Any], code: int) -> None:
    """Declare ``function`` a file method apsw calls: an interrupt landing in it (or in
    anything it calls) becomes an I/O error with extended code ``code``."""
    _methods[function.__code__] = code


def _method_code(frame: FrameType | None) -> int | None:
    depth = 0
    while frame is not None and depth < MAX_FRAMES:
        code = _methods.get(frame.f_code)
        if code is not None:
            return code
        frame = frame.f_back
        depth += 1
    return None


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT while a Python-VFS file is open: ``signal.default_int_handler``, with the
    ``KeyboardInterrupt`` converted (:func:`as_io_error`) when it lands in a file method."""
    code = _method_code(frame)
    if code is None:
        signal.default_int_handler(signum, frame)
        return
    raise as_io_error(KeyboardInterrupt(), code, "file method SQLite called")


def file_opened() -> None:
    """A Python-VFS file opened: until the matching :func:`file_closed`, SIGINT in the main
    thread raises the converted interrupt inside file methods (see the module docstring)."""
    global _open_files
    with _scope_lock:
        _open_files += 1
        if threading.get_ident() == _MAIN_THREAD and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)


def file_closed() -> None:
    """Undo one :func:`file_opened`; the last one (in the main thread) puts the default
    handler back, unless the application changed the handler meanwhile."""
    global _open_files
    with _scope_lock:
        _open_files = max(_open_files - 1, 0)
        if _open_files == 0 and threading.get_ident() == _MAIN_THREAD \
                and signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
