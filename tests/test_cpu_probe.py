"""The CPU-per-write probe (``benchmarks/cpu_after_idle.py``) runs every mode it offers.

It measures, so its figures are not asserted here (benchmarks report speed); this checks
that each mode runs the configuration its label names: the actor's history setting, the
store, and a floor that touches no actor-db code.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import cpu_after_idle


@pytest.mark.parametrize("mode, plain, history", [
    ("back-to-back", True, True), ("back-to-back", True, False), ("back-to-back", False, True),
    ("kv-5ms", False, False), ("idle-5ms", False, True),
])
def test_each_mode_runs_what_it_names(mode: str, plain: bool, history: bool) -> None:
    out = asyncio.run(cpu_after_idle.measure(mode, 3, plain=plain, history=history))
    assert out["mode"] == mode and out["actions"] == 3
    assert out["store"] == ("memory" if plain else "latency")
    assert out["history"] == ("on" if history else "off")
    assert float(out["cpu_per_write_us"]) >= 0


def test_the_history_setting_reaches_the_actor() -> None:
    on, off = cpu_after_idle._writer(True).database, cpu_after_idle._writer(False).database
    assert on is not None and off is not None
    assert on.history is True and off.history is False


def test_the_floor_waits_one_loop_timer_per_call() -> None:
    """Each call of the floor is one committed insert and one loop-timer wait (50
    warm-up calls, then the measured ones); no clock is read by this test."""
    out = asyncio.run(cpu_after_idle.floor(4))
    assert out["mode"] == "floor-5ms" and out["actions"] == 4
    assert out["rows"] == 54 and out["timer_waits"] == 54


def test_memory_store_has_no_latency_to_inject() -> None:
    with pytest.raises(ValueError, match="no latency"):
        asyncio.run(cpu_after_idle.measure("kv-5ms", 1, plain=True))
