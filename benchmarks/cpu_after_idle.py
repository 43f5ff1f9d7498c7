"""CPU per 1-row write action, with and without idle time between actions.

``python -m benchmarks.cpu_after_idle --mode M --actions N`` prints one JSON line.

One actor, one caller, MemoryKV, the native VFS when built. Modes:

- ``back-to-back``: no KV latency, the next call right away (the hot path);
- ``kv-5ms``: every KV round trip takes 5 ms (:class:`benchmarks.kvlatency.LatencyKV`);
- ``idle-5ms``: no KV latency, but the caller sleeps 5 ms (GIL released, process idle)
  after each call.

``--store memory`` (``back-to-back`` and ``idle-5ms`` only) writes to a plain
``MemoryKV`` instead of ``LatencyKV(MemoryKV(), 0)``: the store applies a commit in the
committing thread (``instant_writes``), so no group-commit round runs on the event loop;
the default measures that round, as a network store's commit makes it.

``floor-5ms`` runs no actor-db code at all: the least any asyncio program pays for the
same call shape. Each call is one 1-row ``INSERT`` in a ``BEGIN``/``COMMIT`` on an
in-memory apsw connection, then a wait of 5 ms on a loop timer (as the latency store's
group write is awaited). What the other modes cost above it is actor-db's.

``--history off`` runs the actor with ``history=False`` (the default is the runtime's,
``history=True``: every commit also records its chunks' after-images; see
``docs/history.md``).

``idle-5ms`` runs exactly the code of ``back-to-back``; the difference between them is
what the same instructions cost after the core sat idle (cold caches and branch
predictors, a lower clock), not any hand-off. Comparing ``kv-5ms`` with ``idle-5ms``
isolates what waiting on the KV adds beyond that. CPU is the process's user + system
time (``time.process_time``) over the measured calls, per call, in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import apsw

import actor_db
from actor_db.kv import MemoryKV
from actor_db.runtime.actor import ActorDefinition
from benchmarks.kvlatency import LatencyKV

LATENCY_S = 0.005

def _writer(history: bool) -> ActorDefinition:
    writer = actor_db.actor("writer", db=actor_db.db(migrations=["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"],
                                                     history=history))

    @writer.action
    async def put(c: actor_db.Context, v: int) -> None:
        await c.db.execute("INSERT INTO t (v) VALUES (?)", v)

    return writer


async def floor(actions: int) -> dict[str, float | str | int]:
    """``floor-5ms``: an apsw ``:memory:`` insert and a 5 ms loop-timer wait per call."""
    con = apsw.Connection(":memory:")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    cursor = con.cursor()
    loop = asyncio.get_running_loop()
    waits = 0

    async def call(v: int) -> None:
        nonlocal waits
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO t (v) VALUES (?)", (v,))
        cursor.execute("COMMIT")
        done = loop.create_future()
        loop.call_later(LATENCY_S, done.set_result, None)
        await done
        waits += 1

    for i in range(50):
        await call(i)
    before, wall = time.process_time(), time.perf_counter()
    for i in range(actions):
        await call(i)
    after, wall = time.process_time(), time.perf_counter() - wall
    rows = int(con.execute("SELECT count(*) FROM t").fetchall()[0][0])  # type: ignore[arg-type]
    return {"mode": "floor-5ms", "store": "none", "history": "off", "actions": actions,
            "cpu_per_write_us": (after - before) / actions * 1e6, "wall_per_write_ms": wall / actions * 1e3,
            "rows": rows, "timer_waits": waits}


async def measure(mode: str, actions: int, plain: bool = False, history: bool = True) -> dict[str, float | str | int]:
    if mode == "floor-5ms":
        return await floor(actions)
    if plain and mode == "kv-5ms":
        raise ValueError("--store memory has no latency to inject: use the default store for kv-5ms")
    store = MemoryKV() if plain else LatencyKV(MemoryKV(), LATENCY_S if mode == "kv-5ms" else 0.0)
    pause = LATENCY_S if mode == "idle-5ms" else 0.0
    async with actor_db.Registry([_writer(history)], kv=store) as registry:
        handle = registry.get_or_create("writer", "k")
        for i in range(50):  # wake, migrations, warm-up
            await handle.call("put", i)
        before, wall = time.process_time(), time.perf_counter()
        for i in range(actions):
            await handle.call("put", i)
            if pause:
                time.sleep(pause)
        after, wall = time.process_time(), time.perf_counter() - wall
    cpu = after - before
    return {"mode": mode, "store": "memory" if plain else "latency", "history": "on" if history else "off",
            "actions": actions, "cpu_per_write_us": cpu / actions * 1e6,
            "wall_per_write_ms": wall / actions * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("back-to-back", "kv-5ms", "idle-5ms", "floor-5ms"), required=True)
    parser.add_argument("--actions", type=int, default=400)
    parser.add_argument("--store", choices=("latency", "memory"), default="latency",
                        help="latency: LatencyKV(MemoryKV()) (default); memory: a plain MemoryKV")
    parser.add_argument("--history", choices=("on", "off"), default="on",
                        help="the actor's db(history=): on (the runtime's default) or off")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.mode, args.actions, plain=args.store == "memory",
                                         history=args.history == "on"))))


if __name__ == "__main__":
    main()
