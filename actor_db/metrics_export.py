"""Prometheus metrics of an :class:`actor_db.Registry`: counters and startup gauges.

>>> import asyncio, actor_db
>>> from actor_db.metrics_export import metrics_text
>>> kv_actor = actor_db.actor("kv", state=lambda: {})
>>> @kv_actor.action
... def put(c, k, v):
...     c.state[k] = v
>>> async def main():
...     async with actor_db.Registry([kv_actor], kv=actor_db.kv.MemoryKV()) as registry:
...         await registry.get_or_create("kv", "a").call("put", "x", 1)
...         return metrics_text(registry)
>>> "actor_db_startup_kv_round_trips 1.0" in asyncio.run(main())  # a new actor: one round trip
True

Exported families (all over every actor of the registry; no actor id label, to keep
cardinality bounded; base units; ``_total`` on counters):

- counters: ``actor_db_kv_round_trips_total``, ``actor_db_kv_reads_total``,
  ``actor_db_kv_writes_total`` (KV calls made by actors, in round trips),
  ``actor_db_vfs_preload_hits_total``, ``actor_db_vfs_cache_hits_total``,
  ``actor_db_vfs_live_reads_total``, ``actor_db_vfs_commits_total``,
  ``actor_db_actor_starts_total``, ``actor_db_actions_total``, and
  ``actor_db_store_kv_round_trips_total`` (every call through the registry's store
  object, including calls made outside actors); schedules (docs/schedules.md):
  ``actor_db_schedules_fired_total``, ``actor_db_schedules_retried_total``,
  ``actor_db_schedules_failed_total`` (entries run by the actors),
  ``actor_db_schedule_polls_total``, ``actor_db_schedule_dispatches_total``,
  ``actor_db_schedule_stale_dispatches_total``, ``actor_db_schedule_dispatch_errors_total``
  (the registry's poller).
- startup gauges, describing ONE start: ``actor_db_startup_kv_round_trips``,
  ``actor_db_startup_duration_seconds``, ``actor_db_startup_is_new`` and
  ``actor_db_startup_phase_seconds{kind="internal"|"user",phase=...}``. The start
  shown is the one with the most KV round trips (then the longest) among the starts
  that happened since the previous scrape; with no new start the previous values stay.
- ``actor_db_actors{status="awake"|"asleep"}``: actors the registry holds.

Invariants: counters never go down while the registry lives. Actors the registry
forgets (destroyed) keep contributing their last values; a re-created actor counts
from zero on top of them.

The registry interface used (duck-typed, so any object offering it can be exported):
``registry.kv.round_trips`` (int), and the actor instances, from ``registry.handles()``
if it exists, else the registry's instance table (``registry._instances``, a dict
whose values have ``metrics() -> dict`` with the keys of
:meth:`actor_db.ActorHandle.metrics`).

Left out: per-actor series (use :meth:`actor_db.ActorHandle.metrics`), histograms.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterator


import vfs
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

__all__ = ["RegistryCollector", "MetricsServer", "metrics_text", "serve_metrics", "COUNTERS"]

COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("kv_round_trips", "actor_db_kv_round_trips", "KV calls made by actors, in round trips."),
    ("kv_reads", "actor_db_kv_reads", "KV read calls (get, scan, preload) made by actors, in round trips."),
    ("kv_writes", "actor_db_kv_writes", "KV write batches made by actors, in round trips."),
    ("vfs_preload_hits", "actor_db_vfs_preload_hits", "Chunk lookups answered by the startup preload."),
    ("vfs_cache_hits", "actor_db_vfs_cache_hits", "Chunk lookups answered by the VFS chunk cache."),
    ("vfs_live_reads", "actor_db_vfs_live_reads", "KV read calls the VFS made for chunks not held locally."),
    ("vfs_commits", "actor_db_vfs_commits", "Transactions made durable in the KV."),
    ("starts_total", "actor_db_actor_starts", "Actor starts (wakes and creations)."),
    ("actions_total", "actor_db_actions", "Actions run."),
    ("schedules_fired_total", "actor_db_schedules_fired", "Schedule entries whose action ran and committed."),
    ("schedules_retried_total", "actor_db_schedules_retried",
     "Schedule entry runs that failed and were scheduled again (backoff)."),
    ("schedules_failed_total", "actor_db_schedules_failed",
     "Schedule entries recorded as failed after their last attempt."),
)
"""``(handle.metrics() key, metric family name, help)`` of each counter."""

_PHASE_PREFIXES = (("startup_internal_", "internal"), ("startup_user_", "user"))


def _instances(registry: Any) -> list[tuple[int, Any]]:
    """``(identity, instance-with-metrics())`` for every actor the registry holds."""
    handles = getattr(registry, "handles", None)
    if callable(handles):
        found = list(handles())
        # Handles are fresh objects on every call: track the actor object behind each.
        actors = [getattr(h, "_instance", h) for h in found]
        return [(id(a), a) for a in actors]
    table = getattr(registry, "_instances", {})
    for _ in range(5):
        try:
            values = list(table.values())  # the event loop may insert concurrently
            return [(id(v), v) for v in values]
        except RuntimeError:
            continue
    return []


def _read(instance: Any) -> dict[str, Any] | None:
    for _ in range(3):
        try:
            return dict(instance.metrics())
        except (AttributeError, RuntimeError):  # sleeping right now: its connection went away
            continue
    return None


class RegistryCollector(Collector):
    """A ``prometheus_client`` collector for one registry (thread-safe).

    :param registry: an :class:`actor_db.Registry` (or an object with the interface in
        the module docstring).
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        # identity -> (instance, last metrics); the strong reference keeps the id unique.
        self._live: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._retired: dict[str, float] = {key: 0.0 for key, _, _ in COUNTERS}
        self._startup: dict[str, Any] | None = None

    def _snapshot(self) -> list[dict[str, Any]]:
        current: dict[int, tuple[Any, dict[str, Any]]] = {}
        new_starts: list[dict[str, Any]] = []
        for ident, instance in _instances(self.registry):
            previous = self._live.get(ident)
            metrics = _read(instance)
            if metrics is None:
                if previous is None:
                    continue
                metrics = previous[1]
            if previous is not None and previous[0] is instance:
                if metrics.get("starts_total", 0) > previous[1].get("starts_total", 0):
                    new_starts.append(metrics)
            elif metrics.get("starts_total", 0) > 0:
                new_starts.append(metrics)
            current[ident] = (instance, metrics)
        for ident, (instance, metrics) in self._live.items():
            if current.get(ident, (None,))[0] is not instance:  # forgotten by the registry
                for key, _, _ in COUNTERS:
                    self._retired[key] += float(metrics.get(key, 0))
        self._live = current
        if new_starts:
            self._startup = max(new_starts, key=lambda m: (m.get("startup_kv_round_trips", 0),
                                                           m.get("startup_total_ms", 0.0)))
        return [m for _, m in current.values()]

    def collect(self) -> Iterator[Metric]:
        """The metric families (called by ``prometheus_client`` on every scrape)."""
        with self._lock:
            rows = self._snapshot()
            startup = self._startup
            retired = dict(self._retired)
        for key, name, help_text in COUNTERS:
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], retired[key] + sum(float(m.get(key, 0)) for m in rows))
            yield family
        store_trips = getattr(getattr(self.registry, "kv", None), "round_trips", None)
        if store_trips is not None:
            family = CounterMetricFamily(
                "actor_db_store_kv_round_trips",
                "KV calls made through the registry's store object (all actors and other users).")
            family.add_metric([], float(store_trips))
            yield family

        schedule_metrics = getattr(self.registry, "schedule_metrics", None)
        if schedule_metrics is not None:
            polled = schedule_metrics()
            yield CounterMetricFamily("actor_db_schedule_polls",
                                      "Due-index reads of the registry's schedule poller (store round trips).",
                                      value=float(polled.get("schedule_polls_total", 0)))
            for key, name, help_text in (
                    ("schedule_dispatched_total", "actor_db_schedule_dispatches",
                     "Due entries the poller handed to the call path."),
                    ("schedule_stale_total", "actor_db_schedule_stale_dispatches",
                     "Dispatches that found their entry already run, moved or cancelled (nothing ran)."),
                    ("schedule_error_total", "actor_db_schedule_dispatch_errors",
                     "Dispatches that could not run now (placement or store error); the entry stays.")):
                yield CounterMetricFamily(name, help_text, value=float(polled.get(key, 0)))

        yield from _chunk_cache_families()

        actors = GaugeMetricFamily("actor_db_actors", "Actors the registry holds, by status.", labels=["status"])
        for status in ("awake", "asleep"):
            actors.add_metric([status], float(sum(1 for m in rows if m.get("status") == status)))
        yield actors

        s = startup or {}
        yield GaugeMetricFamily("actor_db_startup_kv_round_trips",
                                "KV round trips of the start shown (the costliest since the previous scrape).",
                                value=float(s.get("startup_kv_round_trips", 0)))
        yield GaugeMetricFamily("actor_db_startup_duration_seconds",
                                "Wall time of the start shown, seconds.",
                                value=float(s.get("startup_total_ms", 0.0)) / 1000.0)
        yield GaugeMetricFamily("actor_db_startup_is_new",
                                "1 if the start shown created its actor.",
                                value=1.0 if s.get("startup_is_new") else 0.0)
        phases = GaugeMetricFamily("actor_db_startup_phase_seconds",
                                   "Wall time of each phase of the start shown, seconds.",
                                   labels=["kind", "phase"])
        for key, value in sorted(s.items()):
            for prefix, kind in _PHASE_PREFIXES:
                if key.startswith(prefix) and key.endswith("_ms"):
                    phases.add_metric([kind, key[len(prefix):-len("_ms")]], float(value) / 1000.0)
        yield phases


