"""RedisKV beyond the shared suite: wire round trips, parity of the server-side preload
with :func:`vfs.preload.evaluate_preload`, the key layout, crashes and connection loss.

The shared behavioural suite (tests/test_kv_protocol.py, test_round_trips.py, ...) runs
on RedisKV through the ``redis`` entry of ``tests/drivers.py``.
"""

from __future__ import annotations

import pathlib
import random
from collections import Counter
from typing import Any, Iterator

import apsw
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

import vfs
from vfs.preload import NOT_LOADED
from vfs.protocol import KeyRange, PrefixBudget, PreloadRequest, WriteBatch

from actor_db.errors import ConfigurationError, KVUnavailableError
from actor_db.kv import MemoryKV
from actor_db.kv.redis import _LUA_WRITE as WRITE_SCRIPT
from actor_db.kv.redis import RedisKV
from tests.helpers import full_preload, integrity, rows
from tests.redis_server import RedisServer, fresh_namespace, session_server


class CountingConnection(redis.Connection):
    """A real connection that counts what it sends: one send = one network round trip
    (a single command or a whole pipeline goes out in one ``send_packed_command``)."""

    sends = 0
    commands: list[bytes] = []
    after_send: Any = None

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        super().send_packed_command(command, check_health)
        type(self).sends += 1
        head = command if isinstance(command, (bytes, bytearray)) else b"".join(bytes(c) for c in command)
        name = head.split(b"\r\n")[2] if head.startswith(b"*") else head[:16]
        type(self).commands.append(bytes(name).upper())
        hook = type(self).after_send
        if hook is not None:
            hook(bytes(name).upper())


def counting_client(url: str, **kwargs: Any) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection, **kwargs)
    return redis.Redis(connection_pool=pool)


@pytest.fixture
def redis_store() -> Iterator[RedisKV]:
    store = RedisKV(counting_client(session_server().url), namespace=fresh_namespace("rt"))
    try:
        yield store
    finally:
        store.drop_namespace()
        store.close()
        store.client.close()


def make_db(kv: Any, n: int) -> None:
    con = vfs.connect(kv)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    with con:
        con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(n)])
    con.close()


def test_every_protocol_call_is_exactly_one_network_send(redis_store: RedisKV) -> None:
    kv = redis_store.actor("wire")
    batch = WriteBatch()
    for i in range(300):
        batch.put(bytes([8, 1, 1, 0]) + i.to_bytes(4, "big"), bytes(4096))
    batch.put(b"\x01", b"state")
    request = PreloadRequest(keys=(b"\x01",), ranges=vfs.sqlite_preload_ranges())
    calls = [
        lambda: kv.write(batch),  # 301 keys, 1.2 MiB: one script call
        lambda: kv.get_many([b"\x01", b"\x02"] + list(batch.puts)[:100]),
        lambda: kv.scan(b"\x08", b"\x09"),
        lambda: kv.scan(b"\x08", b"\x09", limit=3),
        lambda: kv.preload(request),
        lambda: kv.acquire_ownership(),
        lambda: kv.acquire_and_preload(request),
        lambda: kv.write(batch),  # fenced now: still one call
        lambda: kv.delete_all(),
    ]
    for call in calls:
        call()  # first run: the server learns each script (NOSCRIPT + EVAL once)
    for call in calls:
        sends, trips = CountingConnection.sends, redis_store.round_trips
        call()
        assert (CountingConnection.sends - sends, redis_store.round_trips - trips) == (1, 1), call


def test_scripts_reload_transparently_after_script_flush(redis_store: RedisKV) -> None:
    kv = redis_store.actor("flush")
    kv.write(WriteBatch(puts={b"a": b"1"}))
    redis_store.client.script_flush()
    before = redis_store.round_trips
    kv.write(WriteBatch(puts={b"b": b"2"}))  # EVALSHA -> NOSCRIPT -> EVAL: one protocol call
    assert kv.scan(b"", b"\xff") == [(b"a", b"1"), (b"b", b"2")]
    assert redis_store.round_trips - before == 2


def test_cold_start_of_an_existing_actor_is_one_round_trip() -> None:
    namespace = fresh_namespace("cold")
    url = session_server().url
    writer = RedisKV(url, namespace=namespace)
    make_db(writer.actor("room"), 3000)
    writer.close()
    client = counting_client(url)
    store = RedisKV(client, namespace=namespace, check_persistence=False)  # a new process's view
    try:
        client.ping()  # the process's pooled connection exists before any actor starts
        kv = store.actor("room")
        sends = CountingConnection.sends
        con = vfs.connect(kv, preload=kv.preload(PreloadRequest(keys=vfs.sqlite_preload_keys(),
                                                                ranges=vfs.sqlite_preload_ranges())))
        assert rows(con, "SELECT count(*), max(id) FROM t") == [(3000, 3000)]
        assert store.round_trips == 1
        assert CountingConnection.sends - sends == 1, CountingConnection.commands[-3:]
        assert con.stats.live_reads == 0 and con.stats.preload_hits > 0
        con.close()
    finally:
        store.drop_namespace()
        store.close()
        client.close()


