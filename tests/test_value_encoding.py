"""The durable drivers' value encoding (:mod:`actor_db.kv.codec`): compressed at rest,
byte-identical at the KV protocol, budgets in protocol bytes, conditional writes on
decoded values, and stores written before the encoding still open.

Each behavioural test runs on LMDB (a real file) and Redis (the fixtures' server); the
protocol suite (tests/test_kv_protocol.py and friends) runs unchanged on top of it.
"""

from __future__ import annotations

import os
import pathlib
import random
import sqlite3
from typing import Any, Iterator

import apsw
import lmdb
import pytest

import vfs
from vfs.protocol import HintSpec, KeyRange, PrefixBudget, PreloadRequest, WriteBatch

from actor_db.errors import KVConditionFailedError, KVCorruptValueError, KVError
from actor_db.kv import KVStore, LmdbKV, MemoryKV
from actor_db.kv.codec import (
    ENCODED, LEGACY, LMDB_PAGE, MIN_COMPRESS_BYTES, PLAIN, REDIS_ALLOCATION, TAG_LZ4, TAG_RAW, AllocationUnit, ValueCodec,
)
from actor_db.kv.namespace import VALUE_ENCODING_KEY, actor_prefix
from tests.drivers import DriverFactory, LmdbFactory, RedisFactory
from tests.helpers import integrity, rows

DURABLE = {"lmdb": LmdbFactory, "redis": RedisFactory}

_WORDS = [w * n for n, w in enumerate("alpha beta gamma delta epsilon zeta theta kappa lambda sigma".split(), 1)]


def text_bytes(n: int, seed: int) -> bytes:
    """``n`` bytes of compressible text (words of a small vocabulary)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += rng.choice(_WORDS).encode() + b" "
    return bytes(out[:n])


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def batch_of(puts: dict[bytes, bytes], expect: dict[bytes, bytes | None] | None = None) -> WriteBatch:
    batch = WriteBatch()
    for key, value in (expect or {}).items():
        batch.expect_value(key, value)
    for key, value in puts.items():
        batch.put(key, value)
    return batch


@pytest.fixture(params=sorted(DURABLE), ids=str)
def durable(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[DriverFactory]:
    factory = DURABLE[request.param](tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


def open_store(factory: DriverFactory, *, compress: bool = True) -> KVStore:
    """A store of ``factory``'s kind and data, with the given compression setting."""
    if isinstance(factory, RedisFactory):
        from actor_db.kv.redis import RedisKV

        store = RedisKV(factory.url(), namespace=factory.namespace, compress=compress, check_persistence=False)
        factory._stores.append(store)
        return store
    return LmdbKV(factory.tmp / "store", compress=compress)


def stored_raw(store: KVStore, actor: str, key: bytes) -> bytes | None:
    """The bytes at rest for ``actor``'s ``key`` (below the protocol)."""
    full = actor_prefix(actor) + key
    if isinstance(store, LmdbKV):
        with store._env.begin() as txn:
            value = txn.get(full)
        return None if value is None else bytes(value)
    actor_keys = store._actor_of(full)  # type: ignore[attr-defined]
    return store.client.hget(actor_keys.data, key)  # type: ignore[attr-defined, no-any-return]


# -- the codec --------------------------------------------------------------------------
@pytest.mark.parametrize("value", [b"", b"x", bytes(MIN_COMPRESS_BYTES - 1), text_bytes(4096, 1),
                                   random_bytes(4096, 2), text_bytes(200_000, 3), bytes(4096)],
                         ids=["empty", "one", "short-zeros", "text-page", "random-page", "large-text", "zero-page"])
def test_codec_round_trips_and_stores_compressed_only_when_that_pays(value: bytes) -> None:
    codec = ValueCodec()
    stored = codec.encode(value)
    assert codec.decode(stored) == value
    assert ValueCodec(compress=False).decode(stored) == value  # decoding ignores the setting
    compressible = len(value) >= MIN_COMPRESS_BYTES and value[:8] != random_bytes(8, 2)
    assert stored[0] == (TAG_LZ4 if compressible else TAG_RAW)
    if compressible:
        assert len(stored) < len(value) - len(value) // 32
        assert codec.lz4_form(value) == stored == ValueCodec().encode(value)  # deterministic
    else:
        assert stored == b"\x00" + value
    assert ValueCodec(compress=False).encode(value) == b"\x00" + value


