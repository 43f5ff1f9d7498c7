"""Helpers shared by the suites: timed rounds with exact round-trip counts."""

from __future__ import annotations

import statistics
from typing import Any, Callable

__all__ = ["run_rounds", "record"]


def record(benchmark: Any, **info: Any) -> None:
    """Store ``info`` in the benchmark's ``extra_info`` (lands in the JSON)."""
    benchmark.extra_info.update(info)


def run_rounds(
    benchmark: Any,
    target: Callable[[], Any],
    *,
    rounds: int,
    counter: Callable[[], int] | None = None,
    setup: Callable[[], None] | None = None,
    warmup_rounds: int = 0,
) -> list[int]:
    """Time ``rounds`` calls of ``target`` (one call per round) and count round trips.

    :param counter: returns the store's round-trip counter (read before and after each
        timed call); ``None`` for backends without a KV (the local file).
    :param setup: run before each round, untimed (e.g. close the last connection).
    :returns: round trips of each timed round (empty without ``counter``). Also sets
        ``extra_info["round_trips"]`` (the median round, exact for deterministic work),
        ``round_trips_min`` and ``round_trips_max``.
    """
    trips: list[int] = []
    warm = [warmup_rounds]

    def wrapped() -> None:
        before = counter() if counter is not None else 0
        target()
        if counter is not None:
            if warm[0] > 0:
                warm[0] -= 1
            else:
                trips.append(counter() - before)

    def do_setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if setup is not None:
            setup()
        return (), {}

    benchmark.pedantic(wrapped, setup=do_setup, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    if trips:
        record(benchmark, round_trips=int(statistics.median_low(trips)), round_trips_min=min(trips),
               round_trips_max=max(trips))
    else:
        record(benchmark, round_trips=None)
    return trips
