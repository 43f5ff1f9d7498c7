"""Node-to-node forwarding: a small framed protocol over TCP, cheaper than HTTP.

A frame is a u32 big-endian length and that many bytes of JSON. A connection starts
with the client's hello ``{"secret": S, "node": ID}``; the server answers
``{"node": ID}`` when ``S`` equals its shared secret (compared in constant time) and
closes the connection otherwise, so only nodes may forward. Then the client sends
requests ``{"i": n, "n": type, "k": key, "a": action, "r": [args]}`` and the server
answers each, in any order, ``{"i": n, "ok": 1, "v": result, "node": ID}`` or
``{"i": n, "ok": 0, "s": status, "e": type name, "m": message, "ra": retry after s,
"node": ID}``. Requests on one connection run concurrently (one task each). A server
that stops first sends ``{"bye": 1}`` and answers what is still on its way for a
moment, so a client never writes a request into a connection the server closed.

Delivery, as the caller sees it (what makes a retry safe):

- the connection or the hello failed: the request was never sent →
  :class:`~actor_db.errors.OwnerUnreachableError` (safe to retry);
- the request was sent and the connection broke or ``timeout`` passed before the
  answer: the action may have run → :class:`~actor_db.errors.OutcomeUnknownError`.

Left out: TLS (run nodes on a private network, or tunnel), flow control beyond TCP's.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import struct
from typing import Any, Awaitable, Callable

from actor_db.errors import OutcomeUnknownError, OwnerUnreachableError

log = logging.getLogger(__name__)

__all__ = ["WireServer", "Peer", "RemoteFailure", "MAX_FRAME_BYTES"]

_LEN = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Largest frame accepted (bytes): a bigger one closes the connection."""


_encode = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps`` with these separators, without building an encoder per call."""


def _frame(obj: Any) -> bytes:
    body = _encode(obj).encode("utf-8")
    return _LEN.pack(len(body)) + body


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


class RemoteFailure(Exception):
    """The owner node answered with an error: ``status``, ``error`` (type name),
    ``message``, ``retry_after``, ``node``."""

    def __init__(self, status: int, error: str, message: str, retry_after: float | None, node: str) -> None:
        super().__init__(f"{error}: {message}")
        self.status, self.error, self.message, self.retry_after, self.node = status, error, message, retry_after, node


Handler = Callable[[str, str, str, list[Any]], Awaitable[tuple[Any, str]]]
"""``handler(type, key, action, args) -> (result, node id)``; raises on error."""

ErrorAnswer = Callable[[BaseException], dict[str, Any]]
"""Turns an exception into the ``s``/``e``/``m``/``ra`` fields of an answer."""


class _Framed(asyncio.Protocol):
    """Frames in, one callback per decoded frame (an asyncio protocol: no task or
    future per read; several frames in one read are decoded in one go)."""

    transport: Any = None
    """The asyncio (or uvloop) transport; set by :meth:`connection_made`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # (uvloop's transports do not derive from asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # no Nagle delay: a frame is one small write that must leave at once
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = _LEN.unpack_from(buffer)
            if size > MAX_FRAME_BYTES:
                log.warning("node connection closed: a frame of %d bytes exceeds %d", size, MAX_FRAME_BYTES)
                assert self.transport is not None
                self.transport.close()
                return
            if len(buffer) < 4 + size:
                return
            body = bytes(buffer[4:4 + size])
            del buffer[:4 + size]
            try:
                frame = json.loads(body)
            except ValueError:
                log.warning("node connection closed after a frame that is not JSON")
                assert self.transport is not None
                self.transport.close()
                return
            self.frame(frame)

    def frame(self, frame: Any) -> None:
        raise NotImplementedError

    def send(self, obj: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(obj))


class _ServerSide(_Framed):
    def __init__(self, server: WireServer) -> None:
        super().__init__()
        self._server = server
        self._authed = False
        self._hello_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)
        self._hello_timer = asyncio.get_running_loop().call_later(10.0, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        if self._hello_timer is not None:
            self._hello_timer.cancel()

    def frame(self, frame: Any) -> None:
        server = self._server
        if not self._authed:
            if self._hello_timer is not None:
                self._hello_timer.cancel()
            secret = str(frame.get("secret", "")).encode("utf-8") if isinstance(frame, dict) else b""
            if not hmac.compare_digest(secret, server._secret):
                log.warning("refused a node connection from %s: wrong node secret",
                            self.transport.get_extra_info("peername") if self.transport else "?")
                if self.transport is not None:
                    self.transport.close()
                return
            self._authed = True
            self.send({"node": server._node_id})
            return
        if not isinstance(frame, dict):
            return
        task = asyncio.get_running_loop().create_task(self._answer(frame))
        server._tasks.add(task)
        task.add_done_callback(server._tasks.discard)

    async def _answer(self, request: dict[str, Any]) -> None:
        server = self._server
        ident = request.get("i")
        try:
            result, node = await server._handler(request["n"], request["k"], request["a"], request["r"])
            try:
                frame = _frame({"i": ident, "ok": 1, "v": result, "node": node})
            except (TypeError, ValueError) as exc:
                raise TypeError(f"the action's result is not JSON: {exc}") from exc
        except Exception as exc:
            frame = _frame({"i": ident, "ok": 0, "node": server._node_id, **server._answer_error(exc)})
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)


