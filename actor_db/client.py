"""A Python client for actors served over HTTP (``actor-db serve``, ``registry.asgi()``).

Usage::

    async with Client("http://127.0.0.1:8000") as client:
        await client.actor("counter", "k").call("hit", 1)

    with SyncClient(["http://10.0.0.1:8000", "http://10.0.0.2:8000"], token="s3cret") as client:
        client.actor("counter", "k").call("hit", 1)

Behaviour:

- ``url`` is one base URL or a list of them (the nodes, or one load balancer): a
  call for an actor with no known route goes to a random one, and to another after a
  connection failure; a node that answers ``X-Actor-DB-Draining`` (SIGTERM) is
  avoided for 5 s.
- Direct routes (``route=True``, the default): a successful answer names the URL of
  the node that ran the action (``X-Actor-DB-Node-URL``, the actor's owner); that
  actor's next calls go there directly, skipping the forwarding hop between nodes
  (with ``actor-db serve --workers N``, each worker's own port). A route is dropped
  when its node answers 503 or says it drains, and every route to a URL is dropped
  (and that URL not learnt again for 5 s, doubled after each further failure up to
  5 minutes) when it cannot be connected to; the call
  then goes to ``url`` again, which forwards it to the actor's new owner. A route is
  an optimisation only: any node runs any call. Routes are kept for at most
  ``max_routes`` actors (the table is emptied when full).
- A call is retried, with exponential backoff and jitter (honouring the answer's
  ``retry_after``), for at most ``retry_for`` seconds, only when it certainly did not
  run: the connection could not be made, or a 503 whose error says so (the owner was
  unreachable before delivery, the node was draining, its lease had expired, the
  call was fenced). A 503 ``OutcomeUnknownError`` (the owner died mid-call) and a
  broken connection after the request was sent are raised, not retried: the action
  may have run, and only the caller knows whether running it twice is safe
  (``idempotent=True`` on :meth:`RemoteActor.call` retries those too).
- Any other error answer is raised as an exception named by the answer's ``error``:
  a built-in exception type (``ValueError``, ``KeyError``, ...) or one of
  :mod:`actor_db.errors` is raised as a subclass of that type AND of
  :class:`~actor_db.errors.RemoteError`; any other name as a subclass of
  ``RemoteError`` with that name. ``exc.status`` is the HTTP status, ``exc.node`` the
  node that answered.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import random
import time
from typing import Any, Sequence
from urllib.parse import quote

import httpx

import actor_db.errors as _errors
from actor_db.errors import RemoteError

__all__ = ["Client", "SyncClient", "RemoteActor", "SyncRemoteActor", "RETRY_SAFE_ERRORS"]

RETRY_SAFE_ERRORS = frozenset({"OwnerUnreachableError", "NodeDrainingError", "LeaseExpiredError", "FencedError",
                               "ActorOwnedElsewhereError"})
"""503 error types after which the action certainly did not run."""

AVOID_DRAINING_S = 5.0
"""Seconds a client with several URLs avoids one whose node said it is draining."""

AVOID_UNREACHABLE_S = 5.0
"""Seconds during which a direct URL that could not be connected to is not learnt again;
doubled at each failure in a row, up to :data:`AVOID_UNREACHABLE_MAX_S` (a node whose
advertised URL the client can never reach costs one failed connect per period)."""

AVOID_UNREACHABLE_MAX_S = 300.0

ROUTE_CONNECT_TIMEOUT_S = 2.0
"""Connect timeout (seconds) of a call sent to a learnt direct URL (then ``url`` again)."""

_classes: dict[str, type[RemoteError]] = {}


def remote_error(name: str, message: str, status: int, node: str | None) -> RemoteError:
    """The exception for an error answer (see the module docstring)."""
    cls = _classes.get(name)
    if cls is None:
        base = getattr(_errors, name, None) if name in _errors.__all__ else None
        if base is None:
            candidate = getattr(builtins, name, None)
            if isinstance(candidate, type) and issubclass(candidate, Exception):
                base = candidate
        bases: tuple[type, ...] = (RemoteError,) if base is None or base is RemoteError else (base, RemoteError)
        try:
            cls = type(name, bases, {"__module__": "actor_db.client"})
        except TypeError:  # an incompatible layout: the name alone
            cls = type(name, (RemoteError,), {"__module__": "actor_db.client"})
        _classes[name] = cls
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.status = status
    exc.node = node  # type: ignore[attr-defined]
    return exc


def _path(name: str, key: str, action: str) -> str:
    return f"/actors/{quote(name, safe='')}/{quote(key, safe='')}/{quote(action, safe='')}"


class _Policy:
    """Shared by both clients: URL choice, retry decisions, answers → results."""

    def __init__(self, url: str | Sequence[str], token: str | None, retry_for: float, route: bool = True,
                 max_routes: int = 100_000) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("give at least one URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self.retry_for = retry_for
        self.draining: dict[str, float] = {}
        """URL -> monotonic time until which it is avoided (it said it drains)."""
        self.route = route
        self.max_routes = max_routes
        self.routes: dict[tuple[str, str], str] = {}
        """(actor type, key) -> base URL of its owner, learnt from ``X-Actor-DB-Node-URL``."""
        self.unreachable: dict[str, tuple[float, int]] = {}
        """direct URL -> (monotonic time until which it is not learnt again, failures in a row)."""

    def pick(self, avoid: str | None) -> str:
        now = time.monotonic()
        others = [u for u in self.urls if u != avoid] or self.urls
        choices = [u for u in others if self.draining.get(u, 0.0) <= now]
        if choices:
            return random.choice(choices)
        # Every one said it drains: the one that said so first has most likely restarted.
        return min(others, key=lambda u: self.draining.get(u, 0.0))

    def observe(self, url: str, response: httpx.Response, actor: tuple[str, str]) -> None:
        """A draining node (``X-Actor-DB-Draining``) is avoided for :data:`AVOID_DRAINING_S`
        and every route to it is dropped; a 200 teaches ``actor``'s route, a 503 drops it."""
        headers = response.headers
        draining = headers.get("x-actor-db-draining")
        if draining:
            if len(self.urls) > 1:
                self.draining[url] = time.monotonic() + AVOID_DRAINING_S
            self.forget_url(url, unreachable=True)
        elif url in self.unreachable and response.status_code == 200:
            del self.unreachable[url]  # reached again: the next failure counts from 1
        if not self.route:
            return
        if response.status_code == 200:
            direct = headers.get("x-actor-db-node-url")
            direct = direct.rstrip("/") if direct else None
            if direct and direct != self.routes.get(actor) and direct.startswith(("http://", "https://")) \
                    and not (direct == url and draining) \
                    and self.unreachable.get(direct, (0.0, 0))[0] <= time.monotonic():
                if len(self.routes) >= self.max_routes:
                    self.routes.clear()
                self.routes[actor] = direct
        elif response.status_code == 503:
            self.routes.pop(actor, None)

    def forget_url(self, url: str, unreachable: bool = False) -> None:
        """Drop every route to ``url`` (and, ``unreachable``, do not learn it for
        :data:`AVOID_UNREACHABLE_S` seconds, doubled per period that ended in another
        failure: it died, drains, or cannot be reached from here)."""
        now = time.monotonic()
        until, strikes = self.unreachable.get(url, (0.0, 0))
        if unreachable and until <= now:  # (failures within one period count once)
            avoid = min(AVOID_UNREACHABLE_S * 2 ** strikes, AVOID_UNREACHABLE_MAX_S)
            self.unreachable[url] = (now + avoid, strikes + 1)
        if url in self.routes.values():
            self.routes = {a: u for a, u in self.routes.items() if u != url}

    @staticmethod
    def delay(attempt: int, retry_after: float | None) -> float:
        backoff = min(0.02 * (2 ** attempt), 1.0) * (0.5 + random.random())
        return float(max(backoff, min(float(retry_after or 0.0), 5.0)))

    @staticmethod
    def outcome(response: httpx.Response, idempotent: bool) -> tuple[bool, Any, float | None, Exception | None]:
        """``(retry, result, retry_after, error)`` for an answer."""
        if response.status_code == 200:
            return False, response.json(), None, None
        try:
            body = response.json()
            name, message, retry_after = str(body["error"]), str(body.get("message", "")), body.get("retry_after")
        except (ValueError, KeyError, TypeError):
            name, message, retry_after = f"HTTP{response.status_code}", response.text[:500], None
        error = remote_error(name, message, response.status_code, response.headers.get("x-actor-db-node"))
        retry = response.status_code == 503 and (name in RETRY_SAFE_ERRORS or idempotent)
        return retry, None, retry_after, error


