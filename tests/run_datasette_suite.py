"""Run Datasette's own tests that open databases read-only, on the stdlib or on the drop-in.

``python tests/run_datasette_suite.py --target sqlite3|actor_db`` runs a subset of the
tests of Datasette 0.65.2 (pinned in setup.py's test extra) with pytest in a child
process (``-n 2``, each test bounded by pytest-timeout, the whole run by a timeout), with
the stdlib's ``sqlite3`` (the reference) or with ``tests/datasette_shim.py`` putting
:mod:`actor_db.dbapi` in its place (every file database a KV database), and prints one
JSON line: ``{"ran", "passed", "summary", "returncode", "timed_out", "results": {test
id: "passed" | "failed" | "error" | "skipped" | "xfailed" | "xpassed"}}``. A test that
never reported (its run hung and was killed) has no entry: a comparison against the
reference counts it as not passed.

Where the tests come from: Datasette's source distribution on the package index
(``--fetch``, run by ``scripts/test``; kept in ``.cache/datasette-VERSION/tests``). Every
Datasette sdist ships its ``tests/test_*.py`` modules but not their support files
(``fixtures.py`` with the ``fixtures`` database, ``conftest.py``, ``plugins/``), and no
other package index carries them, so only the modules that need none of them run from
it: :data:`SDIST_MODULES`, given a one-name ``fixtures`` module of our own
(:data:`_FIXTURES_SUPPORT`: ``TestClient``, which Datasette itself exports). With
``--suite-dir DIR`` (a checkout of Datasette's repository at tag 0.65.2: ``tests/``
complete, ``docs/``, ``pytest.ini``) the runner runs :data:`FULL_MODULES` (or the
modules named on the command line) from there instead.

Tests that cannot pass by design on the drop-in are listed in :data:`EXCLUDED` with the
reason (``tests/test_datasette_suite.py`` allows exactly those to differ).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = "0.65.2"
"""The Datasette release whose tests run (``datasette==0.65.2`` in setup.py's test extra)."""

SDIST_MODULES = ("test_config_dir.py", "test_utils.py")
"""The modules of the sdist that open databases read-only and run without the support
files it lacks: ``test_config_dir`` (a configuration directory with a mutable database,
read through Datasette's per-thread ``mode=ro`` connections, and an ``immutable=1`` one
named by ``inspect-data.json``) and ``test_utils`` (``test_initial_path_for_datasette``
opens file databases read-only; the rest of the module checks helpers on ``:memory:``)."""

FULL_MODULES = ("test_api.py", "test_canned_queries.py", "test_cli.py", "test_config_dir.py", "test_crossdb.py",
                "test_html.py", "test_internals_database.py", "test_internals_datasette.py", "test_utils.py")
"""With ``--suite-dir``: the modules whose tests open file databases read-only (Datasette's
``mode=ro`` per-thread read connections, ``immutable=1`` databases, ``ATTACH`` of them)."""

EXCLUDED: dict[str, str] = {
    "tests/test_html.py::test_database_download_for_immutable": (
        "(--suite-dir only) Datasette serves /fixtures.db by streaming the database file from disk; "
        "a KV-backed database has no file on disk, only the empty marker the shim creates for "
        "Datasette's existence checks, so the download is 0 bytes (the test wants > 100)"),
}
"""Test id (``tests/module.py::name``) → why it cannot pass on the drop-in."""

TEST_TIMEOUT = 60
"""Seconds one test may take (pytest-timeout, thread method: a hung test fails, its worker
is replaced)."""

RUN_TIMEOUT = 600
"""Seconds one whole child run may take; past that it is killed and every test that had
not reported counts as not passed (the comparison reports them)."""

_FIXTURES_SUPPORT = '''"""The one name of Datasette's ``tests/fixtures.py`` that the sdist's read-only modules
import (the file itself is not in Datasette's source distribution): ``TestClient``,
which Datasette exports from ``datasette.utils.testing``. Written by actor-db's
tests/run_datasette_suite.py."""

from datasette.utils.testing import TestClient  # noqa: F401
'''

_PYTEST_INI = """[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
markers =
    serial: tests to avoid using with pytest-xdist
"""


# --- the outcome recorder (loaded into the child pytest as ``-p run_datasette_suite``) ---

_config: Any = None


def pytest_configure(config: Any) -> None:
    """Remember the config (the controller writes outcomes, xdist workers do not)."""
    global _config
    _config = config


def pytest_runtest_logreport(report: Any) -> None:
    """Append ``{"id", "when", "outcome"}`` for each test phase to
    ``$DATASETTE_SUITE_OUTCOMES`` as it happens (a run killed later keeps what it had)."""
    path = os.environ.get("DATASETTE_SUITE_OUTCOMES")
    if not path or _config is None or hasattr(_config, "workerinput"):
        return
    outcome = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"id": report.nodeid, "when": report.when, "outcome": outcome}) + "\n")


def outcomes(lines: list[dict[str, str]]) -> dict[str, str]:
    """Test id → one status from its phases: ``error`` when setup or teardown failed,
    ``failed`` for xdist's report of a test whose worker died (phase ``???``: the test
    hung and pytest-timeout ended the worker), else the call's outcome (``skipped`` when
    skipped at setup)."""
    results: dict[str, str] = {}
    for line in lines:
        test, when, outcome = line["id"], line["when"], line["outcome"]
        if when in ("setup", "teardown") and outcome == "failed":
            results[test] = "error"
        elif when not in ("setup", "call", "teardown") and outcome == "failed":
            results[test] = "failed"  # xdist's report for a test whose worker died (a hang killed)
        elif when == "call" and results.get(test) != "error":
            results[test] = outcome
        elif when == "setup" and outcome in ("skipped", "xfailed"):
            results[test] = outcome
    return results


