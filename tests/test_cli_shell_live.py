"""A shell that only reads never disturbs a live app (issue 28, item 2).

A real app process writes an actor through the runtime every few milliseconds; 20
read-only shell runs (``-c`` and piped SQL, each on its own snapshot) read it
meanwhile: the app sees 0 ``FencedError``, and every shell read one consistent state.
A shell that writes takes ownership only at its first write; ``--readonly`` refuses.
"""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
from typing import Any, Iterator

import pytest

from actor_db.cli import CLIError, run_shell
from actor_db.kv import KVStore
from tests.cli_support import assert_one_line_error, run_cli
from tests.drivers import DRIVERS, DriverFactory

ACTOR = "ledger/k"


@pytest.fixture(params=["lmdb", "redis"], ids=str)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KVStore, str]]:
    """A store this process reads through and the ``--kv`` spec of the same data."""
    factory: DriverFactory = DRIVERS[request.param](tmp_path_factory.mktemp(request.param))
    store = factory.open()
    if request.param == "lmdb":
        spec = f"lmdb:{factory.tmp / 'store'}"
    else:
        spec = f"{factory.url()}?namespace={factory.namespace}"  # type: ignore[attr-defined]
    try:
        yield store, spec
    finally:
        store.close()
        factory.cleanup()


def _shell(kv: Any, *commands: str, stdin: str = "", **kwargs: Any) -> str:
    out = io.StringIO()
    status = run_shell(kv, list(commands), create=False, stdin=io.StringIO(stdin), stdout=out,
                       stderr=io.StringIO(), **kwargs)
    assert status == 0
    return out.getvalue()


def test_read_only_shells_never_fence_a_live_app(shared: tuple[KVStore, str], tmp_path: pathlib.Path) -> None:
    store, spec = shared
    stop = tmp_path / "stop"
    app = subprocess.Popen([sys.executable, "-m", "tests.live_app_worker", spec, str(stop)],
                           cwd=pathlib.Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "ready", app.stderr.read() if app.poll() is not None else ""
        kv = store.actor(ACTOR)
        fence_before = kv.get_many([b"\x08\x01\x00\x00"])  # the meta exists: the actor is live
        assert fence_before[0] is not None
        counts = []
        for run in range(18):  # in this process: the same shell code as the console script
            if run % 2:
                out = _shell(kv, "SELECT count(*), count(*) = max(id) FROM log")
            else:
                out = _shell(kv, stdin="SELECT count(*), count(*) = max(id) FROM log;\n")
            n, consistent = out.split()[-2:] if "|" not in out else out.strip().split("|")
            counts.append(int(n))
            assert consistent == "1", out  # rows 1..n, no gap: one committed state
        for _ in range(2):  # and through the real console script
            result = run_cli("--kv", spec, "shell", ACTOR, "--readonly", "-c", "SELECT count(*) FROM log",
                             cwd=tmp_path)
            assert result.returncode == 0, result
            counts.append(int(result.stdout.strip()))
        assert counts[-1] > counts[0]  # the app kept writing meanwhile
        stop.touch()
        out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["fenced"] == 0, report
    assert report["other"] == [], report
    assert report["ok"] > 0


def test_first_write_takes_ownership_and_readonly_refuses(store: KVStore, tmp_path: pathlib.Path) -> None:
    from actor_db.ops import import_database
    from tests.cli_support import make_sqlite_file

    source = tmp_path / "src.db"
    make_sqlite_file(source, rows=20)
    import_database(source, store.actor("a"))
    kv = store.actor("a")
    owner = store.actor("a")
    owner.acquire_ownership()
    token = owner.fence_token
    assert _shell(kv, "SELECT count(*) FROM users").strip() == "20"
    assert kv.fence_token is None  # reading took no ownership
    with pytest.raises(CLIError, match="read-only"):
        _shell(kv, "SELECT 1", "INSERT INTO audit (what) VALUES ('x')", readonly=True)
    with pytest.raises(CLIError, match="BEGIN IMMEDIATE"):
        _shell(kv, "BEGIN", "SELECT count(*) FROM users", "INSERT INTO audit (what) VALUES ('x')")
    assert kv.fence_token is None
    # One line that reads, then writes: run once, on the writer, which took ownership.
    out = _shell(kv, "SELECT count(*) FROM audit; INSERT INTO audit (what) VALUES ('y'); SELECT count(*) FROM audit")
    assert out.split() == ["20", "21"]
    assert kv.fence_token is not None and kv.fence_token > (token or 0)
    assert _shell(store.actor("a"), "BEGIN IMMEDIATE", "INSERT INTO audit (what) VALUES ('z')", "COMMIT",
                  "SELECT count(*) FROM audit").split() == ["22"]


def test_readonly_flag_through_the_console_script(tmp_path: pathlib.Path) -> None:
    spec = f"lmdb:{tmp_path / 'store'}"
    assert run_cli("--kv", spec, "shell", "a", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path).returncode == 0
    refused = run_cli("--kv", spec, "shell", "a", "--readonly", "-c", "INSERT INTO t VALUES (1)", cwd=tmp_path)
    assert_one_line_error(refused, "read-only", "nothing was written")
    assert run_cli("--kv", spec, "shell", "a", "-c", "SELECT count(*) FROM t", cwd=tmp_path).stdout.strip() == "0"
