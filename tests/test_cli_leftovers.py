"""Leftovers and output (issue 29, item 7).

- An exporter killed mid-export leaves its pinned Redis snapshot copy: it now lives
  2 minutes (not an hour) unless its reader renews it, ``ls --all`` shows it, and
  ``rm`` removes it once stale (never a live reader's copy); a reader whose copy was
  removed gets ``SnapshotChangedError``, never empty pages.
- ``ls`` and ``integrity`` print actor ids escaped: an id holding a newline or a
  terminal escape cannot forge output lines.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
from typing import Iterator

import pytest

from actor_db.kv import KVStore
from actor_db.kv.snapshot import SnapshotChangedError, read_snapshot
from actor_db.ops import import_database
from tests.cli_support import make_sqlite_file, run_cli
from tests.drivers import RedisFactory

_KILLED_EXPORTER = """
import sys, time
from actor_db.kv.redis import RedisKV
from actor_db.kv.snapshot import read_snapshot
store = RedisKV(sys.argv[1], namespace=sys.argv[2], check_persistence=False)
snapshot = read_snapshot(store.actor(sys.argv[3]), pinned=True)
snapshot.get_many([b"\\x08\\x01\\x00\\x00"])
print("pinned", flush=True)
time.sleep(120)  # killed with SIGKILL by the test long before
"""


@pytest.fixture
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KVStore, str, RedisFactory]]:
    factory = RedisFactory(tmp_path_factory.mktemp("redis"))
    store = factory.open()
    try:
        yield store, f"{factory.url()}?namespace={factory.namespace}", factory
    finally:
        factory.cleanup()


def _kill_an_exporter(factory: RedisFactory, actor: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_EXPORTER, factory.url(), factory.namespace, actor],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "pinned"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def test_a_killed_exporters_copy_is_short_lived_visible_and_removable(
        redis: tuple[KVStore, str, RedisFactory], tmp_path: pathlib.Path) -> None:
    from actor_db.kv.redis import PINNED_SNAPSHOT_TTL_S

    store, spec, factory = redis
    source = tmp_path / "src.db"
    make_sqlite_file(source, rows=200)
    import_database(source, store.actor("app"))
    _kill_an_exporter(factory, "app")
    copies = store.snapshot_copies()  # type: ignore[attr-defined]
    assert [c["actor"] for c in copies] == ["app"]
    assert 0 < copies[0]["ttl_s"] <= PINNED_SNAPSHOT_TTL_S <= 120  # minutes, not an hour
    assert not copies[0]["stale"]  # just taken: it could be a live reader's
    listed = run_cli("--kv", spec, "ls", "--all", cwd=tmp_path)
    assert "snapshot copy of app" in listed.stdout and "in use" in listed.stdout, listed
    assert "snapshot copy" not in run_cli("--kv", spec, "ls", cwd=tmp_path).stdout
    # rm never takes a copy that may still be read...
    assert run_cli("--kv", spec, "rm", "-y", "app", cwd=tmp_path).returncode == 0
    assert len(store.snapshot_copies()) == 1  # type: ignore[attr-defined]
    # ...but once it has not been renewed for 2 renewal periods (time passing, here
    # simulated by lowering its TTL), it is stale: listed so, and rm removes it.
    client = store.client  # type: ignore[attr-defined]
    for key in client.scan_iter(match=f"{factory.namespace}:*:s:*".encode()):
        client.expire(key, 30)
    as_json = [json.loads(line) for line in run_cli("--kv", spec, "ls", "--all", "--json", cwd=tmp_path)
               .stdout.splitlines()]
    assert [(r["actor"], r["stale"]) for r in as_json if "snapshot_copy" in r] == [("app", True)]
    removed = run_cli("--kv", spec, "rm", "-y", "app", cwd=tmp_path)
    assert removed.returncode == 0 and "1 leftover snapshot copy" in removed.stderr, removed
    assert store.snapshot_copies() == []  # type: ignore[attr-defined]
    left = list(client.scan_iter(match=f"{factory.namespace}:*".encode()))
    assert all(k.endswith((b":f", b":v")) for k in left), left  # only the fencing counter and version


def test_a_pinned_reader_never_reads_a_removed_copy(redis: tuple[KVStore, str, RedisFactory],
                                                    tmp_path: pathlib.Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import actor_db.kv.redis as redis_module

    store, _, _ = redis
    source = tmp_path / "src.db"
    make_sqlite_file(source, rows=20)
    import_database(source, store.actor("app"))
    snapshot = read_snapshot(store.actor("app"), pinned=True)
    try:
        head = snapshot.get_many([b"\x08\x01\x00\x00"])[0]
        assert head is not None
        monkeypatch.setattr(redis_module, "PINNED_RENEW_S", 0)  # every read renews first
        assert snapshot.get_many([b"\x08\x01\x00\x00"]) == [head]  # renewed: still there
        assert store.drop_snapshot_copies("app", stale_only=False) == 1  # type: ignore[attr-defined]
        with pytest.raises(SnapshotChangedError, match="expired or was removed"):
            snapshot.get_many([b"\x08\x01\x00\x00"])
        with pytest.raises(SnapshotChangedError):
            snapshot.scan(b"", b"")
    finally:
        snapshot.close()


def test_ls_and_integrity_escape_actor_ids(tmp_path: pathlib.Path) -> None:
    from actor_db.kv import LmdbKV

    evil = "evil\napp: ok\x1b[2J\x07"
    source = tmp_path / "src.db"
    make_sqlite_file(source, rows=5)
    with LmdbKV(tmp_path / "store") as store:
        import_database(source, store.actor(evil))
        import_database(source, store.actor("plain"))
    spec = f"lmdb:{tmp_path / 'store'}"
    listed = run_cli("--kv", spec, "ls", cwd=tmp_path)
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 3  # header + 2 actors: the newline did not make a line
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert lines[1].startswith("evil\\napp: ok\\x1b[2J\\x07 ")
    checked = run_cli("--kv", spec, "integrity", cwd=tmp_path)
    assert checked.returncode == 0, checked
    assert checked.stdout.splitlines() == ["evil\\napp: ok\\x1b[2J\\x07: ok", "plain: ok"]
    as_json = [json.loads(line)["actor"] for line in run_cli("--kv", spec, "ls", "--json", cwd=tmp_path)
               .stdout.splitlines()]
    assert as_json == [evil, "plain"]  # JSON keeps the exact id (escaped by JSON itself)
