"""A node: one process serving a :class:`~actor_db.Registry`'s actors, placed so that an
actor is awake in at most one node and every call reaches that node.

The store is the source of truth; there is no consensus protocol and no directory
service. Three records (:mod:`actor_db.kv.leases`):

- **Heartbeat**, one per node: ``(instance, {"addr", "draining"})`` with a lease of
  ``lease_s``, renewed every ``lease_s / 3``. Liveness costs one round trip per node
  and interval (plus one read of every heartbeat when a node needs the list), never
  one per actor.
- **Owner record**, one per actor: ``node id NUL instance``, claimed in the SAME
  atomic step as the fencing bump and the startup preload (the wake's single round
  trip): only when absent, this node's, or a record this node found dead.
- **Fencing token**, as before: a node that lost an actor can never write it again.

Routing a call for actor A at node N (:meth:`Node.call`):

1. A awake here and owned: run it here (if N's own lease is still valid by its
   monotonic clock, else 503 :class:`~actor_db.errors.LeaseExpiredError`).
2. A known to be owned by a live node M (cache): forward to M (no store round trip).
3. Otherwise wake A here with the conditional claim. Refused (owned by M): if M's
   instance holds a live heartbeat, forward to M; if not, M is dead: claim again
   allowing exactly that record to be replaced (a *takeover*, new fencing token).

A forwarded call is never forwarded again: the receiver runs it or answers 503 and
the origin re-routes (bounded attempts), so routing loops cannot happen.

Invariants:

- A node answers from memory only while its lease is valid by its own monotonic
  clock (renewal send time + ``lease_s`` - margin); the store's lease of the same
  renewal ends later, so no other node can have taken one of its actors meanwhile. If
  the lease ran out during a call that wrote nothing, the answer is withheld (503): its
  reads may be stale. A call that wrote passed the fencing check, so nobody else took
  the actor before that write.
- A renewal that finds its lease gone (the node was paused or partitioned past it)
  drops every actor from memory and joins again as a new instance: the old instance
  stays dead for everyone, so a record judged dead is never alive again.
- Draining (SIGTERM): no new claims; actors finish their calls and sleep, their owner
  records are deleted, then the heartbeat: other nodes take them at once.

Left out: rebalancing live actors between nodes; actor-to-actor calls inside actions
are not routed (an action calling another actor runs it in its own node, which works
only when that actor is not owned elsewhere).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from actor_db.errors import (
    ActionNotFoundError, ActorNotFoundError, ActorOwnedElsewhereError, ConfigurationError, FencedError,
    LeaseExpiredError, NodeDrainingError, OutcomeUnknownError, OwnerUnreachableError, PlacementError,
)
from actor_db.kv.due import DueEntry
from actor_db.kv.leases import decode_owner, encode_owner
from actor_db.runtime.schedule import FIRE_ACTION
from actor_db.serve.http import ArgumentError
from actor_db.serve.wire import Peer, RemoteFailure, WireServer

if TYPE_CHECKING:
    from actor_db.runtime.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["Node", "NodeOptions", "PlacementMetrics"]

AWAKE = "awake"
_ROUTE_ATTEMPTS = 8
"""Routing attempts of one call at its origin node before it answers 503."""


@dataclass
class NodeOptions:
    """How a node takes part in placement.

    :ivar node_id: unique among the nodes sharing the store (default: host-pid-random).
    :ivar lease_s: heartbeat lease, seconds: a dead node's actors are taken over this
        long after its last renewal at the latest. Renewed every ``lease_s / 3``.
    :ivar node_secret: shared by all nodes; a forwarded call must present it
        (default ``$ACTOR_DB_NODE_SECRET``, else random: this node then cannot talk to others).
    :ivar node_host: where the node-to-node listener binds; ``node_port`` its port (0: any).
    :ivar advertise_host: the host other nodes use to reach it (default ``node_host``,
        or the host name when that is a wildcard address).
    :ivar forward_timeout_s: seconds a forwarded call may take before its caller gets
        :class:`~actor_db.errors.OutcomeUnknownError`.
    :ivar max_wait_s: seconds a call may wait at its origin for a draining or moving
        owner before it answers 503.
    :ivar http_url: the base URL (``http://host:port``) that reaches THIS node's HTTP
        interface directly, or ``None``. Advertised in the node's heartbeat; every answer
        for an actor names its owner's URL in ``X-Actor-DB-Node-URL``, so that a client
        sends that actor's next calls straight to its owner (no forwarding hop).
    """

    node_id: str | None = None
    lease_s: float = 10.0
    node_secret: str | None = None
    node_host: str = "127.0.0.1"
    node_port: int = 0
    advertise_host: str | None = None
    forward_timeout_s: float = 30.0
    max_wait_s: float = 2.0
    http_url: str | None = None

    def check(self) -> None:
        if not (isinstance(self.lease_s, (int, float)) and 0.05 <= self.lease_s <= 3600):
            raise ConfigurationError(f"lease_s must be a number of seconds in [0.05, 3600], not {self.lease_s!r}")
        if self.node_id is not None and (not isinstance(self.node_id, str) or not self.node_id
                                         or "\0" in self.node_id or len(self.node_id.encode()) > 200):
            raise ConfigurationError(f"node_id must be a non-empty str of at most 200 bytes, not {self.node_id!r}")
        if self.forward_timeout_s <= 0 or self.max_wait_s < 0:
            raise ConfigurationError("forward_timeout_s must be > 0 and max_wait_s >= 0")
        if self.http_url is not None and not (isinstance(self.http_url, str)
                                              and self.http_url.startswith(("http://", "https://"))):
            raise ConfigurationError(f"http_url must be an http:// or https:// URL, not {self.http_url!r}")


@dataclass
class PlacementMetrics:
    """Counters of one node (exported as ``actor_db_placement_*``)."""

    calls_local: int = 0
    calls_forwarded: int = 0
    forwards_received: int = 0
    forward_failures: int = 0
    forward_seconds_sum: float = 0.0
    forward_seconds: list[float] = field(default_factory=list)
    claims: int = 0
    claims_refused: int = 0
    takeovers: int = 0
    releases: int = 0
    lease_renewals: int = 0
    lease_losses: int = 0
    store_round_trips: int = 0
    """Store calls made for placement upkeep (heartbeats, node listings, releases)."""


class Node:
    """Placement and routing for ``registry`` (see the module docstring). Start it with
    :meth:`start` inside the event loop that serves calls; :meth:`drain` leaves cleanly.
    """

    def __init__(self, registry: Registry, options: NodeOptions | None = None) -> None:
        options = options or NodeOptions()
        options.check()
        store = registry.kv
        if not getattr(store, "supports_placement", False):
            raise ConfigurationError(f"{type(store).__name__} does not support placement (use LMDB or Redis)")
        self.registry = registry
        self.options = options
        self.store = store
        self.node_id = options.node_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.instance = uuid.uuid4().hex[:16]
        self._secret = options.node_secret or os.environ.get("ACTOR_DB_NODE_SECRET") or ""
        if not self._secret:
            self._secret = uuid.uuid4().hex
            log.warning("node %s: no node secret given (--node-secret / $ACTOR_DB_NODE_SECRET): it cannot "
                        "forward calls to other nodes nor take theirs", self.node_id)
        self.metrics = PlacementMetrics()
        self.draining = False
        self.started = False
        self.address = ""
        self._lease_s = float(options.lease_s)
        self._margin = min(0.2 * self._lease_s, 1.0)
        self._deadline = 0.0
        """Monotonic time until which this node may answer from memory."""
        self._members: dict[str, tuple[str, dict[str, Any]]] = {}
        self._members_at = -1e9
        self._hints: dict[str, bytes] = {}
        """actor id -> owner record of a live other node (bounded; forwarded calls skip the store)."""
        self._replace: dict[str, set[bytes]] = {}
        """actor id -> owner records found dead (the next claim may replace them)."""
        self.owned: set[str] = set()
        """Actors this node claimed and still owns (awake or asleep)."""
        self._peers: dict[str, Peer] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="actor-db-placement")
        self._server = WireServer(self._secret, self.node_id, self._handle_forwarded, error_fields)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lapsing = False
        self._starting: asyncio.Lock | None = None
        self._inflight = 0
        self._local_inflight = 0
        """Calls running in this node's own actors (a drain waits for them)."""
        self._signatures: dict[tuple[str, str], _Arity | None] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def owner_record(self) -> bytes:
        return encode_owner(self.node_id, self.instance)

    def _payload(self) -> bytes:
        info: dict[str, Any] = {"addr": self.address, "draining": self.draining}
        if self.options.http_url:
            info["http"] = self.options.http_url
        return json.dumps(info, separators=(",", ":")).encode()

    def url_of(self, node_id: str) -> str | None:
        """The advertised HTTP URL of node ``node_id`` (this node's own, or the one in its
        heartbeat as last read), or ``None``. No store round trip."""
        if node_id == self.node_id:
            return self.options.http_url
        entry = self._members.get(node_id)
        url = entry[1].get("http") if entry is not None else None
        return url if isinstance(url, str) else None

    async def _store(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.metrics.store_round_trips += 1
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Open the node-to-node listener and join (idempotent)."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.started:
                return
            opts = self.options
            port = await self._server.start(opts.node_host, opts.node_port)
            host = opts.advertise_host or opts.node_host
            if host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
            self.address = f"{host}:{port}"
            self.registry._attach_placement(self._claim_for)
            await self._join()
            self._loop = asyncio.get_running_loop()
            self._heartbeat_stop.clear()
            self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                                      name=f"actor-db-heartbeat-{self.node_id}")
            self._heartbeat_thread.start()
            self.started = True
            # Due schedule entries of the store's actors run through this node's routing:
            # on the actor's owner, forwarded there when another live node owns it.
            self.registry._start_schedules(self._fire)
            log.info("node %s (instance %s) serving at %s, lease %.3g s", self.node_id, self.instance,
                     self.address, self._lease_s)

    async def _join(self) -> None:
        """Join as :attr:`instance`; waits (up to two leases) while a live instance of
        the same node id holds it (a restart right after a crash)."""
        ms = max(1, int(self._lease_s * 1000))
        deadline = time.monotonic() + 2 * self._lease_s + 1.0
        while True:
            sent = time.monotonic()
            if await self._store(self.store.heartbeat, self.node_id, self.instance.encode(), self._payload(), ms,
                                 True):
                self._deadline = sent + self._lease_s - self._margin
                return
            if time.monotonic() > deadline:
                raise ConfigurationError(f"node id {self.node_id!r} is held by another live node")
            await asyncio.sleep(self._lease_s / 4)

    def _heartbeat_loop(self) -> None:
        """(Its own thread, so a busy event loop cannot starve the lease.) Renew every
        lease/3; a refused renewal means the lease ran out: drop and rejoin (on the loop)."""
        ms = max(1, int(self._lease_s * 1000))
        while not self._heartbeat_stop.wait(self._lease_s / 3):
            sent = time.monotonic()
            self.metrics.store_round_trips += 1
            try:
                ok = self.store.heartbeat(self.node_id, self.instance.encode(), self._payload(), ms, False)
            except Exception as exc:  # the store is down: the lease runs out, calls get 503
                log.warning("node %s: heartbeat failed: %s", self.node_id, exc)
                continue
            if ok:
                self.metrics.lease_renewals += 1
                self._deadline = sent + self._lease_s - self._margin
            elif not self._heartbeat_stop.is_set() and self._loop is not None:
                lapse = asyncio.run_coroutine_threadsafe(self._lapse(), self._loop)
                try:
                    lapse.result()
                except Exception:
                    log.exception("node %s: rejoining after its lease ran out failed", self.node_id)

    def _stop_heartbeat(self) -> None:
        self._heartbeat_stop.set()
        thread = self._heartbeat_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._lease_s + 30.0)

    def lease_valid(self) -> bool:
        """Whether this node may answer from memory now (its lease, by its own clock)."""
        return not self._lapsing and time.monotonic() < self._deadline

    async def _lapse(self) -> None:
        """The store says our lease ran out: other nodes may own our actors now. Drop
        every actor from memory (writes of theirs are fenced), then join anew."""
        self._lapsing = True
        self.metrics.lease_losses += 1
        log.warning("node %s: its lease ran out (paused or partitioned?): dropping its actors and rejoining",
                    self.node_id)
        try:
            await self._sleep_all()
            self.owned.clear()
            self._hints.clear()
            self._replace.clear()
            self.instance = uuid.uuid4().hex[:16]
            await self._join()
        finally:
            self._lapsing = False

    async def _sleep_all(self) -> list[str]:
        instances = [i for i in list(self.registry._instances.values()) if i.status == AWAKE]
        results = await asyncio.gather(*(i.sleep() for i in instances), return_exceptions=True)
        for instance, result in zip(instances, results):
            if isinstance(result, BaseException):
                log.info("actor %s: sleep during drop failed: %s", instance.label, result)
        return [i.label for i in instances]

    async def drain(self) -> None:
        """Leave cleanly: stop claiming actors (calls are forwarded), let in-flight
        calls finish, put actors to sleep, release their owner records, end the lease."""
        if self.draining or not self.started:
            return
        self.draining = True
        log.info("node %s draining", self.node_id)
        await self.registry._stop_schedules()  # (the other nodes fire what becomes due)
        ms = max(1, int(self._lease_s * 1000))
        try:
            await self._store(self.store.heartbeat, self.node_id, self.instance.encode(), self._payload(), ms, False)
        except Exception:
            log.debug("heartbeat at drain failed", exc_info=True)
        # No claim succeeds from here on; calls already past their claim finish first,
        # so that every actor this node owns is asleep and in ``owned`` or ``slept``.
        deadline = time.monotonic() + self.options.forward_timeout_s
        while self._local_inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        slept = await self._sleep_all()
        owner = self.owner_record
        for actor_id in set(slept) | set(self.owned):
            try:
                if await self._store(self.store.release_owner, actor_id, owner):
                    self.metrics.releases += 1
            except Exception as exc:
                log.warning("node %s: releasing %s failed: %s", self.node_id, actor_id, exc)
        self.owned.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._stop_heartbeat)
        try:
            await self._store(self.store.leave, self.node_id, self.instance.encode())
        except Exception as exc:
            log.warning("node %s: leaving failed (its lease runs out instead): %s", self.node_id, exc)
        deadline = time.monotonic() + self.options.forward_timeout_s
        while self._inflight and time.monotonic() < deadline:  # forwarded calls still on their way
            await asyncio.sleep(0.01)
        log.info("node %s drained: %d actors released", self.node_id, len(slept))

    async def close(self) -> None:
        """Drain (if started) and close the listener and the peer connections."""
        if self.started:
            await self.drain()
        await asyncio.get_running_loop().run_in_executor(None, self._stop_heartbeat)
        await self._server.close()
        for peer in self._peers.values():
            await peer.close()
        self._executor.shutdown(wait=False)
        self.started = False

    # ------------------------------------------------------------------ claims
    def _claim_for(self, actor_id: str) -> Callable[[], tuple[bytes, Sequence[bytes]]]:
        def claim() -> tuple[bytes, Sequence[bytes]]:
            if self.draining:
                raise NodeDrainingError(f"node {self.node_id} is draining: it takes no actor")
            if not self.lease_valid():
                raise LeaseExpiredError(f"node {self.node_id} has no valid lease",
                                        retry_after=self._lease_s / 3)
            self.metrics.claims += 1
            return self.owner_record, tuple(self._replace.get(actor_id, ()))
        return claim

    async def _members_view(self, fresh: bool = False) -> dict[str, tuple[str, dict[str, Any]]]:
        if fresh or time.monotonic() - self._members_at > self._lease_s / 3:
            raw = await self._store(self.store.nodes)
            members: dict[str, tuple[str, dict[str, Any]]] = {}
            for node_id, (instance, payload) in raw.items():
                try:
                    info = json.loads(payload)
                except ValueError:
                    info = {}
                members[node_id] = (instance.decode("ascii", "replace"), info if isinstance(info, dict) else {})
            self._members, self._members_at = members, time.monotonic()
        return self._members

    async def _live(self, owner: bytes, fresh: bool = False) -> dict[str, Any] | None:
        """The heartbeat info of ``owner``'s instance if it is alive, else ``None``."""
        node_id, instance = decode_owner(owner)
        members = await self._members_view(fresh)
        entry = members.get(node_id)
        if (entry is None or entry[0] != instance) and not fresh:
            members = await self._members_view(True)
            entry = members.get(node_id)
        return entry[1] if entry is not None and entry[0] == instance else None

    # ------------------------------------------------------------------ calls
    async def _fire(self, entry: DueEntry) -> Any:
        """Run a due schedule entry where its actor lives (:mod:`actor_db.runtime.firing`)."""
        name, _, key = entry.actor_id.partition("/")
        result, _ = await self._route(name, key, FIRE_ACTION, [entry.entry.decode("utf-8", "replace"), entry.due_ms],
                                      forwarded=False)
        return result

    def check_call(self, name: str, action: str, args: Any, *, internal: bool = False) -> None:
        """Refuse a call that cannot run anywhere (before any routing). ``internal``: a
        call from another node, which may fire schedule entries (``FIRE_ACTION``).

        :raises ActorNotFoundError: no such actor type (404).
        :raises ActionNotFoundError: no such action (404).
        :raises ArgumentError: ``args`` is not a list, or does not fit the action (400).
        """
        definition = self.registry._types.get(name)
        if definition is None:
            raise ActorNotFoundError(f"no actor type named {name!r}")
        fn = definition.actions.get(action)
        if fn is None and internal and action == FIRE_ACTION:
            return
        if fn is None:
            raise ActionNotFoundError(f"actor type {name!r} has no action {action!r}")
        if not isinstance(args, list):
            raise ArgumentError("the arguments must be a JSON array")
        key = (name, action)
        if key not in self._signatures:
            try:
                self._signatures[key] = _Arity(inspect.signature(fn))
            except (TypeError, ValueError):
                self._signatures[key] = None
        arity = self._signatures[key]
        if arity is not None and not arity.low <= len(args) <= arity.high:
            try:
                arity.signature.bind(None, *args)
            except TypeError as exc:
                raise ArgumentError(f"action {name}.{action}: {exc}") from None

    async def call(self, name: str, key: str, action: str, args: list[Any]) -> tuple[Any, str]:
        """Run ``action`` of actor ``name/key`` where the actor lives; returns
        ``(result, id of the node that ran it)``.

        :raises PlacementError: (503) it could not run now; ``retry_safe`` says whether
            it certainly did not run.
        :raises Exception: the action's own error, or the checks of :meth:`check_call`.
        """
        self.check_call(name, action, args)
        if not self.started:
            await self.start()
        return await self._route(name, key, action, args, forwarded=False)

    async def _handle_forwarded(self, name: str, key: str, action: str, args: list[Any]) -> tuple[Any, str]:
        self.metrics.forwards_received += 1
        self._inflight += 1
        try:
            self.check_call(name, action, args, internal=True)
            return await self._route(name, key, action, args, forwarded=True)
        finally:
            self._inflight -= 1

    async def _route(self, name: str, key: str, action: str, args: list[Any], *, forwarded: bool) -> tuple[Any, str]:
        actor_id = f"{name}/{key}"
        give_up = time.monotonic() + self.options.max_wait_s
        last: PlacementError = OwnerUnreachableError(f"actor {actor_id}: no node could run the call")
        if forwarded and self.draining:  # (the origin re-routes once this node released the actor)
            raise NodeDrainingError(f"node {self.node_id} is draining", retry_after=0.05)
        for attempt in range(_ROUTE_ATTEMPTS):
            if attempt:
                if time.monotonic() > give_up:
                    break
                await asyncio.sleep(min(0.02 * (2 ** attempt), 0.25) * (0.5 + random.random()))
            owner = None if actor_id in self.owned else self._hints.get(actor_id)
            if owner is None and not self.draining:
                try:
                    return await self._local(name, key, action, args, actor_id), self.node_id
                except ActorOwnedElsewhereError as exc:
                    owner = exc.owner
                    self.metrics.claims_refused += 1
                    self.owned.discard(actor_id)
                except NodeDrainingError as exc:  # (began draining meanwhile)
                    last = exc
                    continue
                except FencedError:
                    self.owned.discard(actor_id)
                    last = OwnerUnreachableError(f"actor {actor_id} was taken over while the call ran here; "
                                                 "nothing of it was applied")
                    continue
            elif owner is None:  # draining: find the owner without claiming
                owner = await self._store(self.store.owner_of, actor_id)
                if owner == self.owner_record:  # still ours: released soon, then another node takes it
                    give_up = max(give_up, time.monotonic() + self.options.max_wait_s)
                    last = NodeDrainingError(f"node {self.node_id} is draining", retry_after=0.05)
                    continue
                if owner is None:
                    target = await self._any_peer()
                    if target is None:
                        raise NodeDrainingError(f"node {self.node_id} is draining and no other node is live",
                                                retry_after=self._lease_s / 3)
                    try:
                        return await self._forward(target, name, key, action, args)
                    except PlacementError as exc:
                        if not exc.retry_safe:
                            raise
                        last = exc
                        continue
            assert owner is not None
            if owner == self.owner_record:
                self._hints.pop(actor_id, None)
                continue
            info = await self._live(owner)
            node_id, _ = decode_owner(owner)
            if info is None:
                # Dead (no heartbeat of that instance): the next claim may replace it.
                self._hints.pop(actor_id, None)
                self._replace.setdefault(actor_id, set()).add(owner)
                continue  # (a forwarded call may take it too: its origin asked this node to run it)
            if forwarded:
                raise OwnerUnreachableError(f"actor {actor_id} is owned by node {node_id}, not {self.node_id}",
                                            retry_after=0.0)
            if len(self._hints) > 100_000:
                self._hints.clear()
            self._hints[actor_id] = owner
            try:
                return await self._forward(str(info.get("addr", "")), name, key, action, args)
            except PlacementError as exc:
                self._hints.pop(actor_id, None)
                if not exc.retry_safe:
                    raise
                last = exc
                self._members_at = -1e9  # re-read who is alive
                if exc.retry_after:
                    give_up = max(give_up, time.monotonic() + min(exc.retry_after, self._lease_s))
        if isinstance(last, OwnerUnreachableError) and last.retry_after is None:
            last.retry_after = self._lease_s / 3
        raise last

    async def _any_peer(self) -> str | None:
        members = await self._members_view(True)
        candidates = [info.get("addr") for node_id, (_, info) in members.items()
                      if node_id != self.node_id and not info.get("draining") and info.get("addr")]
        return random.choice(candidates) if candidates else None

    async def _local(self, name: str, key: str, action: str, args: list[Any], actor_id: str) -> Any:
        if not self.lease_valid():
            raise LeaseExpiredError(f"node {self.node_id} has no valid lease: it answers nothing from memory",
                                    retry_after=self._lease_s / 3)
        handle = self.registry.get_or_create(name, key)
        instance = handle._instance
        awake_before = instance.status == AWAKE and actor_id in self.owned
        writes = instance.kv.writes
        replaced = self._replace.get(actor_id)
        self._inflight += 1
        self._local_inflight += 1
        succeeded = False
        try:
            result = await handle.call(action, *args)
            succeeded = True
            if not awake_before and (action != FIRE_ACTION or instance.status == AWAKE):
                self.owned.add(actor_id)  # (a fire that found its entry gone woke nothing: no claim)
        finally:
            self._inflight -= 1
            self._local_inflight -= 1
            if not awake_before:
                # Counted when the claim replaced the dead owner's record, also when the
                # call itself then failed (the takeover happened all the same), by
                # whichever call finds the record the claim replaced, ONCE: a concurrent
                # call may have made the claim with a dead owner this call did not see
                # when it began, or see the same claim after the one that made it.
                view = getattr(instance.kv, "inner", None)
                taken = getattr(view, "replaced", None)
                if taken is not None or (succeeded and replaced):
                    self._replace.pop(actor_id, None)
                if taken is not None:
                    view.replaced = None  # type: ignore[union-attr]
                    self.metrics.takeovers += 1
                    log.info("node %s took over actor %s from dead node %s", self.node_id, actor_id,
                             decode_owner(taken)[0])
        if not self.lease_valid() and instance.kv.writes == writes:
            # The lease ran out during the call and it wrote nothing: its reads may
            # have come from memory after another node took the actor.
            raise LeaseExpiredError(f"node {self.node_id} lost its lease during the call: the answer is withheld "
                                    "(nothing was written)", retry_after=self._lease_s / 3)
        self.metrics.calls_local += 1
        return result

    def _peer(self, address: str) -> Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = Peer(address, self._secret, self.node_id,
                                               connect_timeout=min(1.0, self._lease_s))
        return peer

    async def _forward(self, address: str, name: str, key: str, action: str, args: list[Any]) -> tuple[Any, str]:
        if not address:
            raise OwnerUnreachableError("the owner node advertises no address")
        started = time.perf_counter()
        try:
            result = await self._peer(address).call(name, key, action, args, self.options.forward_timeout_s)
        except RemoteFailure as failure:
            if failure.status == 503 and failure.error in _RETRY_SAFE:
                self.metrics.forward_failures += 1
                raise OwnerUnreachableError(f"node {failure.node}: {failure.error}: {failure.message}",
                                            retry_after=failure.retry_after) from None
            raise
        except PlacementError:
            self.metrics.forward_failures += 1
            raise
        elapsed = time.perf_counter() - started
        m = self.metrics
        m.calls_forwarded += 1
        m.forward_seconds_sum += elapsed
        m.forward_seconds.append(elapsed)
        if len(m.forward_seconds) > 4096:
            del m.forward_seconds[:2048]
        return result

    def status(self) -> dict[str, Any]:
        """What ``/healthz`` reports."""
        return {"node": self.node_id, "instance": self.instance, "address": self.address,
                "url": self.options.http_url, "draining": self.draining, "lease_valid": self.lease_valid(),
                "actors_owned": len(self.owned),
                "actors_awake": sum(1 for i in list(self.registry._instances.values()) if i.status == AWAKE)}


