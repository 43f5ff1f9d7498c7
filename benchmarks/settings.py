"""Run-wide benchmark settings, from the environment (the report sets them).

- ``ACTOR_DB_BENCH_QUICK=1``: the tiny mode of the smoke test (two small sizes, few
  rounds, few actors); the figures that are exact (round trips) are the same as in a
  full run for the sizes both modes measure.
- ``ACTOR_DB_BENCH_LATENCY_MS``: the injected latency per round trip (default 1 ms).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Settings", "settings", "KIB", "MIB"]

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """What one run measures. Sizes in bytes, latencies in seconds."""

    quick: bool
    latency_s: float
    cold_sizes: tuple[int, ...]
    cold_rounds: int
    redis_max_size: int
    """Largest cold-start database also loaded into Redis (bytes)."""
    commit_rounds: dict[str, int]
    commit_sizes: tuple[tuple[str, int], ...]
    warm_db_size: int
    warm_point_rounds: int
    warm_scan_rows: int
    warm_scan_rounds: int
    concurrency_actors: tuple[int, ...]
    concurrency_latencies_s: tuple[float, ...]
    concurrency_actions_total: int
    memory_actors: int


def settings() -> Settings:
    quick = os.environ.get("ACTOR_DB_BENCH_QUICK", "") not in ("", "0")
    latency_s = float(os.environ.get("ACTOR_DB_BENCH_LATENCY_MS", "1")) / 1000.0
    if quick:
        return Settings(
            quick=True, latency_s=latency_s,
            cold_sizes=(64 * KIB, 512 * KIB), cold_rounds=2, redis_max_size=512 * KIB,
            commit_rounds={"update-1-row": 3, "insert-100-rows": 2, "insert-1MiB": 1, "insert-10MiB": 1},
            commit_sizes=(("insert-1MiB", MIB),),
            warm_db_size=4 * MIB, warm_point_rounds=50, warm_scan_rows=1000, warm_scan_rounds=2,
            concurrency_actors=(1, 8), concurrency_latencies_s=(latency_s,), concurrency_actions_total=40,
            memory_actors=10,
        )
    return Settings(
        quick=False, latency_s=latency_s,
        cold_sizes=(64 * KIB, 512 * KIB, 4 * MIB, 64 * MIB, 512 * MIB), cold_rounds=20, redis_max_size=512 * MIB,
        commit_rounds={"update-1-row": 50, "insert-100-rows": 20, "insert-1MiB": 10, "insert-10MiB": 5},
        commit_sizes=(("insert-1MiB", MIB), ("insert-10MiB", 10 * MIB)),
        warm_db_size=16 * MIB, warm_point_rounds=5000, warm_scan_rows=10_000, warm_scan_rounds=20,
        concurrency_actors=(1, 8, 64, 256), concurrency_latencies_s=(0.001, 0.005), concurrency_actions_total=2048,
        memory_actors=200,
    )
