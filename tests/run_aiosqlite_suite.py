"""Run aiosqlite's own smoke tests against :mod:`actor_db.aio` on KV-backed databases.

``--target aiosqlite`` runs them against aiosqlite itself on plain files (the
reference); ``--target actor_db`` first puts :mod:`actor_db.aio` in ``sys.modules`` as
``aiosqlite`` and :mod:`actor_db.dbapi` as ``sqlite3``, with the router of
``tests/run_cpython_sqlite3_suite.py`` sending every database the tests open to an
actor of one :class:`~actor_db.kv.MemoryKV` (``:memory:``: a fresh actor per connection).
The tests are those of the installed aiosqlite wheel (``aiosqlite/tests/smoke.py``),
loaded as a package of their own so that their ``import aiosqlite`` sees the target.

Prints one JSON line: ``{"total", "passed", "failed", "errors", "skipped", "failures",
"passed_tests"}``. Tests that cannot pass by design are listed in :data:`EXCLUDED` with
the reason (``tests/test_aiosqlite_suite.py`` allows exactly those to differ).

Usage: ``python tests/run_aiosqlite_suite.py --target actor_db|aiosqlite``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import sys
import tempfile
import types
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


AIOSQLITE_VERSION = "0.22.1"
"""The aiosqlite release whose tests are run (pinned in setup.py's test extra)."""

EXCLUDED: dict[str, str] = {
    "SmokeTest.test_close_blocking_until_transaction_queue_empty": (
        "reads aiosqlite's private per-connection queue `_tx` (a thread per connection); "
        "actor_db.aio has no such attribute: its calls queue per connection and run on one "
        "shared pool. That the close waits for the queued calls is tested in tests/test_aio.py"),
}
"""Test id (``Class.method``) → why it cannot pass against :mod:`actor_db.aio`."""


def _tests_dir() -> str:
    spec = importlib.util.find_spec("aiosqlite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("aiosqlite is not installed (pip install aiosqlite==0.22.1)")
    return os.path.join(list(spec.submodule_search_locations)[0], "tests")


def _load_suite(tests_dir: str) -> unittest.TestSuite:
    """``smoke.py`` as module ``aiosqlite_suite.smoke`` (``aiosqlite_suite``: a package
    whose path is aiosqlite's tests directory, for its relative ``.helpers`` import)."""
    package = types.ModuleType("aiosqlite_suite")
    package.__path__ = [tests_dir]
    sys.modules["aiosqlite_suite"] = package
    spec = importlib.util.spec_from_file_location("aiosqlite_suite.smoke", os.path.join(tests_dir, "smoke.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["aiosqlite_suite.smoke"] = module
    spec.loader.exec_module(module)
    return unittest.TestLoader().loadTestsFromModule(module)


def _name(test: unittest.TestCase) -> str:
    """``Class.method`` of a test (its id without the module)."""
    return ".".join(test.id().split(".")[-2:])


def _names(suite: unittest.TestSuite) -> list[str]:
    out: list[str] = []
    for test in suite:
        out.extend(_names(test) if isinstance(test, unittest.TestSuite) else [_name(test)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("actor_db", "aiosqlite"), required=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    tests_dir = _tests_dir()
    workdir = tempfile.mkdtemp(prefix="aiosqlite-suite-")
    os.chdir(workdir)
    if args.target == "actor_db":
        import actor_db.aio
        import actor_db.dbapi as dbapi
        from actor_db.kv import MemoryKV
        from tests.run_cpython_sqlite3_suite import Router

        dbapi.set_router(Router(MemoryKV()))
        sys.modules["aiosqlite"] = actor_db.aio
        sys.modules["sqlite3"] = dbapi
    suite = _load_suite(tests_dir)
    names = _names(suite)  # before the run: a suite drops its tests as they finish
    runner = unittest.TextTestRunner(verbosity=2 if args.verbose else 1, stream=sys.stderr)
    try:
        result = runner.run(suite)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(workdir, ignore_errors=True)
    failed = len(result.failures) + len(result.unexpectedSuccesses)
    total = result.testsRun
    out = {"total": total, "failed": failed, "errors": len(result.errors), "skipped": len(result.skipped),
           "passed": total - failed - len(result.errors) - len(result.skipped) - len(result.expectedFailures),
           "failures": sorted(_name(t) for t, _ in result.failures + result.errors)}
    bad = {_name(t) for t, _ in result.failures + result.errors + result.skipped}
    bad |= {_name(t) for t in result.unexpectedSuccesses} | {_name(t) for t, _ in result.expectedFailures}
    out["passed_tests"] = sorted(n for n in names if n not in bad)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
