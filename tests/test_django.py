"""The Django backend ``actor_db.django``: a small project migrated and used through the
ORM, and Django's own test runner (its test database an actor), on a real LMDB store
and a real redis-server, both VFSes. Each run is its own process (Django's settings are
process-wide)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Iterator

import pytest

import actor_db
from actor_db.defaults import open_store
from tests.drivers import DRIVERS, RedisFactory

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(params=["lmdb", "redis"], ids=str)
def kv_spec(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp(request.param)
    factory = DRIVERS[request.param](tmp)
    try:
        if isinstance(factory, RedisFactory):
            yield f"{factory.url()}?namespace={factory.namespace}"
        else:
            yield f"lmdb:{tmp / 'store'}"
    finally:
        factory.cleanup()


def _run(kv_spec: str, vfs_kind: str, mode: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.django_worker", kv_spec, vfs_kind, mode],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_a_django_project_on_an_actor(kv_spec: str, vfs_kind: str, tmp_path: pathlib.Path) -> None:
    done = _run(kv_spec, vfs_kind, "app", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    reference = _run(f"stdlib:{tmp_path / 'shop.sqlite3'}", vfs_kind, "app", tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert result == json.loads(reference.stdout.strip().splitlines()[-1])  # as Django's own backend
    assert result["orders"] == 20 and result["gold"] == 1 and result["ranks"] == [1, 2, 3]
    store = open_store(kv_spec)
    try:
        con = actor_db.connect("shop", kv=store)
        assert con.execute("select count(*) from shop_order").fetchone() == (20,)
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
        con.close()
    finally:
        store.close()


def test_djangos_test_runner_uses_a_test_actor(kv_spec: str, vfs_kind: str, tmp_path: pathlib.Path) -> None:
    done = _run(kv_spec, vfs_kind, "testrunner", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ran 2 tests" in done.stderr and "OK" in done.stderr
    store = open_store(kv_spec)
    try:
        assert [a for a in store.actor_ids() if "test_shop" in str(a)] == []  # destroyed at the end
    finally:
        store.close()