class _Arity:
    """How many positional arguments (after the context) an action accepts: a count in
    ``[low, high]`` certainly binds; any other is checked by ``signature.bind`` (which
    also says why it does not fit). Saves the bind, microseconds, on every call."""

    __slots__ = ("signature", "low", "high")

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        every = list(signature.parameters.values())
        self.low, self.high = 1, 0  # (never certain: always bind)
        if not every or any(p.kind == p.KEYWORD_ONLY and p.default is p.empty for p in every):
            return
        if every[0].kind == every[0].VAR_POSITIONAL:  # def action(*args): anything binds
            self.low, self.high = 0, 1 << 30
            return
        if every[0].kind not in (every[0].POSITIONAL_ONLY, every[0].POSITIONAL_OR_KEYWORD):
            return
        params = every[1:]  # (the first takes the context)
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.low = sum(1 for p in positional if p.default is p.empty)
        self.high = 1 << 30 if any(p.kind == p.VAR_POSITIONAL for p in params) else len(positional)


_RETRY_SAFE = {"OwnerUnreachableError", "NodeDrainingError", "LeaseExpiredError", "ActorOwnedElsewhereError"}


def error_fields(exc: BaseException) -> dict[str, Any]:
    """An exception as the ``s`` (HTTP status), ``e`` (type name), ``m`` (message) and
    ``ra`` (retry after, seconds) fields of an answer (:mod:`actor_db.serve.http`)."""
    from actor_db.serve.http import error_name, status_of

    if isinstance(exc, RemoteFailure):
        return {"s": exc.status, "e": exc.error, "m": exc.message, "ra": exc.retry_after}
    status = status_of(exc)
    retry = getattr(exc, "retry_after", None) if status == 503 else None
    if status == 503 and retry is None:
        retry = 0.5
    return {"s": status, "e": error_name(exc), "m": str(exc), "ra": retry}


__all__ += ["error_fields"]
_ = OutcomeUnknownError  # (raised by the wire layer; re-exported for callers' except clauses)
