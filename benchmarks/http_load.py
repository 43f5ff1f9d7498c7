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

__all__ = ["LoadResult", "run_load", "send_each", "request_bytes"]


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
