"""The papercuts of issue 28, item 6 (and the Redis Cluster URL of item 5), one test each."""

from __future__ import annotations

import pathlib
import sqlite3
import subprocess
import sys

import pytest

from actor_db.errors import ConfigurationError, OperationError
from tests.cli_support import assert_one_line_error, console_script, make_sqlite_file, run_cli


def _store(tmp_path: pathlib.Path) -> str:
    return f"lmdb:{tmp_path / 'store'}"


def test_actor_db_path_is_said_to_be_deprecated_once(tmp_path: pathlib.Path) -> None:
    (tmp_path / "legacy").mkdir()
    result = run_cli("ls", cwd=tmp_path, env={"ACTOR_DB_PATH": str(tmp_path / "legacy")})
    assert result.returncode == 0, result
    assert result.stderr.count("deprecated") == 1 and "ACTOR_DB_KV=lmdb:" in result.stderr, result.stderr


def test_a_bad_actor_db_kv_names_the_variable(tmp_path: pathlib.Path) -> None:
    result = run_cli("ls", cwd=tmp_path, env={"ACTOR_DB_KV": "bogus"})
    assert_one_line_error(result, "unknown $ACTOR_DB_KV 'bogus'")
    assert_one_line_error(run_cli("--kv", "bogus", "ls", cwd=tmp_path), "unknown --kv 'bogus'")


def test_the_redis_install_hint_works_from_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    from actor_db.defaults import open_store

    monkeypatch.setitem(sys.modules, "actor_db.kv.redis", None)  # as if redis-py were missing
    with pytest.raises(ConfigurationError, match=r"pip install -e '\.\[redis\]'"):
        open_store("redis://127.0.0.1:9/0")


def test_a_damaged_file_says_which_check_failed(tmp_path: pathlib.Path) -> None:
    damaged = tmp_path / "damaged.db"
    make_sqlite_file(damaged, rows=400)
    data = bytearray(damaged.read_bytes())
    data[4096 * 9:4096 * 9 + 5] = b"\x0d\x00\x00\x00\x05"  # page 10: a leaf whose cells now disagree
    damaged.write_bytes(bytes(data))
    result = run_cli("--kv", _store(tmp_path), "import", str(damaged), "a", cwd=tmp_path)
    assert_one_line_error(result, "PRAGMA integrity_check failed: Tree", "page 10", "more)")
    assert "*** in database" not in result.stderr


def test_csv_import_takes_a_delimiter(tmp_path: pathlib.Path) -> None:
    (tmp_path / "prices.csv").write_text("item;price\nbolt;0,25\nnut;1\n")
    result = run_cli("--kv", _store(tmp_path), "import", "prices.csv", "shop", "--delimiter", ";", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "item TEXT, price TEXT" in result.stderr  # "0,25" stays one field
    rows = run_cli("--kv", _store(tmp_path), "shell", "shop", "-c", ".mode list", "-c",
                   "SELECT item, price FROM prices ORDER BY item", cwd=tmp_path)
    assert rows.stdout.splitlines() == ["bolt|0,25", "nut|1"], rows
    assert_one_line_error(run_cli("--kv", _store(tmp_path), "import", "prices.csv", "shop2", "--delimiter", ";;",
                                  cwd=tmp_path), "--delimiter")


def test_tabular_progress_counts_bytes_over_both_passes(tmp_path: pathlib.Path) -> None:
    from actor_db.kv import MemoryKV
    from actor_db.ops import import_tabular
    from actor_db.tabular import BATCH_ROWS

    path = tmp_path / "big.csv"
    path.write_text("n,word\n" + "".join(f"{i},w{i}\n" for i in range(3 * BATCH_ROWS)))
    size = path.stat().st_size
    seen: list[tuple[int, int]] = []
    import_tabular(path, MemoryKV().actor("a"), fmt=None, table=None, header=True, append=False, force=False,
                   progress=lambda done, total: seen.append((done, total)))
    assert {total for _, total in seen} == {2 * size}  # bytes, two passes
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 2 * size
    assert any(0 < d < size for d in done)  # the type-detection pass moves the bar too


def test_ls_into_head_has_no_broken_pipe_traceback(tmp_path: pathlib.Path) -> None:
    from vfs.protocol import WriteBatch

    from actor_db.kv import LmdbKV

    with LmdbKV(tmp_path / "store") as store:
        writes = []
        for i in range(3000):
            batch = WriteBatch()
            batch.put(b"\x01", b"{}")  # a state record: an actor without a database
            writes.append((store.actor(f"actor-{i:05d}"), batch))
        assert store.write_many(writes) == [None] * len(writes)
    proc = subprocess.Popen([console_script(), "--kv", _store(tmp_path), "ls"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"ACTOR")
    proc.stdout.close()  # as `head -1` does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 141), err
    assert b"Traceback" not in err and b"Exception ignored" not in err, err


def test_ls_is_sorted(tmp_path: pathlib.Path) -> None:
    from actor_db.kv import LmdbKV
    from actor_db.ops import import_database

    source = tmp_path / "s.db"
    make_sqlite_file(source, rows=3)
    with LmdbKV(tmp_path / "store") as store:
        for name in ("b", "c/1", "a", "c"):
            import_database(source, store.actor(name))
    listed = run_cli("--kv", _store(tmp_path), "ls", cwd=tmp_path).stdout.splitlines()[1:]
    assert [line.split()[0] for line in listed] == ["a", "b", "c", "c/1"]


def test_a_missing_actor_hints_at_create(tmp_path: pathlib.Path) -> None:
    run_cli("--kv", _store(tmp_path), "shell", "x", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path)
    result = run_cli("--kv", _store(tmp_path), "shell", "nope", "-c", "SELECT 1", cwd=tmp_path)
    assert_one_line_error(result, "no database", "--create")


def test_a_mistyped_command_gets_a_suggestion(tmp_path: pathlib.Path) -> None:
    result = run_cli("sehll", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'shell'?" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bare_actor_db_prints_the_help(tmp_path: pathlib.Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout.startswith("usage: actor-db") and "COMMAND" in result.stdout and result.stderr == ""


def test_redis_cluster_url(tmp_path: pathlib.Path) -> None:
    from actor_db.defaults import open_store
    from actor_db.ops import check_integrity, import_database
    from tests.redis_server import fresh_namespace, session_cluster

    port = session_cluster().url.rsplit(":", 1)[1]
    namespace = fresh_namespace("cluster-url")
    store = open_store(f"redis+cluster://127.0.0.1:{port}?namespace={namespace}")
    try:
        assert store._cluster and store.namespace == namespace  # type: ignore[attr-defined]
        source = tmp_path / "s.db"
        make_sqlite_file(source, rows=30)
        import_database(source, store.actor("a"))
        assert check_integrity(store.actor("a")) == ["ok"]
        assert sqlite3.connect(source).execute("SELECT count(*) FROM users").fetchone() == (30,)
        store.drop_namespace()  # type: ignore[attr-defined]
    finally:
        store.close()
    with pytest.raises(ConfigurationError):
        open_store("redis+cluster://")


def test_operation_errors_are_one_documented_type() -> None:
    from actor_db.cli import CLIError

    assert CLIError is OperationError
