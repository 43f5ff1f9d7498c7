"""Placement metrics of a node, in the Prometheus text format (appended to the
registry's own families on ``GET /metrics``).

Families (``actor_db_placement_`` prefix, base units, no actor id label):
``actors_owned`` and ``nodes_live`` (gauges); ``calls_local_total``,
``calls_forwarded_total`` (calls this node forwarded to an owner),
``forwards_received_total``, ``forward_failures_total``, ``claims_total``,
``claims_refused_total`` (owned by a live other node), ``takeovers_total`` (actors
taken from a dead node), ``releases_total``, ``lease_renewals_total``,
``lease_losses_total`` and ``store_round_trips_total`` (store calls for placement
upkeep: heartbeats, node listings, releases); ``forward_seconds`` (summary:
``_sum``, ``_count`` and the 0.5/0.99 quantiles of the last forwarded calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actor_db.serve.node import Node

__all__ = ["placement_text"]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def placement_text(node: Node) -> str:
    m = node.metrics
    labels = f'node="{node.node_id}"'
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, value: float) -> None:
        lines.append(f"# HELP actor_db_placement_{name} {help_text}")
        lines.append(f"# TYPE actor_db_placement_{name} {kind}")
        suffix = "_total" if kind == "counter" else ""
        lines.append(f"actor_db_placement_{name}{suffix}{{{labels}}} {float(value)!r}")

    family("actors_owned", "gauge", "Actors this node owns (awake or asleep).", len(node.owned))
    family("nodes_live", "gauge", "Live nodes in this node's last view of the store.", len(node._members))
    family("calls_local", "counter", "Calls run on this node.", m.calls_local)
    family("calls_forwarded", "counter", "Calls this node forwarded to the actor's owner.", m.calls_forwarded)
    family("forwards_received", "counter", "Calls other nodes forwarded here.", m.forwards_received)
    family("forward_failures", "counter", "Forwards that did not reach a running owner.", m.forward_failures)
    family("claims", "counter", "Ownership claims sent with a wake.", m.claims)
    family("claims_refused", "counter", "Claims refused: a live other node owns the actor.", m.claims_refused)
    family("takeovers", "counter", "Actors taken over from a dead node.", m.takeovers)
    family("releases", "counter", "Owner records released at drain.", m.releases)
    family("lease_renewals", "counter", "Heartbeat lease renewals.", m.lease_renewals)
    family("lease_losses", "counter", "Times this node found its lease expired.", m.lease_losses)
    family("store_round_trips", "counter", "Store calls made for placement upkeep.", m.store_round_trips)
    lines.append("# HELP actor_db_placement_forward_seconds Latency of forwarded calls, seconds.")
    lines.append("# TYPE actor_db_placement_forward_seconds summary")
    recent = list(m.forward_seconds)
    for q in (0.5, 0.99):
        lines.append(f'actor_db_placement_forward_seconds{{{labels},quantile="{q}"}} {_quantile(recent, q)!r}')
    lines.append(f"actor_db_placement_forward_seconds_sum{{{labels}}} {m.forward_seconds_sum!r}")
    lines.append(f"actor_db_placement_forward_seconds_count{{{labels}}} {float(m.calls_forwarded)!r}")
    return "\n".join(lines) + "\n"
