"""Running the installed ``actor-db`` console script in a subprocess, for the CLI tests."""

from __future__ import annotations

import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass

import pytest


def console_script() -> str:
    """The ``actor-db`` script installed next to this Python (``pip install -e .``)."""
    beside = pathlib.Path(sys.executable).with_name("actor-db")
    found = str(beside) if beside.exists() else shutil.which("actor-db")
    if found is None:
        pytest.fail("the actor-db console script is not installed (run: pip install -e .)", pytrace=False)
    return found


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: os.PathLike[str] | str, stdin: str | None = None,
            env: dict[str, str] | None = None) -> Result:
    """Run ``actor-db ARGS`` in ``cwd``; never raises on a non-zero exit."""
    # Not the test run's own settings (a pytest-xdist worker's PYTEST_* variables would
    # make the pytest that `actor-db bench` starts believe it is an xdist worker too).
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("ACTOR_DB_KV", "ACTOR_DB_PATH") and not k.startswith("PYTEST_")}
    environment.update(env or {})
    proc = subprocess.run([console_script(), *args], cwd=cwd, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=120, env=environment)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A user mistake: exit status 1, exactly one line on stderr, no traceback."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def make_sqlite_file(path: pathlib.Path, rows: int = 3000) -> None:
    """A stdlib-sqlite3 database with tables, an index, a view, a trigger, blobs,
    NULLs and non-ASCII text; ``rows`` rows of ~100 bytes (several hundred KiB)."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, avatar BLOB, score REAL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER, what TEXT);
        CREATE INDEX users_name ON users (name);
        CREATE VIEW top_users AS SELECT name, score FROM users WHERE score > 0.5;
        CREATE TRIGGER users_audit AFTER INSERT ON users BEGIN
            INSERT INTO audit (user_id, what) VALUES (new.id, 'insert');
        END;
        """
    )
    con.executemany(
        "INSERT INTO users (name, avatar, score) VALUES (?, ?, ?)",
        [(f"user {i} — ünïcödé", None if i % 7 == 0 else bytes([i % 256]) * 64, (i * 37 % 100) / 100)
         for i in range(rows)],
    )
    con.commit()
    con.close()


def dump(path: pathlib.Path) -> list[str]:
    """The stdlib ``iterdump`` of a file: its whole logical content as SQL."""
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()