@pytest.mark.parametrize("unit", [LMDB_PAGE, REDIS_ALLOCATION], ids=["lmdb", "redis"])
def test_a_small_saving_is_kept_when_it_saves_an_allocation_unit(unit: AllocationUnit) -> None:
    """A page of random blobs with 60 bytes of free space: LZ4 saves ~25 bytes, too
    little to pay by bytes alone, but enough for ONE LMDB overflow page instead of two
    and a 4 KiB jemalloc class instead of 5 KiB."""
    page = random_bytes(4036, 80) + bytes(60)
    assert ValueCodec().encode(page) == b"\x00" + page
    packed = ValueCodec(unit=unit).encode(page)
    assert packed[0] == TAG_LZ4 and unit.units(len(packed)) < unit.units(len(page) + 1)
    assert ValueCodec().decode(packed) == page
    assert ValueCodec(unit=unit).encode(random_bytes(4096, 81)) == b"\x00" + random_bytes(4096, 81)


def test_text_page_compresses_to_one_lmdb_page() -> None:
    stored = ValueCodec().encode(text_bytes(4096, 4))
    assert len(stored) <= 4096 - 16  # an LMDB overflow page holds 4080 bytes after its header


@pytest.mark.parametrize("stored", [b"", b"\x07abc", b"\x01\x00\x00\x10\x00garbage", b"\x01\x00",
                                    ValueCodec().encode(text_bytes(4096, 5))[:-7]],
                         ids=["empty", "unknown-tag", "bad-block", "short-header", "truncated"])
def test_codec_refuses_what_it_did_not_write(stored: bytes) -> None:
    with pytest.raises(KVCorruptValueError):
        ValueCodec().decode(stored)


def test_codec_length_mismatch_is_corruption() -> None:
    good = bytearray(ValueCodec().encode(text_bytes(4096, 6)))
    good[1:5] = (4095).to_bytes(4, "big")
    with pytest.raises(KVCorruptValueError):
        ValueCodec().decode(bytes(good))


# -- the drivers ----------------------------------------------------------------------
def test_values_are_compressed_at_rest_and_identical_at_the_protocol(durable: DriverFactory) -> None:
    store = open_store(durable)
    kv = store.actor("enc")
    values = {b"\x08\x01\x01\x00" + i.to_bytes(4, "big"): v for i, v in enumerate(
        [text_bytes(4096, 10), random_bytes(4096, 11), b"short", b"", text_bytes(100_000, 12)])}
    batch = WriteBatch()
    for k, v in values.items():
        batch.put(k, v)
    kv.write(batch)
    keys = sorted(values)
    assert kv.get_many(keys + [b"missing"]) == [values[k] for k in keys] + [None]
    assert kv.scan(b"", b"\xff") == [(k, values[k]) for k in keys]
    found = kv.preload(PreloadRequest(ranges=(PrefixBudget(KeyRange(b"\x08", b"\x09"), 1 << 20, True),)))
    assert all(found.lookup(k) == values[k] for k in keys)
    with kv.snapshot() as snap:
        assert snap.get_many(keys) == [values[k] for k in keys]
        assert snap.scan(b"", b"\xff") == [(k, values[k]) for k in keys]
    text_key, random_key = keys[0], keys[1]
    at_rest = stored_raw(store, "enc", text_key)
    assert at_rest is not None and at_rest[0] == TAG_LZ4 and len(at_rest) < 4096 - 16
    assert stored_raw(store, "enc", random_key) == b"\x00" + values[random_key]
    # A new store object (another process) reads the same, whatever its own setting.
    for compress in (True, False):
        other = open_store(durable, compress=compress)
        assert other.actor("enc").get_many(keys) == [values[k] for k in keys]
        other.close()
    store.close()


