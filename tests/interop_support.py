"""Drive RivetKit's own SQLite VFS (``@rivetkit/sqlite-vfs``, pinned in
``tests/interop/package.json``) from the Python tests, over KV dumps both sides share.

The set-up script installs it with ``npm ci`` in ``tests/interop``. Without Node or the
package, :func:`require_rivetkit` fails the test when ``CI=true`` (the suite must run
there) and skips it elsewhere.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pytest

from vfs.protocol import KV, WriteBatch

INTEROP_DIR = pathlib.Path(__file__).parent / "interop"
BRIDGE = INTEROP_DIR / "rivetkit_bridge.mjs"
PACKAGE = INTEROP_DIR / "node_modules" / "@rivetkit" / "sqlite-vfs" / "package.json"
PINNED_VERSION = "2.2.1"
_TIMEOUT_S = 120.0
_ALL = (b"", b"\xff" * 16)


def missing_reason() -> str | None:
    """Why RivetKit's VFS cannot run here, or ``None``."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not PACKAGE.exists():
        return f"@rivetkit/sqlite-vfs is not installed in {INTEROP_DIR} (run: npm ci --prefix {INTEROP_DIR})"
    version = json.loads(PACKAGE.read_text()).get("version")
    if version != PINNED_VERSION:
        return f"@rivetkit/sqlite-vfs {version} is installed, the suite pins {PINNED_VERSION} (run npm ci)"
    return None


def require_rivetkit() -> None:
    """Fail (``CI=true``) or skip the calling test when RivetKit's VFS cannot run."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI: the RivetKit interop suite must run: {reason}")
    pytest.skip(reason)


def encode_dump(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """``[u32 BE key length][key][u32 BE value length][value]`` per pair."""
    out = bytearray()
    for key, value in pairs:
        out += struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value
    return bytes(out)


def decode_dump(data: bytes) -> list[tuple[bytes, bytes]]:
    pairs: list[tuple[bytes, bytes]] = []
    o = 0
    while o < len(data):
        (kl,) = struct.unpack_from(">I", data, o)
        key = data[o + 4:o + 4 + kl]
        o += 4 + kl
        (vl,) = struct.unpack_from(">I", data, o)
        pairs.append((key, data[o + 4:o + 4 + vl]))
        o += 4 + vl
    return pairs


def dump_kv(kv: KV) -> bytes:
    """Every key of an actor-scoped view (one scan)."""
    return encode_dump(kv.scan(*_ALL))


def load_kv(kv: KV, dump: bytes) -> None:
    """Replace every key of ``kv`` by the dump's (one batch)."""
    batch = WriteBatch()
    batch.delete_range(*_ALL)
    for key, value in decode_dump(dump):
        batch.put(key, value)
    kv.write(batch)


@dataclass
class Job:
    """One RivetKit run (see ``tests/interop/rivetkit_bridge.mjs``)."""

    steps: list[tuple[str, bool]]
    """``(sql, is_query)`` in order, on one connection."""
    dump_in: bytes | None = None
    cuts: list[int] | None = None
    results: list[Any] = field(default_factory=list)
    writes: int = 0
    dump_out: bytes = b""
    cut_runs: list[tuple[list[Any], int, bool, bytes]] = field(default_factory=list)
    """With ``cuts``: ``(results, writes, crashed, dump)`` per cut."""


def run_rivetkit(jobs: list[Job]) -> None:
    """Run ``jobs`` in ONE Node process (RivetKit's VFS, a fresh instance per run)."""
    with tempfile.TemporaryDirectory(prefix="actor-db-interop-") as tmp:
        root = pathlib.Path(tmp)
        spec = []
        for i, job in enumerate(jobs):
            entry: dict[str, Any] = {"dump_out": str(root / f"out-{i}"), "dump_in": None,
                                     "steps": [{"sql": sql, "query": query} for sql, query in job.steps]}
            if job.dump_in is not None:
                (root / f"in-{i}").write_bytes(job.dump_in)
                entry["dump_in"] = str(root / f"in-{i}")
            if job.cuts is not None:
                entry["cuts"] = job.cuts
            spec.append(entry)
        (root / "command.json").write_text(json.dumps({"result": str(root / "result.json"), "jobs": spec}))
        done = subprocess.run(["node", "--liftoff-only", str(BRIDGE), str(root / "command.json")], cwd=INTEROP_DIR,
                              capture_output=True, text=True, timeout=_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"the RivetKit bridge failed ({done.returncode}): {done.stderr[-2000:]}")
        out = json.loads((root / "result.json").read_text())
        for i, (job, result) in enumerate(zip(jobs, out)):
            if job.cuts is None:
                job.results, job.writes = result["results"], result["writes"]
                job.dump_out = (root / f"out-{i}").read_bytes()
            else:
                job.cut_runs = [(r["results"], r["writes"], r["crashed"], (root / f"out-{i}.{cut}").read_bytes())
                                for cut, r in zip(job.cuts, result["cuts"])]
