"""Prometheus export of a registry's counters and startup gauges, scraped over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import actor_db
from actor_db.kv import KVStore
from actor_db.metrics_export import COUNTERS, metrics_text, serve_metrics

counter = actor_db.actor(
    "counter", state=lambda: {"n": 0}, idle_timeout_s=None,
    db=actor_db.db(migrations=["CREATE TABLE events (delta INTEGER NOT NULL)"]),
)


@counter.action
async def add(c: Any, delta: int) -> int:
    await c.db.execute("INSERT INTO events (delta) VALUES (?)", delta)
    c.state["n"] += delta
    return int(c.state["n"])


@counter.action
async def total(c: Any) -> int:
    rows = await c.db.execute("SELECT coalesce(sum(delta), 0) FROM events")
    return int(rows[0][0])


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Fetch ``url`` and parse it: sample name -> labels -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode("utf-8")
    return parse(text)


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_scrape_over_http(store: KVStore) -> None:
    async def scenario() -> None:
        # (no schedule poller: its due-index reads would move the store counter compared below)
        async with actor_db.Registry([counter], kv=store,
                                     schedules=actor_db.ScheduleOptions(enabled=False)) as registry:
            a, b = registry.get_or_create("counter", "a"), registry.get_or_create("counter", "b")
            with serve_metrics(registry, port=0) as server:
                assert server.port > 0
                empty = scrape(server.url)
                assert value(empty, "actor_db_kv_round_trips_total") == 0
                assert value(empty, "actor_db_startup_kv_round_trips") == 0

                await a.call("add", 2)
                await b.call("add", 3)
                first = scrape(server.url)
                handles = [a.metrics(), b.metrics()]
                for key, name, _ in COUNTERS:
                    assert value(first, name + "_total") == sum(m[key] for m in handles), name
                assert value(first, "actor_db_actions_total") == 2
                assert value(first, "actor_db_actor_starts_total") == 2
                assert value(first, "actor_db_actors", status="awake") == 2
                # creating an actor with a database and one migration (issue 3's count)
                assert value(first, "actor_db_startup_kv_round_trips") == a.metrics()["startup_kv_round_trips"]
                assert value(first, "actor_db_startup_is_new") == 1
                assert value(first, "actor_db_startup_duration_seconds") > 0
                assert value(first, "actor_db_startup_phase_seconds", kind="internal", phase="preload") > 0
                assert value(first, "actor_db_store_kv_round_trips_total") == store.round_trips
                # no sample carries an actor id (cardinality): only bounded labels
                labels = {k for samples in first.values() for key in samples for k, _ in key}
                assert labels <= {"status", "kind", "phase"}

                # a wake of an existing actor whose database fits the preload: 1 round trip
                await a.sleep()
                asleep = scrape(server.url)
                assert value(asleep, "actor_db_actors", status="asleep") == 1
                assert value(asleep, "actor_db_startup_kv_round_trips") == first[
                    "actor_db_startup_kv_round_trips"][()]  # no new start: kept
                assert await a.call("total") == 2
                woken = scrape(server.url)
                assert value(woken, "actor_db_startup_kv_round_trips") == 1
                assert value(woken, "actor_db_startup_is_new") == 0
                assert value(woken, "actor_db_vfs_preload_hits_total") >= 1

                # destroying an actor does not make counters go down
                await b.destroy()
                gone = scrape(server.url)
                for _, name, _ in COUNTERS:
                    assert value(gone, name + "_total") >= value(woken, name + "_total"), name
                assert value(gone, "actor_db_actors", status="awake") + value(
                    gone, "actor_db_actors", status="asleep") == 1
                # a re-created actor counts on top of the destroyed one
                await registry.get_or_create("counter", "b").call("add", 1)
                again = scrape(server.url)
                assert value(again, "actor_db_actions_total") == value(gone, "actor_db_actions_total") + 1
                assert value(again, "actor_db_startup_is_new") == 1

    asyncio.run(scenario())


def test_text_format_without_a_server() -> None:
    async def scenario() -> str:
        async with actor_db.Registry([counter], kv=actor_db.kv.MemoryKV()) as registry:
            await registry.get_or_create("counter", "x").call("add", 1)
            return metrics_text(registry)

    text = asyncio.run(scenario())
    assert "# TYPE actor_db_kv_round_trips_total counter" in text
    assert "# TYPE actor_db_startup_kv_round_trips gauge" in text
    assert "# TYPE actor_db_vfs_preload_hits_total counter" in text


def test_port_in_use_raises() -> None:
    async def scenario() -> None:
        async with actor_db.Registry([counter], kv=actor_db.kv.MemoryKV()) as registry:
            with serve_metrics(registry, port=0) as server:
                with pytest.raises(OSError):
                    serve_metrics(registry, port=server.port)

    asyncio.run(scenario())