def test_uncompressed_and_compressed_writers_share_a_store(durable: DriverFactory) -> None:
    plain = open_store(durable, compress=False)
    packed = open_store(durable, compress=True)
    a, b = text_bytes(4096, 20), text_bytes(4096, 21)
    plain.actor("mix").write(batch_of({b"k1": a}))
    packed.actor("mix").write(batch_of({b"k2": b}))
    assert stored_raw(plain, "mix", b"k1") == b"\x00" + a
    assert stored_raw(plain, "mix", b"k2")[0] == TAG_LZ4  # type: ignore[index]
    for store in (plain, packed):
        assert store.actor("mix").get_many([b"k1", b"k2"]) == [a, b]
    plain.close()
    packed.close()


def _preload_answer(found: vfs.PreloadMap) -> tuple[dict[bytes, bytes], set[bytes], list[KeyRange]]:
    return dict(found._values), set(found._exact), found.covered_ranges()


def test_byte_budgets_count_protocol_bytes(durable: DriverFactory) -> None:
    """scan's max_bytes and every preload budget count decoded bytes, as on MemoryKV:
    the same request gives the same answer although the stored values are ~2x smaller."""
    store = open_store(durable)
    reference = MemoryKV()
    chunk = b"\x08\x01\x01\x00"
    batch = WriteBatch()
    for i in range(12):
        batch.put(chunk + i.to_bytes(4, "big"), text_bytes(4096, 30 + i))
    batch.put(b"\x08\x01\x04", bytes([1, 0, 0, 0, 2]) + (9).to_bytes(4, "big") + (7).to_bytes(4, "big"))  # a hint
    batch.put(b"\x01", text_bytes(3000, 50))
    for target in (store, reference):
        target.actor("budget").write(batch)
    kv, ref = store.actor("budget"), reference.actor("budget")
    for max_bytes in (4095, 4096, 3 * 4096, 3 * 4096 + 100):
        assert kv.scan(b"", b"\xff", max_bytes=max_bytes) == ref.scan(b"", b"\xff", max_bytes=max_bytes)
    assert len(kv.scan(chunk, chunk + b"\xff", max_bytes=3 * 4096 + 100)) == 3
    request = PreloadRequest(
        keys=(b"\x01",),
        ranges=(PrefixBudget(KeyRange(chunk, b"\x08\x01\x01\x01"), 5 * 4096 + 10, True,
                             HintSpec(b"\x08\x01\x04", chunk)),
                PrefixBudget(KeyRange(b"\x08\x01\x01\x01", b"\x08\x02"), 4096, False)),
        max_total_bytes=3000 + 4 * 4096 + 5)
    assert _preload_answer(kv.preload(request)) == _preload_answer(ref.preload(request))
    got = kv.preload(request)
    assert got.lookup(chunk + (9).to_bytes(4, "big")) == text_bytes(4096, 39)  # hinted first
    assert len(got._values) == 1 + 1 + 4  # the exact key, the hint record, four chunks
    store.close()


@pytest.mark.parametrize("writer_compresses", [True, False], ids=["packed", "raw"])
def test_conditional_writes_compare_decoded_values(durable: DriverFactory, writer_compresses: bool) -> None:
    """An expected 4 KiB page holds whatever setting wrote it, and a different page of
    the same length (one byte changed) does not."""
    writer = open_store(durable, compress=writer_compresses)
    page = text_bytes(4096, 60)
    writer.actor("cas").write(batch_of({b"page": page}))
    for compress in (True, False):
        checker = open_store(durable, compress=compress)
        kv = checker.actor("cas")
        kv.write(batch_of({b"seen": b"%d" % compress}, {b"page": page}))
        changed = bytearray(page)
        changed[2000] ^= 1
        with pytest.raises(KVConditionFailedError) as failed:
            kv.write(batch_of({b"bad": b"1"}, {b"page": bytes(changed)}))
        assert failed.value.key == b"page"
        with pytest.raises(KVConditionFailedError):
            kv.write(batch_of({b"bad": b"1"}, {b"page": page[:-1]}))
        with pytest.raises(KVConditionFailedError):
            kv.write(batch_of({b"bad": b"1"}, {b"page": None}))
        assert kv.get_many([b"bad", b"seen"]) == [None, b"%d" % compress]
        checker.close()
    writer.close()


