"""What the suite can measure on this checkout and machine, decided at run time.

- ``native_available()``: the C VFS of ``native/`` is built (``native.AVAILABLE``).
- ``redis_available()``: ``actor_db.kv.RedisKV`` exists and ``redis-server`` is on the
  PATH; :func:`redis_server` then starts a throw-away server on a free port.
- ``runtime_available()``: the actor runtime (``actor_db.Registry``) exists.

Rows for missing parts are simply not generated, and the report says which parts
were present.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator

log = logging.getLogger(__name__)

__all__ = ["native_available", "redis_available", "runtime_available", "redis_server", "vfs_kinds", "present"]


def native_available() -> bool:
    try:
        import native
    except ImportError:
        return False
    return bool(getattr(native, "AVAILABLE", False))


def vfs_kinds() -> list[str]:
    """``["python"]`` plus ``"native"`` when the C VFS is built."""
    return ["python", "native"] if native_available() else ["python"]


def redis_available() -> bool:
    try:
        from actor_db.kv import RedisKV  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return shutil.which("redis-server") is not None


def runtime_available() -> bool:
    try:
        import actor_db
    except ImportError:
        return False
    return hasattr(actor_db, "Registry")


def present() -> dict[str, bool]:
    """Which optional parts this run measured (for the report's header)."""
    return {"native VFS": native_available(), "Redis": redis_available(), "actor runtime": runtime_available()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[Any]:
    """A fresh ``redis-server`` on 127.0.0.1 (no persistence), as a ``RedisKV``.

    The server is stopped (by its own pid) when the block exits.
    """
    from actor_db.kv import RedisKV

    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="actor-db-bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        store = RedisKV(f"redis://127.0.0.1:{port}/0", namespace="bench", check_persistence=False)
        try:
            yield store
        finally:
            store.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
