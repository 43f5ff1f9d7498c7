"""Run a subset of Django's own test suite against ``actor_db.django`` or Django's SQLite backend.

``python tests/run_django_suite.py --target actor_db|sqlite3 [APP ...]`` runs Django's
``runtests.py`` (from the source distribution ``scripts/_setup.sh`` fetches into
``.cache/django-VERSION/tests`` for the installed Django) with ``--parallel 2 -v 2`` and
either Django's own ``test_sqlite`` settings (the reference) or
``tests/django_suite_settings.py`` (this backend), and prints one JSON line:
``{"ran", "summary", "results": {test id: "ok" | "skipped" | "expected failure" |
"FAIL" | "ERROR" | "unexpected success"}}``.

Tests that cannot pass by design against this backend are listed in :data:`EXCLUDED`
with the reason (``tests/test_django_suite.py`` allows exactly those to differ).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # (run as a script: tests/ is sys.path[0], not the root)
    sys.path.insert(0, str(ROOT))

from tests.sdist_fetch import fetch_from_sdist, parse_runner_args  # noqa: E402

APPS = ("backends", "migrations", "transactions", "model_fields", "queries", "expressions", "aggregation")
"""The apps issue 27 names."""

EXCLUDED: dict[str, str] = {
    "backends.sqlite.test_creation.TestDbSignatureTests.test_get_test_db_clone_settings_not_supported": (
        "Django skips it itself for a test database that is not in memory ('multiprocessing's start "
        "method is checked only for in-memory SQLite databases'): an actor test database is not"),
}
"""Test id (``module.Class.method``) → why it cannot pass against ``actor_db.django``."""

_TEST_LINE = re.compile(r"^(\w+) \(([\w.]+)\)(.*)$")
_STATUS = re.compile(r" \.\.\. (ok|skipped\b.*|expected failure|FAIL|ERROR|unexpected success)$")


def suite_dir() -> pathlib.Path | None:
    """Django's ``tests/`` directory for the installed Django, if fetched."""
    import django

    path = ROOT / ".cache" / f"django-{django.__version__}" / "tests"
    return path if (path / "runtests.py").is_file() else None


def fetch() -> pathlib.Path:
    """Download the installed Django's source distribution from the package index and
    keep its ``tests/`` in ``.cache/django-VERSION/`` (nothing to do when it is there)."""
    import django

    found = suite_dir()
    if found is not None:
        return found
    target = ROOT / ".cache" / f"django-{django.__version__}" / "tests"
    return fetch_from_sdist("django", django.__version__, "tests", target)


def parse(output: str) -> dict[str, str]:
    """Test id → status, from ``runtests.py -v 2`` output (a test's status ends its own
    line, or the next one when the test has a docstring)."""
    results: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        m = _TEST_LINE.match(line)
        if m:
            current = m.group(2)
            line = m.group(3)
        status = _STATUS.search(line)
        if status and current is not None:
            results[current] = status.group(1).split(" ", 1)[0] if status.group(1).startswith("skipped") else status.group(1)
            current = None
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("actor_db", "sqlite3"))
    parser.add_argument("--fetch", action="store_true", help="only fetch Django's test suite (scripts/test)")
    parser.add_argument("apps", nargs="*", default=list(APPS))
    parser.add_argument("--raw", help="also write runtests.py's whole output here")
    args = parse_runner_args(parser, argv, fetch)
    if args is None:
        return 0
    tests = suite_dir()
    if tests is None:
        raise SystemExit("Django's test suite is not fetched: run ./scripts/test (fetch_django_tests)")
    settings = "tests.django_suite_settings" if args.target == "actor_db" else "test_sqlite"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "runtests.py", f"--settings={settings}", "--parallel", "2", "-v", "2",
                           "--noinput", *args.apps], cwd=tests, env=env, capture_output=True, text=True,
                          timeout=900)
    output = done.stdout + done.stderr
    if args.raw:
        pathlib.Path(args.raw).write_text(output)
    summary = [line for line in output.splitlines() if re.match(r"^(OK|FAILED)\b", line)]
    ran = re.search(r"^Ran (\d+) tests?", output, re.M)
    print(json.dumps({"ran": int(ran.group(1)) if ran else 0, "summary": summary[-1] if summary else output[-2000:],
                      "returncode": done.returncode, "results": parse(output)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
