"""Single-writer fencing in the runtime: a runtime that wakes an actor takes ownership
(in the startup preload's single call); when another runtime (another process) takes
the actor over, the first one's next commit fails with ``FencedError`` and the first
runtime closes the actor instead of overwriting pages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import apsw
import pytest

import actor_db
from actor_db.errors import FencedError
from actor_db.kv import LmdbKV
from tests.runtime_support import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ACTOR_TYPE = """
import actor_db

ledger = actor_db.actor("ledger", state=lambda: {"writes": 0},
                        db=actor_db.db(migrations=["CREATE TABLE entries (who TEXT NOT NULL, n INTEGER NOT NULL)"]))

@ledger.action
async def write(c, who, n):
    await c.db.execute("INSERT INTO entries (who, n) VALUES (?, ?)", who, n)
    c.state["writes"] += 1
    return c.state["writes"]

@ledger.action
async def entries(c):
    return [tuple(r) for r in await c.db.execute("SELECT who, n FROM entries ORDER BY rowid")]
"""

CHILD = ACTOR_TYPE + textwrap.dedent("""
import asyncio, sys
from actor_db.kv import LmdbKV

async def main():
    registry = actor_db.Registry([ledger], kv=LmdbKV(sys.argv[1]))
    handle = registry.get_or_create("ledger", key="shared")
    print(await handle.call("write", "child", 1))
    await handle.sleep()

asyncio.run(main())
""")


def make_ledger() -> Any:
    namespace: dict[str, Any] = {}
    exec(ACTOR_TYPE, namespace)
    return namespace["ledger"]


def test_takeover_by_another_process_fences_the_first_runtime(tmp_path: Any) -> None:
    path = str(tmp_path / "store")

    async def scenario() -> None:
        store = LmdbKV(path)
        registry = actor_db.Registry([make_ledger()], kv=store)
        handle = registry.get_or_create("ledger", key="shared")
        assert await handle.call("write", "parent", 1) == 1
        # create: the claim, the creation, the migration and the call's writes in one
        # conditional round trip (issue 25)
        assert handle.metrics()["startup_kv_round_trips"] == 1
        # Another runtime takes the actor over (this one stays awake, holding an old token).
        subprocess.run([sys.executable, "-c", CHILD, path], check=True, cwd=REPO, capture_output=True)
        with pytest.raises(FencedError):
            await handle.call("write", "parent", 2)
        assert handle.metrics()["status"] == "asleep"  # the fenced runtime closed the actor
        # Calling again re-acquires ownership and sees the other runtime's commit, not ours.
        assert await handle.call("entries") == [("parent", 1), ("child", 1)]
        assert await handle.call("write", "parent", 3) == 3
        await handle.sleep()
        store.close()

    run(scenario())


# ------------------------------------------------- issue 29, item 6: stale reads, races
BIG_TYPE = """
import actor_db

big = actor_db.actor("big", idle_timeout_s=None, db=actor_db.db(migrations=[
    "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, pad BLOB)", "CREATE INDEX t_k ON t (k)"]))

@big.action
async def fill(c, n):
    await c.db.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                       "INSERT INTO t (k, pad) SELECT i * 7919 % 100000, zeroblob(300) FROM s", n)

@big.action
async def churn(c):
    await c.db.execute("DELETE FROM t WHERE id % 2 = 0")
    await c.db.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 4000) "
                       "INSERT INTO t (k, pad) SELECT i * 104729 % 100000, zeroblob(500) FROM s")

@big.action
async def one(c):
    return (await c.db.execute("SELECT k FROM t WHERE id = 1"))[0][0]

@big.action
async def total(c):
    return (await c.db.execute("SELECT count(*), sum(length(pad)) FROM t WHERE k >= 0"))[0][0]
"""

BIG_CHILD = BIG_TYPE + textwrap.dedent("""
import asyncio, sys
from actor_db.kv import LmdbKV

async def main():
    registry = actor_db.Registry([big], kv=LmdbKV(sys.argv[1]))
    handle = registry.get_or_create("big", key="x")
    await handle.call("churn")
    await handle.sleep()

asyncio.run(main())
""")


def test_a_runtime_that_lost_its_actor_reports_fenced_not_corrupt(tmp_path: Any) -> None:
    """Reads are not fenced: the runtime that lost the actor read its preloaded (old)
    pages mixed with the new owner's, and every read action answered ``CorruptError:
    database disk image is malformed`` while nothing wrote. Now the first such error is
    checked against the fence (one round trip): ``FencedError``, the actor closes, and
    the next call re-opens it on the new owner's data."""
    path = str(tmp_path / "store")
    namespace: dict[str, Any] = {}
    exec(BIG_TYPE, namespace)

    async def scenario() -> None:
        store = LmdbKV(path)
        registry = actor_db.Registry([namespace["big"]], kv=store)
        handle = registry.get_or_create("big", key="x")
        await handle.call("fill", 6000)  # ~2.4 MB: more than the 768 KiB preload
        await handle.sleep()
        await handle.call("one")  # awake again, with the preload (low pages) only
        subprocess.run([sys.executable, "-c", BIG_CHILD, path], check=True, cwd=REPO, capture_output=True)
        with pytest.raises(FencedError) as info:
            await handle.call("total")
        assert isinstance(info.value.__cause__, apsw.CorruptError)  # what a stale read looked like
        assert handle.metrics()["status"] == "asleep"
        assert await handle.call("total") == 7000  # re-acquired: the new owner's rows
        await handle.sleep()
        store.close()

    run(scenario())


RACE_CALLS = 120


@pytest.mark.parametrize("output_gate", [True, False], ids=["gate", "no-gate"])
def test_two_runtimes_racing_get_only_fenced_errors_and_lose_nothing(tmp_path: Any, output_gate: bool) -> None:
    """Two runtimes (processes) call the same actor concurrently, taking it from each
    other at every wake: every failed call is a ``FencedError``, and every acknowledged
    write is in the database at the end."""
    import json

    path = str(tmp_path / "store")
    procs = []
    for worker in ("A", "B"):
        spec = {"path": path, "worker": worker, "calls": RACE_CALLS, "output_gate": output_gate, "concurrency": 4}
        proc = subprocess.Popen([sys.executable, "-m", "tests.fencing_race_worker", json.dumps(spec)], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    fenced = 0
    for report in reports:
        assert set(report["errors"]) <= {"FencedError"}, report["errors"]
        fenced += report["errors"].get("FencedError", {}).get("count", 0)
    assert fenced > 0  # they really raced
    from tests.fencing_race_worker import ledger_type

    async def check() -> set[tuple[str, int]]:
        store = LmdbKV(path)
        registry = actor_db.Registry([ledger_type(output_gate)], kv=store)
        handle = registry.get_or_create("ledger", key="shared")
        present = {(who, n) for who, n in await handle.call("rows")}
        await handle.sleep()
        store.close()
        return present

    present = run(check())
    acked = {(who, n) for report in reports for who, n in report["ok"]}
    assert acked and acked <= present, sorted(acked - present)[:10]
