"""Backing up a whole LMDB store while it is written (``LmdbKV.backup``): the copy is
the store at one commit, every actor's database passes ``integrity_check``, and the
copy opens as a store of its own."""

from __future__ import annotations

import pathlib
import threading

import pytest

import vfs

from actor_db.errors import ConfigurationError
from actor_db.kv import LmdbKV
from tests.helpers import integrity, poll_until, rows

ACTORS = ["a", "b", "c"]


def test_backup_while_writers_commit_is_one_consistent_state(tmp_path: pathlib.Path) -> None:
    store = LmdbKV(tmp_path / "live", durable=False)
    cons = {a: vfs.connect(store.actor(a)) for a in ACTORS}
    for con in cons.values():
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
    stop = threading.Event()
    committed = {a: 0 for a in ACTORS}

    def write(actor: str) -> None:
        con = cons[actor]
        for i in range(1, 100_000):  # bounded; stopped once the backups are taken
            if stop.is_set():
                return
            with con:
                con.execute("INSERT INTO t(body) VALUES (?)", ("x" * 3000 + str(i),))
            committed[actor] = i

    writers = [threading.Thread(target=write, args=(a,)) for a in ACTORS]
    for w in writers:
        w.start()
    try:
        copies = []
        for n in range(3):
            poll_until(lambda: sum(committed.values()) >= 30 * (n + 1), "the writers to commit")
            path = tmp_path / f"copy{n}"
            assert store.backup(path) > 0
            copies.append(path)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=60)
    assert not any(w.is_alive() for w in writers)
    for path in copies:
        with LmdbKV(path) as copy:
            assert copy.actor_ids() == ACTORS
            for actor in ACTORS:
                con = vfs.connect(copy.actor(actor))
                assert integrity(con) == "ok"
                ids = [r[0] for r in rows(con, "SELECT id FROM t ORDER BY id")]
                assert ids == list(range(1, len(ids) + 1))  # a prefix of the commits, no gap
                con.close()
    for con in cons.values():
        con.close()
    with pytest.raises(ConfigurationError, match="exists"):
        store.backup(copies[0])
    store.close()
