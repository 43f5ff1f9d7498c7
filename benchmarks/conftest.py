"""pytest setup of the benchmark suites: collect ``bench_*.py``, shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-quick", action="store_true", help="actor-db: tiny sizes and few rounds (smoke test)")


def pytest_configure(config: pytest.Config) -> None:
    # Read by benchmarks.settings when the bench modules are imported (at collection).
    if config.getoption("--bench-quick", default=False):
        os.environ["ACTOR_DB_BENCH_QUICK"] = "1"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # The suites are bench_<area>.py; pytest's own rule (test_*.py) would skip them.
    # Files named on the command line are collected by pytest itself already.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)  # type: ignore[no-any-return]
    return None


@pytest.fixture(scope="session")
def redis_store() -> Iterator[Any]:
    """A ``RedisKV`` on a throw-away local ``redis-server`` (only requested by Redis rows)."""
    from benchmarks.backends import redis_server

    with redis_server() as store:
        yield store
