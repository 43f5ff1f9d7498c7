"""The runtime's bounded thread pool: OS threads follow blocking work, not awake actors.

Every blocking thing an actor does (an SQLite call that may reach the KV, a KV write
of its output gate, a start, a close) runs as a *job* on one shared pool. The pool
starts a thread only when a job finds no idle one and fewer than ``max_threads``
exist, and a thread idle for ``idle_timeout_s`` seconds exits. So the number of OS
threads is at most ``max_threads`` whatever the number of awake actors, and in
practice follows the number of KV calls in flight.

The hand-off is a C queue (:class:`queue.SimpleQueue`): a submit is one ``put`` (no
Python-level condition variable, whose every wait allocates a lock), and a thread
that finishes a job takes the next queued one without sleeping. Under load that is
what makes a KV call cost two GIL acquisitions of its thread (start, reply) and no
more.

Invariants:

- At most :attr:`ThreadPool.max_threads` threads run jobs; jobs start in submission
  order (FIFO); a job that raises is logged, never lost silently, and the thread goes on.
- A submitted job always finds a thread: the submitter counts it (under the pool's
  lock) before queuing it, and a thread leaves (idle timeout, shutdown) only while
  no counted job is waiting; otherwise a new thread is started, up to the cap.
- A job must not wait for another job that has not started yet (it could wait for a
  free thread forever when the pool is full): code that must wait for queued work
  does that work itself instead (see :meth:`actor_db.runtime.gate.OutputGate.drain`).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from actor_db.errors import ConfigurationError

log = logging.getLogger(__name__)

__all__ = ["ThreadPool", "DEFAULT_MAX_THREADS"]

DEFAULT_MAX_THREADS = 64
"""Default cap on the pool's OS threads: KV calls in flight at once across all actors."""

Job = Callable[[], None]

_WAKE: Job = lambda: None  # noqa: E731
"""Queued by :meth:`ThreadPool.shutdown` to wake an idle thread so it can leave."""


class ThreadPool:
    """A pool of at most ``max_threads`` daemon threads running submitted jobs (FIFO).

    :param max_threads: the cap on OS threads (>= 1): the most blocking calls (KV round
        trips, SQLite calls that miss the cache) in flight at once.
    :param name: thread name prefix (shows in ``threading.enumerate()``).
    :param idle_timeout_s: seconds an idle thread waits for a job before it exits.
    :raises ConfigurationError: ``max_threads`` is not an int >= 1.
    """

    def __init__(self, max_threads: int = DEFAULT_MAX_THREADS, *, name: str = "actor-db",
                 idle_timeout_s: float = 10.0) -> None:
        if not isinstance(max_threads, int) or isinstance(max_threads, bool) or max_threads < 1:
            raise ConfigurationError(f"max_threads must be an int >= 1, not {max_threads!r}")
        self.max_threads = max_threads
        self._name = name
        self._idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._queued = 0
        """Jobs submitted and not yet taken by a thread."""
        self._wakes = 0
        """Wake-ups queued by :meth:`shutdown` and not yet taken."""
        self._threads = 0
        self._idle = 0
        """Threads waiting for a job (or about to)."""
        self._serial = 0
        self._shutdown = False
        self.peak_threads = 0
        """The most threads that existed at once (a gauge for tests and benchmarks)."""

    @property
    def threads(self) -> int:
        """Threads alive now (running a job or idle)."""
        return self._threads

    def submit(self, job: Job) -> None:
        """Queue ``job`` (no arguments, result ignored); start a thread if none is free.

        A pool that was :meth:`shutdown` starts threads again.
        """
        with self._lock:
            self._shutdown = False
            self._queued += 1
            spawn = self._queued > self._idle and self._threads < self.max_threads
            if spawn:
                self._threads += 1
                self.peak_threads = max(self.peak_threads, self._threads)
                self._serial += 1
                serial = self._serial
        self._jobs.put(job)
        if not spawn:
            return
        thread = threading.Thread(target=self._loop, name=f"{self._name}-{serial}", daemon=True)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads -= 1
            raise

    def _loop(self) -> None:
        lock, get, timeout = self._lock, self._jobs.get, self._idle_timeout_s
        Empty = queue.Empty
        while True:
            with lock:
                if self._shutdown and self._queued == 0:
                    self._threads -= 1
                    return
                self._idle += 1
            try:
                job = get(timeout=timeout)
            except Empty:
                with lock:
                    self._idle -= 1
                    if self._queued == 0:  # nothing counted is on its way: leave
                        self._threads -= 1
                        return
                continue
            with lock:
                self._idle -= 1
                if job is _WAKE:  # from shutdown: leave if it still holds (loop top)
                    self._wakes -= 1
                    continue
                self._queued -= 1
            try:
                job()
            except BaseException:  # a job must report its own errors; never kill the thread
                log.exception("actor-db pool job %r raised", job)
            job = _WAKE  # drop the finished job (and what it holds) before waiting for the next

    def shutdown(self) -> None:
        """Let idle threads exit now (queued jobs still run first; busy threads exit
        when they find nothing queued). Idempotent; a later :meth:`submit` starts
        threads again."""
        with self._lock:
            self._shutdown = True
            wake = self._idle - self._wakes  # one wake-up per idle thread not already woken
            self._wakes += max(wake, 0)
        for _ in range(wake):
            self._jobs.put(_WAKE)
