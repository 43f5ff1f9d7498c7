"""Which event loop runs in this thread, asked without a system call when possible.

``asyncio.get_running_loop()`` (and ``asyncio._get_running_loop()``) check the process
id on every call in Python 3.11: one ``getpid()`` system call each. The runtime asks a
few times per action (the idle timer, the output gate's waiter, the group commit's
join), and a system call on a core that sat idle costs far more than the dict lookups
around it.

:func:`running_loop` takes the loop the caller expects (the one it used last) and
answers from the loop's own record of the thread it runs in (``_thread_id``, set by
asyncio's ``BaseEventLoop`` while ``run_forever`` runs, and by loops derived from it),
which needs no system call; for any other loop, or when the expected one is not running
in this thread, it asks asyncio as before.

Invariant: the answer is always what ``asyncio._get_running_loop()`` would return. A
thread runs at most one event loop at a time, so a loop whose ``_thread_id`` is this
thread's is the running one.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["current_loop", "running_loop"]

_get_ident = threading.get_ident


def running_loop(expected: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread (``None``: none runs), ``expected`` when it
    is that loop (no system call)."""
    if expected is not None and getattr(expected, "_thread_id", None) == _get_ident():
        return expected
    return asyncio._get_running_loop()


_last: asyncio.AbstractEventLoop | None = None
"""The loop :func:`current_loop` returned last (any thread: it is only a guess that
:func:`running_loop` checks)."""


def current_loop() -> asyncio.AbstractEventLoop:
    """``asyncio.get_running_loop()``, without a system call when the running loop is
    the one this function returned last (the usual case: one loop runs the runtime).

    :raises RuntimeError: no event loop runs in this thread.
    """
    global _last
    loop = running_loop(_last)
    if loop is None:
        raise RuntimeError("no running event loop")
    _last = loop
    return loop
