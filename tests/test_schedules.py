"""Durable schedules (issue 23): ``c.schedule`` / ``c.cron``, the due index, firing,
crashes. Every driver (MemoryKV, LMDB, redis-server, Redis Cluster); the crash tests on
the stores another process can open."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

import actor_db
from actor_db.errors import ScheduleError
from actor_db.kv import KVStore, MemoryKV
from actor_db.metrics_export import metrics_text
from actor_db.runtime.schedule import next_cron
from tests.drivers import DRIVERS, DriverFactory, RedisClusterFactory
from tests.schedule_support import ROOT, arm, fired, jobs_type, spec_of
from tests.serve_support import SECRET, NodeProcess, post

FACTORIES = dict(DRIVERS, **{"redis-cluster": RedisClusterFactory})
FAST = actor_db.ScheduleOptions(poll_interval_s=0.02)
OFF = actor_db.ScheduleOptions(enabled=False)
WAIT_S = 20.0


@pytest.fixture(params=sorted(FACTORIES), ids=str)
def factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    made = FACTORIES[request.param](tmp_path_factory.mktemp(request.param.replace("-", "_")))
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(params=[k for k in sorted(FACTORIES) if k != "memory"], ids=str)
def shared_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DriverFactory]:
    """Stores a second process can open (the crash tests)."""
    made = FACTORIES[request.param](tmp_path_factory.mktemp(request.param.replace("-", "_")))
    try:
        yield made
    finally:
        made.cleanup()


def schedule_type(**options: Any) -> actor_db.runtime.ActorDefinition:
    jobs = jobs_type(**options)

    @jobs.action
    async def plan_with_row(c: actor_db.Context, delay: float, tag: str) -> str:
        await c.db.execute("INSERT INTO done VALUES ('x')")
        c.state["runs"] += 1
        return c.schedule.after(delay, "record", tag)

    @jobs.action
    async def plan_then_raise(c: actor_db.Context) -> None:
        c.schedule.after(0, "record", "never")
        c.cron.every("never", 0.01, "record", "never")
        await c.db.execute("INSERT INTO done VALUES ('never')")
        raise RuntimeError("changed my mind")

    @jobs.action
    async def cancel(c: actor_db.Context, entry: str) -> None:
        c.schedule.cancel(entry)

    @jobs.action
    async def entries(c: actor_db.Context) -> list[Any]:
        return [await c.schedule.list(), await c.cron.list()]

    @jobs.action
    async def crons(c: actor_db.Context) -> list[str]:
        return [c.cron.set("morning", "0 9 * * *", "record", "cron", timezone="Europe/Paris"),
                c.cron.every("fast", 0.05, "record", "every")]

    @jobs.action
    async def stop_fast(c: actor_db.Context) -> None:
        c.cron.delete("fast")

    @jobs.action
    async def bad(c: actor_db.Context) -> list[str]:
        attempts = [
            lambda: c.schedule.after(1, "no_such_action"),
            lambda: c.schedule.after(1, "record", ("a", "tuple")),
            lambda: c.schedule.after(1, "record", {1: "int key"}),
            lambda: c.schedule.after(1, "record", float("nan")),
            lambda: c.schedule.after(1, "record", object()),
            lambda: c.schedule.after(-1, "record", "x"),
            lambda: c.schedule.after(float("inf"), "record", "x"),
            lambda: c.schedule.at(dt.datetime(2030, 1, 1), "record", "naive"),
            lambda: c.schedule.at("tomorrow", "record", "x"),
            lambda: c.cron.set("c", "61 * * * *", "record", "x"),
            lambda: c.cron.set("c", "* * * * * *", "record", "x"),
            lambda: c.cron.set("c", "every day", "record", "x"),
            lambda: c.cron.set("c", "0 9 * * *", "record", "x", timezone="Mars/Olympus"),
            lambda: c.cron.set("", "0 9 * * *", "record", "x"),
            lambda: c.cron.every("e", 0, "record", "x"),
            lambda: c.cron.every("e", 1, "record", {"s": {1, 2}}),
        ]
        refused = []
        for attempt in attempts:
            try:
                attempt()
            except ScheduleError as exc:
                refused.append(str(exc))
        return refused

    return jobs


async def _wait(tag: str) -> None:
    await asyncio.wait_for(fired(tag).wait(), WAIT_S)


def _due(store: KVStore) -> tuple[list[Any], int | None]:
    _, due, next_ms = store.due(100)
    return due, next_ms


# -- in one process, every driver ----------------------------------------------------------

def test_raising_action_schedules_nothing_and_scheduling_rides_the_commit(factory: DriverFactory) -> None:
    store = factory.open()

    async def main() -> None:
        async with actor_db.Registry([schedule_type(output_gate=False)], store, schedules=OFF) as registry:
            h = registry.get_or_create("jobs", "k")
            assert await h.call("count", "x") == 0  # (created)
            with pytest.raises(RuntimeError, match="changed my mind"):
                await h.call("plan_then_raise")
            assert await h.call("entries") == [[], []]
            assert _due(store) == ([], None)
            assert await h.call("count", "never") == 0
            # An action that writes the database and the state costs one KV round trip,
            # and the same with an entry scheduled: it rides the same batch.
            trips = h.metrics()["kv_round_trips"]
            await h.call("record", "plain")
            plain = h.metrics()["kv_round_trips"] - trips
            trips = h.metrics()["kv_round_trips"]
            entry = await h.call("plan_with_row", 3600, "later")
            scheduled = h.metrics()["kv_round_trips"] - trips
            assert plain == scheduled == 1
            due, next_ms = _due(store)
            assert due == [] and next_ms is not None and next_ms > store.now_ms() + 3000 * 1000
            [once, _] = await h.call("entries")
            assert [e["id"] for e in once] == [entry] and once[0]["status"] == "scheduled"
            await h.destroy()  # every key of the actor, its index entries with them
            assert _due(store) == ([], None)

    asyncio.run(main())
    store.close()


def test_entry_fires_while_the_actor_sleeps_and_cancel_and_list(factory: DriverFactory) -> None:
    store = factory.open()

    async def main() -> None:
        async with actor_db.Registry([schedule_type()], store, schedules=FAST) as registry:
            h = registry.get_or_create("jobs", "k")
            arm("sleeper", "after-cancelled")
            cancelled = await h.call("plan", 0.2, "cancelled")
            await h.call("plan", 0.3, "sleeper")
            await h.call("cancel", cancelled)
            await h.call("plan", 0.4, "after-cancelled")
            [once, cron] = await h.call("entries")
            assert [e["args"] for e in once] == [["sleeper"], ["after-cancelled"]] and cron == []
            assert once[0]["due"].tzinfo is not None
            await h.sleep()
            assert h.metrics()["status"] == "asleep"
            await _wait("sleeper")  # it woke the actor
            await _wait("after-cancelled")
            assert [await h.call("count", t) for t in ("sleeper", "after-cancelled", "cancelled")] == [1, 1, 0]
            assert await h.call("entries") == [[], []]
            assert _due(store) == ([], None)
            assert h.metrics()["schedules_fired_total"] == 2
            for _ in range(500):  # (the poller counts a run when its call returns: bounded wait)
                metrics = registry.schedule_metrics()
                if metrics["schedule_fired_total"] == 2:
                    break
                await asyncio.sleep(0.01)
            assert metrics["schedule_fired_total"] == 2 and metrics["schedule_polls_total"] >= 1

    asyncio.run(main())
    store.close()


def test_a_fire_that_wakes_its_actor_reads_its_entries_with_the_wake(factory: DriverFactory) -> None:
    """A due entry of an asleep actor: 1 round trip to check the entry still exists, 1
    to wake (ownership, with the preload, which carries the schedule records), 1 for
    the fired action's commit (its writes, the entry's removal): no read of the entries."""
    store = factory.open()

    async def main() -> None:
        async with actor_db.Registry([schedule_type(idle_timeout_s=None)], store, schedules=OFF) as registry:
            h = registry.get_or_create("jobs", "woken")
            await h.call("plan", 0, "woken")
            await h.call("plan", 3600, "later")  # (a second entry: the records are not empty)
            [entry] = [e for e in _due(store)[0] if e.actor_id == "jobs/woken"]
            await h.sleep()
            trips = h.metrics()["kv_round_trips"]
            arm("woken")
            assert await registry._fire_local(entry) == {"outcome": "fired"}
            assert h.metrics()["kv_round_trips"] - trips == 3
            await asyncio.wait_for(fired("woken").wait(), WAIT_S)
            assert [e.actor_id for e in _due(store)[0]] == []
            [once, _] = await h.call("entries")
            assert [e["args"] for e in once] == [["later"]]

    asyncio.run(main())
    store.close()


def test_a_backlog_of_due_entries_costs_one_poll_per_page_not_per_fire() -> None:
    """More due entries than dispatch slots: those a poll listed beyond the free slots
    wait in the poller's backlog and take the slots as they free up; the poller reads
    the due index again when the backlog runs out after a full page. (Before: every
    finished dispatch of a full poller triggered a poll of a whole page for one free
    slot.) Polls only when woken here (tick_s = poll_interval_s = 60 s): counted, not
    timed. Every entry fires once."""
    store = MemoryKV()
    actors, page = 60, 16

    async def main() -> None:
        async with actor_db.Registry([schedule_type(idle_timeout_s=None)], store, schedules=OFF) as registry:
            for i in range(actors):
                await registry.get_or_create("jobs", f"b{i}").call("plan", 0, "backlog")
        slow = actor_db.ScheduleOptions(poll_interval_s=60, tick_s=60, page=page, concurrency=4)
        async with actor_db.Registry([schedule_type(idle_timeout_s=None)], store, schedules=slow) as registry:
            for _ in range(int(WAIT_S * 100)):  # (a hang guard, not a timing)
                if registry.schedule_metrics()["schedule_fired_total"] == actors:
                    break
                await asyncio.sleep(0.01)
            metrics = registry.schedule_metrics()
            assert metrics["schedule_fired_total"] == actors and metrics.get("schedule_error_total", 0) == 0
            assert metrics["schedule_stale_total"] == 0
            # One poll per page (the last one finds less than a page: 5 here), and a
            # spare; never one per fire (the old code: 16 here).
            assert metrics["schedule_polls_total"] <= actors // page + 3, metrics
            runs = [await registry.get_or_create("jobs", f"b{i}").call("count", "backlog") for i in range(actors)]
            assert runs == [1] * actors
        assert _due(store) == ([], None)

    asyncio.run(main())


def test_cron_and_every_fire_and_list_and_delete(factory: DriverFactory) -> None:
    store = factory.open()

    async def main() -> None:
        async with actor_db.Registry([schedule_type()], store, schedules=FAST) as registry:
            h = registry.get_or_create("jobs", "c")
            arm("every")
            assert await h.call("crons") == ["cron:morning", "cron:fast"]
            await _wait("every")
            arm("every")
            await _wait("every")  # a second run: the entry moved on
            await h.call("stop_fast")
            runs = await h.call("count", "every")
            assert runs >= 2
            [once, cron] = await h.call("entries")
            assert once == [] and [e["name"] for e in cron] == ["morning"]
            morning = cron[0]["due"].astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
            assert (morning.hour, morning.minute) == (9, 0) and morning > dt.datetime.now(dt.timezone.utc)
            due, next_ms = _due(store)
            assert due == [] and next_ms == cron[0]["due_ms"]
            await h.destroy()

    asyncio.run(main())
    store.close()


def test_failing_entry_is_retried_then_recorded_and_blocks_nothing() -> None:
    store = MemoryKV()

    async def main() -> None:
        async with actor_db.Registry([schedule_type()], store, schedules=FAST) as registry:
            h = registry.get_or_create("jobs", "f")
            arm("fine")
            await h.call("plan_flaky", "bad")
            await h.call("plan", 0.05, "fine")
            await _wait("fine")
            for _ in range(400):  # bounded: 3 attempts 20 ms and 40 ms apart
                [once, _] = await h.call("entries")
                if once and once[0]["status"] == "failed":
                    break
                await asyncio.sleep(0.01)
            assert [(e["action"], e["status"], e["attempts"]) for e in once] == [("flaky", "failed", 3)]
            assert once[0]["error"] == "RuntimeError: flaky bad"
            assert await h.call("count", "bad") == 0  # every attempt's insert was rolled back
            metrics = h.metrics()
            assert (metrics["schedules_retried_total"], metrics["schedules_failed_total"]) == (2, 1)
            text = metrics_text(registry)
            assert "actor_db_schedules_failed_total 1.0" in text and "actor_db_schedules_retried_total 2.0" in text
            assert "actor_db_schedule_polls_total" in text
            assert _due(store) == ([], None)  # a failed entry leaves the due index

    asyncio.run(main())


def test_bad_arguments_and_cron_expressions_are_refused_when_set() -> None:
    async def main() -> None:
        async with actor_db.Registry([schedule_type()], MemoryKV(), schedules=OFF) as registry:
            h = registry.get_or_create("jobs", "b")
            refused = await h.call("bad")
            assert len(refused) == 16
            assert any("args[0]: tuple" in m for m in refused) and any("args[0][1]" in m for m in refused)
            assert any("cron expression" in m for m in refused) and any("Mars/Olympus" in m for m in refused)
            assert await h.call("entries") == [[], []]

    asyncio.run(main())
    with pytest.raises(actor_db.errors.ConfigurationError):
        jobs_type(schedule_max_attempts=0)


def test_cron_next_times_across_dst_changes() -> None:
    def ms(text: str) -> int:
        return int(dt.datetime.fromisoformat(text).timestamp() * 1000)

    def run(expression: str, start: str, n: int) -> list[str]:
        out, t = [], ms(start)
        for _ in range(n):
            t = next_cron(expression, "America/New_York", t)
            out.append(dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc).strftime("%m-%d %H:%M"))
        return out

    # 09:00 local on both sides of the spring change (EST -5 -> EDT -4) and the autumn one.
    assert run("0 9 * * *", "2026-03-07T12:00:00+00:00", 3) == ["03-07 14:00", "03-08 13:00", "03-09 13:00"]
    assert run("0 9 * * *", "2026-10-31T12:00:00+00:00", 3) == ["10-31 13:00", "11-01 14:00", "11-02 14:00"]
    # 01:30 happens twice on 11-01: a fixed-hour job runs once.
    assert run("30 1 * * *", "2026-10-31T12:00:00+00:00", 3) == ["11-01 05:30", "11-02 06:30", "11-03 06:30"]
    # An hourly pattern runs in both passes of the repeated hour.
    assert run("0 * * * *", "2026-11-01T04:30:00+00:00", 3) == ["11-01 05:00", "11-01 06:00", "11-01 07:00"]
    assert next_cron("0 0 1 1 *", "UTC", ms("2026-06-01T00:00:00+00:00")) == ms("2027-01-01T00:00:00+00:00")


def test_redis_cluster_due_index_spreads_over_the_primaries() -> None:
    made = RedisClusterFactory(pathlib.Path("/nonexistent"))
    store = made.open()
    try:
        async def main() -> None:
            async with actor_db.Registry([schedule_type()], store, schedules=OFF) as registry:
                for i in range(12):
                    await registry.get_or_create("jobs", f"a{i}").call("plan", 3600, "far")

        asyncio.run(main())
        client = store.client  # type: ignore[attr-defined]
        holders = set()
        for node in client.get_primaries():
            keys = client.scan_iter(match=f"{store.namespace}:{{due-*}}:z".encode(), target_nodes=node)  # type: ignore[attr-defined]
            if any(True for _ in keys):
                holders.add(node.name)
        assert len(holders) >= 2
        _, due, next_ms = store.due(10)
        assert due == [] and next_ms is not None
        assert store.round_trips > 0
    finally:
        store.close()
        made.cleanup()


# -- crashes: another process, kill -9 ----------------------------------------------------

def _child(store: KVStore, mode: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.schedule_support", json.dumps(spec_of(store)), mode],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


def test_entry_set_by_a_killed_process_fires_in_another(shared_factory: DriverFactory) -> None:
    store = shared_factory.open()
    child = _child(store, "set")
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # (bounded by the child: it prints once, then waits)
        assert line.strip() == "set", line + (child.stdout.read() if child.poll() is not None else "")
    finally:
        _kill(child)

    async def main() -> None:
        arm("from-dead")
        async with actor_db.Registry([schedule_type()], store, schedules=FAST) as registry:
            await _wait("from-dead")
            assert await registry.get_or_create("jobs", "k").call("count", "from-dead") == 1

    asyncio.run(main())
    assert _due(store) == ([], None)
    store.close()


def test_kill_during_the_fired_action_fires_again_with_effect_once(shared_factory: DriverFactory,
                                                                   tmp_path: pathlib.Path) -> None:
    store = shared_factory.open()

    async def plan() -> None:
        async with actor_db.Registry([schedule_type()], store, schedules=OFF) as registry:
            await registry.get_or_create("jobs", "m").call("plan", 0, "mid")

    asyncio.run(plan())
    inside = tmp_path / "inside"
    child = _child(store, "fire", SCHED_BLOCK_FILE=str(inside))
    try:
        deadline = time.monotonic() + WAIT_S
        while not inside.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        assert inside.exists(), child.stdout.read() if child.poll() is not None and child.stdout else "no fire"
    finally:
        _kill(child)  # mid-action: its insert was never committed
    (due, _) = _due(store)
    assert [e.actor_id for e in due] == ["jobs/m"]  # the entry stays

    async def main() -> None:
        arm("mid")
        async with actor_db.Registry([schedule_type()], store, schedules=FAST) as registry:
            await _wait("mid")
            h = registry.get_or_create("jobs", "m")
            assert await h.call("count", "mid") == 1  # exactly once in the database
            assert await h.call("entries") == [[], []]

    asyncio.run(main())
    store.close()


# -- several serve nodes ------------------------------------------------------------------

class _ScheduleNode(NodeProcess):
    """A node serving ``tests.schedule_app:registry``."""

    def start(self, wait: bool = True) -> _ScheduleNode:
        port_file = pathlib.Path(self._dir) / "port"
        args = [sys.executable, "-m", "actor_db", "serve", "tests.schedule_app:registry", "--kv", self.kv,
                "--port", "0", "--port-file", str(port_file), "--node-id", self.node_id, "--lease", str(self.lease),
                "--node-secret", SECRET, "--drain-grace", "0.5", "--log-level", "info"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("ACTOR_DB_TOKEN", None)
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready(port_file)
        return self


@pytest.mark.parametrize("kind", ["lmdb", "redis"])
def test_several_serve_nodes_fire_each_entry_once(kind: str, tmp_path: pathlib.Path) -> None:
    made = FACTORIES[kind](tmp_path)
    store = made.open()
    keys = [f"n{i}" for i in range(10)]
    nodes: list[_ScheduleNode] = []
    try:
        async def plan() -> None:
            async with actor_db.Registry([schedule_type()], store, schedules=OFF) as registry:
                for i, key in enumerate(keys):
                    await registry.get_or_create("jobs", key).call("plan", 0.05 * i, key)

        asyncio.run(plan())
        spec = (f"lmdb:{store.path}" if kind == "lmdb"  # type: ignore[attr-defined]
                else f"{store.url}?namespace={store.namespace}")  # type: ignore[attr-defined]
        nodes = [_ScheduleNode(spec, f"s{i}", lease=1.0) for i in range(2)]
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        deadline = time.monotonic() + WAIT_S
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            _, due, next_ms = store.due(100)
            if not due and next_ms is None:  # every entry fired (none due, none later either)
                break
            time.sleep(0.05)
        for key in keys:
            status, body, _ = post(nodes[0].url, "jobs", key, "count", key)
            assert status == 200, body
            counts[key] = body
        assert counts == {key: 1 for key in keys}, [n.log_text()[-2000:] for n in nodes]
        assert store.due(100)[1] == []
    finally:
        for node in nodes:
            node.stop()
        store.close()
        made.cleanup()


def test_cluster_slot_tags_are_built_whole_under_concurrent_first_use() -> None:
    """Each slot's due index lives in that slot, also when many threads locate actors
    for the first time at once (a half-built table once put indexes in other slots)."""
    import threading

    from redis.crc import key_slot

    from actor_db.kv import redis as redis_driver

    redis_driver._SLOT_TAGS.clear()
    found: list[bytes] = []
    threads = [threading.Thread(target=lambda s=s: found.append(redis_driver.due_index_key("ns", s)))
               for s in range(0, 16384, 997)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(redis_driver._SLOT_TAGS) == 16384
    assert all(key_slot(redis_driver.due_index_key("ns", s)) == s for s in range(16384))
