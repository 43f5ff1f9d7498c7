"""Real ``actor-db serve`` node processes for the serve tests, on free loopback ports,
started and stopped by the test (by PID), every wait bounded."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRET = "serve-test-secret"
START_TIMEOUT_S = 30.0


class NodeProcess:
    """One ``actor-db serve tests.serve_app:registry`` process."""

    def __init__(self, kv: str, node_id: str, *, lease: float = 1.0, workers: int = 1,
                 forward_timeout: float = 2.0, extra: tuple[str, ...] = ()) -> None:
        self.kv, self.node_id, self.lease, self.workers = kv, node_id, lease, workers
        self.forward_timeout = forward_timeout
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._dir = tempfile.mkdtemp(prefix="actor-db-node-")
        self.log_path = pathlib.Path(self._dir) / "node.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait: bool = True) -> NodeProcess:
        port_file = pathlib.Path(self._dir) / "port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "actor_db", "serve", "tests.serve_app:registry", "--kv", self.kv,
                "--port", str(self.port), "--port-file", str(port_file), "--node-id", self.node_id,
                "--lease", str(self.lease), "--node-secret", SECRET, "--forward-timeout", str(self.forward_timeout),
                "--workers", str(self.workers), "--drain-grace", "0.5", "--log-level", "info", *self.extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("ACTOR_DB_TOKEN", None)
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready(port_file)
        return self

    def wait_ready(self, port_file: pathlib.Path | None = None) -> None:
        port_file = port_file or pathlib.Path(self._dir) / "port"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited: {self.log_text()[-3000:]}")
            if not self.port and port_file.exists():
                self.port = int(port_file.read_text())
            if self.port and self.healthy():
                return
            time.sleep(0.02)
        raise RuntimeError(f"node {self.node_id} did not become healthy: {self.log_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1.0) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def metrics(self) -> dict[str, float]:
        """The ``actor_db_placement_*`` samples (labels dropped), summed per name."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5.0) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("actor_db_placement_") and "quantile" not in line:
                name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
                out[name] = out.get(name, 0.0) + value
        return out

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL (a crash), then reap it."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (drain) and wait for the exit; its status."""
        assert self.process is not None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def stop(self) -> None:
        """Stop whatever state it is in (tests' cleanup)."""
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if getattr(self, "log", None) is not None:
            self.log.close()


def post(url: str, name: str, key: str, action: str, *args: Any, timeout: float = 10.0) -> tuple[int, Any, str]:
    """One raw HTTP call: ``(status, JSON body, X-Actor-DB-Node)``."""
    request = urllib.request.Request(f"{url}/actors/{name}/{key}/{action}", data=json.dumps(list(args)).encode(),
                                     method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers.get("x-actor-db-node", "")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers.get("x-actor-db-node", "")


def stopped_after() -> Iterator[list[NodeProcess]]:
    """A fixture's body: yields the list a test appends the nodes it starts to, and stops
    each of them afterwards (also when the test failed)."""
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.stop()
