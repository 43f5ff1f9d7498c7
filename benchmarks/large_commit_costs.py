"""KV round trips and bytes of ONE large commit, journal vs redo (issue 26 item 2).

The commit: one transaction inserting ``rows`` rows of ~300 bytes (optionally also
updating every 10th of the 3,000 existing rows) into a database of ~1 MiB, on a MemoryKV under RivetKit's batch
limits (128 keys / 976 KiB per batch), with a cold VFS cache (the before-images of the
pages a journaled commit rewrites are read from the KV). Counts are exact and
machine-independent; ``python -m benchmarks.large_commit_costs`` prints them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import vfs
from actor_db.kv import MemoryKV
from benchmarks.reference import RIVETKIT_LIMITS
from vfs.preload import PreloadMap
from vfs.protocol import KV, KVLimits, PreloadRequest, WriteBatch

__all__ = ["CountingView", "measure"]


class CountingView:
    """An actor-scoped view that counts calls and the bytes each write carries."""

    def __init__(self, inner: KV) -> None:
        self.inner = inner
        self.reads = 0
        self.writes = 0
        self.bytes_written = 0

    @property
    def identity(self) -> Any:
        return self.inner.identity

    @property
    def limits(self) -> KVLimits:
        return self.inner.limits

    @property
    def fence_token(self) -> int | None:
        return getattr(self.inner, "fence_token", None)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self.reads += 1
        return self.inner.get_many(keys)

    def scan(self, start: bytes, end: bytes, *, limit: int | None = None,
             max_bytes: int | None = None) -> list[tuple[bytes, bytes]]:
        self.reads += 1
        return self.inner.scan(start, end, limit=limit, max_bytes=max_bytes)

    def write(self, batch: WriteBatch) -> None:
        self.writes += 1
        self.bytes_written += batch.payload_bytes
        self.inner.write(batch)

    def preload(self, request: PreloadRequest) -> PreloadMap:
        self.reads += 1
        return self.inner.preload(request)


def _series(a: int, b: int) -> str:
    return f"(WITH RECURSIVE s(x) AS (SELECT {a} UNION ALL SELECT x+1 FROM s WHERE x<{b}) SELECT x FROM s)"


def measure(large_commits: str, rows: int = 10_000, vfs_kind: str = "python",
            cache_chunks: int | None = 0, updates: bool = True) -> dict[str, int]:
    """Writes, reads and bytes of the commit (the connection's open excluded)."""
    store = MemoryKV(KVLimits(**RIVETKIT_LIMITS))
    con = vfs.connect(store.actor("a"), vfs=vfs_kind)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    with con:
        for start in range(1, 3001, 500):
            con.execute(f"INSERT INTO t SELECT x, printf('%0300d', x) FROM {_series(start, start + 499)}")
    con.close()
    view = CountingView(store.actor("a"))
    con = vfs.connect(view, vfs=vfs_kind, large_commits=large_commits, cache_chunks=cache_chunks,
                      preload=PreloadMap.empty())
    con.execute("SELECT count(*) FROM t").fetchall()
    before = (view.reads, view.writes, view.bytes_written)
    with con:
        con.execute(f"INSERT INTO t SELECT x, printf('%0300d', x) FROM {_series(100_001, 100_000 + rows)}")
        if updates:
            con.execute("UPDATE t SET v = v || 'u' WHERE id % 10 = 0 AND id < 100000")
    out = {"writes": view.writes - before[1], "reads": view.reads - before[0],
           "bytes_written": view.bytes_written - before[2], "chunks": int(con.stats.chunks_written)}
    assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    con.close()
    return out


def main() -> None:
    for mode, kind, updates in [(m, k, u) for u in (False, True) for m in ("redo", "journal")
                                for k in ("python", "native")]:
            got = measure(mode, vfs_kind=kind, updates=updates)
            print(f"{'insert+update' if updates else 'insert':13s} {mode:8s} {kind:7s} writes={got['writes']} "
                  f"reads={got['reads']} "
                  f"bytes={got['bytes_written']} ({got['bytes_written'] / 2**20:.2f} MiB) chunks={got['chunks']}")


if __name__ == "__main__":
    main()
