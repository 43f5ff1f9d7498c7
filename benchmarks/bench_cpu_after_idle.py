"""CPU per 1-row write action after idle time (issue 25): see :mod:`benchmarks.cpu_after_idle`.

Each mode runs in a fresh process; the figures are in ``extra_info`` and REPORT.md.
The modes alternate over the rounds so the machine's drift spreads over all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.measure import record
from benchmarks.settings import settings

S = settings()
ROOT = Path(__file__).resolve().parent.parent
MODES: dict[str, list[str]] = {
    "back-to-back": ["--mode", "back-to-back"],
    "kv-5ms": ["--mode", "kv-5ms"],
    "idle-5ms": ["--mode", "idle-5ms"],
    "back-to-back/memory": ["--mode", "back-to-back", "--store", "memory"],
    "back-to-back/memory/history-off": ["--mode", "back-to-back", "--store", "memory", "--history", "off"],
    "kv-5ms/history-off": ["--mode", "kv-5ms", "--history", "off"],
    "floor-5ms": ["--mode", "floor-5ms"],
}
"""Probe modes by label: ``/memory`` on a plain ``MemoryKV`` (no group-commit round),
``/history-off`` with ``db(history=False)``, ``floor-5ms`` no actor-db code at all (see
:mod:`benchmarks.cpu_after_idle`)."""
ROUNDS = 1 if S.quick else 3
ACTIONS = 200 if S.quick else 1000


def _probe(mode: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "benchmarks.cpu_after_idle", *MODES[mode], "--actions", str(ACTIONS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.benchmark(group="cpu-after-idle")
def test_cpu_per_write_after_idle(benchmark: Any) -> None:
    runs: dict[str, list[float]] = {m: [] for m in MODES}

    def rounds() -> None:
        for _ in range(ROUNDS):
            for mode in MODES:
                runs[mode].append(_probe(mode)["cpu_per_write_us"])

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    medians = {m: sorted(v)[len(v) // 2] for m, v in runs.items()}
    assert all(v > 0 for v in medians.values())
    record(benchmark, round_trips=None, cpu_per_write_us=medians, runs=runs, actions=ACTIONS)
