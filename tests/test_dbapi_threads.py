"""Many threads on one KV-backed database through the drop-in ``sqlite3``: no hang, no lost row.

Issue 14: a thread inside ``COMMIT`` (SQLite's connection mutex held, its VFS callback
waiting for the GIL) and another thread calling an apsw method on the same connection
outside the database lock (holding the GIL, waiting for that mutex) froze the whole
process. Every apsw call of the facade now runs under ``_Database.lock``.

Two shapes, on every driver and both VFSes:

- eight threads, each with its OWN ``connect(..., check_same_thread=False)``;
- eight threads SHARING one connection (``check_same_thread=False``).

Each thread writes in ``with con:`` blocks and reads, for many rounds. A write that
fails with ``database is locked`` (another connection held the database longer than
``timeout``) is retried; at the end the table holds exactly the acknowledged rows.

A hang must fail, not block CI: the threads are joined with a deadline (then the test
dumps every thread's stack with :func:`faulthandler.dump_traceback` and fails), and,
because a thread that blocks on a C mutex while holding the GIL freezes the main thread
too, :func:`faulthandler.dump_traceback_later` (a C watchdog thread that needs no GIL)
dumps the stacks (to ``$TMPDIR/actor-db-dbapi-threads-hang-<pid>.txt``: pytest's capture
of stderr dies with the process) and ends the process if even that deadline cannot run.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import pytest

import actor_db.dbapi as sqlite3
from actor_db.kv import KVStore

THREADS = 8
ROUNDS = 40                # rounds of each thread on a shared connection
OWN_ROUNDS = 25            # rounds of each thread with its own connection (they wait for each other's locks)
JOIN_DEADLINE = 300.0      # seconds for all threads to finish (a hang, not a slow run, exceeds it)
HARD_DEADLINE = 420.0      # faulthandler: dump stacks and exit the process (frozen interpreter)
HANG_LOG = os.path.join(tempfile.gettempdir(), f"actor-db-dbapi-threads-hang-{os.getpid()}.txt")


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)


def _run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Run ``targets`` in threads; fail with every thread's stack if they do not finish."""
    errors: list[BaseException] = []
    errors_lock = threading.Lock()

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by the main thread
                with errors_lock:
                    errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True, name=f"dbapi-worker-{i}")
               for i, fn in enumerate(targets)]
    # pytest captures fd 2, which is lost when faulthandler ends the process: the
    # last-resort dump goes to a file named in the test's output and the module doc.
    hang_log = open(HANG_LOG, "w")  # noqa: SIM115  (must outlive the with-less try below)
    print(f"dbapi threads: a frozen process dumps its stacks to {HANG_LOG}", file=sys.stderr)
    faulthandler.dump_traceback_later(HARD_DEADLINE, exit=True, file=hang_log)
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + JOIN_DEADLINE
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                pytest.fail(f"thread {t.name} did not finish within {JOIN_DEADLINE} s "
                            "(hang: stacks dumped to stderr)")
    finally:
        faulthandler.cancel_dump_traceback_later()
        hang_log.close()
    return errors


def _connect(store: KVStore, vfs_kind: str, name: str) -> Any:
    """A connection of a worker thread (retried while the database is locked)."""
    while True:
        try:
            return sqlite3.connect(name, kv=store, vfs_options={"vfs": vfs_kind}, check_same_thread=False,
                                   timeout=30)
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc):
                raise


def _setup(store: KVStore, vfs_kind: str, name: str) -> Any:
    con = sqlite3.connect(name, kv=store, vfs_options={"vfs": vfs_kind}, check_same_thread=False)
    with con:
        con.execute("CREATE TABLE t (worker INTEGER, round INTEGER, payload TEXT)")
    return con


def test_eight_threads_each_with_own_connection(store: KVStore, vfs_kind: str) -> None:
    keeper = _setup(store, vfs_kind, "threads-own")
    acknowledged = [0] * THREADS
    retries = [0] * THREADS

    def worker(n: int) -> Callable[[], None]:
        def run() -> None:
            con = _connect(store, vfs_kind, "threads-own")
            try:
                r = 0
                while r < OWN_ROUNDS:
                    try:
                        with con:
                            con.execute("INSERT INTO t VALUES (?, ?, ?)", (n, r, "x" * (n * 37 % 300)))
                            con.execute("INSERT INTO t VALUES (?, ?, ?)", (n, -r - 1, None))
                    except sqlite3.OperationalError as exc:
                        if not _is_locked(exc):
                            raise
                        retries[n] += 1
                        continue
                    acknowledged[n] += 2
                    r += 1
                    try:
                        seen = con.execute("SELECT count(*) FROM t WHERE worker = ?", (n,)).fetchone()[0]
                        con.execute("SELECT worker, count(*), max(round) FROM t GROUP BY worker").fetchall()
                    except sqlite3.OperationalError as exc:
                        if not _is_locked(exc):
                            raise
                        retries[n] += 1
                        continue
                    assert seen == acknowledged[n], (n, seen, acknowledged[n])
                    # the connection's own state is read too (the freeze was one such call)
                    assert con.total_changes >= 0 and not con.in_transaction
            finally:
                con.close()
        return run

    try:
        errors = _run_threads([worker(n) for n in range(THREADS)])
        assert errors == [], errors
        rows = keeper.execute("SELECT worker, count(*) FROM t GROUP BY worker ORDER BY worker").fetchall()
        assert rows == [(n, acknowledged[n]) for n in range(THREADS)], (rows, acknowledged, retries)
        assert acknowledged == [2 * OWN_ROUNDS] * THREADS
        assert keeper.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        keeper.close()