def test_corrupt_value_at_rest_is_a_kv_error_never_wrong_bytes(durable: DriverFactory) -> None:
    store = open_store(durable)
    kv = store.actor("bad")
    kv.write(batch_of({b"k": text_bytes(4096, 70)}))
    full = actor_prefix("bad") + b"k"
    damaged = b"\x09" + (stored_raw(store, "bad", b"k") or b"")[1:]
    if isinstance(store, LmdbKV):
        with store._env.begin(write=True) as txn:
            txn.put(full, damaged)
    else:
        store.client.hset(store._actor_of(full).data, b"k", damaged)  # type: ignore[attr-defined]
    with pytest.raises(KVError, match="unknown tag 9"):
        kv.get_many([b"k"])
    store.close()


# -- stores written before the encoding ---------------------------------------------------
def _legacy_pairs(tmp: pathlib.Path) -> tuple[list[tuple[bytes, bytes]], list[tuple[Any, ...]]]:
    """An actor database written raw, as the drivers stored it before value encoding:
    the store pairs (full keys, raw values) and its rows."""
    source = MemoryKV()
    con = vfs.connect(source.actor("old"))
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
    with con:
        for i in range(300):
            con.execute("INSERT INTO t(body) VALUES (?)", (text_bytes(500, i).decode(),))
    expected = rows(con, "SELECT id, body FROM t ORDER BY id")
    con.close()
    return list(source._data.items()), expected


def _check_legacy_store_works(store: KVStore, expected: list[tuple[Any, ...]]) -> None:
    con = vfs.connect(store.actor("old"))
    assert rows(con, "SELECT id, body FROM t ORDER BY id") == expected
    with con:
        con.execute("INSERT INTO t(body) VALUES (?)", (text_bytes(5000, 999).decode(),))
    assert integrity(con) == "ok"
    con.close()


def _assert_raw_at_rest(store: KVStore, keys: list[bytes]) -> None:
    prefix = len(actor_prefix("old"))
    values = store.actor("old").get_many([k[prefix:] for k in keys])
    assert [stored_raw(store, "old", k[prefix:]) for k in keys] == values
    assert any(v is not None and len(v) == 4096 for v in values)


def test_old_raw_lmdb_store_opens_and_stays_raw(tmp_path: pathlib.Path) -> None:
    pairs, expected = _legacy_pairs(tmp_path)
    env = lmdb.open(str(tmp_path / "old"), subdir=True, max_dbs=0)
    with env.begin(write=True) as txn:
        for key, value in pairs:
            txn.put(key, value)
    env.close()
    store = LmdbKV(tmp_path / "old")
    assert store.value_codec is PLAIN
    _check_legacy_store_works(store, expected)
    with store._env.begin() as txn:
        assert txn.get(VALUE_ENCODING_KEY) == LEGACY
    _assert_raw_at_rest(store, [k for k, _ in pairs])  # older versions can still read it
    store.close()
    reopened = LmdbKV(tmp_path / "old")
    assert reopened.value_codec is PLAIN
    con = vfs.connect(reopened.actor("old"))
    assert len(rows(con, "SELECT id FROM t")) == len(expected) + 1
    con.close()
    reopened.close()
    fresh = LmdbKV(tmp_path / "new")
    assert fresh.value_codec.tagged
    with fresh._env.begin() as txn:
        assert txn.get(VALUE_ENCODING_KEY) == ENCODED
    fresh.close()


