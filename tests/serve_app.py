"""The Registry the serve tests run as real nodes: ``actor-db serve tests.serve_app:registry``.

The store comes from ``--kv`` (``$ACTOR_DB_KV``). ``ledger`` keeps every item it was
given in its SQLite database (an acknowledged ``add`` must be found afterwards);
``counter`` keeps a number in its state.
"""

from __future__ import annotations

import os

import actor_db

ledger = actor_db.actor("ledger", db=actor_db.db(migrations=["CREATE TABLE items (id TEXT PRIMARY KEY)"]))


@ledger.action
async def add(c, item):  # type: ignore[no-untyped-def]
    await c.db.execute("INSERT INTO items VALUES (?)", item)
    return item


@ledger.action
async def items(c):  # type: ignore[no-untyped-def]
    return [row[0] for row in await c.db.execute("SELECT id FROM items ORDER BY id")]


counter = actor_db.actor("counter", state=lambda: {"n": 0})


@counter.action
def hit(c, k=1):  # type: ignore[no-untyped-def]
    c.state["n"] += k
    return c.state["n"]


@counter.action
def get(c):  # type: ignore[no-untyped-def]
    return c.state["n"]


@counter.action
def fail(c, message):  # type: ignore[no-untyped-def]
    raise ValueError(message)


@counter.action
def pid(c):  # type: ignore[no-untyped-def]
    return os.getpid()


registry = actor_db.Registry([ledger, counter])
