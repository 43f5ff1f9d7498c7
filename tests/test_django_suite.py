"""Django's own tests for the apps issue 27 names pass on ``actor_db.django`` as on SQLite.

Both runs are child processes of ``tests/run_django_suite.py`` (Django's ``runtests.py``
with ``--parallel 2``): Django's own SQLite backend (the reference) and this backend.
Every test that passes on the reference passes here, except those listed with their
reason in ``EXCLUDED``. The suite's sources come from Django's source distribution,
fetched by ``./scripts/test`` for the installed Django; without them the test skips,
except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.run_django_suite import APPS, EXCLUDED, suite_dir

ROOT = Path(__file__).resolve().parent.parent


def _run(target: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "run_django_suite.py"), "--target", target, *APPS],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_django_test_that_passes_on_sqlite_passes_on_actor_db() -> None:
    if suite_dir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Django's test suite was not fetched (scripts/_setup.sh fetch_django_tests)")
        pytest.skip("Django's test suite is not fetched: run ./scripts/test once")
    reference, ours = _run("sqlite3"), _run("actor_db")
    assert reference["ran"] == ours["ran"] > 2000, (reference["summary"], ours["summary"])
    passed = {t for t, status in reference["results"].items() if status == "ok"}
    ours_passed = {t for t, status in ours["results"].items() if status == "ok"}
    missing = sorted(passed - ours_passed - set(EXCLUDED))
    assert missing == [], (ours["summary"], {t: ours["results"].get(t) for t in missing[:30]})
