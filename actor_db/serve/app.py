"""``registry.asgi()``: the actors of a :class:`~actor_db.Registry` over HTTP, as a plain
ASGI application (no framework), placed by a :class:`~actor_db.serve.node.Node`.

Routes (the public contract):

- ``POST /actors/{name}/{key}/{action}``, body a JSON array of arguments: ``200`` and
  the action's JSON result, or an error body (:mod:`actor_db.serve.http`). ``name``,
  ``key`` and ``action`` are percent-decoded path segments (a key may hold ``/`` as
  ``%2F``).
- ``GET /healthz``: ``200 {"status": "ok", ...}``; ``503`` while draining or without
  a valid lease (a load balancer then stops sending calls).
- ``GET /metrics``: the registry's Prometheus text (:mod:`actor_db.metrics_export`)
  plus the node's placement metrics (``actor_db_placement_*``).

Every answer carries ``X-Actor-DB-Node: <node id>``, naming the node where the action
ran (for a forwarded call, the owner's), and, when that node advertises one
(``http_url``), ``X-Actor-DB-Node-URL: <its own base URL>``: a client may send that
actor's next calls there directly (:class:`actor_db.client.Client` does), skipping
the forwarding hop. With ``token`` (or ``$ACTOR_DB_TOKEN``),
``/actors`` and ``/metrics`` require ``Authorization: Bearer <token>`` (401 otherwise).
While the node drains, answers carry ``Connection: close`` and ``X-Actor-DB-Draining: 1``
so clients move on (:class:`actor_db.client.Client` then avoids that URL for a while).

Mounted in another app (Starlette's ``Mount``, FastAPI's ``app.mount``), the lifespan
events may not reach it: the node then starts on the first request; call
:meth:`ActorApp.close` from the host's shutdown to drain.

Left out: streaming, websockets, request bodies over ``max_body_bytes`` (413).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence
from urllib.parse import unquote

from actor_db.serve.http import BadRequest, Unauthorized, error_body, error_name, retry_after_header, status_of
from actor_db.serve.node import Node, NodeOptions
from actor_db.serve.wire import RemoteFailure

if TYPE_CHECKING:
    from actor_db.runtime.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["ActorApp"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 16 * 1024 * 1024
_JSON = (b"content-type", b"application/json")
_encode = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps`` with these separators, without building an encoder per call."""


