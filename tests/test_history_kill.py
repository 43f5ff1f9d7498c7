"""``kill -9`` during a commit, a restore, a branch and a backup (LMDB, issue 24):
afterwards the history, the database and the backup agree, and nothing acknowledged is
lost."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import vfs

from actor_db.kv import LmdbKV, MemoryKV
from actor_db.ops import backup
from tests.s3_server import CREDENTIALS, S3Server, s3_server  # noqa: F401  (fixture)
from tests.helpers import view_dump
from tests.test_history import _history_matches_database

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run_and_kill(path: pathlib.Path, mode: str, steps: int, s3_url: str | None = None) -> int:
    """Start the worker, let it finish ``steps`` steps, kill -9 it at a random moment of
    the next ones; returns the last step it reported done."""
    args = [sys.executable, "-m", "tests.history_kill_worker", str(path), mode] + ([s3_url] if s3_url else [])
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **CREDENTIALS})
    done = -1
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while done < steps and time.monotonic() < deadline:  # bounded in count and time
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the worker exited early: {proc.stderr.read() if proc.stderr else ''}")
            done = int(line)
        time.sleep(random.uniform(0, 0.05))  # a random point inside the next steps
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return done


def _check(path: pathlib.Path, actors: list[str]) -> None:
    with LmdbKV(path) as store:
        for actor in actors:
            view = store.actor(actor)
            view.acquire_ownership()
            con = vfs.connect(view)  # the owner's open finishes or drops what the kill left
            size = con.kv_file.committed_size
            con.close()
            if size == 0:
                assert actor != "k"
                continue  # a branch the kill cut before its first commit: no database at all
            _history_matches_database(view)
            assert view_dump(view)  # a database, whole


@pytest.mark.parametrize("mode", ["commit", "restore", "branch"])
def test_kill_9_keeps_history_and_database_agreeing(tmp_path: pathlib.Path, mode: str) -> None:
    random.seed(mode)
    for attempt in range(3):
        path = tmp_path / f"store{attempt}"
        done = _run_and_kill(path, mode, 4 + attempt)
        assert done >= 4
        _check(path, ["k", "b0", "b1", "b2"])
        if mode == "commit":  # the last acknowledged commit is there
            with LmdbKV(path) as store:
                con = vfs.connect(store.actor("k"), readonly=True)
                found = con.execute("SELECT count(*) FROM t WHERE v = ?", (bytes([done % 256]) * 3000,)).fetchone()
                con.close()
                assert found[0] >= 1, done


def test_kill_9_during_backup_then_resume(tmp_path: pathlib.Path, s3_server: S3Server) -> None:  # noqa: F811
    s3_server.client().create_bucket(Bucket="kill-bucket")
    path = tmp_path / "store"
    _run_and_kill(path, "backup", 8, s3_server.url)
    _check(path, ["k"])
    loc = backup.parse_location("s3://kill-bucket/p", client=s3_server.client())
    with LmdbKV(path) as store:
        backup.backup_actor(store.actor("k"), loc)
        bases, logs = backup._shipped(loc, "k")
        seqs = [s for first, last, _ in logs for s in range(first, last + 1)]
        assert len(seqs) == len(set(seqs))  # nothing twice
        target = MemoryKV()
        backup.restore_actor(loc, "k", target.actor("k"))
        assert view_dump(target.actor("k")) == view_dump(store.actor("k"))
