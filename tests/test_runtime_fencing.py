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
        # create: preload+own, then the creation batch and the migration in one write
        assert handle.metrics()["startup_kv_round_trips"] == 2
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