class WireServer:
    """Accepts forwarded calls from other nodes on ``host:port`` (0: any free port)."""

    def __init__(self, secret: str, node_id: str, handler: Handler, answer_error: ErrorAnswer) -> None:
        self._secret = secret.encode("utf-8")
        self._node_id = node_id
        self._handler = handler
        self._answer_error = answer_error
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_ServerSide] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.get_running_loop().create_server(lambda: _ServerSide(self), host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self, grace: float = 0.2) -> None:
        """Stop: tell every connected node ``{"bye": 1}`` (it sends nothing new on the
        connection), keep answering for ``grace`` seconds what was already on its way,
        then close. So no request is ever written to a connection this side closed."""
        if self._server is not None:
            self._server.close()
            connections = [c for c in self._connections if c._authed]
            for connection in connections:
                connection.send({"bye": 1})
            if connections:
                await asyncio.sleep(grace)
            for connection in list(self._connections):
                if connection.transport is not None:
                    connection.transport.close()
            await self._server.wait_closed()
            self._server = None


class _ClientSide(_Framed):
    def __init__(self, peer: Peer) -> None:
        super().__init__()
        self._peer = peer
        self.hello: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closing = False

    def frame(self, frame: Any) -> None:
        if not self.hello.done():
            self.hello.set_result(frame)
            return
        if "bye" in frame:  # the peer is closing: nothing new on this connection
            self.closing = True
            return
        fut = self.pending.pop(frame.get("i"), None)
        if fut is not None and not fut.done():
            fut.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        error = OutcomeUnknownError(f"connection to node at {self._peer.address} lost mid-call"
                                    + (f": {exc}" if exc else ""))
        if not self.hello.done():
            self.hello.set_exception(ConnectionError("closed during the hello"))
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)


class Peer:
    """One multiplexed connection to another node's :class:`WireServer` (made on first
    use, remade after a failure).

    :param connect_timeout: seconds for the TCP connection and the hello (a paused
        node accepts connections in its kernel but never answers).
    """

    def __init__(self, address: str, secret: str, node_id: str, connect_timeout: float) -> None:
        self.address = address
        self._secret = secret
        self._node_id = node_id
        self._connect_timeout = connect_timeout
        self._conn: _ClientSide | None = None
        self._next = 0
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> _ClientSide:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.closing:
                return conn
            host, _, port = self.address.rpartition(":")
            loop = asyncio.get_running_loop()
            made: _ClientSide | None = None
            try:
                _, connected = await asyncio.wait_for(
                    loop.create_connection(lambda: _ClientSide(self), host, int(port)), self._connect_timeout)
                made = connected
                connected.send({"secret": self._secret, "node": self._node_id})
                await asyncio.wait_for(asyncio.shield(connected.hello), self._connect_timeout)
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                if made is not None and made.transport is not None:
                    made.transport.close()
                raise OwnerUnreachableError(f"node at {self.address} unreachable: {type(exc).__name__}: {exc}") \
                    from exc
            self._conn = connected
            return connected

    async def call(self, name: str, key: str, action: str, args: list[Any], timeout: float) -> tuple[Any, str]:
        """Run the call on the peer; ``(result, node id)``.

        :raises OwnerUnreachableError: not delivered (safe to retry).
        :raises OutcomeUnknownError: delivered, no answer (lost connection, timeout).
        :raises RemoteFailure: the peer answered with an error.
        """
        conn = self._conn
        if conn is None or conn.closing:
            conn = await self._connect()
        self._next += 1
        ident = self._next
        frame = _frame({"i": ident, "n": name, "k": key, "a": action, "r": args})  # (raises before sending)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        conn.pending[ident] = fut
        assert conn.transport is not None
        conn.transport.write(frame)
        # (a timer, not asyncio.wait_for: that makes a task per call)
        timer = loop.call_later(timeout, _expire, fut)
        try:
            answer = await fut
        except asyncio.TimeoutError:
            conn.pending.pop(ident, None)
            raise OutcomeUnknownError(f"node at {self.address} did not answer within {timeout:g} s") from None
        finally:
            timer.cancel()
        if answer.get("ok"):
            return answer.get("v"), str(answer.get("node"))
        raise RemoteFailure(int(answer.get("s", 500)), str(answer.get("e", "Error")), str(answer.get("m", "")),
                            answer.get("ra"), str(answer.get("node")))

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None
