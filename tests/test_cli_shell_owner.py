"""A shell that would write to an actor served by a live ``actor-db serve`` node is
refused with a message naming the node, unless ``--force``; once the node's lease is
gone the write goes through. Every driver."""

from __future__ import annotations

import io

import pytest

from vfs.preload import PreloadRequest

import actor_db
from actor_db.cli.common import CLIError
from actor_db.cli.shell import run_shell
from actor_db.kv import KVStore
from actor_db.kv.leases import encode_owner


def _serve(store: KVStore, actor: str, node: str, instance: str, lease_ms: int) -> None:
    """What a serving node does: its heartbeat, then a claim of the actor (1 round trip each)."""
    assert store.heartbeat(node, instance.encode("ascii"), b"{}", lease_ms, join=True)
    store._claim(actor, PreloadRequest(keys=[], ranges=[]), encode_owner(node, instance), [])


def test_a_write_to_an_actor_a_live_node_serves_is_refused(store: KVStore) -> None:
    con = actor_db.connect("served", kv=store)
    with con:
        con.execute("create table t(x)")
    con.close()
    _serve(store, "served", "node-a", "i1", lease_ms=60_000)
    out = io.StringIO()
    assert run_shell(store.actor("served"), ["select count(*) from t"], create=False, stdout=out) == 0  # reads: fine
    with pytest.raises(CLIError, match="served by the live node 'node-a'.*--force"):
        run_shell(store.actor("served"), ["insert into t values (1)"], create=False, stdout=out)
    assert run_shell(store.actor("served"), ["insert into t values (2)"], create=False, force=True, stdout=out) == 0
    assert store.leave("node-a", b"i1")  # the node leaves: its actors are free
    assert run_shell(store.actor("served"), ["insert into t values (3)"], create=False, stdout=out) == 0
    con = actor_db.connect("served", kv=store)
    assert con.execute("select x from t order by x").fetchall() == [(2,), (3,)]
    con.close()
