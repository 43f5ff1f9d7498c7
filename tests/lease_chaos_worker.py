"""A writer process for the lease chaos test (:mod:`tests.test_lease_chaos`).

Run as ``python -m tests.lease_chaos_worker SPEC_JSON``. Commits ``transactions``
transactions through the drop-in ``sqlite3`` with ``locking="cross-process"`` and a
short writer lease, over a KV view that sleeps at random KV calls (some sleeps longer
than the lease). Every third transaction is large (blobs past the batch limit: the redo
log's stage, commit record and apply phases). After each ``COMMIT`` that returned, it
prints ``ack WORKER I`` and flushes, so the parent's log of acknowledgements is exact
even when it is killed. Ends with ``done`` or stops at ``deadline_s``.
"""

from __future__ import annotations

import faulthandler
import json
import random
import sys
import time
from typing import Any, Callable

from vfs.protocol import KVLimits, WriteBatch

from actor_db import dbapi
from tests.faults import ForwardingKV
from tests.fencing_worker import open_store


class SleepyKV(ForwardingKV):
    """Sleeps before a random share of KV calls (writes more often than reads)."""

    def __init__(self, inner: Any, rng: random.Random, ttl_s: float) -> None:
        super().__init__(inner, KVLimits(max_batch_keys=16))
        self.rng = rng
        self.ttl_s = ttl_s

    def _around(self, call: Callable[[], Any], batch: WriteBatch | None) -> Any:
        roll = self.rng.random()
        if roll < (0.04 if batch is not None else 0.01):
            time.sleep(self.rng.uniform(0.0, self.ttl_s * 1.6))
        return call()


def main(spec: dict[str, Any]) -> None:
    # A worker still running 45 s past its deadline is stuck (the parent waits 60 s): every
    # thread's stack goes to stderr, which the parent's failure message shows.
    faulthandler.dump_traceback_later(spec["deadline_s"] + 45, exit=False)
    rng = random.Random(spec["seed"])
    store = open_store(tuple(spec["store"]))
    view = SleepyKV(store.actor(spec["name"]), rng, spec["ttl_s"])
    con = dbapi.connect(spec["name"], kv=view, timeout=30.0,
                        vfs_options={"vfs": spec["vfs"], "locking": "cross-process", "lease_ttl_s": spec["ttl_s"]})
    deadline = time.monotonic() + spec["deadline_s"]
    worker = spec["worker"]
    try:
        for i in range(spec["transactions"]):
            if time.monotonic() > deadline:
                break
            try:
                with con:
                    con.execute("INSERT INTO acks (worker, i, payload) VALUES (?, ?, ?)",
                                (worker, i, rng.randbytes(20)))
                    if i % 3 == 2:
                        con.execute("INSERT INTO big (worker, i, blob) SELECT ?, ?, randomblob(3000) "
                                    "FROM (WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n "
                                    "WHERE k < 24) SELECT k FROM n)", (worker, i))
                    if i % 5 == 4:
                        con.execute("DELETE FROM big WHERE worker = ? AND i < ?", (worker, i - 6))
            except dbapi.Error as exc:
                print(f"fail {worker} {i} {type(exc).__name__}: {exc}", flush=True)
                continue
            print(f"ack {worker} {i}", flush=True)
    finally:
        con.close()
        store.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