class Client:
    """Async client. ``await client.actor(name, key).call(action, *args)``.

    :param url: base URL (or several: see the module docstring).
    :param token: the bearer token the servers require (``--token``), if any.
    :param timeout: seconds for one HTTP request.
    :param retry_for: seconds during which a retry-safe failure is retried.
    :param route: send each actor's calls straight to the node that owns it, learnt
        from the answers (see the module docstring); ``False``: always to ``url``.
    :param max_routes: actors whose route is remembered (the table is emptied when full).
    """

    def __init__(self, url: str | Sequence[str], token: str | None = None, *, timeout: float = 60.0,
                 retry_for: float = 15.0, http: httpx.AsyncClient | None = None, route: bool = True,
                 max_routes: int = 100_000) -> None:
        self._policy = _Policy(url, token, retry_for, route, max_routes)
        self._direct_timeout = httpx.Timeout(timeout, connect=min(timeout, ROUTE_CONNECT_TIMEOUT_S))
        self._http = http or httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256,
                                                                                   max_keepalive_connections=64))

    def actor(self, name: str, key: str = "default") -> RemoteActor:
        return RemoteActor(self, name, key)

    def route_of(self, name: str, key: str = "default") -> str | None:
        """The owner URL this client sends actor ``name/key``'s calls to, if it learnt one."""
        return self._policy.routes.get((name, key))

    async def call(self, name: str, key: str, action: str, *args: Any, idempotent: bool = False) -> Any:
        """Run ``action(*args)`` on actor ``name/key``; its JSON result.

        :raises RemoteError: (a subclass named by the remote error) the call failed.
        :raises httpx.HTTPError: no server could be reached within ``retry_for``, or the
            connection broke after the request was sent (not retried unless ``idempotent``).
        """
        policy = self._policy
        body = json.dumps(list(args)).encode("utf-8")
        path = _path(name, key, action)
        actor = (name, key)
        give_up = time.monotonic() + policy.retry_for
        url: str | None = None
        attempt = 0
        while True:
            direct = policy.routes.get(actor)
            url = direct or policy.pick(url)
            retry_after: float | None = None
            try:
                timeout = httpx.USE_CLIENT_DEFAULT if direct is None else self._direct_timeout
                response = await self._http.post(url + path, content=body, headers=policy.headers, timeout=timeout)
                policy.observe(url, response, actor)
            except (httpx.ConnectError, httpx.ConnectTimeout):  # not delivered: always safe
                if direct is not None:  # a stale route (its node died or moved): ``url`` again, at once
                    policy.forget_url(direct, unreachable=True)
                    continue
                if time.monotonic() > give_up:
                    raise
            except httpx.TransportError:  # sent, then broken: it may have run
                if direct is not None:
                    policy.routes.pop(actor, None)
                if not idempotent or time.monotonic() > give_up:
                    raise
            else:
                retry, result, retry_after, failure = policy.outcome(response, idempotent)
                if failure is None:
                    return result
                if not retry or time.monotonic() > give_up:
                    raise failure
            await asyncio.sleep(policy.delay(attempt, retry_after))
            attempt += 1

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class RemoteActor:
    """One remote actor (cheap; no connection of its own)."""

    def __init__(self, client: Client, name: str, key: str) -> None:
        self.client, self.name, self.key = client, name, key

    async def call(self, action: str, *args: Any, idempotent: bool = False) -> Any:
        return await self.client.call(self.name, self.key, action, *args, idempotent=idempotent)


