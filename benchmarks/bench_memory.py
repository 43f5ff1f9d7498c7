"""Memory: resident bytes per awake actor and per sleeping actor.

Measured in a fresh process by :mod:`benchmarks.memory_probe` (see there for what is
counted); the benchmark's time is the probe's run time and means little; the figures
are in ``extra_info``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import backends
from benchmarks.measure import record
from benchmarks.settings import settings

S = settings()
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not backends.runtime_available(), reason="the actor runtime is not in this checkout")


@pytest.mark.benchmark(group="memory")
@pytest.mark.parametrize("backend", ["ours (runtime, LMDB)"])
def test_memory_per_actor(benchmark: Any, backend: str) -> None:
    out: dict[str, Any] = {}

    def run() -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, "-m", "benchmarks.memory_probe", "--actors", str(S.memory_actors)],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=300)
        out.update(json.loads(done.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["per_awake_bytes"] > out["per_sleeping_bytes"]
    record(benchmark, backend=backend, round_trips=None, **out)
