"""The ``actor-db`` console script, run for real in a subprocess (issue 8)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sqlite3

import pytest

from tests.cli_support import assert_one_line_error, dump, make_sqlite_file, run_cli


def _registered_commands() -> list[str]:
    """Every command the parser has (a new command group is checked without editing this)."""
    from actor_db.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


COMMANDS = _registered_commands()
assert {"shell", "import", "export", "ls", "rm", "inspect", "integrity", "compact", "bench"} <= set(COMMANDS)


@pytest.fixture
def sqlite_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "source.db"
    make_sqlite_file(path)
    return path


def test_every_command_has_help_text(tmp_path: pathlib.Path) -> None:
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        result = run_cli(command, "--help", cwd=tmp_path)
        assert result.returncode == 0, result
        assert f"usage: actor-db {command}" in result.stdout
        assert "--kv" in result.stdout
        # a description beyond the usage line
        assert len(result.stdout.strip().splitlines()) > 4


def test_python_dash_m_runs_the_same_command(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "actor_db", "ls", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: actor-db ls" in proc.stdout


def test_shell_round_trip_with_c_and_stdin(tmp_path: pathlib.Path) -> None:
    made = run_cli("shell", "notes", "--create", "-c", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
                   "-c", "INSERT INTO notes (body) VALUES ('hello'), ('wörld')", cwd=tmp_path)
    assert made.returncode == 0, made
    assert (tmp_path / ".actor-db").is_dir()  # the default store: lmdb:./.actor-db
    # A new process reads what the first one committed, with SQL on stdin.
    read = run_cli("shell", "notes", stdin="SELECT id, body FROM notes ORDER BY id;\n"
                                            "SELECT count(*) FROM notes;\n", cwd=tmp_path)
    assert read.returncode == 0, read
    assert read.stdout.splitlines() == ["1|hello", "2|wörld", "2"]
    # dot commands work too (it is apsw's shell)
    tables = run_cli("shell", "notes", "-c", ".tables", cwd=tmp_path)
    assert tables.returncode == 0 and "notes" in tables.stdout


def test_shell_errors_exit_non_zero(tmp_path: pathlib.Path) -> None:
    assert run_cli("shell", "a", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path).returncode == 0
    bad = run_cli("shell", "a", "-c", "SELECT nope FROM t", "-c", "INSERT INTO t VALUES (1)", cwd=tmp_path)
    assert bad.returncode == 1
    assert "no such column: nope" in bad.stderr and "Traceback" not in bad.stderr
    # -c stops at the first error: the INSERT did not run
    assert run_cli("shell", "a", "-c", "SELECT count(*) FROM t", cwd=tmp_path).stdout == "0\n"
    # on stdin the shell goes on after an error (like sqlite3) but still exits 1
    piped = run_cli("shell", "a", stdin="SELECT nope;\nINSERT INTO t VALUES (2);\n", cwd=tmp_path)
    assert piped.returncode == 1
    assert run_cli("shell", "a", "-c", "SELECT x FROM t", cwd=tmp_path).stdout == "2\n"
    # the commit protocol's pragmas are guarded
    guarded = run_cli("shell", "a", "-c", "PRAGMA synchronous=OFF", cwd=tmp_path)
    assert guarded.returncode == 1
    # journal_mode cannot change: no error, the mode kept is the result (SQLite's rule)
    kept = run_cli("shell", "a", "-c", "PRAGMA journal_mode=WAL", cwd=tmp_path)
    assert kept.returncode == 0 and kept.stdout == "memory\n", kept


def test_shell_unknown_actor_is_one_line(tmp_path: pathlib.Path) -> None:
    run_cli("shell", "exists", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path)
    assert_one_line_error(run_cli("shell", "missing", "-c", "SELECT 1", cwd=tmp_path), "'missing'", "no database")


def test_import_export_iterdump_equality(tmp_path: pathlib.Path, sqlite_file: pathlib.Path) -> None:
    imported = run_cli("import", str(sqlite_file), "users-db", cwd=tmp_path)
    assert imported.returncode == 0, imported
    assert "imported" in imported.stderr
    out = tmp_path / "out.db"
    exported = run_cli("export", "users-db", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported
    con = sqlite3.connect(out)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    con.close()
    original = dump(sqlite_file)
    assert len(original) > 3000
    assert dump(out) == original
    # no temporary file left beside the export
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["out.db", "source.db"]


def test_import_under_an_actor_type_and_ls(tmp_path: pathlib.Path, sqlite_file: pathlib.Path) -> None:
    assert run_cli("import", str(sqlite_file), "alice", "--actor-type", "user", cwd=tmp_path).returncode == 0
    assert run_cli("shell", "plain", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path).returncode == 0
    listed = run_cli("ls", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["actor"] for r in rows] == ["plain", "user/alice"]  # key order
    user = rows[1]
    assert user["db_bytes"] == sqlite_file.stat().st_size
    assert user["chunks"] == sqlite_file.stat().st_size // 4096
    only = run_cli("ls", "--actor-type", "user", cwd=tmp_path)
    header, *listed_rows = only.stdout.splitlines()
    assert header.split() == ["ACTOR", "DB_BYTES", "CHUNKS"]
    assert [line.split()[0] for line in listed_rows] == ["user/alice"]
    # the same actor, named by its id or by type and key
    by_id = run_cli("shell", "user/alice", "-c", "SELECT count(*) FROM users", cwd=tmp_path)
    by_key = run_cli("shell", "alice", "--actor-type", "user", "-c", "SELECT count(*) FROM users", cwd=tmp_path)
    assert by_id.stdout == by_key.stdout == "3000\n"


def test_import_refuses_to_overwrite_without_force(tmp_path: pathlib.Path, sqlite_file: pathlib.Path) -> None:
    assert run_cli("import", str(sqlite_file), "a", cwd=tmp_path).returncode == 0
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE other (x)")
    con.execute("INSERT INTO other VALUES ('replaced')")
    con.commit()
    con.close()
    assert_one_line_error(run_cli("import", str(other), "a", cwd=tmp_path), "already has a database", "--force")
    assert run_cli("shell", "a", "-c", "SELECT count(*) FROM users", cwd=tmp_path).stdout == "3000\n"
    forced = run_cli("import", str(other), "a", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced
    out = tmp_path / "a.db"
    assert run_cli("export", "a", str(out), cwd=tmp_path).returncode == 0
    assert dump(out) == dump(other)  # the smaller file replaced the larger one entirely


def test_export_refuses_to_overwrite_without_force(tmp_path: pathlib.Path, sqlite_file: pathlib.Path) -> None:
    assert run_cli("import", str(sqlite_file), "a", cwd=tmp_path).returncode == 0
    target = tmp_path / "exists.db"
    target.write_bytes(b"keep me")
    assert_one_line_error(run_cli("export", "a", str(target), cwd=tmp_path), "already exists", "--force")
    assert target.read_bytes() == b"keep me"
    assert run_cli("export", "a", str(target), "--force", cwd=tmp_path).returncode == 0
    assert dump(target) == dump(sqlite_file)


@pytest.mark.parametrize("content, message", [
    (b"hello, this is text\n" * 10, "not a SQLite database"),
    (b"", "empty file"),
    (b"SQLite format 3\x00" + b"\xff" * 84, "not a usable SQLite database"),
])
def test_import_rejects_files_that_are_not_sqlite(tmp_path: pathlib.Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    assert_one_line_error(run_cli("import", str(bad), "a", cwd=tmp_path), message)
    # nothing was written: the store was not even created
    assert not (tmp_path / ".actor-db").exists()


def test_bad_input_is_one_line(tmp_path: pathlib.Path) -> None:
    assert_one_line_error(run_cli("import", str(tmp_path / "missing.db"), "a", cwd=tmp_path), "no such file")
    assert_one_line_error(run_cli("--kv", "postgres://x", "ls", cwd=tmp_path), "unknown --kv")
    assert_one_line_error(run_cli("ls", "--kv", "lmdb:", cwd=tmp_path), "needs a directory")
    # read-only commands never create a store
    assert_one_line_error(run_cli("ls", cwd=tmp_path), "no LMDB store")
    assert not (tmp_path / ".actor-db").exists()
    assert_one_line_error(run_cli("export", "ghost", str(tmp_path / "g.db"), cwd=tmp_path), "no LMDB store")
    run_cli("shell", "real", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path)
    assert_one_line_error(run_cli("inspect", "ghost", cwd=tmp_path), "'ghost'", "no database")
    assert_one_line_error(run_cli("export", "ghost", str(tmp_path / "g.db"), cwd=tmp_path), "no database")
    assert not (tmp_path / "g.db").exists()
    assert_one_line_error(run_cli("inspect", "k", "--actor-type", "bad/type", cwd=tmp_path), "actor type name")
    # an unreachable Redis: one line naming the problem (port 9 = discard, nothing listens)
    assert_one_line_error(run_cli("--kv", "redis://127.0.0.1:9/0", "ls", cwd=tmp_path), "127.0.0.1:9")
    # bad syntax: argparse's status 2, still one line
    syntax = run_cli("import", cwd=tmp_path)
    assert syntax.returncode == 2 and len(syntax.stderr.strip().splitlines()) == 1


def test_memory_store_and_env_default(tmp_path: pathlib.Path) -> None:
    scratch = run_cli("--kv", "memory:", "shell", "s", "--create", "-c", "CREATE TABLE t (x)",
                      "-c", "INSERT INTO t VALUES (41 + 1)", "-c", "SELECT x FROM t", cwd=tmp_path)
    assert scratch.returncode == 0 and scratch.stdout == "42\n"
    assert run_cli("--kv", "memory:", "ls", cwd=tmp_path).stdout.splitlines()[1:] == []  # a new store each run
    env = {"ACTOR_DB_KV": f"lmdb:{tmp_path / 'elsewhere'}"}
    assert run_cli("shell", "e", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path, env=env).returncode == 0
    assert (tmp_path / "elsewhere").is_dir() and not (tmp_path / ".actor-db").exists()
    assert run_cli("ls", cwd=tmp_path, env=env).stdout.splitlines()[1].split()[0] == "e"


def test_inspect_reports_chunks_and_preload_coverage(tmp_path: pathlib.Path) -> None:
    big = tmp_path / "big.db"
    make_sqlite_file(big, rows=12000)  # > 768 KiB: the default preload covers only a prefix
    size = big.stat().st_size
    assert size > 768 * 1024
    assert run_cli("import", str(big), "big", cwd=tmp_path).returncode == 0
    info = json.loads(run_cli("inspect", "big", "--json", cwd=tmp_path).stdout)
    assert info["meta"] == {"format_version": 1, "db_bytes": size}
    assert info["chunks"] == info["chunks_expected"] == size // 4096
    assert info["orphan_chunks"] == info["missing_chunks"] == 0
    assert info["redo"] == {"commit_record": False, "staged_chunks": 0}
    assert info["page_size"] == 4096 and info["pages"] == size // 4096
    assert info["tables"] == ["audit", "sqlite_sequence", "users"]
    # 768 KiB / 4096 = 192 chunks, plus the B-tree interior pages the import's hint lists
    # (they have their own allowance, on top of the budget: docs/preload.md)
    interior = info["preload"]["chunks"] - 192
    assert 1 <= interior <= 8
    assert info["preload"]["whole_database"] is False
    # the schema lives in the low pages: opening and reading it costs only the preload
    assert info["startup"]["kv_round_trips"] == 1 and info["startup"]["live_reads"] == 0
    small = json.loads(run_cli("inspect", "big", "--json", "--preload-sqlite-bytes", "8192", cwd=tmp_path).stdout)
    assert small["preload"]["chunks"] == 2 + interior
    none = json.loads(run_cli("inspect", "big", "--json", "--preload-sqlite-bytes", "0", cwd=tmp_path).stdout)
    assert none["preload"]["chunks"] == 0 and none["startup"]["live_reads"] >= 1
    text = run_cli("inspect", "big", cwd=tmp_path)
    assert text.returncode == 0 and f"{192 + interior} of" in text.stdout and "KV round trips" in text.stdout


def test_bench_runs_the_benchmarks(tmp_path: pathlib.Path) -> None:
    bench_dir = tmp_path / "mybench"
    bench_dir.mkdir()
    (bench_dir / "bench_tiny.py").write_text(
        "def test_tiny(benchmark):\n    assert benchmark(sum, [1, 2, 3]) == 6\n")
    result = run_cli("bench", "--dir", str(bench_dir), "--", "--benchmark-disable-gc",
                     "--benchmark-max-time=0.01", "--benchmark-min-rounds=1", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "1 passed" in result.stdout
    assert_one_line_error(run_cli("bench", "--dir", str(tmp_path / "nope"), cwd=tmp_path), "no benchmarks directory")


def test_bench_runs_the_projects_report(tmp_path: pathlib.Path) -> None:
    """With the checkout's benchmarks/report.py, bench runs ``python -m benchmarks.report``."""
    result = run_cli("bench", "--", "--help", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "usage: python -m benchmarks.report" in result.stdout
    assert "--quick" in result.stdout
