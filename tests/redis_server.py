"""Real ``redis-server`` processes for the tests, on free loopback ports, stopped by PID.

- :class:`RedisServer` runs one server (AOF on, ``appendfsync always``, its files in a
  directory the test owns); it can be killed with SIGKILL and restarted on the same port
  and directory (the crash tests).
- :func:`session_server` is one durable server per test process (pytest-xdist worker),
  started on first use and stopped at exit; tests isolate themselves with a fresh
  ``namespace=`` each, which keeps the suite fast.
- :class:`RedisClusterProcesses` starts N masters with ``--cluster-enabled yes`` and joins
  them with ``redis-cli --cluster create``.

Missing ``redis-server``: the test is skipped locally but FAILS when ``CI`` is set
(``./scripts/test`` installs it with apt-get).
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START_TIMEOUT_S = 20.0


def require_redis() -> str:
    """The path of ``redis-server``; skips the test (fails it in CI) when it is missing."""
    path = shutil.which("redis-server")
    if path is None or shutil.which("redis-cli") is None:
        message = "redis-server/redis-cli not installed (./scripts/test installs them with apt-get)"
        if IN_CI:
            pytest.fail(message + " — Redis tests must run in CI", pytrace=False)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process.

    :param directory: where the AOF, the log and (cluster) nodes.conf go.
    :param durable: ``appendonly yes`` + ``appendfsync always`` (else no persistence).
    """

    def __init__(self, directory: pathlib.Path, *, durable: bool = True, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.binary = require_redis()
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self.extra = extra
        self.port = port or 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _args(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no",
                "--save", "", "--dir", str(self.directory), "--logfile", "redis.log",
                "--protected-mode", "no", *persistence, *self.extra]

    def start(self) -> RedisServer:
        """Start (or restart on the same port and directory) and wait until it answers PING."""
        assert self.process is None or self.process.poll() is not None, "already running"
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            self.process = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if _ping(self.port):
                    _live.add(self)
                    return self
                if self.process.poll() is not None:
                    break  # exited: the port was taken, try another
                time.sleep(0.005)
            self.stop()
            self.port = 0
        log = self.directory / "redis.log"
        raise RuntimeError(f"redis-server did not start: {log.read_text()[-2000:] if log.exists() else 'no log'}")

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it; :meth:`start` brings it back."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        _live.discard(self)

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _live.discard(self)

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True,
                              capture_output=True, text=True).stdout


_live: set[RedisServer] = set()
_session: RedisServer | None = None


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop()


def session_server() -> RedisServer:
    """This process's shared durable server (started on first use, stopped at exit)."""
    global _session
    if _session is None or _session.process is None or _session.process.poll() is not None:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="actor-db-redis-"))
        _session = RedisServer(directory).start()
        atexit.register(_cleanup, [_session], directory)  # runs before _stop_all (LIFO)
    return _session


def _cleanup(servers: list[RedisServer], directory: pathlib.Path) -> None:
    for server in servers:
        server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def fresh_namespace(label: str = "t") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


class RedisClusterProcesses:
    """A Redis Cluster of ``masters`` masters (no replicas) on loopback ports."""

    def __init__(self, directory: pathlib.Path, masters: int = 3) -> None:
        self.servers = [
            RedisServer(pathlib.Path(directory) / f"node{i}", durable=False,
                        extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                               "--cluster-node-timeout", "5000"))
            for i in range(masters)
        ]

    def start(self) -> RedisClusterProcesses:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, text=True, timeout=60)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all("cluster_state:ok" in s.cli("cluster", "info") for s in self.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.servers[0].port}"

    def client(self, **kwargs: Any) -> Any:
        from redis.cluster import RedisCluster

        return RedisCluster(host="127.0.0.1", port=self.servers[0].port, decode_responses=False, **kwargs)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


_session_cluster: RedisClusterProcesses | None = None


def session_cluster() -> RedisClusterProcesses:
    """This process's shared 3-master cluster (started on first use, stopped at exit)."""
    global _session_cluster
    if _session_cluster is None:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="actor-db-redis-cluster-"))
        cluster = RedisClusterProcesses(directory)
        atexit.register(_cleanup, cluster.servers, directory)
        _session_cluster = cluster.start()
    return _session_cluster
