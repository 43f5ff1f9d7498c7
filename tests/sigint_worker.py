"""A writer process for the real-signal test (issue 29, item 4): large transactions that
spill, interrupted by real ``SIGINT`` s from the parent.

Run as ``python -m tests.sigint_worker SPEC_JSON``. It opens one actor's database on an
LMDB store (``vfs.connect``, the VFS named in the spec), writes ``ready`` on stdout, then
commits transactions ``k = 1, 2, ...`` until the stop file exists. Each transaction
inserts ``ROWS`` rows of ~3 KB (more than ``max_dirty_bytes``: it spills to the staging
range and commits through the redo log) and deletes the rows of older transactions.
A transaction whose ``COMMIT`` returned is acknowledged by ONE ``os.write`` of ``k`` to
the ack file (``O_APPEND``, fsync'd): an interrupt lands before or after that write,
never inside it.

``SIGINT`` raises ``KeyboardInterrupt`` between two bytecodes as Python's default handler
does, but the handler disarms itself when it raises and the loop re-arms it at the
start of each transaction: the worker's own recovery code (``ROLLBACK``) cannot be
interrupted, and every interrupt lands in the transaction's statements (and the VFS
code they run). Signals that arrive disarmed are counted, not raised.

The last stdout line is a JSON report: ``acknowledged``, ``interrupts`` (caught
``KeyboardInterrupt`` s), ``corrupt`` (``apsw.CorruptError`` s the live connection
answered: must be 0) and ``errors`` (the first few other errors, as text).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from types import FrameType
from typing import Any

import apsw

import vfs
from actor_db.kv import LmdbKV

ROWS = 40
"""Rows per transaction, ~3 KB each: ~30 pages, past ``max_dirty_bytes``."""
KEEP = 3
"""Transactions whose rows stay (older ones are deleted: the file churns its freelist)."""


_armed = False
_ignored = 0


_handler: Any = signal.default_int_handler
"""The handler in place when the worker installed its own: the one it delegates to."""


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """What the handler in place does (raise ``KeyboardInterrupt`` where the signal
    lands), once per arming."""
    global _armed, _ignored
    if _armed:
        _armed = False
        _handler(signum, frame)
        return
    _ignored += 1


def _rollback(con: apsw.Connection, report: dict[str, Any]) -> None:
    """Roll back an open transaction; interrupts may land in the first tries (SQLite's
    rollback playback runs through the VFS), the last one runs disarmed."""
    global _armed
    for attempt in range(3):
        try:
            _armed = attempt < 2
            if con.in_transaction:
                con.execute("ROLLBACK")
            _armed = False
            return
        except KeyboardInterrupt:
            report["interrupts"] += 1
        except apsw.Error as exc:
            _armed = False
            _record(report, exc)
            return


def _record(report: dict[str, Any], exc: apsw.Error) -> None:
    if "KeyboardInterrupt" in str(exc):  # the native VFS reports it as an I/O error
        report["interrupts"] += 1
        return
    if isinstance(exc, apsw.CorruptError):
        report["corrupt"] += 1
    if len(report["errors"]) < 5:
        report["errors"].append(f"{type(exc).__name__}: {exc}")


def _transaction(con: apsw.Connection, statements: list[tuple[str, tuple[int, ...]]], rng: random.Random,
                 report: dict[str, Any]) -> bool:
    """Run ``statements`` (BEGIN ... COMMIT); whether COMMIT returned. After an
    interrupted statement, a transaction SQLite kept open is either continued (the
    statement retried, as an application that retries would) or given up."""
    global _armed
    j = tries = 0
    while j < len(statements):
        sql, args = statements[j]
        try:
            _armed = True
            con.execute(sql, args)
            _armed = False
            j += 1
            continue
        except KeyboardInterrupt:
            report["interrupts"] += 1
        except apsw.Error as exc:
            _armed = False
            _record(report, exc)
        tries += 1
        if j == 0 or not con.in_transaction or tries > 3 or rng.random() < 0.5:
            return False
        report["retried"] += 1
    return True


def run(spec: dict[str, Any]) -> dict[str, Any]:
    store = LmdbKV(spec["path"])
    kv = store.actor(spec["actor"])
    kv.acquire_ownership()
    con = vfs.connect(kv, vfs=spec["vfs"], max_dirty_bytes=8 * 4096)
    con.execute("PRAGMA cache_size=8")  # SQLite spills to the VFS mid-transaction
    con.execute("CREATE TABLE IF NOT EXISTS acks (k INTEGER PRIMARY KEY)")
    con.execute("CREATE TABLE IF NOT EXISTS big (k INTEGER, i INTEGER, v BLOB)")
    con.execute("CREATE INDEX IF NOT EXISTS big_k ON big (k)")
    fd = os.open(spec["acks"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    report: dict[str, Any] = {"acknowledged": 0, "interrupts": 0, "retried": 0, "corrupt": 0, "errors": []}
    global _armed, _handler
    _handler = signal.signal(signal.SIGINT, _on_sigint)  # while a Python-VFS file is open: vfs.interrupts
    print("ready", flush=True)
    rng = random.Random(spec["seed"])
    k = 0
    while not os.path.exists(spec["stop"]) and k < spec["max_transactions"]:
        k += 1
        statements: list[tuple[str, tuple[int, ...]]] = [
            ("BEGIN", ()),
            ("INSERT INTO acks (k) VALUES (?)", (k,)),
            ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
             "INSERT INTO big (k, i, v) SELECT ?, i, randomblob(3000) FROM s", (ROWS, k)),
            ("DELETE FROM big WHERE k <= ?", (k - KEEP,)),
            ("COMMIT", ()),
        ]
        if _transaction(con, statements, rng, report):
            os.write(fd, b"%d\n" % k)
            os.fsync(fd)
            report["acknowledged"] += 1
        _rollback(con, report)
    _armed = False
    con.close()
    report["ignored"] = _ignored
    os.close(fd)
    store.close()
    return report


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    print(json.dumps(result), flush=True)
