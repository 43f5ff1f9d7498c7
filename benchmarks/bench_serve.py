"""Serving benchmarks (issue 22): forwarded vs local calls, HTTP vs in-process CPU,
``--workers 2`` vs 1, and placement upkeep round trips.

Run: ``python -m pytest -p no:xdist benchmarks/bench_serve.py --benchmark-json=serve.json``
then ``python -m benchmarks.serve_report serve.json`` for the table. Real processes
(``actor-db serve`` nodes on loopback, a throw-away redis-server, LMDB in a temporary
directory); the load comes from :mod:`benchmarks.http_load` (raw keep-alive sockets,
a few microseconds of CPU per request). CPU figures are the node processes' own user +
system time from ``/proc`` (10 ms ticks, so runs are long enough that a tick is < 5%
of the figure), divided by the requests answered; they do not include the load
generator. Every figure lands in ``extra_info``; the timed body is one run.

Figures (all per call unless said): ``group=serve-forward``: requests/s, mean
latency (ms) and node CPU (us) for a call answered by the owner vs one forwarded by
another node; ``serve-http``: CPU of an action called in-process vs over HTTP on its
owner; ``serve-workers``: actions/s of ``--workers 1`` and ``--workers 2`` on a
read-heavy mix over 1,000 actors on LMDB; ``serve-upkeep``: store round trips per
second spent on liveness by 1, 3 and 10 nodes, with 0 and with many awake actors.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from typing import Any, Iterator

import pytest

from benchmarks.http_load import request_bytes, run_load, run_routed_load, send_each
from tests.serve_support import NodeProcess

QUICK = os.environ.get("ACTOR_DB_BENCH_QUICK") == "1"
SECONDS = 1.0 if QUICK else 5.0
ACTORS = 100 if QUICK else 1000
UPKEEP_ACTORS = 200 if QUICK else 10_000
LEASE_S = 2.0
"""The upkeep benchmark's lease (seconds)."""


def _cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in parts[11:15]) / os.sysconf("SC_CLK_TCK")


def _main_thread_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s main thread alone (its event loop)."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds) from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / tick, time.monotonic()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def _processes(node: NodeProcess) -> list[int]:
    return [node.pid] + _children(node.pid)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from tests.redis_server import fresh_namespace, session_server

    yield f"{session_server().url}?namespace={fresh_namespace('bench-serve')}"


def _measure(nodes: list[NodeProcess], target: NodeProcess, requests: list[bytes], seconds: float,
             connections: int) -> dict[str, float]:
    pids = [p for n in nodes for p in _processes(n)]
    before = [_cpu(p) for p in pids]
    result = run_load("127.0.0.1", target.port, requests, seconds, connections)
    after = [_cpu(p) for p in pids]
    assert result.errors == 0 and result.requests > 0
    cpu = sum(after) - sum(before)
    return {"requests_per_s": result.per_second, "latency_ms": connections / result.per_second * 1000,
            "cpu_us_per_call": cpu / result.requests * 1e6, "requests": result.requests}


@pytest.mark.parametrize("connections", [1, 8])
def test_forwarded_vs_local_call(benchmark: Any, redis_url: str, connections: int) -> None:
    owner = NodeProcess(redis_url, f"own-{connections}", lease=10.0, extra=("--log-level", "warning")).start()
    other = NodeProcess(redis_url, f"fwd-{connections}", lease=10.0, extra=("--log-level", "warning")).start()
    try:
        keys = [f"f{connections}-{i}" for i in range(16)]
        send_each("127.0.0.1", owner.port, [request_bytes("x", f"/actors/counter/{k}/hit", [1]) for k in keys], 4)
        reads = [request_bytes("x", f"/actors/counter/{k}/get", []) for k in keys]
        send_each("127.0.0.1", other.port, reads, 4)  # the other node learns the owner
        out: dict[str, Any] = {}

        def run() -> None:
            out["local"] = _measure([owner, other], owner, reads, SECONDS, connections)
            out["forwarded"] = _measure([owner, other], other, reads, SECONDS, connections)
        benchmark.group = "serve-forward"
        benchmark.pedantic(run, rounds=1, iterations=1)
        benchmark.extra_info.update(
            connections=connections, local=out["local"], forwarded=out["forwarded"],
            extra_cpu_us=out["forwarded"]["cpu_us_per_call"] - out["local"]["cpu_us_per_call"],
            extra_latency_ms=out["forwarded"]["latency_ms"] - out["local"]["latency_ms"])
    finally:
        owner.stop()
        other.stop()


