"""Single-writer fencing per actor, on every driver (see :mod:`actor_db.kv.fencing`)."""

from __future__ import annotations

import multiprocessing
import pathlib
import random
import threading
from typing import Any

import apsw
import pytest

import vfs
from vfs.protocol import PreloadRequest, WriteBatch

from actor_db.errors import FencedError, KVError
from actor_db.kv import KVStore, LmdbKV, MemoryKV, fenced_cause
from tests import fencing_worker
from tests.drivers import DRIVERS
from tests.helpers import integrity, rows


def put(kv: Any, key: bytes, value: bytes) -> None:
    batch = WriteBatch()
    batch.put(key, value)
    kv.write(batch)


def test_tokens_increase_and_the_older_owner_is_refused(store: KVStore, reopen_store: Any) -> None:
    first = store.actor("f")
    assert first.fence_token is None
    assert first.acquire_ownership() == 1
    put(first, b"k", b"from-first")
    other = reopen_store()  # another runtime on the same store
    try:
        second = other.actor("f")
        assert second.acquire_ownership() == 2
        batch = WriteBatch()
        batch.delete_range(b"", b"\xff")
        batch.put(b"k", b"late")
        batch.put(b"new", b"late")
        before = store.round_trips
        with pytest.raises(FencedError, match="taken over by another runtime") as info:
            first.write(batch)
        assert store.round_trips - before == 1  # the check rides in the write's own call
        assert isinstance(info.value, KVError)
        assert second.get_many([b"k", b"new"]) == [b"from-first", None]  # nothing applied
        put(second, b"k", b"from-second")
        with pytest.raises(FencedError):
            first.delete_all()
        assert second.get_many([b"k"]) == [b"from-second"]
    finally:
        other.close()


def test_unfenced_views_write_unconditionally_and_actors_are_independent(store: KVStore) -> None:
    owned = store.actor("owned")
    owned.acquire_ownership()
    store.actor("owned").acquire_ownership()  # owned is now fenced out
    put(store.actor("owned"), b"k", b"tool")  # a view that never acquired: not checked
    put(store.actor("other"), b"k", b"v")
    with pytest.raises(FencedError):
        put(owned, b"k", b"stale")
    assert store.actor("owned").get_many([b"k"]) == [b"tool"]


def test_counter_survives_delete_all_so_tokens_never_repeat(store: KVStore) -> None:
    kv = store.actor("gone")
    assert kv.acquire_ownership() == 1
    put(kv, b"k", b"v")
    kv.delete_all()
    assert "gone" not in store.actor_ids()  # the counter is not an actor key
    assert store.actor("gone").acquire_ownership() == 2