def test_old_raw_redis_namespace_opens_and_stays_raw(tmp_path: pathlib.Path) -> None:
    from actor_db.kv.redis import RedisKV
    from tests.redis_server import fresh_namespace, session_server

    pairs, expected = _legacy_pairs(tmp_path)
    namespace = fresh_namespace("legacy")
    with RedisKV(session_server().url, namespace=fresh_namespace("probe"), check_persistence=False) as probe:
        client = probe.client
        keys = probe._actor_of(actor_prefix("old"))
        prefix = len(actor_prefix("old"))
        data, index = (k.replace(probe.namespace.encode(), namespace.encode(), 1) for k in (keys.data, keys.index))
        client.hset(data, mapping={k[prefix:]: v for k, v in pairs})
        client.zadd(index, {k[prefix:]: 0 for k, _ in pairs})
        probe.drop_namespace()
    store = RedisKV(session_server().url, namespace=namespace, check_persistence=False)
    try:
        assert store.value_codec is PLAIN
        _check_legacy_store_works(store, expected)
        assert store.client.get(store.value_encoding_key) == LEGACY
        _assert_raw_at_rest(store, [k for k, _ in pairs])
        with RedisKV(session_server().url, namespace=namespace, check_persistence=False) as again:
            assert again.value_codec is PLAIN
    finally:
        store.drop_namespace()
        store.client.delete(store.value_encoding_key)
        store.close()


# -- what it buys ---------------------------------------------------------------------
def _text_database(path: pathlib.Path, target_bytes: int) -> None:
    rng = random.Random(7)
    con = sqlite3.connect(path)
    con.execute("PRAGMA page_size=4096")
    con.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, body TEXT, author TEXT)")
    con.execute("CREATE INDEX docs_author ON docs(author)")
    while not path.exists() or path.stat().st_size < target_bytes:
        with con:
            con.executemany("INSERT INTO docs(title, body, author) VALUES (?, ?, ?)",
                            [(text_bytes(40, rng.random()).decode(), text_bytes(rng.randint(100, 1500), rng.random()).decode(),
                              rng.choice(_WORDS)) for _ in range(300)])
    con.close()


def test_lmdb_store_after_importing_a_text_database_is_at_most_1_1x(tmp_path: pathlib.Path) -> None:
    from actor_db.cli import import_database

    source = tmp_path / "text.db"
    _text_database(source, 4 << 20)
    db_bytes = source.stat().st_size
    store = LmdbKV(tmp_path / "store")
    import_database(source, store.actor("imported"))
    stat = store._env.stat()
    used = (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]
    con = vfs.connect(store.actor("imported"))
    assert rows(con, "SELECT count(*) FROM docs")[0][0] > 1000
    assert integrity(con) == "ok"
    con.close()
    store.close()
    file_bytes = os.path.getsize(tmp_path / "store" / "data.mdb")
    assert used <= 1.1 * db_bytes, (used, db_bytes)
    assert file_bytes <= 1.1 * db_bytes, (file_bytes, db_bytes)


def test_compact_rewrites_an_old_raw_lmdb_store_compressed(tmp_path: pathlib.Path) -> None:
    from actor_db.compact import compact_lmdb

    pairs, expected = _legacy_pairs(tmp_path)
    env = lmdb.open(str(tmp_path / "old"), subdir=True, max_dbs=0)
    with env.begin(write=True) as txn:
        for key, value in pairs:
            txn.put(key, value)
        txn.put(b"f\x00\x03old", (7).to_bytes(8, "big"))  # a fencing counter: kept as is
    env.close()
    result = compact_lmdb(tmp_path / "old")
    assert result.bytes_after < result.bytes_before
    store = LmdbKV(tmp_path / "old")
    assert store.value_codec.tagged
    with store._env.begin() as txn:
        assert txn.get(VALUE_ENCODING_KEY) == ENCODED
        assert txn.get(b"f\x00\x03old") == (7).to_bytes(8, "big")
        at_rest = [bytes(v) for k, v in txn.cursor() if k.startswith(actor_prefix("old"))]
    assert sum(map(len, at_rest)) < sum(len(v) for _, v in pairs) // 2
    assert all(v[0] in (TAG_RAW, TAG_LZ4) for v in at_rest)
    _check_legacy_store_works(store, expected)
    store.close()
