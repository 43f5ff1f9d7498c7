"""One Redis connection that carries every group write the event loop waits for.

:class:`LoopChannel` holds ONE connection of a :class:`~actor_db.kv.redis.RedisKV`'s pool
(taken at the first group write, kept until the store closes). Each group write's
pipeline is sent on it at once, behind the ones still in flight, and the server answers
them in order. The event loop watches the socket: when it turns readable, the replies
that are complete are read (never blocking) and each group write whose replies are all
in is handed to its waiter. A thread that must have one group write's replies now reads
up to them, blocking (:meth:`LoopChannel.read_through`).

Why one connection: a group write in flight holds its connection until the loop reads
the reply. With a connection per group write, the loop could wait in the pool for a
connection that only the loop itself would give back.

Failure: when the connection fails (the server went away, no reply within
``socket_timeout``), every group write still in flight is marked failed, the connection
is dropped, and each of them is written again the blocking way (a new connection, one
retry: every batch is idempotent, as for any retried Redis write).

Invariants: replies are read in send order and matched to their group write by count;
only the holder of the channel's lock reads or sends; callbacks run outside the lock.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

__all__ = ["LoopChannel", "ChannelWrite"]


class ChannelWrite:
    """One group write in flight on a :class:`LoopChannel`: ``expected`` replies."""

    __slots__ = ("expected", "replies", "failure", "sent_at", "callback")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.replies: list[Any] = []
        self.failure: BaseException | None = None
        self.sent_at = time.monotonic()
        self.callback: tuple[Any, Callable[[], None]] | None = None
        """``(loop, callback)`` to run when the replies are in, or ``None``."""

    @property
    def complete(self) -> bool:
        return self.failure is not None or len(self.replies) >= self.expected


class LoopChannel:
    """The connection and the queue of group writes in flight (see the module docstring).

    :param pool: the store's connection pool (one connection is taken from it).
    :param timeout_s: seconds a group write may wait for its reply before the channel is
        declared broken (the store's ``socket_timeout``).
    """

    def __init__(self, pool: Any, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._conn: Any = None
        self._queue: collections.deque[ChannelWrite] = collections.deque()
        self._watching: tuple[Any, int] | None = None
        """``(loop, fd)`` the socket is registered with, or ``None``."""
        self._timer: Any = None

    def send(self, commands: list[tuple[Any, ...]]) -> ChannelWrite:
        """Send one pipeline of ``commands``; its :class:`ChannelWrite`.

        :raises redis.exceptions.RedisError: no connection could be had or the send
            failed (nothing of this pipeline is in flight; earlier ones fail too).
        """
        write = ChannelWrite(len(commands))
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._pool.get_connection()
                self._conn.send_packed_command(self._conn.pack_commands(commands))
            except BaseException as exc:
                error, ready = exc, self._break(exc)
            else:
                self._queue.append(write)
                return write
        self._run_callbacks(ready)
        raise error

    def subscribe(self, write: ChannelWrite, loop: Any, callback: Callable[[], None]) -> Callable[[], None]:
        """(On ``loop``'s thread.) Run ``callback`` when ``write``'s replies are in;
        returns a function that cancels it."""
        with self._lock:
            if write.complete:
                handle = loop.call_soon(callback)
                return handle.cancel  # type: ignore[no-any-return]
            write.callback = (loop, callback)
            self._watch(loop)

        def cancel() -> None:
            write.callback = None

        return cancel

    def read_through(self, write: ChannelWrite) -> None:
        """Block until ``write``'s replies are in (or the channel broke). Group writes
        sent before it complete on the way; their waiters are called back."""
        with self._lock:
            ready: list[ChannelWrite] = []
            try:
                while not write.complete:
                    head = self._queue[0]
                    head.replies.append(self._read_reply())
                    if head.complete:
                        self._queue.popleft()
                        if head is not write:
                            ready.append(head)
            except BaseException as exc:
                ready += self._break(exc)
        self._run_callbacks([w for w in ready if w is not write], soon=True)

    def close(self) -> None:
        """Fail what is in flight and give the connection back (idempotent)."""
        with self._lock:
            ready = self._break(ConnectionError("the store was closed"), release=True)
        self._run_callbacks(ready)

    # ------------------------------------------------------------------ internals
    def _read_reply(self) -> Any:
        try:
            return self._conn.read_response()
        except ResponseError as exc:  # that script's error reply (e.g. NOSCRIPT): read whole
            return exc

    def _watch(self, loop: Any) -> None:
        """(Lock held.) Have ``loop`` call :meth:`_on_readable` for the socket, and
        :meth:`_on_timer` within the timeout."""
        fd = self._conn._sock.fileno()  # (redis-py's socket)
        if self._watching != (loop, fd):
            self._unwatch()
            loop.add_reader(fd, self._on_readable)
            self._watching = (loop, fd)
        if self._timer is None:
            self._timer = loop.call_later(self._timeout_s, self._on_timer)

    def _unwatch(self) -> None:
        """(Lock held.)"""
        if self._watching is not None:
            loop, fd = self._watching
            self._watching = None
            try:
                loop.remove_reader(fd)
            except (RuntimeError, ValueError, OSError):  # a closed loop, a closed socket
                pass
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_readable(self) -> None:
        """(Event loop.) Read every reply that is complete, without blocking."""
        ready: list[ChannelWrite] = []
        with self._lock:
            try:
                conn = self._conn
                while self._queue and conn is not None and conn.can_read(timeout=0):
                    head = self._queue[0]
                    head.replies.append(self._read_reply())
                    if head.complete:
                        ready.append(self._queue.popleft())
                if conn is not None and not self._queue and conn.can_read(timeout=0):
                    raise ConnectionError("a reply that no group write waits for")
            except BaseException as exc:
                ready += self._break(exc)
        self._run_callbacks(ready)

    def _on_timer(self) -> None:
        """(Event loop.) Break the channel when its oldest write waited too long."""
        ready: list[ChannelWrite] = []
        with self._lock:
            self._timer = None
            if not self._queue or self._watching is None:
                return
            waited = time.monotonic() - self._queue[0].sent_at
            if waited >= self._timeout_s:
                ready = self._break(TimeoutError(f"no reply from Redis within {self._timeout_s:g} s"))
            else:
                loop = self._watching[0]
                self._timer = loop.call_later(self._timeout_s - waited, self._on_timer)
        self._run_callbacks(ready)

    def _break(self, exc: BaseException, release: bool = False) -> list[ChannelWrite]:
        """(Lock held.) Fail every write in flight, drop (or, closing, give back) the
        connection; the failed writes, whose waiters must be called."""
        failed = list(self._queue)
        self._queue.clear()
        for write in failed:
            write.failure = exc
        self._unwatch()
        conn, self._conn = self._conn, None
        if conn is not None:
            if not release:
                conn.disconnect()
                log.warning("Redis group-write connection failed (%s); %d group write(s) in flight are "
                            "written again", exc, len(failed))
            try:
                self._pool.release(conn)
            except Exception:  # pragma: no cover - the pool is being torn down
                pass
        return failed

    @staticmethod
    def _run_callbacks(writes: list[ChannelWrite], soon: bool = False) -> None:
        for write in writes:
            target = write.callback
            if target is None:
                continue
            loop, callback = target
            if soon:
                try:
                    loop.call_soon_threadsafe(callback)
                except RuntimeError:  # the loop is closed: its waiters finish the writes themselves
                    pass
            else:
                callback()
