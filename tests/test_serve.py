"""One actor, one place (issue 22), with real processes: ``actor-db serve`` nodes on
loopback ports over a real redis-server or one LMDB store shared by the processes.

Leases are 1 s here (production default 10 s). The issue's figures (3,000 calls over
200 actors) are scaled down for test time; benchmarks/bench_serve.py runs the full ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import signal
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from actor_db.client import Client, SyncClient
from actor_db.errors import ActionNotFoundError, RemoteError
from tests.redis_server import fresh_namespace, session_server
from tests.serve_support import NodeProcess, post, stopped_after

LEASE = 1.0
WORKER_CALLS = 20_000
"""Most calls of one load task in the kill -9 test (it also stops at its time window)."""
HANG_GUARD_S = 60.0
"""How long a dead node's actor may take to answer again before the test calls it a hang."""


@pytest.fixture
def redis_kv() -> str:
    return f"{session_server().url}?namespace={fresh_namespace('serve')}"


@pytest.fixture(params=["redis", "lmdb"])
def any_kv(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "redis":
        return f"{session_server().url}?namespace={fresh_namespace('serve')}"
    return f"lmdb:{tmp_path / 'store'}"


def start_nodes(kv: str, count: int, lease: float = LEASE, **kwargs: Any) -> list[NodeProcess]:
    nodes = [NodeProcess(kv, f"n{i}-{uuid.uuid4().hex[:4]}", lease=lease, **kwargs) for i in range(count)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    return nodes


@pytest.fixture
def cleanup() -> Iterator[list[NodeProcess]]:
    yield from stopped_after()


async def _spread(urls: list[str], kind: str, keys: list[str], calls: int, action: str = "hit",
                  concurrency: int = 16) -> dict[str, set[str]]:
    """``calls`` calls, each to a random node and a random actor; the nodes that
    answered for each actor. Every call must succeed."""
    seen: dict[str, set[str]] = {k: set() for k in keys}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30.0) as http:
        async def one(i: int) -> None:
            key = random.choice(keys)
            async with sem:
                r = await http.post(f"{random.choice(urls)}/actors/{kind}/{key}/{action}", content=b"[1]")
            assert r.status_code == 200, r.text
            seen[key].add(r.headers["x-actor-db-node"])
        await asyncio.gather(*(one(i) for i in range(calls)))
    return seen


def test_three_nodes_every_actor_in_one_place(any_kv: str, cleanup: list[NodeProcess]) -> None:
    nodes = start_nodes(any_kv, 3)
    cleanup.extend(nodes)
    keys = [f"a{i}" for i in range(50)]
    seen = asyncio.run(_spread([n.url for n in nodes], "counter", keys, 300))
    assert all(len(owners) <= 1 for owners in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    owners = {next(iter(v)) for v in seen.values() if v}
    assert owners == {n.node_id for n in nodes}  # the actors spread over the three
    metrics = [n.metrics() for n in nodes]
    assert sum(m["actor_db_placement_takeovers_total"] for m in metrics) == 0  # ownership changes: 0
    assert sum(m["actor_db_placement_lease_losses_total"] for m in metrics) == 0
    assert sum(m["actor_db_placement_calls_forwarded_total"] for m in metrics) > 0
    total = 0
    for key in keys:  # every call was applied exactly once
        status, value, _ = post(nodes[0].url, "counter", key, "get")
        assert status == 200
        total += value
    assert total == 300
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda n: n.terminate(), nodes)) == [0, 0, 0]


def test_three_nodes_on_a_3_master_redis_cluster(cleanup: list[NodeProcess]) -> None:
    from tests.redis_server import session_cluster

    kv = f"{session_cluster().url}?cluster=1&namespace={fresh_namespace('serve')}"
    nodes = start_nodes(kv, 3)
    cleanup.extend(nodes)
    keys = [f"c{i}" for i in range(30)]
    seen = asyncio.run(_spread([n.url for n in nodes], "counter", keys, 150))
    assert all(len(owners) <= 1 for owners in seen.values())
    assert sum(n.metrics()["actor_db_placement_takeovers_total"] for n in nodes) == 0
    assert sum(post(nodes[1].url, "counter", k, "get")[1] for k in keys) == 150
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda n: n.terminate(), nodes)) == [0, 0, 0]


