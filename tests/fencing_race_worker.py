"""A runtime in its own process that races another for one actor (issue 29, item 6).

Run as ``python -m tests.fencing_race_worker SPEC_JSON``. It opens an
:class:`actor_db.Registry` on the LMDB store, writes ``ready``, waits for ``go`` on
stdin, then makes ``calls`` calls to the ``ledger`` actor from ``concurrency`` tasks (a
write, and every third call a read). A call that finds the actor asleep wakes it,
which takes ownership and fences the other runtime's next write, so the two take the
actor from each other over and over. The last stdout line is a JSON report: ``ok``
(acknowledged writes, as ``[worker, n]`` pairs) and ``errors`` (error class name ->
count and up to 3 messages).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import actor_db
from actor_db.kv import LmdbKV


def ledger_type(output_gate: bool) -> Any:
    ledger = actor_db.actor("ledger", output_gate=output_gate, idle_timeout_s=None,
                            db=actor_db.db(migrations=["CREATE TABLE entries (who TEXT NOT NULL, n INTEGER NOT NULL, "
                                                       "pad BLOB)"]))

    @ledger.action
    async def write(c: Any, who: str, n: int) -> int:
        await c.db.execute("INSERT INTO entries (who, n, pad) VALUES (?, ?, randomblob(200))", who, n)
        return n

    @ledger.action
    async def rows(c: Any) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in await c.db.execute("SELECT who, n FROM entries")]

    @ledger.action
    async def count(c: Any) -> int:
        return int((await c.db.execute("SELECT count(*) FROM entries"))[0][0])

    return ledger


async def race(spec: dict[str, Any]) -> dict[str, Any]:
    store = LmdbKV(spec["path"])
    registry = actor_db.Registry([ledger_type(spec["output_gate"])], kv=store)
    handle = registry.get_or_create("ledger", key="shared")
    ok: list[list[Any]] = []
    errors: dict[str, Any] = {}
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def caller(first: int) -> None:
        for n in range(first, spec["calls"], spec["concurrency"]):
            try:
                if n % 3 == 2:
                    await handle.call("count")
                else:
                    await handle.call("write", spec["worker"], n)
                    ok.append([spec["worker"], n])
            except Exception as exc:
                entry = errors.setdefault(type(exc).__name__, {"count": 0, "messages": []})
                entry["count"] += 1
                if len(entry["messages"]) < 3:
                    entry["messages"].append(str(exc)[:300])

    await asyncio.gather(*(caller(i) for i in range(spec["concurrency"])))
    try:
        await handle.sleep()
    except Exception as exc:
        errors.setdefault("sleep:" + type(exc).__name__, {"count": 1, "messages": [str(exc)[:300]]})
    store.close()
    return {"ok": ok, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(race(json.loads(sys.argv[1])))), flush=True)
