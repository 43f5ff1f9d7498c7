"""aiosqlite's own smoke tests pass against :mod:`actor_db.aio` on KV-backed databases.

Both runs are child processes of ``tests/run_aiosqlite_suite.py``: aiosqlite itself on
plain files (the reference) and :mod:`actor_db.aio` through the suite's own ``import
aiosqlite``. Every test that passes on the reference passes on ours, except the ones
listed with their reason in ``EXCLUDED``; and the reference really ran (the pinned
aiosqlite is installed by the test extra).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.run_aiosqlite_suite import AIOSQLITE_VERSION, EXCLUDED

ROOT = Path(__file__).resolve().parent.parent


def _run(target: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "run_aiosqlite_suite.py"), "--target", target],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_aiosqlite_test_that_passes_on_aiosqlite_passes_on_actor_db() -> None:
    import aiosqlite

    assert aiosqlite.__version__ == AIOSQLITE_VERSION
    reference, ours = _run("aiosqlite"), _run("actor_db")
    assert reference["total"] == ours["total"] >= 25
    missing = sorted(set(reference["passed_tests"]) - set(ours["passed_tests"]) - set(EXCLUDED))
    assert missing == [], missing
    assert ours["passed"] >= reference["passed"] - len(EXCLUDED)
