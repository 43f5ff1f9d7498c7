"""A lean HTTP/1.1 load generator for the serve benchmarks: keep-alive connections over
raw asyncio streams, one request in flight per connection, requests prebuilt as bytes.

It costs a few microseconds of CPU per request (no HTTP library), so on a 2-core
machine most of the CPU is left to the servers under test. Responses are parsed only
as far as the status line and ``content-length``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

__all__ = ["LoadResult", "RoutedResult", "run_load", "run_routed_load", "send_each", "request_bytes"]


def request_bytes(host: str, path: str, args: list[object]) -> bytes:
    body = json.dumps(args).encode()
    return (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _connection(host: str, port: int, requests: list[bytes], stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            writer.write(random.choice(requests))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            counts[0 if status == 200 else 1] += 1
    finally:
        writer.close()


def run_load(host: str, port: int, requests: list[bytes], seconds: float, connections: int) -> LoadResult:
    """Send ``requests`` (chosen at random) on ``connections`` connections for ``seconds``."""
    counts = [0, 0]

    async def main() -> float:
        started = time.monotonic()
        stop_at = started + seconds
        await asyncio.gather(*(_connection(host, port, requests, stop_at, counts) for _ in range(connections)))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    return LoadResult(counts[0], counts[1], elapsed)


def send_each(host: str, port: int, requests: list[bytes], connections: int) -> LoadResult:
    """Send every request of ``requests`` exactly once (e.g. to wake every actor)."""
    counts = [0, 0]
    queue = list(requests)

    async def conn() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while queue:
                writer.write(queue.pop())
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                counts[0 if int(head[9:12]) == 200 else 1] += 1
        finally:
            writer.close()

    async def main() -> float:
        started = time.monotonic()
        await asyncio.gather(*(conn() for _ in range(connections)))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    return LoadResult(counts[0], counts[1], elapsed)


# --------------------------------------------------------------------------- routed load
class _Exchange(asyncio.Protocol):
    """One keep-alive connection driven by callbacks: one request in flight, the answer
    parsed as far as the status, ``content-length`` and ``x-actor-db-node-url``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.head: bytes | None = None
        self.need = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = self.buffer[:end].lower()
            start = self.head.find(b"content-length:")
            length = 0
            if start >= 0:
                stop = self.head.find(b"\r\n", start)
                length = int(self.head[start + 15:stop if stop >= 0 else len(self.head)])
            self.need = end + 4 + length
        if len(self.buffer) >= self.need and self.waiter is not None:
            head, self.head, self.buffer = self.head, None, self.buffer[self.need:]
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result((int(head[9:12]), head))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def exchange(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


def _direct_port(head: bytes) -> int | None:
    """The port of the answer's ``x-actor-db-node-url`` (a loopback URL here), if any."""
    start = head.find(b"x-actor-db-node-url:")
    if start < 0:
        return None
    end = head.find(b"\r\n", start)
    url = head[start + 20:end if end >= 0 else len(head)].strip()
    return int(url.rsplit(b":", 1)[1].rstrip(b"/"))


@dataclass
class RoutedResult(LoadResult):
    direct: int = 0
    """Requests sent to a learnt direct port (not the shared one)."""
    client_cpu_us: float = 0.0
    """The load generator's own CPU per request (microseconds)."""


def run_routed_load(host: str, port: int, requests: list[tuple[str, bytes]], seconds: float, connections: int,
                    routes: dict[str, int] | None = None) -> RoutedResult:
    """Like :func:`run_load`, as a routing client does: each request is ``(actor id,
    bytes)``; an answer's ``X-Actor-DB-Node-URL`` teaches that actor's direct port in
    ``routes`` (kept by the caller across runs), and its next requests go there
    (``routes=None``: no routing, always ``port``). Each of the ``connections`` clients
    keeps one connection per port it uses. Runs on uvloop when installed (a few
    microseconds of CPU per request)."""
    counts = [0, 0, 0]
    route = routes is not None
    routes = {} if routes is None else routes

    async def client(stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        conns: dict[int, _Exchange] = {}
        try:
            while True:
                now = time.monotonic()
                if now >= stop_at:
                    break
                actor, request = random.choice(requests)
                target = routes.get(actor, port)
                conn = conns.get(target)
                if conn is None or conn.transport is None or conn.transport.is_closing():
                    _, conn = await loop.create_connection(_Exchange, host, target)
                    conns[target] = conn
                status, head = await conn.exchange(request)
                counts[0 if status == 200 else 1] += 1
                counts[2] += target != port
                if route and status == 200:
                    direct = _direct_port(head)
                    if direct is not None:
                        routes[actor] = direct
        finally:
            for conn in conns.values():
                if conn.transport is not None:
                    conn.transport.close()

    async def main() -> tuple[float, float]:
        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(client(started + seconds) for _ in range(connections)))
        return time.monotonic() - started, time.process_time() - cpu

    try:
        import uvloop
        elapsed, used = uvloop.run(main())
    except ImportError:
        elapsed, used = asyncio.run(main())
    done = counts[0] + counts[1]
    return RoutedResult(counts[0], counts[1], elapsed, direct=counts[2],
                        client_cpu_us=used / done * 1e6 if done else 0.0)
