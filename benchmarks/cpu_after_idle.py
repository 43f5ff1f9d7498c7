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

import actor_db
from actor_db.kv import MemoryKV
from benchmarks.kvlatency import LatencyKV

LATENCY_S = 0.005

writer = actor_db.actor("writer", db=actor_db.db(migrations=["CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"]))


@writer.action
async def put(c: actor_db.ActionContext, v: int) -> None:
    await c.db.execute("INSERT INTO t (v) VALUES (?)", v)


async def measure(mode: str, actions: int, plain: bool = False) -> dict[str, float | str | int]:
    if plain and mode == "kv-5ms":
        raise ValueError("--store memory has no latency to inject: use the default store for kv-5ms")
    store = MemoryKV() if plain else LatencyKV(MemoryKV(), LATENCY_S if mode == "kv-5ms" else 0.0)
    pause = LATENCY_S if mode == "idle-5ms" else 0.0
    async with actor_db.Registry([writer], kv=store) as registry:
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
    return {"mode": mode, "store": "memory" if plain else "latency", "actions": actions,
            "cpu_per_write_us": cpu / actions * 1e6,
            "wall_per_write_ms": wall / actions * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("back-to-back", "kv-5ms", "idle-5ms"), required=True)
    parser.add_argument("--actions", type=int, default=400)
    parser.add_argument("--store", choices=("latency", "memory"), default="latency",
                        help="latency: LatencyKV(MemoryKV()) (default); memory: a plain MemoryKV")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.mode, args.actions, plain=args.store == "memory"))))


if __name__ == "__main__":
    main()