class ActorApp:
    """The ASGI application (``registry.asgi(...)``).

    :param registry: the actors to serve.
    :param token: require ``Authorization: Bearer <token>`` (default ``$ACTOR_DB_TOKEN``;
        ``""`` disables it).
    :param options: :class:`~actor_db.serve.node.NodeOptions` fields (``node_id``,
        ``lease_s``, ``node_secret``, ``node_host``, ``node_port``, ...).
    """

    def __init__(self, registry: Registry, *, token: str | None = None, **options: Any) -> None:
        self.registry = registry
        self.node = Node(registry, NodeOptions(**options))
        self.token = os.environ.get("ACTOR_DB_TOKEN") if token is None else token
        self._token = self.token.encode("utf-8") if self.token else None
        self._node_header = (b"x-actor-db-node", self.node.node_id.encode("utf-8"))
        url = self.node.options.http_url
        self._url_header = (b"x-actor-db-node-url", url.encode("latin-1")) if url else None
        self._url_headers: dict[str, tuple[bytes, bytes]] = {}
        """URL -> its ``X-Actor-DB-Node-URL`` header (other nodes')."""

    async def start(self) -> None:
        """Start the node (join, open the node-to-node listener). Idempotent."""
        await self.node.start()

    async def drain(self) -> None:
        """Leave cleanly (:meth:`Node.drain`) while still answering HTTP (forwarding)."""
        await self.node.drain()

    async def close(self) -> None:
        """Drain, stop the node, and close the registry's actors."""
        await self.node.close()

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("actor-db node failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.close()
                    await self.registry.close()
                except Exception as exc:
                    log.exception("actor-db node failed to stop cleanly")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _segments(self, scope: Scope) -> list[str]:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, (bytes, bytearray)) else scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        path = path.split("?", 1)[0]
        return [unquote(part) for part in path.strip("/").split("/")] if path.strip("/") else []

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        parts = self._segments(scope)
        try:
            if parts == ["healthz"] and method in ("GET", "HEAD"):
                status = self.node.status()
                ok = not status["draining"] and (status["lease_valid"] or not self.node.started)
                status["status"] = "ok" if ok else ("draining" if status["draining"] else "no-lease")
                await self._answer(send, 200 if ok else 503, json.dumps(status).encode())
                return
            if parts == ["metrics"] and method == "GET":
                if not self._authorized(scope):
                    raise Unauthorized("a bearer token is required")
                await self._answer(send, 200, self.metrics_text().encode("utf-8"),
                                   content_type=b"text/plain; version=0.0.4; charset=utf-8")
                return
            if len(parts) != 4 or parts[0] != "actors":
                await self._error(send, 404, "NotFound", f"no route {method} {'/' + '/'.join(parts)}", None)
                return
            if method != "POST":
                await self._error(send, 405, "MethodNotAllowed", "use POST", None)
                return
            if not self._authorized(scope):
                raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
            body = await self._body(receive)
            try:
                args = json.loads(body) if body.strip() else []
            except ValueError as exc:
                raise BadRequest(f"the body is not JSON: {exc}") from None
            if not isinstance(args, list):
                raise BadRequest("the body must be a JSON array of arguments")
            _, name, key, action = parts
            result, node = await self.node.call(name, key, action, args)
            try:
                payload = _encode(result).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise TypeError(f"the result of {name}.{action} is not JSON: {exc}") from exc
            await self._answer(send, 200, payload, node=node)
        except RemoteFailure as failure:  # the owner's answer, passed on as is
            await self._error(send, failure.status, failure.error, failure.message, failure.retry_after,
                              node=failure.node)
        except Exception as exc:
            code = status_of(exc)
            if code == 500:
                log.info("call %s failed: %s: %s", "/".join(parts), type(exc).__name__, exc)
            retry: float | None = getattr(exc, "retry_after", None) if code == 503 else None
            if code == 503 and retry is None:
                retry = 0.5
            await self._error(send, code, error_name(exc), str(exc), retry)

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadRequest(f"the body exceeds {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _answer(self, send: Send, status: int, body: bytes, *, node: str | None = None,
                      content_type: bytes = b"application/json", extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode("ascii")),
                   self._node_header if node is None else (b"x-actor-db-node", node.encode("utf-8")), *extra]
        url_header = self._url_header if node is None or node == self.node.node_id else self._url_of(node)
        if url_header is not None:
            headers.append(url_header)
        if self.node.draining:
            headers.append((b"connection", b"close"))
            headers.append((b"x-actor-db-draining", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _url_of(self, node: str) -> tuple[bytes, bytes] | None:
        url = self.node.url_of(node)
        if not url:
            return None
        header = self._url_headers.get(url)
        if header is None:
            if len(self._url_headers) > 10_000:
                self._url_headers.clear()
            header = self._url_headers[url] = (b"x-actor-db-node-url", url.encode("latin-1"))
        return header

    async def _error(self, send: Send, status: int, error: str, message: str, retry_after: float | None,
                     node: str | None = None) -> None:
        extra = [(b"retry-after", retry_after_header(retry_after))] if status == 503 else []
        if status == 401:
            extra.append((b"www-authenticate", b"Bearer"))
        await self._answer(send, status, error_body(error, message, retry_after), node=node, extra=extra)

    def metrics_text(self) -> str:
        """The registry's Prometheus text plus the placement families."""
        from actor_db.metrics_export import metrics_text
        from actor_db.serve.metrics import placement_text

        return metrics_text(self.registry) + placement_text(self.node)