def test_kill9_under_load_moves_the_actors_and_keeps_every_acknowledged_call(
        redis_kv: str, cleanup: list[NodeProcess]) -> None:
    nodes = start_nodes(redis_kv, 3)
    cleanup.extend(nodes)
    victim, survivors = nodes[0], nodes[1:]
    keys = [f"k{i}" for i in range(24)]
    owner: dict[str, str] = {}
    for key in keys:  # place them (each claimed by the node first asked)
        status, _, node = post(random.choice(nodes).url, "ledger", key, "add", f"warm-{key}")
        assert status == 200
        owner[key] = node
    victim_keys = [k for k in keys if owner[k] == victim.node_id]
    other_keys = [k for k in keys if owner[k] != victim.node_id]
    assert victim_keys and other_keys

    acked: dict[str, set[str]] = {k: {f"warm-{k}"} for k in keys}
    failures_elsewhere: list[str] = []
    first_after_kill: dict[str, float] = {}
    killed_at: list[float] = []

    async def load(stop_at: float) -> None:
        async with Client([n.url for n in survivors], retry_for=10.0) as client:
            async def worker(w: int) -> None:
                n = 0
                while time.monotonic() < stop_at and n < WORKER_CALLS:
                    key = random.choice(keys)
                    item = f"w{w}-{n}"
                    n += 1
                    try:
                        await client.actor("ledger", key).call("add", item)
                    except Exception as exc:
                        if key in other_keys:
                            failures_elsewhere.append(f"{key}: {type(exc).__name__}: {exc}")
                        continue
                    acked[key].add(item)
                    if killed_at and key in victim_keys and key not in first_after_kill:
                        first_after_kill[key] = time.monotonic() - killed_at[0]

            async def prober(key: str) -> None:  # one per dead node's actor: when does it answer?
                while not killed_at:
                    await asyncio.sleep(0.01)
                n = 0
                # Until it answers (the load may have ended by then); the bound is a hang
                # guard, not a speed limit: the takeover's time is a benchmark figure.
                while key not in first_after_kill and time.monotonic() < killed_at[0] + HANG_GUARD_S:
                    n += 1
                    try:
                        await client.actor("ledger", key).call("add", f"probe-{n}")
                    except Exception:
                        continue
                    acked[key].add(f"probe-{n}")
                    first_after_kill.setdefault(key, time.monotonic() - killed_at[0])

            async def killer() -> None:
                await asyncio.sleep(0.6)
                victim.kill()
                killed_at.append(time.monotonic())
            await asyncio.gather(killer(), *(worker(w) for w in range(6)), *(prober(k) for k in victim_keys))

    asyncio.run(load(time.monotonic() + 0.6 + LEASE + 2.0))
    assert not failures_elsewhere, failures_elsewhere[:5]
    assert set(first_after_kill) == set(victim_keys), "some of the dead node's actors never answered again"
    # Every dead node's actor answered again, once its lease ran out (how long the
    # takeover takes, lease + one wake, is a speed figure, not asserted here: REPORT.md
    # section 10 gives it, 0.77-1.14 s with a 1 s lease on this machine).
    takeovers = sum(n.metrics()["actor_db_placement_takeovers_total"] for n in survivors)
    assert takeovers >= len(victim_keys)
    for key in keys:  # every acknowledged add is in the actor's database
        status, items, node = post(survivors[0].url, "ledger", key, "items")
        assert status == 200 and node != victim.node_id
        missing = acked[key] - set(items)
        assert not missing, (key, sorted(missing)[:5])


