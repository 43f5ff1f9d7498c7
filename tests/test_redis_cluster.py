"""RedisKV on a real 3-master Redis Cluster started on loopback ports.

Every per-actor call is single-slot (the actor's hash tag), so batches stay atomic Lua
scripts and a cold start stays one round trip; actors spread over all masters.
The whole shared behavioural suite also runs on the cluster when
``ACTOR_DB_TEST_REDIS_CLUSTER=1`` (``redis-cluster`` in ``tests/drivers.py``).
"""

from __future__ import annotations

from typing import Iterator

import pytest
from redis.crc import key_slot

import vfs
from vfs.protocol import PreloadRequest, WriteBatch

from actor_db.errors import FencedError
from actor_db.kv.redis import RedisKV
from tests.helpers import integrity, rows
from tests.redis_server import fresh_namespace, session_cluster


@pytest.fixture
def cluster_store() -> Iterator[RedisKV]:
    cluster = session_cluster()
    store = RedisKV(cluster.client(), namespace=fresh_namespace("cl"))
    try:
        yield store
    finally:
        store.drop_namespace()
        store.client.close()


def test_the_cluster_has_three_masters_and_actors_spread_over_them(cluster_store: RedisKV) -> None:
    client = cluster_store.client
    primaries = client.get_primaries()
    assert len(primaries) == 3
    ids = [f"actor-{i}" for i in range(30)]
    for actor_id in ids:
        cluster_store.actor(actor_id).write(WriteBatch(puts={b"\x01": actor_id.encode()}))
    nodes_used = set()
    for actor_id in ids:
        keys = [k for k in client.scan_iter(match=f"{cluster_store.namespace}:{{{actor_id.encode().hex()}}}:*")]
        assert len({key_slot(k) for k in keys}) == 1  # one slot per actor
        nodes_used.add(client.get_node_from_key(keys[0]).name)
    assert len(nodes_used) == 3
    assert cluster_store.actor_ids() == sorted(ids, key=lambda i: (len(i), i))  # SCAN of every master
    assert [cluster_store.actor(i).get_many([b"\x01"])[0] for i in ids] == [i.encode() for i in ids]


def test_databases_on_the_cluster_commit_in_one_call_and_cold_start_in_one(cluster_store: RedisKV) -> None:
    for n in range(6):  # several actors, so several masters
        con = vfs.connect(cluster_store.actor(f"db-{n}"))
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        with con:
            con.executemany("INSERT INTO t (v) VALUES (?)", [(f"{n}:{i}",) for i in range(2000)])
        before = cluster_store.round_trips
        con.execute("UPDATE t SET v = 'x' WHERE id = 5")
        assert cluster_store.round_trips - before == 1
        con.close()
    for n in range(6):
        kv = cluster_store.actor(f"db-{n}")
        before = cluster_store.round_trips
        preload = kv.acquire_and_preload(PreloadRequest(keys=vfs.sqlite_preload_keys(),
                                                        ranges=vfs.sqlite_preload_ranges()))
        con = vfs.connect(kv, preload=preload)
        assert rows(con, "SELECT count(*), (SELECT v FROM t WHERE id = 5) FROM t") == [(2000, "x")]
        assert cluster_store.round_trips - before == 1 and con.stats.live_reads == 0
        assert integrity(con) == "ok"
        con.close()


def test_fencing_on_the_cluster(cluster_store: RedisKV) -> None:
    old = cluster_store.actor("owned")
    old.acquire_ownership()
    new = cluster_store.actor("owned")
    new.acquire_ownership()
    with pytest.raises(FencedError):
        old.write(WriteBatch(puts={b"k": b"stale"}))
    new.write(WriteBatch(puts={b"k": b"fresh"}))
    assert old.get_many([b"k"]) == [b"fresh"]
