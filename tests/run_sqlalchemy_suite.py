"""Run SQLAlchemy's dialect compliance suite against ``sqlite+actordb`` or a stdlib SQLite driver.

``python tests/run_sqlalchemy_suite.py --target TARGET [-- PYTEST ARGS]`` runs
``sqlalchemy.testing.suite`` (the suite third-party dialects run, shipped in the
SQLAlchemy wheel) the way a third-party dialect runs it: pytest on
``tests/sqlalchemy_suite/`` (a ``conftest.py`` loading SQLAlchemy's pytest plugin, a
``setup.cfg`` naming the requirements class, a module doing ``from
sqlalchemy.testing.suite import *``) with ``--dburi``, ``-n 2 --dist loadscope``, in a
fresh temporary directory (SQLAlchemy's SQLite provisioning names its per-worker
database files, and the attached ``test_schema`` database, relative to the working
directory). The targets are in :data:`TARGETS`: ``pysqlite`` and ``aiosqlite`` (the
stdlib on a local file: the references), ``actordb`` and ``actordb_async`` (our
dialects on an LMDB store in that directory, and on a redis-server the run starts).

``--dist loadscope`` keeps each test class on one worker in its own order: SQLAlchemy's
``testing.combinations`` attaches a parameter's exclusions to the test function itself,
so once ``ReturningTest.test_imv_returning_datatypes``'s UUID case has run, the later
cases of that test skip too; with plain ``-n 2`` how many ran depended on scheduling
(2 to 5 of its 28 passed, run to run).

Both sides use the same requirements class (``tests/sqlalchemy_suite/requirements.py``:
SQLAlchemy's own ``test/requirements.py``, which decides what SQLite runs, fetched from
its source distribution into ``.cache/sqlalchemy-VERSION/`` by ``--fetch``).

Prints one JSON line: ``{"target", "url", "ran", "passed", "summary", "returncode",
"files", "actors", "results"}``: ``results`` maps a test id (``Class.test[params]``, from
pytest's JUnit XML) to ``"passed" | "skipped" | "xfailed" | "failed" | "error"``;
``files`` are the ``*.db`` files left in the directory, ``actors`` the actors of the
LMDB store (ours: the databases the run used).

Tests that cannot pass by design on ours are listed in :data:`EXCLUDED` with the reason
(``tests/test_sqlalchemy_suite.py`` allows exactly those to differ).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.sdist_fetch import fetch_from_sdist, parse_runner_args  # noqa: E402

SUITE = ROOT / "tests" / "sqlalchemy_suite"
"""The third-party-dialect test directory: conftest.py, setup.cfg, requirements.py, test_suite.py."""

@dataclass(frozen=True)
class Target:
    """One run of the suite: the database URL and the test module (in :data:`SUITE`)."""

    url: str
    """``--dburi``; ``{kv}``: the store (percent-encoded ``--kv`` spec), made for the run."""
    module: str
    reference: str | None = None
    """The stdlib target this one is compared with (``None``: it is a reference)."""
    kv: str | None = None
    """Our targets' store: ``lmdb`` (in the run's temporary directory) or ``redis`` (a
    redis-server the run starts on 127.0.0.1 and stops)."""


TARGETS = {
    "pysqlite": Target("sqlite+pysqlite:///suite.db", "test_suite.py"),
    "actordb": Target("sqlite+actordb:///suite.db?kv={kv}", "test_suite.py", "pysqlite", "lmdb"),
    "aiosqlite": Target("sqlite+aiosqlite:///suite.db", "test_suite_async.py"),
    "actordb_async": Target("sqlite+actordb_async:///suite.db?kv={kv}&vfs=python", "test_suite_async.py",
                            "aiosqlite", "redis"),
}
"""The sync pair runs the whole suite, ours on LMDB with the default VFS (native when
built); the async pair runs ``test_suite_async.py``'s subset, ours on Redis with the
pure-Python VFS (so both VFSes and both kinds of store run)."""

_SERVER_SIDE_CHECK = (
    "the suite decides whether a cursor is server-side by the driver's name "
    "(ServerSideCursorsTest._is_server_side: `aiosqlite` → cursor.server_side, any other name → False, "
    "'a huge issue as it prevents these tests from being usable by third party dialects', says its TODO); "
    "ours is aiosqlite's own AsyncAdapt_aiosqlite_ss_cursor with server_side True, as "
    "tests/test_sqlalchemy.py checks")

EXCLUDED: dict[str, dict[str, str]] = {
    "actordb": {},
    "actordb_async": {
        "ServerSideCursorsTest.test_conn_option": _SERVER_SIDE_CHECK,
        **{f"ServerSideCursorsTest.test_ss_cursor_status[{case}]": _SERVER_SIDE_CHECK
           for case in ("for_update_expr", "global_expr", "global_string", "global_text", "stmt_option",
                        "text_ss_option")},
    },
}
"""Our target → test id (``Class.test[params]``) → why it cannot pass there."""


def requirements_file() -> pathlib.Path | None:
    """SQLAlchemy's ``test/requirements.py`` for the installed SQLAlchemy, if fetched."""
    import sqlalchemy

    path = ROOT / ".cache" / f"sqlalchemy-{sqlalchemy.__version__}" / "requirements.py"
    return path if path.is_file() else None


