"""Actors at scale (issue 13): threads, memory, p50 and CPU with many awake actors,
throughput with 5 ms per KV round trip, and one actor with 64 concurrent callers.

Each probe runs in a fresh process (:mod:`benchmarks.scale`, which documents every
figure); the benchmark's own time is the probe's run time and means little: the
figures are in ``extra_info`` and in REPORT.md's "Actors at scale" section.
Full mode: 100, 10,000 and 50,000 awake actors (at 50,000 without the one-at-a-time
wake and sleep, which would add a minute), the read p50 of 10,000 versus 100 awake
(two live processes, 40 interleaved pairs of passes) and the same read straight on
10,000 versus 100 plain SQLite connections (:mod:`benchmarks.sqlite_floor`), 1 / 64 / 256 actors at 5 ms (in
turns: 4 rounds of 2 s phases); quick mode (``ACTOR_DB_BENCH_QUICK=1``): 50 and 500
awake, 6 pairs, 1 / 8 actors, 1 s runs. The full suite takes about four minutes, most of it creating and waking the
50,000 actors (about 1 ms of CPU each).
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
AWAKE = (50, 500) if S.quick else (100, 10_000, 50_000)
ONE_AT_A_TIME_UP_TO = 10_000
"""Larger probes skip the one-at-a-time wake and sleep measures (a minute at 50,000)."""
COMPARE = (50, 500) if S.quick else (100, 10_000)
"""(small, large) awake actors of the read p50 comparison (issue 13: 100 and 10,000)."""
COMPARE_PAIRS, COMPARE_READS = (6, 300) if S.quick else (40, 1000)
LATENCY_ACTORS = (1, 8) if S.quick else (1, 64, 256)
SECONDS = 1.0 if S.quick else 2.0
"""Seconds counted per run (speedup: per phase; callers: the whole run)."""
SPEEDUP_ROUNDS = 2 if S.quick else 4
"""Rounds of the speedup probe: every actor count runs once per round."""

pytestmark = pytest.mark.skipif(not backends.runtime_available(), reason="the actor runtime is not in this checkout")


def probe(*args: str, module: str = "benchmarks.scale") -> Any:
    """Run ``python -m MODULE ARGS`` in a fresh process; its JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(group="scale-cpu")
def test_cpu_per_action(benchmark: Any) -> None:
    out: dict[str, Any] = {}
    benchmark.pedantic(lambda: out.update(probe("cpu", "--actions", "500" if S.quick else "5000")),
                       rounds=1, iterations=1)
    # A write is 1 round trip; every ~1 MiB of recorded history chunks, one write is
    # followed by a base image copy (a scan and a write: docs/history.md), so the mean is
    # a little over 1 (1.008 with 5,000 actions).
    assert out["kv_round_trips_per_read_action"] == 0 and 1 <= out["kv_round_trips_per_write_action"] < 1.05
    record(benchmark, round_trips=None, **out)


@pytest.mark.benchmark(group="scale-latency")
def test_write_speedup_with_5ms(benchmark: Any) -> None:
    """1 / 64 / 256 actors (quick: 1 / 8) in turns in one process: the ratios to one
    actor are taken within a round, so the machine's drift cancels."""
    out: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: out.extend(probe("speedup", "--actors", *map(str, LATENCY_ACTORS),
                                                "--seconds", str(SECONDS), "--rounds", str(SPEEDUP_ROUNDS))),
                       rounds=1, iterations=1)
    assert [e["actors"] for e in out] == list(LATENCY_ACTORS) and all(e["failures"] == 0 for e in out)
    record(benchmark, round_trips=None, actors=LATENCY_ACTORS[-1], rows=out)


@pytest.mark.benchmark(group="scale-callers")
def test_one_actor_64_callers_with_5ms(benchmark: Any) -> None:
    out: dict[str, Any] = {}
    benchmark.pedantic(lambda: out.update(probe("callers", "--callers", "64", "--seconds", str(SECONDS))),
                       rounds=1, iterations=1)
    record(benchmark, round_trips=None, **out)


# The memory-heavy probes run last: the 6.7 GiB that 50,000 awake actors take is handed back
# to the kernel when their process exits, and the probes timed after it would share the
# CPUs with that reclaim.
@pytest.mark.benchmark(group="scale-awake")
@pytest.mark.parametrize("actors", AWAKE, ids=lambda n: f"{n}-awake")
def test_awake_actors(benchmark: Any, actors: int) -> None:
    out: dict[str, Any] = {}
    args = ["awake", "--actors", str(actors), "--reads", "2000"]
    if actors > ONE_AT_A_TIME_UP_TO:
        args.append("--no-one-at-a-time")
    benchmark.pedantic(lambda: out.update(probe(*args)), rounds=1, iterations=1)
    record(benchmark, round_trips=None, **out)


@pytest.mark.benchmark(group="scale-floor")
def test_sqlite_floor(benchmark: Any) -> None:
    """The same read straight on apsw over SQLite's memdb VFS (no actor-db): what
    SQLite's own memory costs a read on a cold connection (benchmarks/sqlite_floor.py)."""
    out: dict[str, Any] = {}
    small, large = COMPARE
    args = ["--connections", str(small), str(large)] + (["--pairs", "2", "--reads", "500"] if S.quick else [])
    benchmark.pedantic(lambda: out.update(probe(*args, module="benchmarks.sqlite_floor")), rounds=1, iterations=1)
    assert out["large_p50_us"] > 0 and out["small_p50_us"] > 0
    record(benchmark, round_trips=None, **out)


@pytest.mark.benchmark(group="scale-compare")
def test_read_p50_many_versus_few_awake(benchmark: Any) -> None:
    out: dict[str, Any] = {}
    small, large = COMPARE
    benchmark.pedantic(lambda: out.update(probe("compare", "--actors", str(small), str(large), "--pairs",
                                                str(COMPARE_PAIRS), "--reads", str(COMPARE_READS))),
                       rounds=1, iterations=1)
    assert out["read_p50_ratio"] > 0 and out["hot_read_p50_ratio"] > 0
    record(benchmark, round_trips=None, **out)