def test_keys_of_one_actor_share_a_hash_tag_and_the_index_is_byte_ordered(redis_store: RedisKV) -> None:
    from redis.crc import key_slot

    kv = redis_store.actor("tag{with}braces/ü")
    keys = [b"", b"\x00", b"\x00\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\xff\x00", b"a{b}c"]
    batch = WriteBatch()
    for k in reversed(keys):
        batch.put(k, k + b"!")
    kv.write(batch)
    kv.acquire_ownership()
    assert [k for k, _ in kv.scan(b"", b"\xff\xff")] == sorted(keys)
    assert kv.scan(b"\x00\x00", b"\x80") == [(k, k + b"!") for k in sorted(keys) if b"\x00\x00" <= k < b"\x80"]
    redis_keys = sorted(redis_store.client.scan_iter(match=f"{redis_store.namespace}:*"))
    assert len(redis_keys) == 4  # data hash, index, fencing counter, write version
    assert len({key_slot(k) for k in redis_keys}) == 1
    assert redis_store.actor_ids() == ["tag{with}braces/ü"]


def test_namespaces_isolate_stores_on_one_server(redis_store: RedisKV) -> None:
    other = RedisKV(session_server().url, namespace=fresh_namespace("other"))
    try:
        redis_store.actor("a").write(WriteBatch(puts={b"k": b"mine"}))
        assert other.actor("a").get_many([b"k"]) == [None]
        assert other.actor_ids() == [] and redis_store.actor_ids() == ["a"]
        assert other.identity != redis_store.identity
    finally:
        other.close()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        RedisKV(session_server().url, namespace="a{b}")
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisKV(redis.Redis.from_url(session_server().url, decode_responses=True))
    with pytest.raises(ConfigurationError):
        RedisKV(42)  # type: ignore[arg-type]


def test_unsafe_persistence_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisKV(session_server().url, namespace=fresh_namespace("p"))
    assert store.check_persistence()["appendfsync"] == "always"
    store.client.config_set("appendfsync", "everysec")
    try:
        with caplog.at_level("WARNING", logger="actor_db.kv.redis"):
            store.check_persistence()
        assert "appendfsync=everysec" in caplog.text
    finally:
        store.client.config_set("appendfsync", "always")
        store.close()


# -- the server-side preload and scan obey exactly the reference rules -----------------

_keys = st.binary(min_size=1, max_size=3).filter(lambda k: k < b"\xff\xff")
_data = st.dictionaries(_keys, st.binary(min_size=0, max_size=40), max_size=25)
_bounds = st.tuples(st.binary(max_size=2), st.binary(max_size=2)).map(sorted)
_budget = st.builds(lambda b, n, p: PrefixBudget(KeyRange(b[0], b[1] or b"\xff\xff"), n, p),
                    _bounds, st.integers(-1, 200), st.booleans())
_request = st.builds(PreloadRequest, keys=st.lists(_keys, max_size=5).map(tuple),
                     ranges=st.lists(_budget, max_size=3).map(tuple),
                     max_total_bytes=st.none() | st.integers(0, 300))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_data, request=_request, scan=st.tuples(_bounds, st.none() | st.integers(0, 6),
                                                     st.none() | st.integers(0, 120)))
@example(data={b"\x00": b"\x00\x00\x00"},  # a key asked twice counts once towards the total budget
         request=PreloadRequest(keys=(b"\x00", b"\x00"), ranges=(PrefixBudget(KeyRange(b"", b"\xff\xff"), 3, False),),
                                max_total_bytes=6),
         scan=([b"", b""], None, None))
def test_preload_and_scan_match_the_reference_exactly(redis_store: RedisKV, data: dict[bytes, bytes],
                                                      request: PreloadRequest, scan: Any) -> None:
    reference = MemoryKV().actor("p")
    kv = redis_store.actor("p")
    kv.delete_all()
    batch = WriteBatch(puts=dict(data))
    for view in (reference, kv):
        view.write(batch)
    want, got = reference.preload(request), kv.preload(request)
    probes = set(data) | set(request.keys) | {b"", b"\x00", b"\xfe\xff"}
    for r in request.ranges:
        probes |= {r.range.start, r.range.start + b"\x00", r.range.end}
    for key in sorted(probes):
        assert got.lookup(key) == want.lookup(key), key
    (start, end), limit, max_bytes = scan
    end = end or b"\xff\xff"
    assert kv.scan(start, end, limit=limit, max_bytes=max_bytes) == \
        reference.scan(start, end, limit=limit, max_bytes=max_bytes)


# -- crashes and connection loss ---------------------------------------------------------

