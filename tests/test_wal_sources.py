"""WAL-mode SQLite sources come in usable (issue 28, item 1, the import side).

Every way in — ``import_database`` (``actor-db import``), the drop-in's
``restore_from`` (stdlib source) and ``backup`` (a drop-in file connection as source),
``deserialize`` — from a WAL-mode file, clean (header bytes 18-19 = 2, 2, no ``-wal``)
or with a live ``-wal`` holding the last commits of a writer that still runs in another
process: the actor opens on both VFSes with every row, passes ``integrity_check``, its
page 1 says rollback mode (1, 1), and the user's files are byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import pathlib
import sqlite3
import subprocess
import sys
from typing import Iterator

import pytest

import actor_db
from vfs.keys import FILE_MAIN, chunk_key

from actor_db.kv import KVStore
from actor_db.ops import import_database
from tests.cli_support import run_cli
from tests.drivers import vfs_kinds

CLEAN_ROWS = 500
LIVE_ROWS = 300  # committed after the last checkpoint: only in the -wal file

_WRITER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("PRAGMA wal_autocheckpoint=0")  # keep the new commits in the -wal file
con.executemany("INSERT INTO t (v) VALUES (?)", [(f"live {i}",) for i in range(int(sys.argv[2]))])
con.commit()
print("ready", flush=True)
sys.stdin.read()  # hold the connection (and the -wal) open until the test is done
con.close()
"""


def _make_wal_file(path: pathlib.Path) -> None:
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i} " + "x" * 50,) for i in range(CLEAN_ROWS)])
    con.commit()
    con.close()  # a clean close: checkpointed, no -wal left, header still says WAL
    assert path.read_bytes()[18:20] == b"\x02\x02"
    assert not pathlib.Path(f"{path}-wal").exists()


@pytest.fixture
def clean_wal(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "clean.db"
    _make_wal_file(path)
    return path


@pytest.fixture
def live_wal(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A WAL file whose writer still runs in another process, its last commits only in -wal."""
    path = tmp_path / "live.db"
    _make_wal_file(path)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(LIVE_ROWS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        assert pathlib.Path(f"{path}-wal").stat().st_size > 0
        yield path
    finally:
        writer.communicate("", timeout=30)


def _digest(path: pathlib.Path) -> dict[str, str]:
    """Hashes of the database file and its non-empty -wal: the user's files must not
    change. (Any SQLite reader of a WAL file, ours too, may create an EMPTY -wal and a
    -shm next to it, as SQLite's own readers do; those hold no data.)"""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (path, pathlib.Path(f"{path}-wal")) if p.exists() and p.stat().st_size}


def _assert_usable(store: KVStore, actor: str, rows: int) -> None:
    head = store.actor(actor).get_many([chunk_key(FILE_MAIN, 0)])[0]
    assert head is not None and head[18:20] == b"\x01\x01"  # rollback-journal mode
    for kind in vfs_kinds():
        con = actor_db.connect(actor, kv=store, vfs_options={"vfs": kind})
        try:
            assert con.execute("SELECT count(*) FROM t").fetchone() == (rows,)
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            con.execute("INSERT INTO t (v) VALUES ('after')")  # and it is writable
            con.rollback()
        finally:
            con.close()


def test_import_of_a_clean_wal_file(store: KVStore, clean_wal: pathlib.Path) -> None:
    before = _digest(clean_wal)
    result = import_database(clean_wal, store.actor("clean"))
    assert result.pages == clean_wal.stat().st_size // 4096
    _assert_usable(store, "clean", CLEAN_ROWS)
    assert _digest(clean_wal) == before


def test_import_of_a_wal_file_with_a_live_writer(store: KVStore, live_wal: pathlib.Path) -> None:
    before = _digest(live_wal)
    import_database(live_wal, store.actor("live"))
    _assert_usable(store, "live", CLEAN_ROWS + LIVE_ROWS)  # the -wal's commits came along
    assert _digest(live_wal) == before  # not checkpointed, not truncated


def test_restore_from_a_stdlib_wal_connection(store: KVStore, live_wal: pathlib.Path) -> None:
    source = sqlite3.connect(live_wal)
    target = actor_db.connect("restored", kv=store)
    try:
        target.restore_from(source)
    finally:
        target.close()
        source.close()
    _assert_usable(store, "restored", CLEAN_ROWS + LIVE_ROWS)


def test_backup_from_a_dropin_wal_file_connection(store: KVStore, clean_wal: pathlib.Path) -> None:
    before = _digest(clean_wal)
    source = actor_db.connect(str(clean_wal))  # a path: an ordinary file connection
    target = actor_db.connect("backed", kv=store)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    _assert_usable(store, "backed", CLEAN_ROWS)
    assert _digest(clean_wal) == before


def test_deserialize_of_a_wal_image(store: KVStore, clean_wal: pathlib.Path) -> None:
    image = sqlite3.connect(clean_wal).serialize()
    assert image[18:20] == b"\x02\x02"
    target = actor_db.connect("image", kv=store)
    try:
        target.deserialize(image)
    finally:
        target.close()
    _assert_usable(store, "image", CLEAN_ROWS)


def test_console_script_imports_a_live_wal_file(live_wal: pathlib.Path, tmp_path: pathlib.Path) -> None:
    spec = f"lmdb:{tmp_path / 'store'}"
    result = run_cli("--kv", spec, "import", str(live_wal), "app", cwd=tmp_path)
    assert result.returncode == 0, result
    count = run_cli("--kv", spec, "shell", "app", "-c", "SELECT count(*) FROM t", cwd=tmp_path)
    assert (count.returncode, count.stdout.strip()) == (0, str(CLEAN_ROWS + LIVE_ROWS)), count
    check = run_cli("--kv", spec, "integrity", "app", cwd=tmp_path)
    assert check.stdout.strip() == "app: ok", check
