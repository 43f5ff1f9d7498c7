"""Two real processes running ``with con: UPDATE ...`` on one Redis-stored database:
none fails. A transaction whose first statement finds that another process committed
after it began is run again (nothing was returned to the caller yet), within the
connection's ``timeout``, as SQLite's busy handler waits for a lock."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Iterator

import pytest

from actor_db import dbapi
from tests.drivers import DRIVERS, DriverFactory, RedisFactory

ROOT = pathlib.Path(__file__).resolve().parent.parent
PER_PROCESS = 500


@pytest.fixture
def redis_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    factory = DRIVERS["redis"](tmp_path_factory.mktemp("redis"))
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.mark.slow
def test_no_cross_process_update_fails_on_redis(redis_driver: DriverFactory, vfs_kind: str) -> None:
    assert isinstance(redis_driver, RedisFactory)
    store = redis_driver.open()
    name = f"retry-{vfs_kind}"
    con = dbapi.connect(name, kv=store, vfs_options={"vfs": vfs_kind})
    with con:
        con.execute("create table counter(n)")
        con.execute("insert into counter values (0)")
        con.execute("create table log(worker, i)")
    con.close()
    spec = {"store": ["redis", redis_driver.url(), redis_driver.namespace], "name": name, "vfs": vfs_kind,
            "increments": PER_PROCESS, "timeout": 30.0}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.multi_process_worker", json.dumps({**spec, "worker": n})],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(2)]
    results = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["locked"] for r in results] == [0, 0]
    assert sum(r["acknowledged"] for r in results) == 2 * PER_PROCESS
    con = dbapi.connect(name, kv=store, vfs_options={"vfs": vfs_kind})
    try:
        assert con.execute("select n from counter").fetchone() == (2 * PER_PROCESS,)
    finally:
        con.close()
        store.close()