def test_acquire_and_preload_is_one_atomic_round_trip(store: KVStore, vfs_kind: str) -> None:
    con = vfs.connect(store.actor("db"), vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.close()
    kv = store.actor("db")
    before = store.round_trips
    preload = kv.acquire_and_preload(
        PreloadRequest(keys=vfs.sqlite_preload_keys(), ranges=vfs.sqlite_preload_ranges()))
    con = vfs.connect(kv, preload=preload, vfs=vfs_kind)
    assert rows(con, "SELECT x FROM t") == [(1,)]
    assert store.round_trips - before == 1 and con.stats.live_reads == 0
    assert kv.fence_token == 1
    con.execute("INSERT INTO t VALUES (2)")  # the owner's commits go through
    assert rows(con, "SELECT x FROM t") == [(1,), (2,)]
    con.close()


def test_fenced_commit_is_an_io_error_with_fenced_cause_and_applies_nothing(store: KVStore, reopen_store: Any,
                                                                            vfs_kind: str) -> None:
    kv = store.actor("owned-db")
    kv.acquire_ownership()
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES ('before')")
    other = reopen_store()
    try:
        other.actor("owned-db").acquire_ownership()
        with pytest.raises(apsw.IOError, match="FencedError") as info:
            con.execute("INSERT INTO t VALUES ('after takeover')")
        assert isinstance(info.value.__cause__, FencedError)
        assert fenced_cause(info.value) is info.value.__cause__
        # The connection stays refused (SQLite's rollback write-back is fenced too): close it.
        with pytest.raises(apsw.IOError):
            con.execute("INSERT INTO t VALUES ('again')")
        try:
            con.close()
        except apsw.Error:
            pass
        reader = vfs.connect(other.actor("owned-db"), vfs=vfs_kind)
        assert rows(reader, "SELECT x FROM t") == [("before",)]
        assert integrity(reader) == "ok"
        reader.close()
    finally:
        other.close()


def test_fencing_holds_for_large_commits_through_the_redo_log(vfs_kind: str) -> None:
    from vfs.protocol import KVLimits

    store = MemoryKV(KVLimits(max_batch_keys=64))
    kv = store.actor("big")
    kv.acquire_ownership()
    con = vfs.connect(kv, vfs=vfs_kind)
    con.execute("CREATE TABLE t (b BLOB)")
    store.new_handle().actor("big").acquire_ownership()
    with pytest.raises(apsw.IOError) as info:
        con.execute("INSERT INTO t VALUES (randomblob(1000000))")  # ~245 chunks: staged in batches
    assert fenced_cause(info.value) is not None
    try:
        con.close()
    except apsw.Error:
        pass
    reader = vfs.connect(store.actor("big"), vfs=vfs_kind)
    assert rows(reader, "SELECT count(*) FROM t") == [(0,)]
    assert integrity(reader) == "ok"
    reader.close()


def test_threads_racing_on_one_store_never_apply_a_stale_write() -> None:
    store = MemoryKV()
    for round_no in range(50):
        results: dict[str, list[bool]] = {}
        barrier = threading.Barrier(2)

        def runtime(name: str) -> None:
            kv = store.new_handle().actor("race")
            barrier.wait()
            kv.acquire_ownership()
            outcome = []
            for i in range(20):
                try:
                    put(kv, f"{name}-{i}".encode(), b"x")
                    outcome.append(True)
                except FencedError:
                    outcome.append(False)
            results[name] = outcome

        threads = [threading.Thread(target=runtime, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        kv = store.actor("race")
        for name, outcome in results.items():
            # Once refused, never accepted again; accepted writes are all there, refused none.
            assert outcome == sorted(outcome, reverse=True)
            assert kv.get_many([f"{name}-{i}".encode() for i in range(20)]) == [b"x" if ok else None for ok in outcome]
        assert sum(all(o) for o in results.values()) >= 1
        kv.delete_all()


# -- two runtimes in two processes -----------------------------------------------------

def _spec(store: KVStore) -> tuple[Any, ...] | None:
    if isinstance(store, LmdbKV):
        return ("lmdb", store.path)
    url = getattr(store, "url", None)
    if url is not None:
        return ("redis-cluster" if store.is_cluster else "redis", url, store.namespace)  # type: ignore[attr-defined]
    return None


class _Runtime:
    def __init__(self, ctx: Any, spec: tuple[Any, ...], actor: str, writer: str) -> None:
        self.writer = writer
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=fencing_worker.run, args=(spec, actor, writer, child), daemon=True)
        self.process.start()

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def recv(self) -> tuple[Any, ...]:
        if not self.conn.poll(120):
            raise AssertionError(f"runtime {self.writer} did not answer")
        reply: tuple[Any, ...] = self.conn.recv()
        assert reply[0] != "error", reply
        return reply

    def stop(self) -> None:
        self.send("stop")
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in sorted(DRIVERS) if k != "memory"])  # memory: one process only
def test_two_runtimes_racing_for_one_actor(kind: str, tmp_path: pathlib.Path) -> None:
    factory = DRIVERS[kind](tmp_path)
    store = factory.open()
    try:
        _race(store)
    finally:
        store.close()
        factory.cleanup()


