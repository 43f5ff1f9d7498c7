"""Direct routes (issue 22, ``--workers`` scaling): every node advertises its own URL,
answers name the owner's in ``X-Actor-DB-Node-URL``, and :class:`~actor_db.client.Client`
sends each actor's calls straight to its owner. Real ``actor-db serve`` processes on
loopback: a stale route (its node killed or drained) is corrected with no failed call.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import types
import urllib.request
import uuid
from typing import Any, Iterator

import pytest

import actor_db.client as client_module
from actor_db.client import AVOID_UNREACHABLE_S, Client, SyncClient
from tests.redis_server import fresh_namespace, session_server
from tests.serve_support import NodeProcess, post, stopped_after

LEASE = 1.0


@pytest.fixture
def cleanup() -> Iterator[list[NodeProcess]]:
    yield from stopped_after()


def placement(url: str) -> dict[str, float]:
    """The ``actor_db_placement_*`` counters of the node at ``url``."""
    with urllib.request.urlopen(url + "/metrics", timeout=5.0) as r:
        text = r.read().decode()
    return {line.split("{", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("actor_db_placement_") and "quantile" not in line}


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/healthz", timeout=5.0) as r:
        return dict(json.loads(r.read()))


def test_workers_advertise_their_own_port_and_the_client_calls_owners_directly(
        tmp_path: Any, cleanup: list[NodeProcess]) -> None:
    server = NodeProcess(f"lmdb:{tmp_path / 'store'}", "d", lease=LEASE, workers=2)
    cleanup.append(server)
    server.start()
    keys = [f"r{i}" for i in range(24)]

    for key in keys:  # placed by the first call: a new connection each, spread over the workers
        assert post(server.url, "counter", key, "hit", 1)[0] == 200
    with SyncClient(server.url) as client:
        for key in keys:  # through the shared port (forwarded or not): the answer names the route
            assert client.actor("counter", key).call("get") == 1
        routes = {key: client.route_of("counter", key) for key in keys}
    direct = set(routes.values())
    assert len(direct) == 2 and server.url not in direct, routes  # one own port per worker
    by_url = {url: health(url) for url in direct}
    assert {h["node"] for h in by_url.values()} == {"d-1", "d-2"}
    assert all(h["url"] == url for url, h in by_url.items())
    for key in keys:  # the shared port (forwarding if need be) names the same owner and URL
        status, _, node = post(server.url, "counter", key, "get")
        assert status == 200 and node == by_url[routes[key]]["node"]

    pids: dict[str, set[int]] = {k: set() for k in keys}
    calls = 300
    before: dict[str, dict[str, float]] = {}

    async def routed() -> None:
        async with Client(server.url) as client:
            for key in keys:
                await client.actor("counter", key).call("get")  # learn the routes
            before.update({url: placement(url) for url in direct})
            sem = asyncio.Semaphore(8)

            async def one() -> None:
                key = random.choice(keys)
                async with sem:
                    pids[key].add(await client.actor("counter", key).call("pid"))
                    assert client.route_of("counter", key) == routes[key]
            await asyncio.gather(*(one() for _ in range(calls)))
    asyncio.run(routed())
    after = {url: placement(url) for url in direct}
    assert all(len(p) <= 1 for p in pids.values()), pids  # one process per actor
    assert len(set().union(*pids.values())) == 2
    forwarded = sum(after[u]["actor_db_placement_calls_forwarded_total"]
                    - before[u]["actor_db_placement_calls_forwarded_total"] for u in direct)
    local = sum(after[u]["actor_db_placement_calls_local_total"]
                - before[u]["actor_db_placement_calls_local_total"] for u in direct)
    assert forwarded == 0 and local == calls  # every call ran where it arrived

    # kill -9 one worker under load, then SIGTERM (drain) one: its routes go stale (the
    # parent restarts it, on a new port); idempotent calls move on, none fails.
    acked = {k: 0 for k in keys}
    for sig in (signal.SIGKILL, signal.SIGTERM):
        victim_url = routes[keys[0]]
        victim_pid = post(victim_url, "counter", keys[0], "pid")[1]
        victim_keys = [k for k in keys if routes[k] == victim_url]
        failures: list[str] = []
        routes = asyncio.run(_calls_while(server.url, keys, acked, failures, victim_pid, sig, victim_keys))
        assert not failures, (sig, failures[:5])
        assert victim_url not in routes.values() and None not in routes.values(), (sig, routes)  # corrected
    for key in keys:  # every acknowledged hit is there (an idempotent retry may add one)
        status, value, _ = post(server.url, "counter", key, "get")
        assert status == 200 and value >= 1 + acked[key], (key, value, acked[key])
    assert server.terminate() == 0


async def _hits(client: Client, keys: list[str], acked: dict[str, int], failures: list[str],
                stop: asyncio.Event, limit: int = 5000) -> None:
    """Idempotent hits on random ``keys`` until ``stop`` is set (at most ``limit``):
    each acknowledged one counted in ``acked``, each failure recorded in ``failures``."""
    for _ in range(limit):
        if stop.is_set():
            return
        key = random.choice(keys)
        try:
            await client.actor("counter", key).call("hit", 1, idempotent=True)
        except Exception as exc:
            failures.append(f"{key}: {type(exc).__name__}: {exc}")
        else:
            acked[key] += 1


async def _calls_while(url: str, keys: list[str], acked: dict[str, int], failures: list[str], pid: int, sig: int,
                       victim_keys: list[str]) -> dict[str, str | None]:
    """Idempotent hits from 4 tasks while ``pid`` gets ``sig``; then one more call for
    each of ``victim_keys``. The routes the client ends with."""
    async with Client(url, retry_for=15.0) as client:
        for key in keys:
            await client.actor("counter", key).call("get")
        stop = asyncio.Event()

        async def disrupt() -> None:
            await asyncio.sleep(0.3)
            os.kill(pid, sig)
            await asyncio.sleep(LEASE + 1.5)
            for key in victim_keys:  # the victim's actors answer again, from a live worker
                await client.actor("counter", key).call("hit", 1, idempotent=True)
                acked[key] += 1
            stop.set()
        await asyncio.gather(disrupt(), *(_hits(client, keys, acked, failures, stop) for _ in range(4)))
        return {key: client.route_of("counter", key) for key in keys}


def test_a_route_to_a_draining_node_is_corrected_with_no_failed_call(cleanup: list[NodeProcess]) -> None:
    kv = f"{session_server().url}?namespace={fresh_namespace('route')}"
    nodes = [NodeProcess(kv, f"m{i}-{uuid.uuid4().hex[:4]}", lease=LEASE) for i in range(3)]
    cleanup.extend(nodes)
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    keys = [f"q{i}" for i in range(30)]
    acked = {k: 0 for k in keys}
    failures: list[str] = []
    victim = nodes[0]

    async def run() -> tuple[dict[str, str | None], dict[str, str | None]]:
        async with Client([n.url for n in nodes], retry_for=15.0) as client:
            for key in keys:
                await client.actor("counter", key).call("hit", 0)
            before = {key: client.route_of("counter", key) for key in keys}
            stop = asyncio.Event()

            async def drainer() -> None:
                await asyncio.sleep(0.3)
                assert await asyncio.to_thread(victim.terminate) == 0
                await asyncio.sleep(0.3)
                stop.set()
            await asyncio.gather(drainer(), *(_hits(client, keys, acked, failures, stop) for _ in range(4)))
            for key in keys:  # each actor answers again (its route learnt anew)
                await client.actor("counter", key).call("get")
            return before, {key: client.route_of("counter", key) for key in keys}

    before, after = asyncio.run(run())
    assert victim.url in before.values() and set(before.values()) <= {n.url for n in nodes}
    assert not failures, failures[:5]
    assert victim.url not in after.values() and None not in after.values(), after
    for key in keys:
        status, value, node = post(nodes[1].url, "counter", key, "get")
        assert status == 200 and value == acked[key], (key, value, acked[key])  # nothing lost, nothing twice
    assert sum(placement(n.url)["actor_db_placement_takeovers_total"] for n in nodes[1:]) == 0  # released


def test_no_direct_and_route_false(tmp_path: Any, cleanup: list[NodeProcess],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``--no-direct`` advertises no URL (no header); ``route=False`` never leaves ``url``."""
    plain = NodeProcess(f"lmdb:{tmp_path / 'a'}", "p", lease=LEASE, extra=("--no-direct",))
    solo = NodeProcess(f"lmdb:{tmp_path / 'b'}", "s", lease=LEASE)
    cleanup.extend([plain, solo])
    plain.start()
    solo.start()
    import httpx

    assert "x-actor-db-node-url" not in httpx.post(f"{plain.url}/actors/counter/k/hit", content=b"[1]").headers
    assert httpx.post(f"{solo.url}/actors/counter/k/hit", content=b"[1]").headers["x-actor-db-node-url"] == solo.url
    with SyncClient(plain.url) as client:
        assert client.actor("counter", "k").call("hit", 1) == 2 and client.route_of("counter", "k") is None
    with SyncClient(solo.url, route=False) as client:
        assert client.actor("counter", "k").call("hit", 1) == 2 and client.route_of("counter", "k") is None
    # A route to a URL that refuses connections (its node died, its port closed): the
    # call goes to ``url`` at once, the route is relearnt, the dead URL avoided for a while.
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    # The client's clock stands still at NOW (a fixed reading, no wall time involved):
    # the avoidance period is then exact, however long the call takes.
    now = 1_000.0
    monkeypatch.setattr(client_module, "time", types.SimpleNamespace(monotonic=lambda: now, sleep=time.sleep))
    with SyncClient(solo.url, retry_for=5.0) as client:
        client._policy.routes[("counter", "k")] = dead
        assert client.actor("counter", "k").call("hit", 1) == 3
        assert client.route_of("counter", "k") == solo.url
        # one strike: avoided for the first period, counted from the failed attempt
        assert client._policy.unreachable[dead] == (now + AVOID_UNREACHABLE_S, 1)
