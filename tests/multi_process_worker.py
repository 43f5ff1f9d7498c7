"""A worker process of one app: committed increments through the drop-in ``sqlite3``.

Run as ``python -m tests.multi_process_worker SPEC_JSON``; prints one JSON line
``{"acknowledged": n, "locked": m}`` where ``acknowledged`` counts the transactions whose
``COMMIT`` returned without an error. Used by :mod:`tests.test_multi_connection`.
"""

from __future__ import annotations

import json
import sys

from actor_db import dbapi
from tests.fencing_worker import open_store


def main(spec: dict) -> dict:
    store = open_store(tuple(spec["store"]))
    con = dbapi.connect(spec["name"], kv=store, timeout=spec.get("timeout", 10.0),
                        vfs_options={"vfs": spec["vfs"]})
    acknowledged = locked = 0
    try:
        for i in range(spec["increments"]):
            try:
                with con:
                    con.execute("UPDATE counter SET n = n + 1")
                    con.execute("INSERT INTO log (worker, i) VALUES (?, ?)", (spec["worker"], i))
            except dbapi.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                locked += 1
                continue
            acknowledged += 1
    finally:
        con.close()
        store.close()
    return {"acknowledged": acknowledged, "locked": locked}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