def test_paused_node_serves_no_stale_read_and_applies_no_write(redis_kv: str, cleanup: list[NodeProcess]) -> None:
    nodes = start_nodes(redis_kv, 3)
    cleanup.extend(nodes)
    paused, other = nodes[0], nodes[1]
    status, value, node = post(paused.url, "counter", "p", "hit", 1)
    assert (status, value, node) == (200, 1, paused.node_id)  # asked first, it owns the actor

    paused.signal(signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # Queued at the paused node: answered only after it resumes.
            stale_read = pool.submit(post, paused.url, "counter", "p", "get", timeout=20.0)
            late_write = pool.submit(post, paused.url, "counter", "p", "hit", 100, timeout=20.0)
            time.sleep(LEASE + 0.3)  # past its lease: another node may take the actor
            with SyncClient(other.url, retry_for=10.0) as client:
                assert client.actor("counter", "p").call("hit", 10) == 11  # taken over, new token
                assert client.actor("counter", "p").call("hit", 10) == 21
            paused.signal(signal.SIGCONT)
            read_status, read_value, read_node = stale_read.result(timeout=20)
            write_status, write_value, write_node = late_write.result(timeout=20)
    finally:
        paused.signal(signal.SIGCONT)
    # No stale read: a 503, or the current value from the new owner.
    assert read_status == 503 or (read_status == 200 and read_value >= 21 and read_node != paused.node_id), \
        (read_status, read_value, read_node)
    # No write applied by the resumed node: refused, or run by the new owner.
    assert write_status == 503 or (write_status == 200 and write_node != paused.node_id), \
        (write_status, write_value, write_node)
    status, final, node = post(other.url, "counter", "p", "get")
    assert status == 200 and node != paused.node_id
    assert final == 21 + (100 if write_status == 200 else 0)
    deadline = time.monotonic() + 10.0
    while paused.metrics()["actor_db_placement_lease_losses_total"] < 1 or not paused.healthy():
        assert time.monotonic() < deadline  # it noticed, dropped its actors, rejoined
        time.sleep(0.05)
    status, value, node = post(paused.url, "counter", "p", "get")  # and it forwards from now on
    assert (status, value) == (200, final) and node != paused.node_id


def test_rolling_restart_with_sigterm_drain_fails_no_call(tmp_path: Any, cleanup: list[NodeProcess]) -> None:
    # Three processes on one LMDB store; a longer lease, so that a loaded machine's slow
    # fsync never lets one lapse: a drain must not depend on the lease.
    nodes = start_nodes(f"lmdb:{tmp_path / 'store'}", 3, lease=3.0)
    cleanup.extend(nodes)
    keys = [f"r{i}" for i in range(20)]
    acked = {k: 0 for k in keys}
    failures: list[str] = []
    restarted: list[str] = []

    async def run() -> None:
        done = asyncio.Event()
        async with Client([n.url for n in nodes], retry_for=15.0) as client:
            async def worker() -> None:
                while not done.is_set():
                    key = random.choice(keys)
                    try:
                        await client.actor("counter", key).call("hit", 1)
                    except Exception as exc:
                        failures.append(f"{key}: {type(exc).__name__}: {exc}")
                    else:
                        acked[key] += 1

            async def restart_all() -> None:
                await asyncio.sleep(0.3)
                for node in nodes:
                    status = await asyncio.to_thread(node.terminate)
                    assert status == 0, node.log_text()[-2000:]
                    await asyncio.to_thread(node.start)  # same node id, same port
                    restarted.append(node.node_id)
                    await asyncio.sleep(0.2)
                done.set()
            await asyncio.gather(restart_all(), *(worker() for _ in range(6)))

    asyncio.run(run())
    assert len(restarted) == 3
    assert not failures, failures[:5]
    for key in keys:
        status, value, _ = post(nodes[0].url, "counter", key, "get")
        assert status == 200 and value == acked[key], (key, value, acked[key])  # nothing lost, nothing twice
    metrics = [node.metrics() for node in nodes]
    if not sum(m["actor_db_placement_lease_losses_total"] for m in metrics):
        # Drained nodes released their actors: nobody had to take one over.
        assert sum(m["actor_db_placement_takeovers_total"] for m in metrics) == 0


def test_workers_share_one_port_and_one_lmdb_store(tmp_path: Any, cleanup: list[NodeProcess]) -> None:
    server = NodeProcess(f"lmdb:{tmp_path / 'store'}", "w", lease=LEASE, workers=2)
    cleanup.append(server)
    server.start()
    keys = [f"w{i}" for i in range(30)]
    for key in keys:  # a new connection each: the kernel spreads them over the workers
        assert post(server.url, "counter", key, "hit", 0)[0] == 200
    seen = asyncio.run(_spread([server.url], "counter", keys, 200, concurrency=8))
    assert all(len(v) <= 1 for v in seen.values())
    assert {next(iter(v)) for v in seen.values() if v} <= {"w-1", "w-2"}
    pids = {post(server.url, "counter", k, "pid")[1] for k in keys}
    assert len(pids) == 2  # two processes serve, each actor in one of them
    assert server.terminate() == 0


def test_client_errors_by_type_name_and_token(tmp_path: Any, cleanup: list[NodeProcess]) -> None:
    server = NodeProcess(f"lmdb:{tmp_path / 'store'}", "solo", lease=LEASE, extra=("--token", "s3cret"))
    cleanup.append(server)
    server.start()
    with SyncClient(server.url, token="s3cret") as client:
        counter = client.actor("counter", "c")
        assert counter.call("hit", 2) == 2
        with pytest.raises(ValueError) as failed:
            counter.call("fail", "no good")
        assert isinstance(failed.value, RemoteError) and str(failed.value) == "no good"
        assert failed.value.status == 500 and failed.value.node == "solo"  # type: ignore[attr-defined]
        with pytest.raises(ActionNotFoundError) as missing:
            counter.call("nope")
        assert missing.value.status == 404  # type: ignore[attr-defined]
        with pytest.raises(TypeError) as bad:
            counter.call("hit", 1, 2, 3)
        assert bad.value.status == 400  # type: ignore[attr-defined]
    with SyncClient(server.url) as anonymous:
        with pytest.raises(RemoteError) as denied:
            anonymous.actor("counter", "c").call("get")
        assert type(denied.value).__name__ == "Unauthorized" and denied.value.status == 401

    async def async_calls() -> Any:
        async with Client(server.url, token="s3cret") as client:
            return await client.actor("counter", "c/with slash").call("hit", 5)
    assert asyncio.run(async_calls()) == 5
    r = httpx.post(f"{server.url}/actors/counter/c/hit", content=b"{not json", headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 400 and r.json()["error"] == "BadRequest" and r.headers["x-actor-db-node"] == "solo"
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    metrics = httpx.get(f"{server.url}/metrics", headers={"authorization": "Bearer s3cret"}).text
    assert "actor_db_placement_actors_owned" in metrics and "actor_db_kv_round_trips_total" in metrics
    assert server.terminate() == 0


def test_serve_command_reports_a_bad_target_in_one_line(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.serve_support import ROOT

    for extra in ([], ["--workers", "2"]):
        done = subprocess.run([sys.executable, "-m", "actor_db", "serve", "no_such_module:registry", "--kv",
                               f"lmdb:{tmp_path / 'store'}", "--port", "0", *extra], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env={**__import__("os").environ,
                                                                               "PYTHONPATH": str(ROOT)})
        assert done.returncode == 1, done.stderr
        assert "cannot import 'no_such_module'" in done.stderr and "Traceback" not in done.stderr
