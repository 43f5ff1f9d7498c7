"""Backups to S3 (issue 24 item 4) against a real S3 server process (moto's server mode,
started by the fixture on 127.0.0.1): backup, wipe the store, restore every actor at
its last commit and at an earlier time; restartable without gaps or duplicates."""

from __future__ import annotations

import itertools
import pathlib
import time
from typing import Any

import pytest

import vfs
from vfs import history as vh

from actor_db.errors import HistoryError
from actor_db.kv import KVStore, MemoryKV
from actor_db.ops import backup
from tests.cli_support import run_cli
from tests.helpers import view_dump
from tests.s3_server import CREDENTIALS, S3Server, s3_server  # noqa: F401  (fixture)

_buckets = itertools.count()


def _location(server: S3Server) -> backup.S3Location:
    client = server.client()
    bucket = f"bucket-{next(_buckets)}-{id(server) % 10000}"
    client.create_bucket(Bucket=bucket)
    return backup.parse_location(f"s3://{bucket}/prod", client=client)


def _commit(view: Any, sql: str, *args: Any, history: Any = True) -> None:
    con = vfs.connect(view, history=history)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
        con.execute(sql, args)
    finally:
        con.close()


def test_backup_wipe_restore(store: KVStore, s3_server: S3Server) -> None:  # noqa: F811
    loc = _location(s3_server)
    actors = ["a/1", "a/2", "plain"]
    for n, actor in enumerate(actors):
        for i in range(5):
            _commit(store.actor(actor), "INSERT INTO t (v) VALUES (?)", bytes([i]) * (500 + 3000 * n),
                    history=actor != "plain")
    first = {r.actor_id: r for r in backup.backup_store(store, loc)}
    assert first["a/1"].bases == 1 and first["a/1"].logs == 0
    middle = {a: view_dump(store.actor(a)) for a in actors}
    t_middle = time.time()
    time.sleep(0.01)
    for actor in actors:
        _commit(store.actor(actor), "UPDATE t SET v = x'ff' WHERE id % 2 = 0", history=actor != "plain")
        _commit(store.actor(actor), "DELETE FROM t WHERE id = 3", history=actor != "plain")
    second = {r.actor_id: r for r in backup.backup_store(store, loc)}
    assert second["a/1"].bases == 0 and second["a/1"].logs == 2  # only the new commits
    assert second["plain"].bases == 1  # no history: a new image each run
    again = {r.actor_id: r for r in backup.backup_store(store, loc)}
    assert again["a/1"].logs == 0 and again["a/1"].bases == 0  # nothing twice
    last = {a: view_dump(store.actor(a)) for a in actors}
    assert backup.list_backed_up(loc) == sorted(actors)

    empty = MemoryKV()  # "an empty machine"
    sizes = backup.restore_store(loc, empty)
    assert set(sizes) == set(actors)
    for actor in actors:
        assert view_dump(empty.actor(actor)) == last[actor]
    earlier = MemoryKV()
    for actor in ("a/1", "a/2"):
        backup.restore_actor(loc, actor, earlier.actor(actor), at=t_middle)
        assert view_dump(earlier.actor(actor)) == middle[actor]
    with pytest.raises(HistoryError):
        backup.restore_actor(loc, "a/1", earlier.actor("x"), at=1000)
    # The restored actor keeps a history of its own.
    assert vh.decode_bookmark(__import__("actor_db.ops.history", fromlist=["bookmark"]).bookmark(empty.actor("a/1")))


class _FlakyClient:
    """An S3 client whose n-th put fails (a crash mid-run)."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        self.inner, self.fail_at, self.puts = inner, fail_at, 0

    def put_object(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts == self.fail_at:
            raise ConnectionError("injected: the connection dropped")
        return self.inner.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_interrupted_backup_resumes_without_gaps_or_duplicates(s3_server: S3Server,  # noqa: F811
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "MAX_LOG_BYTES", 1)  # one object per commit: a crash between objects
    store = MemoryKV()
    view = store.actor("r")
    loc = _location(s3_server)
    _commit(view, "INSERT INTO t (v) VALUES (x'01')")
    backup.backup_actor(view, loc)
    for i in range(6):
        _commit(view, "INSERT INTO t (v) VALUES (?)", bytes([i]) * 100)
    flaky = backup.S3Location(loc.bucket, loc.prefix, _FlakyClient(loc.client, 4))
    with pytest.raises(ConnectionError):
        backup.backup_actor(view, flaky)  # 3 commits shipped, then the connection drops
    result = backup.backup_actor(view, loc)
    assert result.logs == 3 and result.bases == 0
    bases, logs = backup._shipped(loc, "r")
    assert [(first, last) for first, last, _ in logs] == [(bases[0][0] + i, bases[0][0] + i) for i in range(1, 7)]
    target = MemoryKV()
    backup.restore_actor(loc, "r", target.actor("r"))
    assert view_dump(target.actor("r")) == view_dump(view)


def test_follow_ships_new_commits(s3_server: S3Server) -> None:  # noqa: F811
    store = MemoryKV()
    view = store.actor("f")
    loc = _location(s3_server)
    _commit(view, "INSERT INTO t (v) VALUES (x'01')")
    runs = backup.follow(store, loc, interval_s=0.01, duration_s=0.0)
    assert runs == 1
    _commit(view, "INSERT INTO t (v) VALUES (x'02')")
    backup.follow(store, loc, interval_s=0.01, stop=lambda: True)
    target = MemoryKV()
    backup.restore_store(loc, target)
    assert view_dump(target.actor("f")) == view_dump(view)


def test_backup_and_restore_commands(tmp_path: pathlib.Path, s3_server: S3Server) -> None:  # noqa: F811
    from actor_db.kv import LmdbKV

    s3_server.client().create_bucket(Bucket="cli-bucket")
    with LmdbKV(tmp_path / "src") as src:
        _commit(src.actor("c1"), "INSERT INTO t (v) VALUES (x'0102')")
        expected = view_dump(src.actor("c1"))
    env = dict(CREDENTIALS)
    shipped = run_cli("--kv", f"lmdb:{tmp_path / 'src'}", "backup", "--to", "s3://cli-bucket/x", "--endpoint-url",
                      s3_server.url, cwd=tmp_path, env=env)
    assert shipped.returncode == 0, shipped
    restored = run_cli("--kv", f"lmdb:{tmp_path / 'dst'}", "restore", "--from", "s3://cli-bucket/x", "--endpoint-url",
                       s3_server.url, cwd=tmp_path, env=env)
    assert restored.returncode == 0, restored
    with LmdbKV(tmp_path / "dst") as dst:
        assert view_dump(dst.actor("c1")) == expected
