"""A real app in its own process: the actor runtime writing one actor every few ms.

``python -m tests.live_app_worker SPEC STOP_FILE`` opens the store (a ``--kv`` spec),
calls the ``ledger/k`` actor's ``add`` action every ~3 ms until ``STOP_FILE`` exists
(at most 60 s), then prints one JSON line: calls that succeeded, calls that failed with
``FencedError`` (their cause chain), and the other failures. It prints ``ready`` once
the actor exists, so the test knows when to start disturbing it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import actor_db
from actor_db.defaults import open_store
from actor_db.errors import FencedError, find_cause

ledger = actor_db.actor("ledger", db=actor_db.db(migrations=["CREATE TABLE log (id INTEGER PRIMARY KEY, v INTEGER)"]))


@ledger.action
async def add(c: actor_db.Context, i: int) -> None:
    await c.db.execute("INSERT INTO log (v) VALUES (?)", i)


async def main(spec: str, stop_file: str) -> None:
    store = open_store(spec)
    ok = fenced = 0
    other: list[str] = []
    async with actor_db.Registry([ledger], kv=store) as registry:
        handle = registry.get_or_create("ledger", key="k")
        await handle.call("add", -1)
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        i = 0
        while not os.path.exists(stop_file) and time.monotonic() < deadline:
            try:
                await handle.call("add", i)
                ok += 1
            except Exception as exc:
                if find_cause(exc, FencedError) is not None:
                    fenced += 1
                else:
                    other.append(f"{type(exc).__name__}: {exc}")
            i += 1
            await asyncio.sleep(0.003)
    store.close()
    print(json.dumps({"ok": ok, "fenced": fenced, "other": other[:5]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
