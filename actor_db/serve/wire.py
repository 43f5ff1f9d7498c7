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


def _frame(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return _LEN.pack(len(body)) + body


async def _read(reader: asyncio.StreamReader) -> Any:
    head = await reader.readexactly(_LEN.size)
    (size,) = _LEN.unpack(head)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return json.loads(await reader.readexactly(size))


def _nodelay(writer: asyncio.StreamWriter) -> None:
    """No Nagle delay: a frame is one small write that must leave at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


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


class WireServer:
    """Accepts forwarded calls from other nodes on ``host:port`` (0: any free port)."""

    def __init__(self, secret: str, node_id: str, handler: Handler, answer_error: ErrorAnswer) -> None:
        self._secret = secret.encode("utf-8")
        self._node_id = node_id
        self._handler = handler
        self._answer_error = answer_error
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self, grace: float = 0.2) -> None:
        """Stop: tell every connected node ``{"bye": 1}`` (it sends nothing new on the
        connection), keep answering for ``grace`` seconds what was already on its way,
        then close. So no request is ever written to a connection this side closed."""
        if self._server is not None:
            self._server.close()
            writers = [w for w in self._writers if not w.is_closing()]
            for writer in writers:
                writer.write(_frame({"bye": 1}))
            if writers:
                await asyncio.sleep(grace)
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        self._writers.add(writer)
        tasks: set[asyncio.Task[None]] = set()
        try:
            hello = await asyncio.wait_for(_read(reader), 10.0)
            secret = str(hello.get("secret", "")).encode("utf-8") if isinstance(hello, dict) else b""
            if not hmac.compare_digest(secret, self._secret):
                log.warning("refused a node connection from %s: wrong node secret", writer.get_extra_info("peername"))
                return
            writer.write(_frame({"node": self._node_id}))
            while True:
                request = await _read(reader)
                task = asyncio.get_running_loop().create_task(self._answer(request, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        except Exception:
            log.warning("node connection from %s closed after a bad frame", writer.get_extra_info("peername"),
                        exc_info=True)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        ident = request.get("i")
        try:
            result, node = await self._handler(request["n"], request["k"], request["a"], request["r"])
            try:
                frame = _frame({"i": ident, "ok": 1, "v": result, "node": node})
            except (TypeError, ValueError) as exc:
                raise TypeError(f"the action's result is not JSON: {exc}") from exc
        except Exception as exc:
            frame = _frame({"i": ident, "ok": 0, "node": self._node_id, **self._answer_error(exc)})
        if not writer.is_closing():
            writer.write(frame)


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
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            host, _, port = self.address.rpartition(":")
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                                        self._connect_timeout)
                _nodelay(writer)
                writer.write(_frame({"secret": self._secret, "node": self._node_id}))
                await asyncio.wait_for(_read(reader), self._connect_timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                raise OwnerUnreachableError(f"node at {self.address} unreachable: {type(exc).__name__}: {exc}") \
                    from exc
            self._writer = writer
            self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader, writer))
            return writer

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error: BaseException = OutcomeUnknownError(f"connection to node at {self.address} lost mid-call")
        try:
            while True:
                answer = await _read(reader)
                if "bye" in answer:  # the peer is closing: nothing new on this connection
                    if self._writer is writer:
                        self._writer = None
                    continue
                fut = self._pending.pop(answer.get("i"), None)
                if fut is not None and not fut.done():
                    fut.set_result(answer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
            error = OutcomeUnknownError(f"connection to node at {self.address} lost mid-call: {exc}")
        except asyncio.CancelledError:
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(error)

    async def call(self, name: str, key: str, action: str, args: list[Any], timeout: float) -> tuple[Any, str]:
        """Run the call on the peer; ``(result, node id)``.

        :raises OwnerUnreachableError: not delivered (safe to retry).
        :raises OutcomeUnknownError: delivered, no answer (lost connection, timeout).
        :raises RemoteFailure: the peer answered with an error.
        """
        writer = await self._connect()
        self._next += 1
        ident = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        try:
            writer.write(_frame({"i": ident, "n": name, "k": key, "a": action, "r": args}))
        except (TypeError, ValueError):
            self._pending.pop(ident, None)
            raise
        # (a timer, not asyncio.wait_for: that makes a task per call)
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            answer = await fut
        except asyncio.TimeoutError:
            self._pending.pop(ident, None)
            raise OutcomeUnknownError(f"node at {self.address} did not answer within {timeout:g} s") from None
        finally:
            timer.cancel()
        if answer.get("ok"):
            return answer.get("v"), str(answer.get("node"))
        raise RemoteFailure(int(answer.get("s", 500)), str(answer.get("e", "Error")), str(answer.get("m", "")),
                            answer.get("ra"), str(answer.get("node")))

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