def _race(store: KVStore) -> None:
    spec = _spec(store)
    assert spec is not None, f"no cross-process spec for {store!r}"
    actor = "contended"
    setup = vfs.connect(store.actor(actor))
    setup.execute("CREATE TABLE log (round, writer, seq, i, pad)")
    setup.execute("CREATE TABLE counter (n)")
    setup.execute("INSERT INTO counter VALUES (0)")
    setup.close()
    ctx = multiprocessing.get_context("spawn")
    a, b = _Runtime(ctx, spec, actor, "a"), _Runtime(ctx, spec, actor, "b")
    rng = random.Random(6)
    committed: dict[tuple[int, str], list[int]] = {}
    winners: list[str] = []
    stats = {"barrier_rounds": 0, "free_rounds": 0, "loser_refused": 0, "both_finished": 0}
    try:
        for round_no in range(24):
            pair = [a, b]
            rng.shuffle(pair)
            commits = 6
            if round_no % 2 == 0:
                # Both own the actor in turn before either commits: the later owner wins,
                # the earlier one's first commit is refused.
                stats["barrier_rounds"] += 1
                for r in pair:
                    r.send("acquire")
                replies = {r.writer: r.recv() for r in pair}
                assert all(reply[2] == 1 for reply in replies.values())  # ownership + preload: 1 call
                tokens = {w: reply[1] for w, reply in replies.items()}
                for r in pair:
                    r.send("commit", round_no, commits)
                done = {r.writer: r.recv() for r in pair}
                winner = max(tokens, key=lambda w: tokens[w])
                loser = min(tokens, key=lambda w: tokens[w])
                assert done[winner][1:] == (list(range(commits)), False)
                assert done[loser][1:] == ([], True)
                stats["loser_refused"] += 1
                winners.append(winner)
            else:
                # Free race: acquire and commit with no ordering between the two.
                stats["free_rounds"] += 1
                for r in pair:
                    r.send("acquire")
                    r.send("commit", round_no, commits)
                tokens = {}
                done = {}
                for r in pair:
                    tokens[r.writer] = r.recv()[1]
                    done[r.writer] = r.recv()
                winner = max(tokens, key=lambda w: tokens[w])
                assert done[winner][1:] == (list(range(commits)), False)  # nobody took over after it
                loser_ok, loser_fenced = done[min(tokens, key=lambda w: tokens[w])][1:]
                assert loser_ok == list(range(len(loser_ok)))  # a prefix: refused ones never resume
                stats["loser_refused"] += loser_fenced
                stats["both_finished"] += not loser_fenced
                winners.append(winner)
            for writer in ("a", "b"):
                committed[(round_no, writer)] = done[writer][1]
            # After every round: exactly the acknowledged transactions, whole, nothing else.
            check = vfs.connect(store.actor(actor))
            assert integrity(check) == "ok"
            got = rows(check, "SELECT round, writer, seq, count(*) FROM log GROUP BY round, writer, seq "
                              "ORDER BY round, writer, seq")
            expected = sorted((r, w, s, fencing_worker.ROWS_PER_COMMIT)
                              for (r, w), seqs in committed.items() for s in seqs)
            assert got == expected  # no lost, no phantom, no torn transaction
            total = sum(len(s) for s in committed.values())
            assert rows(check, "SELECT n FROM counter") == [(total,)]  # no lost update
            check.close()
    finally:
        a.stop()
        b.stop()
    assert set(winners) == {"a", "b"}  # both won some rounds: a real race
    assert stats["loser_refused"] >= stats["barrier_rounds"]
    print(f"fencing race on {spec[0]}: {stats}, {sum(len(s) for s in committed.values())} commits kept")


def test_check_ownership_is_one_round_trip_and_writes_nothing(store: KVStore, reopen_store: Any) -> None:
    """``check_ownership`` (issue 29, item 6): an empty fenced write, so a runtime can tell
    a stale read (it lost the actor) from real damage."""
    first = store.actor("owned")
    first.acquire_ownership()
    batch = WriteBatch()
    batch.put(b"k", b"v")
    first.write(batch)
    before = store.round_trips
    first.check_ownership()  # still the owner
    assert store.round_trips - before == 1
    other = reopen_store()
    try:
        second = other.actor("owned")
        second.acquire_ownership()
        before = store.round_trips
        with pytest.raises(FencedError):
            first.check_ownership()
        assert store.round_trips - before == 1
        second.check_ownership()
        assert second.scan(b"", b"\xff") == [(b"k", b"v")]  # nothing written by the checks
        before = store.round_trips
        store.actor("owned").check_ownership()  # a view that never acquired: no round trip
        assert store.round_trips == before
    finally:
        other.close()
