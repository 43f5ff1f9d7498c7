"""The README demo: a KV-backed SQLite database on the embedded LMDB store.

Run ``python -m actor_db.demo``. It writes rows in this process, then reopens the
database in a NEW process (so nothing is cached in memory) with a one-call startup
preload, reads the rows back, and prints the KV round trips each step cost.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid

import vfs
from vfs.protocol import PreloadRequest

from actor_db.kv import LmdbKV


def write_phase(path: str, actor: str) -> None:
    store = LmdbKV(path)
    con = vfs.connect(store.actor(actor))
    con.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    before = store.round_trips
    with con:  # one transaction: one atomic KV batch
        con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(1000)])
    print(f"[writer pid {_pid()}] inserted 1000 rows in one transaction: {store.round_trips - before} KV round trip(s)")
    before = store.round_trips
    con.execute("UPDATE notes SET body = 'edited' WHERE id = 1")
    print(f"[writer pid {_pid()}] single-row UPDATE: {store.round_trips - before} KV round trip(s)")
    con.close()
    store.close()


def read_phase(path: str, actor: str) -> None:
    store = LmdbKV(path)
    kv = store.actor(actor)
    preload = kv.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges()))
    con = vfs.connect(kv, preload=preload)
    row = con.execute("SELECT count(*), (SELECT body FROM notes WHERE id = 1) FROM notes").fetchone()
    assert row is not None
    count, first = row
    print(f"[reader pid {_pid()}] reopened cold: {count} rows, row 1 = {first!r}")
    print(f"[reader pid {_pid()}] total KV round trips for open + first query: {store.round_trips} "
          f"(preload: 1, live reads: {con.stats.live_reads}, preload hits: {con.stats.preload_hits})")
    con.close()
    store.close()


def _pid() -> int:
    import os
    return os.getpid()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="./.actor-db", help="LMDB directory (default ./.actor-db)")
    parser.add_argument("--actor", default=None, help="actor id (default: a new one)")
    parser.add_argument("--phase", choices=["all", "write", "read"], default="all")
    args = parser.parse_args(argv)
    actor = args.actor or f"demo-{uuid.uuid4().hex[:8]}"
    if args.phase in ("all", "write"):
        write_phase(args.path, actor)
    if args.phase == "all":
        return subprocess.call([sys.executable, "-m", "actor_db.demo", "--path", args.path,
                                "--actor", actor, "--phase", "read"])
    if args.phase == "read":
        read_phase(args.path, actor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