def fetch() -> pathlib.Path:
    """Download the installed SQLAlchemy's source distribution from the package index and
    keep its ``test/requirements.py`` in ``.cache/sqlalchemy-VERSION/`` (nothing to do
    when it is there)."""
    import sqlalchemy

    found = requirements_file()
    if found is not None:
        return found
    target = ROOT / ".cache" / f"sqlalchemy-{sqlalchemy.__version__}" / "requirements.py"
    return fetch_from_sdist("sqlalchemy", sqlalchemy.__version__, "test/requirements.py", target)


_BACKEND_SUFFIX = re.compile(r"_sqlite\+\w+$")
"""SQLAlchemy names a backend test class ``Class_sqlite+DRIVER_X_Y_Z`` (driver, SQLite version)."""


def parse_junit(path: pathlib.Path) -> dict[str, str]:
    """Test id (``Class.test[params]``, the class without its backend suffix) → outcome,
    from pytest's JUnit XML."""
    results: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        cls = _BACKEND_SUFFIX.sub("", case.get("classname", "").rsplit(".", 1)[-1])
        test_id = f"{cls}.{case.get('name')}"
        children = {child.tag: child for child in case}
        if "error" in children:
            status = "error"
        elif "failure" in children:
            status = "failed"
        elif "skipped" in children:
            status = "xfailed" if children["skipped"].get("type") == "pytest.xfail" else "skipped"
        else:
            status = "passed"
        if results.get(test_id) not in ("error", "failed"):  # a teardown error is reported as a second case
            results[test_id] = status
    return results


def _actor_ids(spec: str | None) -> list[str]:
    """The actors of the store ``spec`` names (our targets' databases), ``[]`` for none."""
    if spec is None:
        return []
    from actor_db.defaults import open_store

    store = open_store(spec)
    try:
        return sorted(store.actor_ids())
    finally:
        store.close()


@contextlib.contextmanager
def _store(kind: str | None, tmp: pathlib.Path) -> Iterator[str | None]:
    """The ``--kv`` spec of a fresh store of ``kind`` for one run (``None``: no store)."""
    if kind is None:
        yield None
    elif kind == "lmdb":
        yield f"lmdb:{tmp / 'kv'}"
    elif kind == "memory":
        yield "memory:"
    elif kind == "redis":
        from tests.redis_server import RedisServer

        server = RedisServer(tmp / "redis", durable=False).start()
        try:
            yield f"{server.url}?namespace=sqlalchemy-suite"
        finally:
            server.stop()
    else:
        raise ValueError(f"unknown store kind {kind!r}")


def run(target: str, vfs: str | None = None, workers: int = 2, extra: list[str] | None = None,
        kv: str | None = None, module: str | None = None) -> dict[str, object]:
    """Run the suite against ``target`` in a fresh temporary directory; the JSON result.

    :param kv: our targets' store kind instead of the target's (``lmdb``, ``redis``, ``memory``).
    :param module: the test module in :data:`SUITE` instead of the target's.
    """
    kind = (kv or TARGETS[target].kv) if TARGETS[target].reference else None
    with tempfile.TemporaryDirectory(prefix=f"sqlalchemy-suite-{target}-") as tmp, \
            _store(kind, pathlib.Path(tmp)) as spec:
        url = TARGETS[target].url.format(kv=urllib.parse.quote(spec or "", safe=""))
        if vfs is not None:
            url = re.sub(r"&vfs=\w+", "", url) + f"&vfs={vfs}"
        junit = pathlib.Path(tmp) / "junit.xml"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(SUITE),
                   "-c", str(SUITE / "setup.cfg"), str(SUITE / (module or TARGETS[target].module)), "--dburi", url,
                   "-q", "-p", "no:randomly", f"--junitxml={junit}", "-o", "junit_family=xunit1",
                   "-W", "ignore::pytest.PytestUnknownMarkWarning"]
        if workers > 1:
            command += ["-n", str(workers), "--dist", "loadscope"]
        done = subprocess.run([*command, *(extra or [])], cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=900)
        output = done.stdout + done.stderr
        results = parse_junit(junit) if junit.is_file() else {}
        files = sorted(p.name for p in pathlib.Path(tmp).iterdir() if ".db" in p.name)
        actors = _actor_ids(spec) if kind != "memory" else []
    summary = [line for line in done.stdout.splitlines()
               if re.search(r"\b(passed|failed|errors?)\b.* in [\d.]+s", line)]
    return {"target": target, "url": url, "ran": len(results),
            "passed": sum(1 for s in results.values() if s == "passed"), "files": files, "actors": actors,
            "summary": summary[-1] if summary else output[-3000:], "returncode": done.returncode,
            "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS))
    parser.add_argument("--vfs", choices=("python", "native"), help="our targets: the VFS (default: native if built)")
    parser.add_argument("--fetch", action="store_true", help="only fetch SQLAlchemy's requirements (scripts/test)")
    parser.add_argument("--kv", choices=("lmdb", "redis", "memory"), help="our targets: the store kind")
    parser.add_argument("--module", choices=("test_suite.py", "test_suite_async.py"),
                        help="the test module instead of the target's (e.g. the whole suite for an async target)")
    parser.add_argument("-n", "--workers", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more pytest arguments (e.g. -k EXPR)")
    args = parse_runner_args(parser, argv, fetch)
    if args is None:
        return 0
    if requirements_file() is None:
        raise SystemExit("SQLAlchemy's test/requirements.py is not fetched: run ./scripts/test "
                         "(fetch_sqlalchemy_tests)")
    print(json.dumps(run(args.target, args.vfs, args.workers, args.extra, args.kv, args.module)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
