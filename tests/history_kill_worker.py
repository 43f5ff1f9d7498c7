"""A process that loops over commits, restores, branches or backups on an LMDB store
until it is killed (tests/test_history_kill.py). Prints one line per finished step."""

from __future__ import annotations

import sys

import vfs
from vfs import history as vh

from actor_db.kv import LmdbKV
from actor_db.ops import backup, history


def main(path: str, mode: str, s3_url: str | None) -> None:
    store = LmdbKV(path)
    view = store.actor("k")
    marks: list[str] = []
    loc = backup.parse_location("s3://kill-bucket/p", endpoint_url=s3_url) if s3_url else None
    for step in range(100_000):
        if mode == "commit" or step < 3 or (mode in ("backup",) and step % 2):
            view.acquire_ownership()
            con = vfs.connect(view, history=True, max_dirty_bytes=32 * 4096)
            con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
            with con:
                rows = 60 if step % 5 == 0 else 2  # every 5th is larger than the dirty bound: redo log
                con.executemany("INSERT INTO t (v) VALUES (?)", [(bytes([step % 256]) * 3000,) for _ in range(rows)])
            if step % 7 == 0:
                con.execute("DELETE FROM t WHERE id % 3 = 0")
            head = con.kv_file.history.head
            assert head is not None
            marks.append(vh.encode_bookmark(head.last_seq, head.last_time_ms))
            con.close()
        elif mode == "restore":
            history.restore(view, bookmark=marks[step % len(marks)])
        elif mode == "branch":
            history.branch(view, store.actor(f"b{step % 3}"), bookmark=marks[step % len(marks)], force=True)
        elif mode == "backup":
            assert loc is not None
            backup.backup_actor(view, loc)
        print(step, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
