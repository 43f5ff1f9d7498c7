"""Randomized: several real writer processes share one database through the writer
lease while they are paused at random (``SIGSTOP`` past the lease's time to live, then
``SIGCONT``) and sleep at random KV calls of their commits, rollbacks and apply phases.
At the end every acknowledged commit is there and ``integrity_check`` is ok.

Leases of 1 s; bounded: a fixed number of transactions per worker and a deadline.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
from typing import Iterator

import pytest

from actor_db import dbapi
from tests.drivers import DRIVERS, DriverFactory
from tests.test_multi_connection import _store_spec

ROOT = pathlib.Path(__file__).resolve().parent.parent
TTL_S = 1.0
WORKERS = 3
TRANSACTIONS = 18
DEADLINE_S = 40.0


@pytest.fixture(params=["lmdb", "redis"], ids=str)
def shared_driver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    factory = DRIVERS[request.param](tmp_path_factory.mktemp(request.param))
    try:
        yield factory
    finally:
        factory.cleanup()


def _pauser(procs: list[subprocess.Popen[str]], rng: random.Random, stop: threading.Event) -> None:
    """SIGSTOP a random live worker for longer than the lease, then SIGCONT it."""
    while not stop.wait(rng.uniform(0.3, 0.9)):
        live = [p for p in procs if p.poll() is None]
        if not live:
            return
        victim = rng.choice(live)
        try:
            os.kill(victim.pid, signal.SIGSTOP)
            stop.wait(rng.uniform(TTL_S * 1.1, TTL_S * 1.8))
        finally:
            try:
                os.kill(victim.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_paused_writers_never_lose_an_acknowledged_commit(shared_driver: DriverFactory, vfs_kind: str) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    store = shared_driver.open()
    name = f"chaos-{seed}"
    con = dbapi.connect(name, kv=store, vfs_options={"vfs": vfs_kind, "locking": "cross-process"})
    with con:
        con.execute("CREATE TABLE acks (worker INT, i INT, payload BLOB, PRIMARY KEY (worker, i))")
        con.execute("CREATE TABLE big (worker INT, i INT, blob BLOB)")
    con.close()
    procs = []
    for worker in range(WORKERS):
        spec = {"store": _store_spec(shared_driver), "name": name, "vfs": vfs_kind, "worker": worker,
                "seed": seed + worker, "ttl_s": TTL_S, "transactions": TRANSACTIONS, "deadline_s": DEADLINE_S}
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.lease_chaos_worker", json.dumps(spec)],
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    stop = threading.Event()
    pauser = threading.Thread(target=_pauser, args=(procs, rng, stop), daemon=True)
    pauser.start()
    outputs = []
    try:
        for p in procs:
            try:
                out, err = p.communicate(timeout=DEADLINE_S + 60)
            except subprocess.TimeoutExpired as exc:  # stuck: show its stacks (the worker dumps them)
                text = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
                raise AssertionError(f"seed {seed}: a worker did not end; its stderr:\n{(text or '')[-6000:]}") from None
            outputs.append((p.returncode, out, err))
    finally:
        stop.set()
        pauser.join(10)
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
    acked = set()
    for code, out, err in outputs:
        assert code == 0, f"seed {seed}: worker failed:\n{err[-3000:]}"
        for line in out.splitlines():
            if line.startswith("ack "):
                _, worker, i = line.split()
                acked.add((int(worker), int(i)))
    con = dbapi.connect(name, kv=store, vfs_options={"vfs": vfs_kind, "locking": "cross-process"})
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",), f"seed {seed}"
        present = set(con.execute("SELECT worker, i FROM acks").fetchall())
    finally:
        con.close()
        store.close()
    assert acked, f"seed {seed}: no transaction was acknowledged"
    assert acked <= present, f"seed {seed}: acknowledged commits lost: {sorted(acked - present)}"
