"""Datasette 0.65.2's own tests that open databases read-only pass on the drop-in as on the stdlib.

Both runs are child processes of ``tests/run_datasette_suite.py`` (pytest ``-n 2``, each
test bounded by pytest-timeout and the whole run by a timeout, so a hang is a failure):
the stdlib ``sqlite3`` (the reference) and :mod:`actor_db.dbapi` in its place through
``tests/datasette_shim.py`` (every file database Datasette opens, read-only or not, a KV
database). Every test that passes on the reference passes here, except those listed with
their reason in ``EXCLUDED``. The modules come from Datasette's source distribution,
fetched by ``./scripts/test``; without them the test skips, except in CI (``CI=true``),
where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.run_datasette_suite import EXCLUDED, RUN_TIMEOUT, SDIST_MODULES, outcomes, run, suite_dir

ROOT = Path(__file__).resolve().parent.parent


def _run(target: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "run_datasette_suite.py"), "--target", target],
                          cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT + 120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_datasette_test_that_passes_on_the_stdlib_passes_on_actor_db() -> None:
    if suite_dir() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Datasette's tests were not fetched (scripts/_setup.sh fetch_datasette_tests)")
        pytest.skip("Datasette's tests are not fetched: run ./scripts/test once")
    reference, ours = _run("sqlite3"), _run("actor_db")
    assert not reference["timed_out"] and not ours["timed_out"], (reference["summary"], ours["summary"])
    assert reference["passed"] > 150, reference["output_tail"]  # the modules ran, not just collected
    passed = {t for t, status in reference["results"].items() if status == "passed"}
    ours_passed = {t for t, status in ours["results"].items() if status == "passed"}
    missing = sorted(passed - ours_passed - set(EXCLUDED))
    assert missing == [], (ours["summary"], {t: ours["results"].get(t) for t in missing[:30]}, ours["output_tail"])
    assert {t.split("::")[0] for t in reference["results"]} == {f"tests/{m}" for m in SDIST_MODULES}


def test_outcomes_count_a_failed_setup_or_teardown_as_an_error() -> None:
    """The runner's per-test status (a test whose teardown failed did not pass)."""
    lines = [{"id": "a", "when": "setup", "outcome": "passed"}, {"id": "a", "when": "call", "outcome": "passed"},
             {"id": "a", "when": "teardown", "outcome": "failed"},
             {"id": "b", "when": "setup", "outcome": "failed"},
             {"id": "c", "when": "setup", "outcome": "skipped"},
             {"id": "d", "when": "setup", "outcome": "passed"}, {"id": "d", "when": "call", "outcome": "failed"},
             {"id": "e", "when": "setup", "outcome": "passed"}, {"id": "e", "when": "call", "outcome": "passed"},
             {"id": "e", "when": "teardown", "outcome": "passed"},
             {"id": "f", "when": "???", "outcome": "failed"}]
    assert outcomes(lines) == {"a": "error", "b": "error", "c": "skipped", "d": "failed", "e": "passed", "f": "failed"}


_HANGS = """import threading


def test_before():
    pass


def test_hangs():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # never returns


def test_after():
    pass
"""


@pytest.mark.parametrize("workers", [2, 1])
def test_a_hanging_test_is_a_failure_and_the_run_ends(tmp_path: Path, workers: int) -> None:
    """A test that never returns is ended by pytest-timeout (its xdist worker replaced, the
    others' tests still run) or, without xdist, by the run's own timeout: either way it has
    no ``passed`` status, so the comparison with the reference reports it."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "tests" / "test_hangs.py").write_text(_HANGS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = run("sqlite3", ["test_hangs.py"], tmp_path, workers=workers, test_timeout=2 if workers > 1 else 60,
              run_timeout=60 if workers > 1 else 5)
    assert out["results"].get("tests/test_hangs.py::test_hangs") != "passed"
    assert out["results"]["tests/test_hangs.py::test_before"] == "passed"
    if workers > 1:
        assert out["results"]["tests/test_hangs.py::test_hangs"] == "failed"
        assert out["results"]["tests/test_hangs.py::test_after"] == "passed"
        assert not out["timed_out"]
    else:
        assert out["timed_out"]
