"""Zero acknowledged actions lost with output gates and coalesced writes (issue 13).

A child process runs a registry with several actors, each called by several concurrent
callers doing 1-row inserts (so commits coalesce), and prints one line per call that
RETURNED (an acknowledged action). Then something crashes at a random point:

- ``kill -9`` of the child (LMDB): every acknowledged row is in the database after a
  restart, and ``PRAGMA integrity_check`` passes;
- ``kill -9`` of redis-server (``appendonly yes``, ``appendfsync always``): the same
  once it restarts on its AOF;
- another runtime (another process) takes an actor over while the loser's merged batch
  is held back: the merged batch is refused whole.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

import actor_db
from actor_db.kv import KVStore, LmdbKV
from tests.redis_server import RedisServer, require_redis

REPO = pathlib.Path(__file__).resolve().parent.parent
ACTORS = 4
CALLERS = 8

ACTOR_TYPE = """
import actor_db

ledger = actor_db.actor("ledger", state=lambda: {"n": 0}, idle_timeout_s=None,
                        db=actor_db.db(migrations=["CREATE TABLE e (id INTEGER PRIMARY KEY, v TEXT)"]))

@ledger.action
async def insert(c, i):
    await c.db.execute("INSERT INTO e (id, v) VALUES (?, ?)", i, "x" * 50)
    c.state["n"] += 1

@ledger.action
async def ids(c):
    return [r[0] for r in await c.db.execute("SELECT id FROM e")]

@ledger.action
async def check(c):
    return (await c.db.execute("PRAGMA integrity_check"))[0][0]
"""

WRITER = ACTOR_TYPE + textwrap.dedent(f"""
import asyncio, functools, sys
import vfs
from actor_db.kv import LmdbKV

vfs.connect = functools.partial(vfs.connect, vfs=sys.argv[3])

def store():
    if sys.argv[1] == "lmdb":
        return LmdbKV(sys.argv[2])
    from actor_db.kv.redis import RedisKV
    return RedisKV(sys.argv[2], namespace="gate", socket_timeout=2.0)

async def main():
    registry = actor_db.Registry([ledger], kv=store())
    handles = [registry.get_or_create("ledger", f"a{{k}}") for k in range({ACTORS})]
    for attempt in range(20):  # a store just restarted on a loaded machine may time out
        try:
            await asyncio.gather(*(h.wake() for h in handles))
            break
        except actor_db.ActorDBError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.25)
    print("ready", flush=True)

    async def caller(k, c):
        for i in range(10_000_000):
            n = c * 10_000_000 + i
            try:
                await handles[k].call("insert", n)
            except Exception as exc:
                print("error", type(exc).__name__, flush=True)
                await asyncio.sleep(0.01)
                continue
            print(k, n, flush=True)  # acknowledged: the call returned

    await asyncio.gather(*(caller(k, c) for k in range({ACTORS}) for c in range({CALLERS})))

