"""``actor-db restore`` and ``branch`` (and the bookmark ``inspect`` prints) on an LMDB store (issue 24)."""

from __future__ import annotations

import json
import pathlib
import time
from datetime import datetime, timezone

import vfs

from actor_db.kv import LmdbKV
from tests.cli_support import assert_one_line_error, run_cli


def _rows(path: pathlib.Path, actor: str) -> list[tuple[int, ...]]:
    with LmdbKV(path) as store:
        con = vfs.connect(store.actor(actor), readonly=True)
        try:
            return [tuple(r) for r in con.execute("SELECT x FROM t ORDER BY x")]
        finally:
            con.close()


def test_restore_branch_and_bookmark_commands(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "store"
    with LmdbKV(path) as store:
        con = vfs.connect(store.actor("a1"), history=True)
        con.execute("CREATE TABLE t (x)")
        con.execute("INSERT INTO t VALUES (1)")
        middle = time.time()
        time.sleep(0.01)
        con.execute("INSERT INTO t VALUES (2)")
        con.close()
    kv = f"lmdb:{path}"
    inspected = run_cli("--kv", kv, "inspect", "a1", "--json", cwd=tmp_path)
    assert inspected.returncode == 0, inspected
    now = json.loads(inspected.stdout)["history"]["bookmark"]
    assert f"history:        bookmark {now}" in run_cli("--kv", kv, "inspect", "a1", cwd=tmp_path).stdout
    at = datetime.fromtimestamp(middle, timezone.utc).isoformat()

    restored = run_cli("--kv", kv, "restore", "a1", "--at", at, cwd=tmp_path)
    assert restored.returncode == 0, restored
    assert _rows(path, "a1") == [(1,)]
    before = restored.stdout.splitlines()[0].split()[1]
    assert before == now
    undo = run_cli("--kv", kv, "restore", "a1", "--bookmark", before, cwd=tmp_path)
    assert undo.returncode == 0, undo
    assert _rows(path, "a1") == [(1,), (2,)]

    branched = run_cli("--kv", kv, "branch", "a1", "b1", "--at", str(middle), cwd=tmp_path)
    assert branched.returncode == 0, branched
    assert _rows(path, "b1") == [(1,)]
    assert_one_line_error(run_cli("--kv", kv, "branch", "a1", "b1", cwd=tmp_path), "already has a database")
    assert_one_line_error(run_cli("--kv", kv, "restore", "a1", "--at", "2020-01-01T00:00:00", cwd=tmp_path),
                          "no time zone")
    assert_one_line_error(run_cli("--kv", kv, "restore", "a1", "--at", "1000", cwd=tmp_path),
                          "before the oldest retained state")
    assert_one_line_error(run_cli("--kv", kv, "restore", "a1", "--bookmark", "nope", cwd=tmp_path),
                          "not a bookmark")
    assert_one_line_error(run_cli("--kv", kv, "restore", "a1", cwd=tmp_path), "needs ACTOR and --bookmark")