def test_eight_threads_sharing_one_connection(store: KVStore, vfs_kind: str) -> None:
    con = _setup(store, vfs_kind, "threads-shared")
    acknowledged = [0] * THREADS

    def worker(n: int) -> Callable[[], None]:
        def run() -> None:
            for r in range(ROUNDS):
                with con:
                    con.execute("INSERT INTO t VALUES (?, ?, ?)", (n, r, "y" * (n * 53 % 400)))
                acknowledged[n] += 1
                cur = con.cursor()
                cur.execute("SELECT count(*) FROM t WHERE worker = ?", (n,))
                assert cur.fetchone()[0] >= acknowledged[n]
                con.execute("SELECT worker, sum(length(payload)) FROM t GROUP BY worker").fetchall()
                assert con.total_changes >= acknowledged[n]
                con.in_transaction  # noqa: B018  (an apsw call: must not freeze a committing thread)
        return run

    try:
        errors = _run_threads([worker(n) for n in range(THREADS)])
        assert errors == [], errors
        rows = con.execute("SELECT worker, count(*) FROM t GROUP BY worker ORDER BY worker").fetchall()
        assert rows == [(n, ROUNDS) for n in range(THREADS)]
        assert acknowledged == [ROUNDS] * THREADS
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()


def test_threads_with_own_connections_and_a_shared_one_together(store: KVStore, vfs_kind: str) -> None:
    """Both shapes at once, with cursors left unexhausted and blobs: every apsw call
    path (cursor close, limit, changes, blob I/O) runs while other threads commit."""
    shared = _setup(store, vfs_kind, "threads-mixed")
    with shared:
        shared.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB)")
        shared.execute("INSERT INTO b VALUES (1, zeroblob(64))")
    counts = [0] * THREADS
    # Threads sharing a connection share its transaction: a failed write's rollback would
    # discard a sibling's uncommitted row, so (as an application must) they take turns.
    shared_writes = threading.Lock()

    def own(n: int) -> Callable[[], None]:
        def run() -> None:
            con = _connect(store, vfs_kind, "threads-mixed")
            try:
                r = 0
                while r < ROUNDS // 2:
                    try:
                        with con:
                            con.execute("INSERT INTO t VALUES (?, ?, 'own')", (n, r))
                        cur = con.execute("SELECT * FROM t")  # left open, then replaced
                        cur.fetchone()
                        cur.execute("SELECT 1")
                        cur.close()
                        con.getlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH)
                    except sqlite3.OperationalError as exc:
                        if not _is_locked(exc):
                            raise
                        continue
                    counts[n] += 1
                    r += 1
            finally:
                con.close()
        return run

    def on_shared(n: int) -> Callable[[], None]:
        def run() -> None:
            for r in range(ROUNDS // 2):
                while True:
                    try:
                        with shared_writes, shared:
                            shared.execute("INSERT INTO t VALUES (?, ?, 'shared')", (n, r))
                        break
                    except sqlite3.OperationalError as exc:
                        if not _is_locked(exc):
                            raise
                counts[n] += 1
                try:
                    with shared.blobopen("b", "data", 1, readonly=True) as blob:
                        assert len(blob) == 64
                        blob.read(8)
                except sqlite3.OperationalError as exc:
                    if not _is_locked(exc):
                        raise
        return run

    try:
        half = THREADS // 2
        errors = _run_threads([own(n) for n in range(half)] + [on_shared(n) for n in range(half, THREADS)])
        assert errors == [], errors
        total = shared.execute("SELECT count(*) FROM t").fetchone()[0]
        assert total == sum(counts) == THREADS * (ROUNDS // 2)
    finally:
        shared.close()


CALLS: dict[str, Callable[[Any], Any]] = {
    "execute": lambda con: con.execute("select 2").fetchone(),      # _prepare_sql's limit() froze
    "getlimit": lambda con: con.getlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH),
    "setlimit": lambda con: con.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, -1),
    "in_transaction": lambda con: con.in_transaction,
    "total_changes": lambda con: con.total_changes,
    "call": lambda con: con("select 1"),
    "executescript": lambda con: con.executescript("select 3;"),
    "create_function": lambda con: con.create_function("g", 0, lambda: 1),
    "set_authorizer": lambda con: con.set_authorizer(None),
    "serialize": lambda con: con.serialize(),
    "cursor_close": lambda con: con.cursor().close(),
}


@pytest.mark.parametrize("kind", ["memory", "kv"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_calls_wait_for_a_statement_running_in_another_thread(store: KVStore, vfs_kind: str, kind: str,
                                                              call: str) -> None:
    """A deterministic form of the freeze: thread A runs a statement whose user function
    waits (GIL released, SQLite's connection mutex held) while thread B calls the
    connection. apsw's ``limit`` would wait for the mutex with the GIL held (the process
    froze), other apsw calls raise ``ThreadingViolationError``; through the facade, B
    waits for the database lock and then succeeds."""
    if kind == "memory":
        con = sqlite3.connect(":memory:", check_same_thread=False)
    else:
        con = sqlite3.connect("busy-fn", kv=store, vfs_options={"vfs": vfs_kind}, check_same_thread=False)
    calling = threading.Event()
    in_function = threading.Event()

    def slow() -> int:
        in_function.set()
        calling.wait(30)  # B is about to call (and block) ...
        threading.Event().wait(0.05)  # ... give it time to reach the lock: GIL released meanwhile
        return 1

    con.create_function("slow", 0, slow)
    results: list[Any] = []

    def statement() -> None:
        results.append(con.execute("select slow()").fetchone())

    def other() -> None:
        in_function.wait(30)
        calling.set()
        CALLS[call](con)
        results.append("called")

    try:
        errors = _run_threads([statement, other])
        assert errors == [], errors
        assert sorted(map(str, results)) == sorted(["(1,)", "called"])
    finally:
        con.close()
