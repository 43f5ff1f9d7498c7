"""Behaviour parity: random workloads give identical results on the KV VFS and on a
stdlib ``sqlite3`` in-memory database (hypothesis), with ``integrity_check`` = ok and
the same content after a reopen from the KV."""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

import apsw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vfs

from actor_db.kv import KVStore
from tests.helpers import integrity

SIZES = st.sampled_from([0, 1, 100, 4095, 4096, 4097, 8191, 8193, 20_000]) | st.just(3 * 1024 * 1024 + 7)
KEYS = st.integers(min_value=1, max_value=30)

OPS = st.one_of(
    st.tuples(st.just("insert"), KEYS, SIZES),
    st.tuples(st.just("update"), KEYS, SIZES),
    st.tuples(st.just("delete"), KEYS),
    st.tuples(st.just("delete_range"), KEYS),
    st.tuples(st.just("select")),
    st.tuples(st.just("begin")),
    st.tuples(st.just("commit")),
    st.tuples(st.just("rollback")),
    st.tuples(st.just("savepoint")),
    st.tuples(st.just("release")),
    st.tuples(st.just("rollback_to")),
    st.tuples(st.just("vacuum")),
    st.tuples(st.just("create_index")),
    st.tuples(st.just("page_size"), st.sampled_from([1024, 4096, 8192])),
)


def blob(key: int, size: int) -> bytes:
    pattern = bytes((key * 31 + i) % 256 for i in range(256))
    return (pattern * (size // 256 + 1))[:size]


def statements(op: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    kind = op[0]
    if kind == "insert":
        return "INSERT OR REPLACE INTO t (id, v, n) VALUES (?, ?, ?)", (op[1], blob(op[1], op[2]), op[2])
    if kind == "update":
        return "UPDATE t SET v = ?, n = ? WHERE id = ?", (blob(op[1] + 7, op[2]), op[2], op[1])
    if kind == "delete":
        return "DELETE FROM t WHERE id = ?", (op[1],)
    if kind == "delete_range":
        return "DELETE FROM t WHERE id >= ?", (op[1],)
    if kind == "select":
        return "SELECT id, n, length(v), hex(substr(v, -16)) FROM t ORDER BY id", ()
    if kind == "create_index":
        return "CREATE INDEX IF NOT EXISTS t_n ON t (n)", ()
    if kind == "page_size":
        return f"PRAGMA page_size={op[1]}", ()
    return {
        "begin": "BEGIN", "commit": "COMMIT", "rollback": "ROLLBACK", "savepoint": "SAVEPOINT sp",
        "release": "RELEASE sp", "rollback_to": "ROLLBACK TO sp", "vacuum": "VACUUM",
    }[kind], ()


def run(execute: Any, sql: str, args: tuple[Any, ...]) -> Any:
    try:
        return ("ok", [tuple(r) for r in execute(sql, args)])
    except (apsw.Error, sqlite3.Error) as exc:
        # Both engines are SQLite: the same statement fails in both, for the same reason.
        return ("error", str(exc).split(":")[0])


_actors = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(OPS, min_size=1, max_size=40))
def test_random_workloads_match_stdlib_sqlite(store: KVStore, vfs_kind: str, ops: list[tuple[Any, ...]]) -> None:
    actor = f"parity-{next(_actors)}"
    kv_con = vfs.connect(store.actor(actor), vfs=vfs_kind, cache_chunks=16, max_dirty_bytes=1 << 20)
    ref = sqlite3.connect(":memory:", isolation_level=None)
    schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, n INTEGER)"
    kv_con.execute(schema)
    ref.execute(schema)
    for op in ops:
        sql, args = statements(op)
        got = run(kv_con.execute, sql, args)
        want = run(ref.execute, sql, args)
        if op[0] == "page_size":
            continue  # page size is not observable in results; it only changes the layout
        assert got == want, (op, got, want)
    if ref.in_transaction:
        ref.execute("COMMIT")
    if not kv_con.getautocommit():
        kv_con.execute("COMMIT")
    final = run(kv_con.execute, *statements(("select",)))
    assert final == run(ref.execute, *statements(("select",)))
    assert integrity(kv_con) == "ok"
    kv_con.close()
    reopened = vfs.connect(store.actor(actor), vfs=vfs_kind)
    assert run(reopened.execute, *statements(("select",))) == final
    assert integrity(reopened) == "ok"
    reopened.close()
    ref.close()
