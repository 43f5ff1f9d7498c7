"""History costs (issue 24): commits with history on vs off, wake, restore, branch.

Counts (round trips, bytes) are exact and machine-independent; times depend on the
machine. ``python -m benchmarks.bench_history [--mib 64] [--commits 1000]`` prints every
figure of REPORT.md section 12; ``pytest benchmarks/bench_history.py`` times restore and
branch with pytest-benchmark (``group="history"``) at ``HISTORY_BENCH_MIB`` (default 16 MiB).

- ``commit``: a warm ``UPDATE`` of one 1000-byte row, and an insert of 100 rows of 100
  bytes, on a ~1 MiB database: KV round trips per commit and bytes written per commit
  (key + value bytes of every batch), history on vs off; the "amortized" figure spreads
  the base images written over 8,192 such commits (32 MiB of changes: two bases).
- ``wake``: round trips of the open (the one preload call) with history on vs off.
- ``restore``: a database of ``--mib`` MiB of rows, then ``--commits`` small commits;
  restore the bookmark taken before them (reads the nearest base and replays), time
  and round trips; LMDB and memory.
- ``branch``: a new actor from the same state.
- ``backup``: (``--s3``) a writer commits at 500 commits/s for 5 s while ``backup
  --follow`` ships every 0.1 s to moto's S3 server (a process on 127.0.0.1): the lag from
  a commit to its object in the bucket; then the restore of the ``--mib`` actor from the
  bucket (MiB/s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Any, Iterator

import pytest

import vfs
from vfs import history as vh
from vfs.protocol import PreloadRequest

from actor_db.kv import LmdbKV, MemoryKV
from actor_db.ops import history as ops_history
from benchmarks.large_commit_costs import CountingView

MIB = 1 << 20


def _base_db(con: vfs.KVConnection, mib: float) -> None:
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v BLOB)")
    rows = int(mib * MIB / 1100)
    with con:
        con.execute("INSERT INTO items (v) SELECT randomblob(1000) FROM "
                    f"(WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x<{rows}) SELECT x FROM s)")


def commit_costs(history: bool, commits: int = 8192) -> dict[str, float]:
    """Round trips and bytes per commit (memory store, python VFS)."""
    store = MemoryKV()
    view = CountingView(store.actor("c"))
    con = vfs.connect(view, history=history)
    _base_db(con, 1)
    out: dict[str, float] = {}
    for name, sql in (("update-1-row", "UPDATE items SET v = randomblob(1000) WHERE id = ?"),
                      ("insert-100-rows", None)):
        trips0, bytes0 = view.reads + view.writes, view.bytes_written
        if sql:
            con.execute(sql, (17,))
        else:
            with con:
                con.executemany("INSERT INTO items (v) VALUES (randomblob(100))", [()] * 100)
        out[f"{name} round trips"] = view.reads + view.writes - trips0
        out[f"{name} bytes"] = view.bytes_written - bytes0
    trips0, bytes0 = view.reads + view.writes, view.bytes_written
    for i in range(commits):
        con.execute("UPDATE items SET v = randomblob(1000) WHERE id = ?", (1 + (i * 37) % 900,))
    out["update-1-row amortized round trips"] = (view.reads + view.writes - trips0) / commits
    out["update-1-row amortized bytes"] = (view.bytes_written - bytes0) / commits
    out["bases written"] = len(con.kv_file.history.bases) if history else 0
    con.close()
    # The wake: one preload call, then the open reads nothing more.
    view2 = CountingView(store.actor("c"))
    preload = view2.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges()))
    con = vfs.connect(view2, preload=preload, history=history)
    con.execute("UPDATE items SET v = x'00' WHERE id = 1")  # the first commit after the wake
    out["wake + first commit round trips"] = view2.reads + view2.writes
    con.close()
    return out


def build_actor(store: Any, actor: str, mib: float, commits: int) -> tuple[str, str]:
    """A ``mib`` MiB database with history, then ``commits`` small commits; returns
    (bookmark before them, bookmark after)."""
    con = vfs.connect(store.actor(actor), history=True)
    _base_db(con, mib)
    head = con.kv_file.history.head
    assert head is not None
    before = vh.encode_bookmark(head.last_seq, head.last_time_ms)
    for i in range(commits):
        con.execute("UPDATE items SET v = randomblob(1000) WHERE id = ?", (1 + (i * 7919) % 50_000,))
    head = con.kv_file.history.head
    assert head is not None
    con.close()
    return before, vh.encode_bookmark(head.last_seq, head.last_time_ms)


def restore_costs(driver: str, mib: float, commits: int) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix="bench-history-")
    store: Any = MemoryKV() if driver == "memory" else LmdbKV(os.path.join(tmp, "store"))
    try:
        before, _ = build_actor(store, "big", mib, commits)
        trips0 = store.round_trips
        started = time.perf_counter()
        result = ops_history.restore(store.actor("big"), bookmark=before)
        restore_s = time.perf_counter() - started
        restore_trips = store.round_trips - trips0
        trips0 = store.round_trips
        started = time.perf_counter()
        ops_history.branch(store.actor("big"), store.actor("copy"))
        branch_s = time.perf_counter() - started
        branch_trips = store.round_trips - trips0
        return {"size MiB": result.size / MIB, "restore s": restore_s, "restore round trips": restore_trips,
                "branch s": branch_s, "branch round trips": branch_trips}
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ pytest-benchmark
BENCH_MIB = float(os.environ.get("HISTORY_BENCH_MIB", "16"))
BENCH_COMMITS = int(os.environ.get("HISTORY_BENCH_COMMITS", "1000"))


@pytest.fixture(scope="module")
def big_actor() -> Iterator[tuple[MemoryKV, str]]:
    store = MemoryKV()
    before, _ = build_actor(store, "big", BENCH_MIB, BENCH_COMMITS)
    yield store, before


@pytest.mark.parametrize("operation", ["restore", "branch"])
def test_history_restore_and_branch(benchmark: Any, big_actor: tuple[MemoryKV, str], operation: str) -> None:
    store, before = big_actor
    benchmark.group = "history"
    benchmark.extra_info.update({"mib": BENCH_MIB, "commits_back": BENCH_COMMITS})
    counter = iter(range(1_000_000))
    if operation == "restore":
        benchmark.pedantic(lambda: ops_history.restore(store.actor("big"), bookmark=before), rounds=3, iterations=1)
    else:
        benchmark.pedantic(lambda: ops_history.branch(store.actor("big"), store.actor(f"b{next(counter)}")),
                           rounds=3, iterations=1)


def backup_costs(mib: float, rate: float = 500.0, seconds: float = 5.0) -> dict[str, float]:
    """Backup lag under ``rate`` commits/s, and restore throughput from S3 (moto server)."""
    import threading

    from actor_db.ops import backup
    from tests.s3_server import CREDENTIALS, S3Server

    os.environ.update(CREDENTIALS)
    server = S3Server()
    try:
        client = server.client()
        client.create_bucket(Bucket="bench-bucket")
        loc = backup.parse_location("s3://bench-bucket/p", client=client)
        store = MemoryKV()
        view = store.actor("w")
        con = vfs.connect(view, history=True)
        _base_db(con, 1)
        con.close()
        backup.backup_actor(view, loc)
        committed: dict[int, float] = {}
        done = threading.Event()

        def writer() -> None:
            con = vfs.connect(store.actor("w"), history=True)
            start = time.perf_counter()
            n = int(rate * seconds)
            for i in range(n):
                target = start + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                con.execute("UPDATE items SET v = randomblob(1000) WHERE id = ?", (1 + i % 900,))
                head = con.kv_file.history.head
                assert head is not None
                committed[head.last_seq] = time.perf_counter()
            con.close()
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        shipped_at: dict[int, float] = {}
        last = 0
        while not (done.is_set() and last >= max(committed, default=0)):
            result = backup.backup_actor(view, loc)
            now = time.perf_counter()
            for seq in range(last + 1, (result.last_seq or 0) + 1):
                shipped_at[seq] = now
            last = max(last, result.last_seq or 0)
            time.sleep(0.1)
        thread.join()
        lags = sorted(shipped_at[s] - t for s, t in committed.items() if s in shipped_at)
        out = {"commits": len(committed), "lag p50 ms": lags[len(lags) // 2] * 1000,
               "lag p99 ms": lags[int(len(lags) * 0.99)] * 1000, "lag max ms": lags[-1] * 1000}
        big = MemoryKV()
        build_actor(big, "big", mib, 0)
        backup.backup_actor(big.actor("big"), loc)
        started = time.perf_counter()
        size = backup.restore_actor(loc, "big", MemoryKV().actor("big"))
        out["restore from S3 MiB/s"] = size / MIB / (time.perf_counter() - started)
        out["restore from S3 MiB"] = size / MIB
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=64)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--s3", action="store_true", help="also the backup lag and restore from moto's S3 server")
    args = parser.parse_args()
    off, on = commit_costs(False), commit_costs(True)
    print("commit costs (history off -> on):")
    for key in off:
        ratio = f" ({on[key] / off[key]:.2f}x)" if off[key] else ""
        print(f"  {key}: {off[key]:.1f} -> {on[key]:.1f}{ratio}")
    for driver in ("memory", "lmdb"):
        got = restore_costs(driver, args.mib, args.commits)
        print(f"{driver}: " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()))
    if args.s3:
        got = backup_costs(args.mib)
        print("backup: " + ", ".join(f"{k} {v:.1f}" for k, v in got.items()))


if __name__ == "__main__":
    main()