def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and its causes (``with con:`` wraps the commit's error as the context)."""
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _own_server(tmp_path: pathlib.Path) -> RedisServer:
    return RedisServer(tmp_path / "redis").start()


def test_sigkill_mid_commit_with_aof_leaves_before_or_after(tmp_path: pathlib.Path) -> None:
    server = _own_server(tmp_path)
    client = counting_client(server.url, retry=Retry(NoBackoff(), 0))
    store = RedisKV(client, namespace="crash")
    rng = random.Random(6)
    outcomes: Counter[str] = Counter()
    try:
        con = vfs.connect(store.actor("db"))
        con.execute("CREATE TABLE t (round INTEGER, i INTEGER, b BLOB)")
        con.execute("CREATE TABLE meta (rounds INTEGER, rows INTEGER)")
        con.execute("INSERT INTO meta VALUES (0, 0)")
        con.close()
        for round_no in range(10):
            client.script_load(WRITE_SCRIPT)  # so the armed send below is the commit itself
            con = vfs.connect(store.actor("db"))
            before = rows(con, "SELECT rounds, rows FROM meta")[0]
            delay = rng.choice([0.0, 0.0002, 0.001, 0.003])

            def kill_after_the_commit_is_sent(command: bytes) -> None:
                if command in (b"EVALSHA", b"EVAL"):
                    CountingConnection.after_send = None
                    if delay:
                        import time
                        time.sleep(delay)  # vary where in the commit the crash lands
                    server.kill()

            CountingConnection.after_send = kill_after_the_commit_is_sent
            n = rng.randint(1, 300)
            acknowledged = True
            try:
                with con:  # ~n chunks of 4 KiB: one commit script of up to ~1.2 MiB
                    con.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                                "INSERT INTO t SELECT ?, i, randomblob(3000) FROM s", (n, round_no))
                    con.execute("UPDATE meta SET rounds = rounds + 1, rows = rows + ?", (n,))
            except apsw.IOError as exc:
                acknowledged = False  # the reply was lost: the commit may or may not be durable
                assert any(isinstance(e, KVUnavailableError) for e in _chain(exc))
            CountingConnection.after_send = None
            assert not server.process or server.process.poll() is not None, "the server was not killed"
            try:
                con.close()
            except apsw.Error:
                pass  # the server is down: nothing more can be written
            server.start()  # same port and directory: Redis replays its AOF
            con = vfs.connect(store.actor("db"))
            assert integrity(con) == "ok"
            after = rows(con, "SELECT rounds, rows FROM meta")[0]
            count = rows(con, "SELECT count(*) FROM t WHERE round = ?", round_no)[0][0]
            if after == before:
                assert count == 0 and not acknowledged  # an acknowledged commit is never lost
                outcomes["before"] += 1
            else:
                assert after == (before[0] + 1, before[1] + n) and count == n
                outcomes["after (acknowledged)" if acknowledged else "after (reply lost)"] += 1
            assert rows(con, "SELECT count(*) FROM t") == [(after[1],)]
            con.close()
    finally:
        CountingConnection.after_send = None
        store.close()
        client.close()
        server.stop()
    print(f"SIGKILL mid-commit outcomes over 10 rounds: {dict(outcomes)}")


def test_connection_loss_during_a_query_then_the_same_connection_recovers(tmp_path: pathlib.Path) -> None:
    server = _own_server(tmp_path)
    store = RedisKV(server.url, namespace="loss")
    try:
        make_db(store.actor("db"), 20_000)  # ~100 pages: more than the chunk cache below
        con = vfs.connect(store.actor("db"), cache_chunks=0, preload=vfs.PreloadMap.empty())
        con.execute("PRAGMA cache_size = 0")  # every query reads pages live
        assert rows(con, "SELECT count(*) FROM t") == [(20_000,)]
        server.kill()
        with pytest.raises(apsw.IOError, match="unreachable") as info:
            con.execute("SELECT sum(length(v)) FROM t").fetchall()
        assert isinstance(info.value.__cause__, KVUnavailableError)
        with pytest.raises(apsw.IOError):
            con.execute("UPDATE t SET v = 'lost' WHERE id = 1")
        server.start()  # Redis is back (AOF replayed); same process, same connection
        assert rows(con, "SELECT count(*), max(v) FROM t") == [(20_000, "row 9999")]
        con.execute("UPDATE t SET v = 'back' WHERE id = 1")
        assert rows(con, "SELECT v FROM t WHERE id = 1") == [("back",)]
        assert integrity(con) == "ok"
        con.close()
        reopened = vfs.connect(store.actor("db"))
        assert rows(reopened, "SELECT v FROM t WHERE id IN (1, 2) ORDER BY id") == [("back",), ("row 1",)]
        reopened.close()
    finally:
        store.close()
        server.stop()


def test_a_missing_preload_key_is_never_reported_absent_past_the_budget(redis_store: RedisKV) -> None:
    make_db(redis_store.actor("big"), 40_000)
    pre = full_preload(redis_store.actor("big"), max_bytes=64 * 1024)  # 16 of many chunks
    from vfs.keys import FILE_MAIN, chunk_key

    assert pre.lookup(chunk_key(FILE_MAIN, 15)) != NOT_LOADED
    assert pre.lookup(chunk_key(FILE_MAIN, 16)) is NOT_LOADED