asyncio.run(main())
""")


def ledger() -> Any:
    namespace: dict[str, Any] = {}
    exec(ACTOR_TYPE, namespace)
    return namespace["ledger"]


def start_writer(kind: str, where: str, vfs_kind: str) -> subprocess.Popen[str]:
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, where, vfs_kind], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.wait(timeout=30)
        errors.seek(0)
        raise AssertionError(f"the writer exited before waking its actors: {errors.read()[-3000:]}")
    errors.close()
    return proc


def read_acks(lines: list[str], acked: dict[int, set[int]]) -> int:
    errors = 0
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            acked.setdefault(int(parts[0]), set()).add(int(parts[1]))
        elif parts and parts[0] == "error":
            errors += 1
    return errors


def wait_for_acks(proc: subprocess.Popen[str], count: int, acked: dict[int, set[int]]) -> None:
    assert proc.stdout is not None
    seen = 0
    while seen < count:
        line = proc.stdout.readline()
        assert line, "the writer exited"
        read_acks([line], acked)
        seen += 1


def verify(store: KVStore, acked: dict[int, set[int]]) -> int:
    """Every acknowledged row is there and every database is intact; returns rows found."""
    async def main() -> int:
        registry = actor_db.Registry([ledger()], kv=store)
        found = 0
        for k in range(ACTORS):
            handle = registry.get_or_create("ledger", f"a{k}")
            ids = set(await handle.call("ids"))
            missing = acked.get(k, set()) - ids
            assert not missing, f"actor a{k}: {len(missing)} acknowledged actions lost, e.g. {sorted(missing)[:5]}"
            assert await handle.call("check") == "ok"
            found += len(ids)
        await registry.close()
        return found

    return asyncio.run(main())


def test_kill_dash_nine_under_load_loses_no_acknowledged_action_on_lmdb(tmp_path: pathlib.Path) -> None:
    rng = random.Random(13)
    path = str(tmp_path / "store")
    acked: dict[int, set[int]] = {}
    kinds = ["python", "native"] if __import__("native").AVAILABLE else ["python"]
    for round_no in range(4):
        proc = start_writer("lmdb", path, kinds[round_no % len(kinds)])
        try:
            wait_for_acks(proc, rng.randint(20, 400), acked)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        read_acks(out.splitlines(), acked)  # printed before the kill: acknowledged too
        with LmdbKV(path) as store:
            found = verify(store, acked)
        assert found >= sum(len(v) for v in acked.values())


def test_redis_killed_under_load_loses_no_acknowledged_action(tmp_path: pathlib.Path) -> None:
    require_redis()
    from actor_db.kv.redis import RedisKV

    rng = random.Random(7)
    server = RedisServer(tmp_path / "redis").start()
    acked: dict[int, set[int]] = {}
    proc: subprocess.Popen[str] | None = None
    try:
        for _ in range(2):
            proc = start_writer("redis", server.url, "native" if __import__("native").AVAILABLE else "python")
            wait_for_acks(proc, rng.randint(50, 400), acked)
            server.kill()  # mid-load: writes in flight, batches waiting in gates
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            read_acks(out.splitlines(), acked)
            proc = None
            server.start()  # replays the AOF
            with RedisKV(server.url, namespace="gate") as store:
                verify(store, acked)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        server.stop()


TAKEOVER = ACTOR_TYPE + textwrap.dedent("""
import asyncio, sys
from actor_db.kv import LmdbKV

async def main():
    registry = actor_db.Registry([ledger], kv=LmdbKV(sys.argv[1]))
    await registry.get_or_create("ledger", "a0").wake()   # takes ownership
    await registry.close()

asyncio.run(main())
""")


def test_a_second_runtime_in_another_process_refuses_the_merged_batch_whole(tmp_path: pathlib.Path) -> None:
    import threading

    from actor_db.errors import FencedError
    from tests.runtime_support import HookedStore

    path = str(tmp_path / "store")
    inner = LmdbKV(path)
    hooked = HookedStore(inner)
    entered = threading.Event()
    state: dict[str, Any] = {"armed": 0, "base": 0}
    handle_box: list[Any] = []

    def pending() -> int:
        return int(handle_box[0].metrics()["output_gate_batches"]) - int(state["base"])

    def hook(op: str, actor: str | None, payload: Any) -> None:
        if op != "write" or actor != "ledger/a0" or not state["armed"]:
            return
        state["armed"] -= 1
        if state["armed"] == 1:  # batch 1: hold it until batches 2-5 wait behind it, then let it land
            entered.set()
            while pending() < 5:
                threading.Event().wait(0.001)
        else:  # the merged write of 2-5: another runtime takes the actor over first
            subprocess.run([sys.executable, "-c", TAKEOVER, path], check=True, cwd=REPO, capture_output=True)

    hooked.hook = hook

    async def main() -> None:
        registry = actor_db.Registry([ledger()], kv=hooked)
        handle = registry.get_or_create("ledger", "a0")
        handle_box.append(handle)
        await handle.call("insert", -1)
        state["base"] = handle.metrics()["output_gate_batches"]
        writes, merged = handle.metrics()["kv_writes"], handle.metrics()["output_gate_merged_batches"]
        state["armed"] = 2
        calls = [asyncio.ensure_future(handle.call("insert", 0))]
        while not entered.is_set():  # batch 1 is inside its KV write: the others queue behind it
            await asyncio.sleep(0.001)
        calls += [asyncio.ensure_future(handle.call("insert", i)) for i in range(1, 5)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert outcomes[0] is None  # batch 1 landed before the takeover: acknowledged
        assert all(isinstance(o, FencedError) for o in outcomes[1:]), outcomes
        # two writes: batch 1 alone, then 2-5 merged into one, refused whole
        assert handle.metrics()["kv_writes"] - writes == 2
        assert handle.metrics()["output_gate_merged_batches"] - merged == 3
        await registry.close()

    asyncio.run(main())
    inner.close()
    with LmdbKV(path) as store:
        assert verify(store, {0: {-1, 0}}) == 2  # nothing of the refused merged batch