def _chunk_cache_families() -> Iterator[Metric]:
    """The process-wide chunk cache (:mod:`vfs.chunk_cache`), shared by every actor."""
    cache = vfs.chunk_cache.stats()
    yield GaugeMetricFamily("actor_db_chunk_cache_bytes", "Bytes of chunks the process-wide cache holds.",
                            value=float(cache.bytes))
    yield GaugeMetricFamily("actor_db_chunk_cache_budget_bytes", "Byte budget of the process-wide chunk cache.",
                            value=float(cache.budget_bytes))
    for name, value, help_text in (
            ("actor_db_chunk_cache_hits", cache.hits, "Chunk lookups the process-wide cache answered."),
            ("actor_db_chunk_cache_misses", cache.misses, "Chunk lookups the process-wide cache missed."),
            ("actor_db_chunk_cache_evictions", cache.evictions, "Chunks evicted to stay within the budget.")):
        family = CounterMetricFamily(name, help_text)
        family.add_metric([], float(value))
        yield family


def _collector_registry(registry: Any) -> CollectorRegistry:
    target = CollectorRegistry(auto_describe=False)
    target.register(RegistryCollector(registry))
    return target


def metrics_text(registry: Any) -> str:
    """The registry's metrics in the Prometheus text exposition format (version 0.0.4)."""
    return generate_latest(_collector_registry(registry)).decode("utf-8")


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint (any path answers with the metrics).

    :ivar port: the TCP port it listens on (the chosen one when started with port 0).
    """

    server: Any
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(registry: Any, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve the registry's metrics over HTTP on a daemon thread.

    :param port: TCP port; 0 picks a free one (see :attr:`MetricsServer.port`).
    :param addr: interface to bind (``"0.0.0.0"`` for every interface).
    :raises OSError: the port is taken.
    """
    server, thread = start_http_server(port, addr=addr, registry=_collector_registry(registry))
    bound = int(server.server_address[1])
    log.info("serving actor-db metrics on http://%s:%d/metrics", addr, bound)
    return MetricsServer(server, thread, addr, bound)

