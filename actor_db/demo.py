"""The README demo: a KV-backed SQLite database on the embedded LMDB store.

Run ``python -m actor_db.demo``. It writes rows into the database of ONE actor
(``demo`` unless ``--actor``; every run reuses it and replaces its rows), then reopens
the database in a NEW process (so nothing is cached in memory) with a one-call startup
preload, reads the rows back, and prints which actor, where the store lives, which VFS
ran, and the KV round trips each step cost.

The demo is a command-line program: its output is its purpose, so it prints.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import vfs
from vfs.protocol import PreloadRequest

from actor_db.kv import LmdbKV

DEFAULT_ACTOR = "demo"
"""The actor every run writes (so runs do not pile up new actors)."""

DEFAULT_PATH = "./.actor-db"
"""The LMDB store directory (the CLI's default store, ``lmdb:./.actor-db``)."""

ROWS = 1000
"""Rows the writer inserts in its one transaction."""


def _vfs_label(con: vfs.KVConnection) -> str:
    """The SQLite VFS the connection runs on, with a word on what it is."""
    name = str(getattr(con, "open_vfs", "") or con.filename.split(":", 1)[0])
    kind = "the C VFS, native/" if type(con.kv_file).__module__.startswith("native") else "the pure-Python VFS, vfs/"
    return f"{name} ({kind})"


def write_phase(path: str, actor: str) -> None:
    """Replace the actor's rows with :data:`ROWS` new ones in one transaction, then
    update one row; prints the KV round trips of each."""
    store = LmdbKV(path)
    con = vfs.connect(store.actor(actor))
    print(f"[writer pid {os.getpid()}] actor {actor!r} in the LMDB store {store.path}, VFS {_vfs_label(con)}")
    con.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    before = store.round_trips
    with con:  # one transaction: one atomic KV batch
        con.execute("DELETE FROM notes")  # a re-run replaces the previous run's rows
        con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(ROWS)])
    print(f"[writer pid {os.getpid()}] replaced the rows with {ROWS} in one transaction: "
          f"{store.round_trips - before} KV round trip(s)")
    before = store.round_trips
    con.execute("UPDATE notes SET body = 'edited' WHERE id = 1")
    print(f"[writer pid {os.getpid()}] single-row UPDATE: {store.round_trips - before} KV round trip(s)")
    con.close()
    store.close()


def read_phase(path: str, actor: str) -> None:
    """Reopen the actor's database cold with the one-call preload and read it back."""
    store = LmdbKV(path)
    kv = store.actor(actor)
    preload = kv.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges()))
    con = vfs.connect(kv, preload=preload)
    row = con.execute("SELECT count(*), (SELECT body FROM notes WHERE id = 1) FROM notes").fetchone()
    assert row is not None
    count, first = row
    print(f"[reader pid {os.getpid()}] reopened cold with VFS {_vfs_label(con)}: {count} rows, row 1 = {first!r}")
    print(f"[reader pid {os.getpid()}] total KV round trips for open + first query: {store.round_trips} "
          f"(preload: 1, live reads: {con.stats.live_reads}, preload hits: {con.stats.preload_hits})")
    con.close()
    store.close()


def _cli_hint(path: str, actor: str) -> str:
    """How to look at the demo's database with the ``actor-db`` command."""
    script = Path(sys.executable).with_name("actor-db")
    command = "actor-db"
    if script.exists():
        try:
            command = os.path.relpath(script)
        except ValueError:
            command = str(script)
        if command.startswith(os.pardir):  # not below the working directory: the full path
            command = str(script)
        elif os.sep not in command:
            command = f".{os.sep}{command}"
    store = "" if os.path.abspath(path) == os.path.abspath(DEFAULT_PATH) else f" --kv lmdb:{path}"
    return f'{command}{store} shell {actor} -c "SELECT count(*) FROM notes"'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=DEFAULT_PATH, help=f"LMDB directory (default {DEFAULT_PATH})")
    parser.add_argument("--actor", default=DEFAULT_ACTOR, help=f"actor id (default {DEFAULT_ACTOR!r}, reused)")
    parser.add_argument("--phase", choices=["all", "write", "read"], default="all")
    args = parser.parse_args(argv)
    if args.phase in ("all", "write"):
        write_phase(args.path, args.actor)
    if args.phase == "all":
        code = subprocess.call([sys.executable, "-m", "actor_db.demo", "--path", args.path,
                                "--actor", args.actor, "--phase", "read"])
        if code == 0:
            print(f"Look at it yourself: {_cli_hint(args.path, args.actor)}")
        return code
    if args.phase == "read":
        read_phase(args.path, args.actor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
