"""Shared fixtures: ONE behavioural suite runs against every KV driver and every VFS.

- ``store`` is parametrized over the drivers in ``tests/drivers.py`` (``memory``,
  ``lmdb``, and more as drivers land); it yields a fresh :class:`actor_db.kv.KVStore`.
- ``reopen_store`` builds a new driver object on the same underlying data (the
  cross-process/reopen path).
- ``vfs_kind`` is parametrized over the VFS implementations available
  (``python``; ``native`` when built).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import pytest

from actor_db.kv import KVStore
from tests.drivers import DRIVERS, DriverFactory, vfs_kinds

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

collect_ignore = ["sqlalchemy_suite"]
"""SQLAlchemy's compliance suite runs in its own pytest (tests/run_sqlalchemy_suite.py),
with SQLAlchemy's plugin, never inside this session."""


@pytest.fixture(params=sorted(DRIVERS), ids=str)
def driver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    """A factory for stores of one driver kind, all on the same data."""
    factory = DRIVERS[request.param](tmp_path_factory.mktemp(request.param))
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def store(driver: DriverFactory) -> Iterator[KVStore]:
    s = driver.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def reopen_store(driver: DriverFactory) -> Callable[[], KVStore]:
    """Open another driver object on the same data as ``store``."""
    return driver.open


@pytest.fixture(params=vfs_kinds(), ids=str)
def vfs_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the summary lines tests recorded (e.g. CPython's sqlite3 suite pass count),
    also under pytest-xdist, whose workers send ``user_properties`` with their reports."""
    lines = [value for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
             if report.when == "call" for name, value in report.user_properties if name == "summary_line"]
    if lines:
        terminalreporter.section("actor-db summaries")
        for line in sorted(set(lines)):
            terminalreporter.write_line(line)
