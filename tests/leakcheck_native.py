"""Leak check of the native VFS under valgrind (or LeakSanitizer): open/close cycles.

Run ``tests/leakcheck_native.sh`` (valgrind, a few minutes); this module is the
workload it runs: ``python -m tests.leakcheck_native CYCLES``. It opens and closes one
actor's database CYCLES times (each cycle: preload, reads, one commit, one KV failure
that SQLite rolls back), then checks the C module's own block counter returned to its
starting value and prints it. The pytest-level check is
``tests/test_native.py::test_no_leak_over_2000_open_close_cycles``.
"""

from __future__ import annotations

import sys

import apsw

import vfs
from actor_db.kv import MemoryKV
from native._kvvfs import lib
from tests.faults import FaultyKV
from tests.helpers import full_preload


def main(argv: list[str]) -> int:
    cycles = int(argv[1]) if len(argv) > 1 else 200
    kv = FaultyKV(MemoryKV().actor("leak"))
    con = vfs.connect(kv, vfs="native")
    con.execute("CREATE TABLE t(x INTEGER PRIMARY KEY, y BLOB)")
    with con:
        con.executemany("INSERT INTO t(y) VALUES(?)", [(bytes(700),)] * 100)
    con.close()
    start = lib.kvn_live_allocations()
    for i in range(cycles):
        c = vfs.connect(kv, vfs="native", preload=full_preload(kv, max_bytes=8 * 4096), cache_chunks=4)
        c.execute("PRAGMA cache_size=2")
        c.execute("SELECT sum(length(y)) FROM t").fetchall()
        c.execute("UPDATE t SET y = ? WHERE x = ?", (bytes([i % 251]) * 700, i % 100 + 1))
        kv.down = True
        try:
            c.execute("UPDATE t SET y = zeroblob(700) WHERE x = 1")
        except apsw.IOError:
            pass
        kv.down = False
        c.close()
    end = lib.kvn_live_allocations()
    print(f"native VFS C blocks live: start={start} end={end} after {cycles} cycles")
    return 0 if end == start else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
