"""What a new user trips over in ``actor-db`` (issue 15), through the real console script.

One test (or more) per point of the issue: one-screen help, ``--version``, the ``ls``
header, one-line ``shell -c`` errors and the interactive shell's exit status, the
integrity check before a SQLite import, CSV/TSV/JSON-lines import, Ctrl-C during an
import, ``rm``, ``compact``, ``integrity``, ``bench``'s output directory and ETA, the
default-store rule, LMDB's directory creation, and the Redis warning without ``-v``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.cli_support import assert_one_line_error, console_script, dump, make_sqlite_file, run_cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
def _registered_commands() -> list[str]:
    """Every command the parser has (a new command group is checked without editing this)."""
    from actor_db.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


COMMANDS = _registered_commands()
assert {"shell", "import", "export", "ls", "rm", "inspect", "integrity", "compact", "bench"} <= set(COMMANDS)


def _listed(stdout: str) -> list[str]:
    """Actor ids of ``actor-db ls`` output (after its header row)."""
    header, *rows = stdout.splitlines()
    assert header.split() == ["ACTOR", "DB_BYTES", "CHUNKS"], header
    return [row.split()[0] for row in rows]


def _make_db(path: pathlib.Path, rows: int, blob: int = 3000) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    con.executemany("INSERT INTO t (b) VALUES (randomblob(?))", [(blob,)] * rows)
    con.commit()
    con.close()


# ---------------------------------------------------------------------------- help, version, ls
def test_every_help_fits_one_screen(tmp_path: pathlib.Path) -> None:
    env = {"COLUMNS": "80"}
    top = run_cli("--help", cwd=tmp_path, env=env)
    assert top.returncode == 0 and len(top.stdout.splitlines()) <= 24, top.stdout
    for command in COMMANDS:
        assert command in top.stdout
        result = run_cli(command, "--help", cwd=tmp_path, env=env)
        assert result.returncode == 0, result
        assert len(result.stdout.splitlines()) <= 24, (command, result.stdout)


def test_version(tmp_path: pathlib.Path) -> None:
    import actor_db

    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"actor-db {actor_db.__version__} ")
    assert "SQLite" in result.stdout


def test_ls_has_a_header_row(tmp_path: pathlib.Path) -> None:
    assert run_cli("shell", "a-long-actor-name", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path).returncode == 0
    listed = run_cli("ls", cwd=tmp_path)
    assert listed.returncode == 0
    assert _listed(listed.stdout) == ["a-long-actor-name"]
    header, row = listed.stdout.splitlines()
    assert row.split()[1:] == ["8192", "2"]
    assert len(header) == len(row)  # aligned columns
    assert json.loads(run_cli("ls", "--json", cwd=tmp_path).stdout)["actor"] == "a-long-actor-name"  # no header


# ---------------------------------------------------------------------------- shell
@pytest.mark.parametrize("command, fragment", [
    (".nosuchdot", 'Unknown command "nosuchdot"'),
    (".import people.csv people", "No such table 'people'"),
    ("SELECT nope FROM t", "no such column: nope"),
])
def test_shell_c_errors_are_one_line(tmp_path: pathlib.Path, command: str, fragment: str) -> None:
    (tmp_path / "people.csv").write_text("name,age\nann,3\n")
    assert run_cli("shell", "a", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path).returncode == 0
    result = run_cli("shell", "a", "-c", command, cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert result.stderr.count(fragment) == 1  # not printed twice


def _interactive_shell(cwd: pathlib.Path, lines: list[str]) -> tuple[int, str]:
    """Run ``actor-db shell a`` on a pseudo-terminal, type ``lines``, then end input (^D)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("ACTOR_DB_KV", "ACTOR_DB_PATH")}
    env.update(TERM="dumb", HOME=str(cwd))  # HOME: apsw's shell keeps its history there
    proc = subprocess.Popen([console_script(), "shell", "a"], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env, close_fds=True, start_new_session=True)
    os.close(slave)
    output = b""

    def read_for(seconds: float) -> None:
        nonlocal output
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                output += chunk

    try:
        read_for(3.0 if not lines else 1.5)
        for line in lines:
            os.write(master, line.encode() + b"\n")
            read_for(0.7)
        os.write(master, b"\x04")  # end of input at the start of a line
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            read_for(0.2)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(), output.decode(errors="replace")
    finally:
        os.close(master)


