"""SQLAlchemy's dialect compliance suite passes on ``sqlite+actordb`` as on the stdlib.

``sqlalchemy.testing.suite`` is what third-party dialects run (as ``sqlalchemy-libsql``
does); ``tests/run_sqlalchemy_suite.py`` runs it as a child pytest (``-n 2``) per target,
with SQLAlchemy's own requirements class for SQLite on both sides:

- sync: ``sqlite+pysqlite`` on a local file (the reference) and ``sqlite+actordb`` on an
  LMDB store (native VFS when built), the whole suite;
- async: ``sqlite+aiosqlite`` on a local file (the reference) and
  ``sqlite+actordb_async`` on a real redis-server (pure-Python VFS), the subset of
  ``tests/sqlalchemy_suite/test_suite_async.py``.

Every test that passes on the reference passes on ours, except those listed with their
reason in ``EXCLUDED``; our databases, the attached ``test_schema`` included, are actors
of the store (no database file is left on disk). SQLAlchemy's ``test/requirements.py``
comes from its source distribution, fetched by ``./scripts/test``; without it the test
skips, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import require_redis
from tests.run_sqlalchemy_suite import EXCLUDED, TARGETS, requirements_file

ROOT = Path(__file__).resolve().parent.parent


def _run(target: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "run_sqlalchemy_suite.py"), "--target", target],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("ours", "minimum"), [("actordb", 1500), ("actordb_async", 300)], ids=str)
def test_every_sqlalchemy_suite_test_that_passes_on_the_stdlib_passes_on_actor_db(ours: str, minimum: int) -> None:
    if requirements_file() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SQLAlchemy's test/requirements.py was not fetched (scripts/_setup.sh fetch_sqlalchemy_tests)")
        pytest.skip("SQLAlchemy's test/requirements.py is not fetched: run ./scripts/test once")
    if TARGETS[ours].kv == "redis":
        require_redis()  # skips locally without redis-server, fails in CI
    reference_target = TARGETS[ours].reference
    assert reference_target is not None
    reference, result = _run(reference_target), _run(ours)
    assert reference["returncode"] == 0, reference["summary"]
    assert reference["ran"] == result["ran"] and reference["passed"] > minimum, \
        (reference["summary"], result["summary"])
    passed = {t for t, status in reference["results"].items() if status == "passed"}
    ours_passed = {t for t, status in result["results"].items() if status == "passed"}
    missing = sorted(passed - ours_passed - set(EXCLUDED[ours]))
    assert missing == [], (result["summary"], {t: result["results"].get(t) for t in missing[:30]})
    broken = sorted(t for t, status in result["results"].items() if status in ("failed", "error")
                    and t not in EXCLUDED[ours])
    assert broken == [], (result["summary"], broken[:30])  # nor does a test the reference skips fail here
    stale = sorted(t for t in EXCLUDED[ours] if result["results"].get(t) == "passed")
    assert stale == [], stale  # an excluded test that passes now leaves the list
    assert result["files"] == [], result["files"]  # no database escaped to a plain file
    assert any("test_schema" in actor for actor in result["actors"]), result["actors"]
