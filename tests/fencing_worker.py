"""A minimal "runtime" in its own process, for the fencing race tests.

It opens one actor's database the way a runtime should (ownership and preload in ONE
round trip, then ``vfs.connect``), commits small transactions on command, and reports
which commits succeeded and whether it was fenced. Driven over a ``multiprocessing``
pipe by :mod:`tests.test_fencing`.
"""

from __future__ import annotations

from typing import Any

import apsw

import vfs
from vfs.protocol import PreloadRequest

from actor_db.kv import KVStore, LmdbKV, fenced_cause

ROWS_PER_COMMIT = 3


def open_store(spec: tuple[Any, ...]) -> KVStore:
    """``("lmdb", path)`` or ``("redis", url, namespace)`` or ``("redis-cluster", url, namespace)``."""
    if spec[0] == "lmdb":
        return LmdbKV(spec[1])
    from actor_db.kv.redis import RedisKV

    return RedisKV(spec[1], namespace=spec[2], cluster=spec[0] == "redis-cluster", check_persistence=False)


def commit_loop(con: apsw.Connection, writer: str, round_no: int, commits: int) -> tuple[list[int], bool]:
    """Up to ``commits`` transactions of ``ROWS_PER_COMMIT`` rows plus a counter bump;
    stops at the first fenced commit. Returns (sequence numbers committed, fenced)."""
    ok: list[int] = []
    for seq in range(commits):
        try:
            with con:
                for i in range(ROWS_PER_COMMIT):
                    con.execute("INSERT INTO log (round, writer, seq, i, pad) VALUES (?, ?, ?, ?, randomblob(300))",
                                (round_no, writer, seq, i))
                con.execute("UPDATE counter SET n = n + 1")
        except apsw.Error as exc:
            if fenced_cause(exc) is not None:
                return ok, True
            raise
        ok.append(seq)
    return ok, False


def run(spec: tuple[Any, ...], actor: str, writer: str, conn: Any) -> None:
    """Serve commands until ``("stop",)``:

    - ``("acquire",)`` → ``("token", n)``: take ownership + preload (1 round trip), open.
    - ``("commit", round, n)`` → ``("done", ok_seqs, fenced)``, then close the database.
    """
    store = open_store(spec)
    con: apsw.Connection | None = None
    try:
        while True:
            command = conn.recv()
            if command[0] == "stop":
                break
            if command[0] == "acquire":
                kv = store.actor(actor)
                before = store.round_trips
                preload = kv.acquire_and_preload(
                    PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges()))
                con = vfs.connect(kv, preload=preload)
                conn.send(("token", kv.fence_token, store.round_trips - before))
            elif command[0] == "commit":
                assert con is not None
                ok, was_fenced = commit_loop(con, writer, command[1], command[2])
                try:
                    con.close()
                except apsw.Error:
                    pass  # a fenced connection may fail to flush on close; nothing is applied
                con = None
                conn.send(("done", ok, was_fenced))
    except BaseException as exc:  # report instead of hanging the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        store.close()