def test_interactive_shell_status_is_not_poisoned_by_earlier_errors(tmp_path: pathlib.Path) -> None:
    assert run_cli("shell", "a", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path).returncode == 0
    code, output = _interactive_shell(tmp_path, ["SELECT nope;", "INSERT INTO t VALUES (42);"])
    assert "no such column: nope" in output, output
    assert code == 0, output  # the error was shown when it happened; ^D ends the session normally
    assert run_cli("shell", "a", "-c", "SELECT x FROM t", cwd=tmp_path).stdout == "42\n"
    # piped (not a terminal): still 1 when a statement failed, like sqlite3
    assert run_cli("shell", "a", stdin="SELECT nope;\n", cwd=tmp_path).returncode == 1


# ---------------------------------------------------------------------------- import: SQLite files
def _damage_middle_page(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    middle = pages // 2
    data[middle * 4096: middle * 4096 + 4096] = bytes([0x5A]) * 4096
    path.write_bytes(bytes(data))


def test_import_runs_integrity_check_on_the_source_first(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "damaged.db"
    make_sqlite_file(source, rows=3000)
    _damage_middle_page(source)
    refused = run_cli("import", str(source), "a", cwd=tmp_path)
    assert_one_line_error(refused, "integrity_check", "nothing was imported", "--no-check")
    assert not (tmp_path / ".actor-db").exists()  # nothing written, not even the store
    # --no-check: the user takes the damaged file as it is; `integrity` finds the damage
    assert run_cli("import", str(source), "a", "--no-check", cwd=tmp_path).returncode == 0
    found = run_cli("integrity", "a", cwd=tmp_path)
    assert found.returncode == 1
    assert found.stdout.startswith("a: FAILED")
    assert_one_line_error(found, "1 of 1 database failed")


# ---------------------------------------------------------------------------- import: CSV / TSV / JSON lines
def _query(cwd: pathlib.Path, actor: str, sql: str) -> list[str]:
    result = run_cli("shell", actor, "-c", sql, cwd=cwd)
    assert result.returncode == 0, result
    return result.stdout.splitlines()


def test_import_csv_with_header_and_types(tmp_path: pathlib.Path) -> None:
    (tmp_path / "people.csv").write_text('name,age,score,note\nann,3,1.5,"a, b"\nbob,,2,\nçé,41,x,z\n',
                                         encoding="utf-8")
    result = run_cli("import", "people.csv", "crm", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "3 rows" in result.stderr and "age INTEGER" in result.stderr
    assert _query(tmp_path, "crm", "SELECT name, age, typeof(age), score, note FROM people ORDER BY rowid") == [
        "ann|3|integer|1.5|a, b", "bob||null|2|", "çé|41|integer|x|z"]
    # the header row is the columns, not data; the declared types are the detected ones
    assert _query(tmp_path, "crm", "SELECT name || ' ' || type FROM pragma_table_info('people')") == [
        "name TEXT", "age INTEGER", "score TEXT", "note TEXT"]
    # the table exists: refused without --append / --force
    assert_one_line_error(run_cli("import", "people.csv", "crm", cwd=tmp_path), "already exists", "--append")
    assert run_cli("import", "people.csv", "crm", "--append", cwd=tmp_path).returncode == 0
    assert _query(tmp_path, "crm", "SELECT count(*) FROM people") == ["6"]
    assert run_cli("import", "people.csv", "crm", "--force", cwd=tmp_path).returncode == 0
    assert _query(tmp_path, "crm", "SELECT count(*) FROM people") == ["3"]


def test_import_tsv_jsonl_and_no_header(tmp_path: pathlib.Path) -> None:
    (tmp_path / "m.tsv").write_text("k\tv\nx\t1.25\ny\t2\n")
    (tmp_path / "events.jsonl").write_text('{"id": 1, "kind": "open", "tags": ["a"]}\n\n'
                                           '{"id": 2, "kind": "close", "extra": true}\n')
    (tmp_path / "raw.txt").write_text("1,2\n3,4\n")
    assert run_cli("import", "m.tsv", "d", cwd=tmp_path).returncode == 0
    assert _query(tmp_path, "d", "SELECT k, v, typeof(v) FROM m") == ["x|1.25|real", "y|2.0|real"]
    assert run_cli("import", "events.jsonl", "d", "--table", "ev", cwd=tmp_path).returncode == 0
    assert _query(tmp_path, "d", "SELECT id, kind, tags, extra FROM ev ORDER BY id") == [
        '1|open|["a"]|', "2|close||1"]
    assert run_cli("import", "raw.txt", "d", "--format", "csv", "--no-header", cwd=tmp_path).returncode == 0
    assert _query(tmp_path, "d", "SELECT untitled_1 + untitled_2 FROM raw") == ["3", "7"]


def test_bad_csv_is_one_line_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4,5\n")
    assert_one_line_error(run_cli("import", "bad.csv", "x", cwd=tmp_path), "more fields")
    assert _listed(run_cli("ls", cwd=tmp_path).stdout) == []  # no half-created actor
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    assert_one_line_error(run_cli("import", "bad.jsonl", "x", cwd=tmp_path), "not JSON lines")
    assert_one_line_error(run_cli("import", "people.csv", "x", cwd=tmp_path), "no such file")
    # a CSV under a .db name: the error says how to import it
    (tmp_path / "oops.db").write_text("a,b\n1,2\n")
    assert_one_line_error(run_cli("import", "oops.db", "x", cwd=tmp_path), "not a SQLite database", "--format")
    assert_one_line_error(run_cli("import", "oops.db", "x", "--table", "t", cwd=tmp_path), "--table applies")


# ---------------------------------------------------------------------------- import: Ctrl-C
def _interrupt_import(cwd: pathlib.Path, *args: str) -> tuple[int, str]:
    """Start ``actor-db import ARGS --progress``, SIGINT it once the bar shows copied
    pages (the copy is under way), and return its status and stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("ACTOR_DB_KV", "ACTOR_DB_PATH")}
    proc = subprocess.Popen([console_script(), "import", *args, "--progress"], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = proc.stderr.read1(4096)  # type: ignore[attr-defined]
        if not chunk:
            break
        seen += chunk
        counts = re.findall(rb"(\d+)/(\d+) \[", seen)
        if counts and 0 < int(counts[-1][0]) < int(counts[-1][1]):
            proc.send_signal(signal.SIGINT)
            break
    seen += proc.stderr.read()
    return proc.wait(timeout=60), seen.decode(errors="replace")


def test_ctrl_c_during_import_rolls_back_and_says_so(tmp_path: pathlib.Path) -> None:
    big = tmp_path / "big.db"
    _make_db(big, rows=20000)  # ~80 MB: the copy takes long enough to be interrupted
    code, stderr = _interrupt_import(tmp_path, str(big), "fresh")
    if code == 0:
        pytest.fail(f"the import finished before the interrupt arrived: {stderr[-500:]}")
    last = stderr.strip().splitlines()[-1].split("\r")[-1]
    assert code == 130, stderr[-1000:]
    assert "Traceback" not in stderr
    assert last == "actor-db import: interrupted: nothing was imported (actor 'fresh' is unchanged)", last
    # no half-created actor: `ls` does not show it, and nothing is left in the store
    assert _listed(run_cli("ls", cwd=tmp_path).stdout) == []
    # an actor with a database keeps it when a forced import is interrupted
    small = tmp_path / "small.db"
    make_sqlite_file(small, rows=200)
    assert run_cli("import", str(small), "kept", cwd=tmp_path).returncode == 0
    code, stderr = _interrupt_import(tmp_path, str(big), "kept", "--force")
    assert code == 130 and "nothing was imported" in stderr, stderr[-1000:]
    out = tmp_path / "kept.db"
    assert run_cli("export", "kept", str(out), cwd=tmp_path).returncode == 0
    assert dump(out) == dump(small)
    assert _listed(run_cli("ls", cwd=tmp_path).stdout) == ["kept"]


# ---------------------------------------------------------------------------- rm
def test_rm_asks_then_deletes_every_key(tmp_path: pathlib.Path) -> None:
    for actor in ("a", "b", "c"):
        assert run_cli("shell", actor, "--actor-type", "room", "--create", "-c", "CREATE TABLE t (x)",
                       cwd=tmp_path).returncode == 0
    declined = run_cli("rm", "a", "--actor-type", "room", stdin="n\n", cwd=tmp_path)
    assert declined.returncode == 1 and "delete actor 'room/a'" in declined.stderr
    assert "not deleted" in declined.stderr.splitlines()[-1]
    assert run_cli("rm", "room/a", stdin="", cwd=tmp_path).returncode == 1  # no answer: no
    assert _listed(run_cli("ls", cwd=tmp_path).stdout) == ["room/a", "room/b", "room/c"]
    assert run_cli("rm", "room/a", stdin="y\n", cwd=tmp_path).returncode == 0
    assert run_cli("rm", "b", "--actor-type", "room", "-y", cwd=tmp_path).returncode == 0
    assert _listed(run_cli("ls", cwd=tmp_path).stdout) == ["room/c"]
    assert_one_line_error(run_cli("rm", "room/a", "-y", cwd=tmp_path), "'room/a' not found")
    # the id is free again: a new database starts empty
    assert run_cli("shell", "room/a", "--create", "-c", "SELECT count(*) FROM sqlite_schema",
                   cwd=tmp_path).stdout == "0\n"


# ---------------------------------------------------------------------------- compact
def test_compact_shrinks_the_lmdb_file_and_keeps_the_data(tmp_path: pathlib.Path) -> None:
    big, small = tmp_path / "big.db", tmp_path / "small.db"
    _make_db(big, rows=3000)  # ~12 MB
    make_sqlite_file(small, rows=300)
    assert run_cli("import", str(big), "scratch", cwd=tmp_path).returncode == 0
    assert run_cli("import", str(small), "keep", cwd=tmp_path).returncode == 0
    assert run_cli("rm", "scratch", "-y", cwd=tmp_path).returncode == 0
    data = tmp_path / ".actor-db" / "data.mdb"
    before = data.stat().st_size
    result = run_cli("compact", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "compacted" in result.stderr
    after = data.stat().st_size
    assert after < before / 4, (before, after)
    assert not [p for p in data.parent.iterdir() if p.name.startswith(".compact-")]
    out = tmp_path / "keep-out.db"
    assert run_cli("export", "keep", str(out), cwd=tmp_path).returncode == 0
    assert dump(out) == dump(small)
    assert run_cli("integrity", cwd=tmp_path).stdout == "keep: ok\n"
    # writes after the swap work and persist
    assert run_cli("shell", "keep", "-c", "DELETE FROM users WHERE id > 10", cwd=tmp_path).returncode == 0
    assert _query(tmp_path, "keep", "SELECT count(*) FROM users") == ["10"]


def test_compact_refuses_a_store_in_use_and_other_drivers(tmp_path: pathlib.Path) -> None:
    assert run_cli("shell", "a", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path).returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom actor_db.kv import LmdbKV\n"
         "store = LmdbKV(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(tmp_path / ".actor-db")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert_one_line_error(run_cli("compact", cwd=tmp_path), "in use by another process")
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("compact", cwd=tmp_path).returncode == 0
    assert_one_line_error(run_cli("--kv", "memory:", "compact", cwd=tmp_path), "LMDB stores")
    assert_one_line_error(run_cli("--kv", f"lmdb:{tmp_path / 'none'}", "compact", cwd=tmp_path), "no LMDB store")


# ---------------------------------------------------------------------------- integrity
def test_integrity_of_one_or_all_actors(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "s.db"
    make_sqlite_file(source, rows=2000)
    for actor in ("good-1", "good-2", "bad"):
        assert run_cli("import", str(source), actor, cwd=tmp_path).returncode == 0
    assert run_cli("shell", "empty", "--create", "-c", "SELECT 1", cwd=tmp_path).returncode == 0
    assert run_cli("integrity", cwd=tmp_path).stdout.splitlines() == ["bad: ok", "good-1: ok", "good-2: ok"]
    # damage one chunk in the middle of actor "bad" (directly in the store)
    from actor_db.kv import LmdbKV
    from vfs.keys import FILE_MAIN, chunk_key
    from vfs.protocol import WriteBatch

    store = LmdbKV(tmp_path / ".actor-db")
    try:
        batch = WriteBatch()
        batch.puts[chunk_key(FILE_MAIN, (source.stat().st_size // 4096) // 2)] = bytes([0x5A]) * 4096
        store.actor("bad").write(batch)
    finally:
        store.close()
    every = run_cli("integrity", cwd=tmp_path)
    assert every.returncode == 1
    lines = every.stdout.splitlines()
    assert lines[0].startswith("bad: FAILED") and lines[-2:] == ["good-1: ok", "good-2: ok"]
    assert_one_line_error(every, "1 of 3 databases failed")
    one = run_cli("integrity", "good-1", cwd=tmp_path)
    assert one.returncode == 0 and one.stdout == "good-1: ok\n"
    assert_one_line_error(run_cli("integrity", "ghost", cwd=tmp_path), "'ghost'", "no database")


# ---------------------------------------------------------------------------- bench
def test_bench_writes_into_the_output_directory_not_the_checkout(tmp_path: pathlib.Path) -> None:
    tracked = ROOT / "benchmarks" / "REPORT.md"
    before = tracked.stat().st_mtime_ns
    results = ROOT / "benchmarks" / "results.json"  # re-render the committed results: seconds, not minutes
    chosen = tmp_path / "my-report"
    made = run_cli("bench", "--out", str(chosen), "--", "--from-json", str(results), cwd=tmp_path)
    assert made.returncode == 0, made
    assert (chosen / "REPORT.md").is_file() and (chosen / "summary.json").is_file()
    assert list(chosen.glob("*.png"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    default = run_cli("bench", "--", "--from-json", str(results), cwd=cwd)
    assert default.returncode == 0, default
    assert (cwd / "REPORT.md").is_file()  # default: the current directory
    assert tracked.stat().st_mtime_ns == before


def test_bench_first_eta_ignores_a_slow_first_benchmark() -> None:
    from benchmarks.report import eta_seconds

    # the run: ~100 benchmarks, the first one builds the datasets (60 s), the rest ~1 s
    assert eta_seconds([60.0], remaining=99) is None  # no ETA from one sample
    first = eta_seconds([60.0, 1.0, 1.2], remaining=97)
    assert first is not None and 60 < first < 200  # not the 1 h 06 min the issue saw
    assert eta_seconds([1.0] * 50, remaining=10) == pytest.approx(10.0)


# ---------------------------------------------------------------------------- stores
def test_lmdb_store_creates_only_its_last_directory(tmp_path: pathlib.Path) -> None:
    typo = tmp_path / "typo" / "dir" / "sub"
    result = run_cli("--kv", f"lmdb:{typo}", "shell", "a", "--create", "-c", "SELECT 1", cwd=tmp_path)
    assert_one_line_error(result, "parent directory", str(typo.parent))
    assert not (tmp_path / "typo").exists()
    assert run_cli("--kv", f"lmdb:{tmp_path / 'new'}", "shell", "a", "--create", "-c", "CREATE TABLE t (x)",
                   cwd=tmp_path).returncode == 0
    assert (tmp_path / "new" / "data.mdb").is_file()


def test_deprecated_actor_db_path_still_names_the_default_store(tmp_path: pathlib.Path) -> None:
    env = {"ACTOR_DB_PATH": str(tmp_path / "legacy")}
    assert run_cli("shell", "a", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path, env=env).returncode == 0
    assert (tmp_path / "legacy" / "data.mdb").is_file() and not (tmp_path / ".actor-db").exists()
    # $ACTOR_DB_KV wins over it
    both = dict(env, ACTOR_DB_KV=f"lmdb:{tmp_path / 'kv'}")
    assert run_cli("shell", "b", "--create", "-c", "CREATE TABLE t (x)", cwd=tmp_path, env=both).returncode == 0
    assert _listed(run_cli("ls", cwd=tmp_path, env=both).stdout) == ["b"]


def test_unsafe_redis_settings_warn_without_verbose(tmp_path: pathlib.Path) -> None:
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", durable=False).start()
    try:
        result = run_cli("--kv", server.url, "ls", cwd=tmp_path)
        assert result.returncode == 0, result
        warnings = [line for line in result.stderr.splitlines() if "appendonly=no" in line]
        assert len(warnings) == 1, result.stderr
        assert warnings[0].startswith("actor-db: WARNING: ")
        safe = RedisServer(tmp_path / "redis-safe", durable=True).start()
        try:
            quiet = run_cli("--kv", safe.url, "ls", cwd=tmp_path)
            assert quiet.returncode == 0 and quiet.stderr == "", quiet
        finally:
            safe.stop()
    finally:
        server.stop()