class SyncClient:
    """The blocking twin of :class:`Client` (same parameters and behaviour)."""

    def __init__(self, url: str | Sequence[str], token: str | None = None, *, timeout: float = 60.0,
                 retry_for: float = 15.0, http: httpx.Client | None = None, route: bool = True,
                 max_routes: int = 100_000) -> None:
        self._policy = _Policy(url, token, retry_for, route, max_routes)
        self._direct_timeout = httpx.Timeout(timeout, connect=min(timeout, ROUTE_CONNECT_TIMEOUT_S))
        self._http = http or httpx.Client(timeout=timeout)

    def actor(self, name: str, key: str = "default") -> SyncRemoteActor:
        return SyncRemoteActor(self, name, key)

    def route_of(self, name: str, key: str = "default") -> str | None:
        """See :meth:`Client.route_of`."""
        return self._policy.routes.get((name, key))

    def call(self, name: str, key: str, action: str, *args: Any, idempotent: bool = False) -> Any:
        """See :meth:`Client.call`."""
        policy = self._policy
        body = json.dumps(list(args)).encode("utf-8")
        path = _path(name, key, action)
        actor = (name, key)
        give_up = time.monotonic() + policy.retry_for
        url: str | None = None
        attempt = 0
        while True:
            direct = policy.routes.get(actor)
            url = direct or policy.pick(url)
            retry_after: float | None = None
            try:
                timeout = httpx.USE_CLIENT_DEFAULT if direct is None else self._direct_timeout
                response = self._http.post(url + path, content=body, headers=policy.headers, timeout=timeout)
                policy.observe(url, response, actor)
            except (httpx.ConnectError, httpx.ConnectTimeout):  # not delivered: always safe
                if direct is not None:  # a stale route (its node died or moved): ``url`` again, at once
                    policy.forget_url(direct, unreachable=True)
                    continue
                if time.monotonic() > give_up:
                    raise
            except httpx.TransportError:  # sent, then broken: it may have run
                if direct is not None:
                    policy.routes.pop(actor, None)
                if not idempotent or time.monotonic() > give_up:
                    raise
            else:
                retry, result, retry_after, failure = policy.outcome(response, idempotent)
                if failure is None:
                    return result
                if not retry or time.monotonic() > give_up:
                    raise failure
            time.sleep(policy.delay(attempt, retry_after))
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncRemoteActor:
    """One remote actor of a :class:`SyncClient`."""

    def __init__(self, client: SyncClient, name: str, key: str) -> None:
        self.client, self.name, self.key = client, name, key

    def call(self, action: str, *args: Any, idempotent: bool = False) -> Any:
        return self.client.call(self.name, self.key, action, *args, idempotent=idempotent)
