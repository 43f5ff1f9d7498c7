"""A pytest plugin that reports each finished benchmark to a progress file.

Loaded by :mod:`benchmarks.report` with ``-p benchmarks.progress`` in the pytest child
process. It appends one line per event to the file named by
``$ACTOR_DB_BENCH_PROGRESS``: ``total <n>`` once collection is done, then ``done
<nodeid>`` after each test. The parent turns the lines into a tqdm bar (writing the bar
from the child would go through pytest's output capture).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

_PATH = os.environ.get("ACTOR_DB_BENCH_PROGRESS")


def _emit(line: str) -> None:
    if _PATH:
        with open(_PATH, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def pytest_collection_finish(session: pytest.Session) -> None:
    _emit(f"total {len(session.items)}")


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _emit(f"start {nodeid}")


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    _emit(f"done {nodeid}")