# --- fetching and laying out the suite ---

def cache_dir() -> pathlib.Path:
    return ROOT / ".cache" / f"datasette-{VERSION}" / "tests"


def suite_dir() -> pathlib.Path | None:
    """The fetched sdist's ``tests/``, if it is there."""
    path = cache_dir()
    return path if all((path / m).is_file() for m in SDIST_MODULES) else None


def fetch() -> pathlib.Path:
    """Download Datasette 0.65.2's source distribution from the package index and keep
    its ``tests/`` in ``.cache/datasette-VERSION/`` (nothing to do when it is there)."""
    found = suite_dir()
    if found is not None:
        return found
    # (imported here, not at the top: this module is also the child pytest's plugin, where
    # ``tests`` must stay Datasette's package, not ours)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.sdist_fetch import fetch_from_sdist

    return fetch_from_sdist("datasette", VERSION, "tests", cache_dir())


def _lay_out(workdir: pathlib.Path, full: pathlib.Path | None, modules: list[str]) -> None:
    """``workdir/tests`` as a package with ``modules`` and what they import; a full
    checkout brings its own support files, ``docs/`` and ``pytest.ini``."""
    if full is not None:
        shutil.copytree(full / "tests", workdir / "tests")
        if (full / "docs").is_dir():
            shutil.copytree(full / "docs", workdir / "docs")
        shutil.copy(full / "pytest.ini", workdir / "pytest.ini")
        return
    source = suite_dir()
    if source is None:
        raise SystemExit("Datasette's tests are not fetched: run ./scripts/test (fetch_datasette_tests)")
    (workdir / "tests").mkdir()
    for module in modules:
        shutil.copy(source / module, workdir / "tests" / module)
    (workdir / "tests" / "__init__.py").write_text("")
    (workdir / "tests" / "fixtures.py").write_text(_FIXTURES_SUPPORT)
    (workdir / "pytest.ini").write_text(_PYTEST_INI)


def run(target: str, modules: list[str], full: pathlib.Path | None = None, workers: int = 2,
        driver: str = "memory", test_timeout: float = TEST_TIMEOUT, run_timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """Run ``modules`` against ``target`` in a child pytest; the summary (module docstring).
    Each test is bounded by ``test_timeout`` seconds, the whole run by ``run_timeout``."""
    with tempfile.TemporaryDirectory(prefix="datasette-suite-") as tmp:
        workdir = pathlib.Path(tmp) / "suite"
        workdir.mkdir()
        _lay_out(workdir, full, modules)
        record = pathlib.Path(tmp) / "outcomes.jsonl"
        plugins = ["-p", "run_datasette_suite"] + (["-p", "datasette_shim"] if target == "actor_db" else [])
        pythonpath = [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
        path = [os.path.dirname(sys.executable), os.environ.get("PATH", "")]  # the `datasette` command
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, pythonpath)),
                   PATH=os.pathsep.join(filter(None, path)),
                   DATASETTE_SUITE_OUTCOMES=str(record), DATASETTE_SHIM_DRIVER=driver, PYTHONDONTWRITEBYTECODE="1")
        env.pop("CI", None)  # Datasette's tests read no CI flag; ours must not leak into them
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark",
                   "--timeout", str(test_timeout), "--timeout-method", "thread", *plugins,
                   *(["-n", str(workers)] if workers > 1 else []), *[f"tests/{m}" for m in modules]]
        child = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
        timed_out = False
        try:
            output, _ = child.communicate(timeout=run_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
        lines = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    results = outcomes(lines)
    tail = [line for line in output.splitlines() if line.strip()]
    return {"target": target, "ran": len(results), "passed": sum(1 for s in results.values() if s == "passed"),
            "summary": tail[-1] if tail else "", "returncode": child.returncode, "timed_out": timed_out,
            "output_tail": output[-3000:], "output": output, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("actor_db", "sqlite3"))
    parser.add_argument("--fetch", action="store_true", help="only fetch Datasette's tests (scripts/test)")
    parser.add_argument("--suite-dir", type=pathlib.Path,
                        help=f"a checkout of Datasette {VERSION} (tests/ with fixtures.py, docs/, pytest.ini)")
    parser.add_argument("--driver", choices=("memory", "lmdb"), default="memory")
    parser.add_argument("-n", dest="workers", type=int, default=2)
    parser.add_argument("--raw", type=pathlib.Path, help="also write the child pytest's whole output here")
    parser.add_argument("modules", nargs="*", help="test modules (default: SDIST_MODULES, or FULL_MODULES)")
    if str(ROOT) not in sys.path:  # (tests/ here is ours only in this process, not in the child)
        sys.path.insert(0, str(ROOT))
    from tests.sdist_fetch import parse_runner_args

    args = parse_runner_args(parser, argv, fetch)
    if args is None:
        return 0
    modules = args.modules or list(FULL_MODULES if args.suite_dir else SDIST_MODULES)
    out = run(args.target, modules, args.suite_dir, args.workers, args.driver)
    if args.raw:
        args.raw.write_text(out["output"])
    del out["output"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