def test_http_vs_in_process_cpu(benchmark: Any, redis_url: str) -> None:
    import actor_db
    from actor_db.kv.redis import RedisKV
    from tests import serve_app

    url, _, query = redis_url.partition("?")
    namespace = query.split("=", 1)[1] + "-inproc"
    calls = 2000 if QUICK else 20_000

    async def in_process() -> float:
        store = RedisKV(url, namespace=namespace, check_persistence=False)
        async with actor_db.Registry([serve_app.counter], kv=store) as registry:
            handle = registry.get_or_create("counter", "h")
            await handle.call("hit", 1)
            started = time.process_time()
            for _ in range(calls):
                await handle.call("get")
            used = time.process_time() - started
        store.close()
        return used / calls * 1e6

    node = NodeProcess(redis_url, "http-cpu", lease=10.0, extra=("--log-level", "warning")).start()
    try:
        send_each("127.0.0.1", node.port, [request_bytes("x", "/actors/counter/h/hit", [1])], 1)
        out: dict[str, Any] = {}

        def run() -> None:
            out["in_process_cpu_us"] = asyncio.run(in_process())
            out["http"] = _measure([node], node, [request_bytes("x", "/actors/counter/h/get", [])], SECONDS, 8)
        benchmark.group = "serve-http"
        benchmark.pedantic(run, rounds=1, iterations=1)
        benchmark.extra_info.update(in_process_cpu_us=out["in_process_cpu_us"], http=out["http"],
                                    http_overhead_cpu_us=out["http"]["cpu_us_per_call"] - out["in_process_cpu_us"])
    finally:
        node.stop()


ROUNDS = 1 if QUICK else 5
"""Alternating rounds of the workers benchmark (one worker, two routed, two through the
shared port, in turn), so that the ratios hold while the machine's speed drifts."""


def _measure_routed(node: NodeProcess, requests: list[tuple[str, bytes]], seconds: float, connections: int,
                    routes: dict[str, int] | None) -> dict[str, float]:
    pids = _processes(node)
    workers = pids[1:] if node.workers > 1 else pids  # (the parent of --workers only waits)
    forwarded = -_placement(node).get("actor_db_placement_calls_forwarded_total", 0.0)
    loops = [-_main_thread_cpu(p) for p in workers]
    before = [_cpu(p) for p in pids]
    busy_before, wall_before = _machine_busy()
    result = run_routed_load("127.0.0.1", node.port, requests, seconds, connections, routes)
    busy_after, wall_after = _machine_busy()
    after = [_cpu(p) for p in pids]
    loops = [used + _main_thread_cpu(p) for used, p in zip(loops, workers)]
    forwarded += _placement(node).get("actor_db_placement_calls_forwarded_total", 0.0)
    assert result.errors == 0 and result.requests > 0
    node_cpu = sum(after) - sum(before)
    client_cpu = result.client_cpu_us * result.requests / 1e6
    wall = wall_after - wall_before
    return {"requests_per_s": result.per_second, "cpu_us_per_call": node_cpu / result.requests * 1e6,
            "client_cpu_us_per_call": result.client_cpu_us, "direct_share": result.direct / result.requests,
            "requests": result.requests, "forwarded_share": forwarded / result.requests,
            "node_cores": node_cpu / wall, "busiest_loop": max(loops) / wall, "others_cores": max(0.0, (busy_after - busy_before - node_cpu - client_cpu) / wall)}


