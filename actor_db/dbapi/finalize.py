"""Releasing the databases of connections the garbage collector finds unreachable.

A drop-in connection dropped without ``close()`` releases its database in ``__del__``,
as the stdlib's does. When the last reference goes away (``del con``, a function
returning) that runs at once, in the user's own code. But a connection caught in a
reference cycle is finalized by the cyclic garbage collector, which runs at any
allocation, including one made while the same thread holds a KV driver's lock (MemoryKV's
store lock, the round-trip counter's lock); releasing a database there can itself call
the KV (a ``"cross-process"`` connection gives its lease back), and would wait on that
lock forever.

So a finalizer that runs *during a collection* (known from :data:`gc.callbacks`) does not
release anything: it hands the release to :func:`defer`, and the deferred releases run
outside any collection: at the next ``connect`` of the process (before it opens
anything, so a garbage connection's exclusive hold never makes the new one busy), on the
``actor-db-finalizer`` thread within milliseconds, and at interpreter exit.

Invariants: every deferred release runs exactly once; ``defer`` takes no lock and calls
no KV (``queue.SimpleQueue.put`` is safe from finalizers); a release that raises is
logged, never propagated.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import queue
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

__all__ = ["collecting", "defer", "run_deferred"]

_state = threading.local()
_pending: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    _state.collecting = phase == "start"


gc.callbacks.append(_on_gc)


def collecting() -> bool:
    """True while this thread runs a garbage collection (its finalizers included)."""
    return getattr(_state, "collecting", False)


def defer(release: Callable[[], Any]) -> None:
    """Run ``release`` later, outside the collection (safe to call from a finalizer)."""
    _pending.put(release)


def run_deferred() -> None:
    """Run every release deferred so far, in this thread (``connect`` calls it first)."""
    while True:
        try:
            release = _pending.get_nowait()
        except queue.Empty:
            return
        _run(release)


def start_thread() -> None:
    """Start the ``actor-db-finalizer`` thread if it is not running (from ``connect``, never
    from a finalizer: starting a thread takes the threading module's locks)."""
    global _thread
    if _thread is not None:
        return
    with _thread_lock:
        if _thread is None:
            _thread = threading.Thread(target=_serve, name="actor-db-finalizer", daemon=True)
            _thread.start()


def _serve() -> None:
    while True:
        _run(_pending.get())


def _run(release: Callable[[], Any]) -> None:
    try:
        release()
    except Exception:
        log.warning("releasing a garbage-collected connection's database failed", exc_info=True)


def _after_fork_in_child() -> None:
    global _thread, _thread_lock
    _thread, _thread_lock = None, threading.Lock()  # (the parent's thread does not exist here)


atexit.register(run_deferred)
os.register_at_fork(after_in_child=_after_fork_in_child)