def _placement(node: NodeProcess) -> dict[str, float]:
    """Placement counters summed over every worker (each asked on its own direct port)."""
    import json
    import urllib.request

    urls: set[str] = set()
    for _ in range(20):  # the shared port reaches a worker at random: ask until each was seen
        with urllib.request.urlopen(node.url + "/healthz", timeout=5.0) as r:
            urls.add(json.loads(r.read())["url"])
        if len(urls) == node.workers:
            break
    out: dict[str, float] = {}
    for url in urls:
        with urllib.request.urlopen(url + "/metrics", timeout=5.0) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("actor_db_placement_") and "quantile" not in line:
                    name = line.split("{", 1)[0]
                    out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_workers_read_heavy_over_http(benchmark: Any) -> None:
    """``--workers 1`` vs ``--workers 2`` on LMDB, 1,000 actors, 9 reads for 1 write at
    random actors, 32 keep-alive connections. Three ways, alternated round by round:
    one worker; two workers with a routing client (each actor's calls sent to its
    owner's own port, learnt from ``X-Actor-DB-Node-URL``); two workers with every call
    through the shared port (a load balancer or curl: half the calls are forwarded)."""
    servers = {}
    for workers in (1, 2):
        directory = tempfile.mkdtemp(prefix="bench-serve-")
        servers[workers] = NodeProcess(f"lmdb:{directory}/store", f"w{workers}", lease=10.0, workers=workers,
                                       extra=("--log-level", "warning"))
    try:
        keys = [f"a{i}" for i in range(ACTORS)]
        mix = [(k, request_bytes("x", f"/actors/counter/{k}/get", [])) for k in keys] * 9
        mix += [(k, request_bytes("x", f"/actors/counter/{k}/hit", [1])) for k in keys]
        routes: dict[int, dict[str, int]] = {1: {}, 2: {}}
        for workers, node in servers.items():
            node.start()
            woken = send_each("127.0.0.1", node.port, [request_bytes("x", f"/actors/counter/{k}/hit", [1])
                                                         for k in keys], 16)
            assert woken.errors == 0
            run_routed_load("127.0.0.1", node.port, mix, 1.0, 32, routes[workers])  # learn every route
        rounds: list[dict[str, dict[str, float]]] = []

        def run() -> None:
            for _ in range(ROUNDS):
                rounds.append({
                    "one": _measure_routed(servers[1], mix, SECONDS, 32, routes[1]),
                    "two_routed": _measure_routed(servers[2], mix, SECONDS, 32, routes[2]),
                    "two_shared": _measure_routed(servers[2], mix, SECONDS, 32, None),
                })
        benchmark.group = "serve-workers"
        benchmark.pedantic(run, rounds=1, iterations=1)
        ratios = [r["two_routed"]["requests_per_s"] / r["one"]["requests_per_s"] for r in rounds]
        shared = [r["two_shared"]["requests_per_s"] / r["one"]["requests_per_s"] for r in rounds]
        benchmark.extra_info.update(actors=ACTORS, cores=os.cpu_count(), loadavg_1m=os.getloadavg()[0],
                                    rounds=rounds, ratio_routed=sorted(ratios), ratio_shared=sorted(shared),
                                    ratio_routed_median=statistics.median(ratios),
                                    ratio_shared_median=statistics.median(shared))
    finally:
        for node in servers.values():
            node.stop()


@pytest.mark.parametrize("nodes", [1, 3, 10])
@pytest.mark.parametrize("awake", [0, UPKEEP_ACTORS])
def test_placement_upkeep_round_trips(benchmark: Any, redis_url: str, nodes: int, awake: int) -> None:
    """Liveness traffic of ``nodes`` nodes (lease 2 s: a renewal every 2/3 s each) while
    ``awake`` actors are awake among them and no call runs: store round trips/s. (All
    nodes share this one process; a wake refused for a lease that ran out while the
    process was busy waking is retried.)"""
    import actor_db
    from actor_db.errors import PlacementError
    from actor_db.kv.redis import RedisKV
    from tests import serve_app

    url, _, query = redis_url.partition("?")
    namespace = f"{query.split('=', 1)[1]}-upkeep-{nodes}-{awake}"
    window = 1.5 if QUICK else 4.0

    async def measure() -> dict[str, float]:
        stores = [RedisKV(url, namespace=namespace, check_persistence=False) for _ in range(nodes)]
        # Few threads: the heartbeat thread must not queue for the GIL behind dozens
        # of busy pool threads while 10,000 actors wake (that can stall it past a lease).
        registries = [actor_db.Registry([serve_app.counter], kv=s, max_threads=4) for s in stores]
        apps = [r.asgi(node_id=f"u{i}", node_secret="s", lease_s=LEASE_S) for i, r in enumerate(registries)]
        for app in apps:
            await app.start()
        sem = asyncio.Semaphore(16)

        async def wake(i: int) -> None:
            async with sem:
                for attempt in range(20):
                    try:
                        await apps[i % nodes].node.call("counter", f"u{i}", "get", [])
                        return
                    except PlacementError:
                        await asyncio.sleep(0.05 * (attempt + 1))
                raise AssertionError(f"actor u{i} could not be woken")
        await asyncio.gather(*(wake(i) for i in range(awake)))
        owned = sum(len(app.node.owned) for app in apps)
        before = sum(s.round_trips for s in stores)
        started = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - started
        trips = sum(s.round_trips for s in stores) - before
        for app in apps:
            await app.close()
        for registry in registries:
            await registry.close()
        with RedisKV(url, namespace=namespace, check_persistence=False) as dropper:
            dropper.drop_namespace()
        return {"round_trips_per_s": trips / elapsed, "owned": owned}

    out: dict[str, float] = {}
    benchmark.group = "serve-upkeep"
    benchmark.pedantic(lambda: out.update(asyncio.run(measure())), rounds=1, iterations=1)
    benchmark.extra_info.update(nodes=nodes, awake_actors=awake, lease_s=LEASE_S, **out)
    assert out["owned"] == awake
