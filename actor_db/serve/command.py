"""``actor-db serve MODULE:ATTR --kv URL [--host H] [--port P] [--node-id ID] [--workers N]
[--token T]``: run a :class:`~actor_db.Registry` as a node under uvicorn.

``ATTR`` names a ``Registry`` (like uvicorn's ``module:app``). ``--kv`` is exported as
``$ACTOR_DB_KV`` BEFORE the module is imported, so a ``Registry()`` built without
``kv=`` opens that store; a registry given its own ``kv=`` keeps it.

``--workers N`` (N > 1): this process holds the port and forks N worker processes,
each a node of its own (node id ``ID-1`` .. ``ID-N``, its own node-to-node port)
listening on the same port (``SO_REUSEPORT``: the kernel spreads connections evenly)
and sharing the store: LMDB across the processes of one machine, or
Redis. The parent restarts a worker that dies and passes SIGTERM/SIGINT on.

Direct routes: every node advertises the base URL that reaches it alone (its
heartbeat's ``http``; answers name it in ``X-Actor-DB-Node-URL``): with one worker,
the serving port; with ``--workers N``, each worker also listens on a port of its
own (any free one on ``--host``), so a client that routes (:class:`actor_db.client.Client`)
calls every actor's owner directly instead of having half of its calls forwarded
between workers. The URL's host is ``--advertise-host``, else ``--host`` (the host
name when that is a wildcard address). ``--no-direct`` advertises nothing (and opens
no worker port): clients then always go through the shared port and forwarding.

SIGTERM (or Ctrl-C) drains first, while still answering HTTP (calls are forwarded, and
answers say ``Connection: close`` and ``X-Actor-DB-Draining: 1``): the node stops
claiming, in-flight calls finish, actors sleep, their ownership is released; it keeps
answering for ``--drain-grace`` seconds (clients and load balancers move away), then
uvicorn stops. A second signal stops
at once. Exit status 0 after a clean drain.

The node secret (node-to-node forwarding) comes from ``--node-secret`` or
``$ACTOR_DB_NODE_SECRET``; with ``--workers`` and neither, the parent makes one for
its workers. The client token from ``--token`` or ``$ACTOR_DB_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Add the ``serve`` command to ``subparsers`` (the ``actor-db`` parser's)."""
    p = subparsers.add_parser(
        "serve", parents=parents or [], help="serve a Registry's actors over HTTP (one node)",
        description="Serve a Registry's actors over HTTP (POST /actors/NAME/KEY/ACTION). More options "
                    "(--node-secret, --node-host, --node-port, ...): docs/deployment.md.")
    p.add_argument("target", metavar="MODULE:ATTR", help="the Registry, e.g. myapp.actors:registry")
    if not any("--kv" in a.option_strings for parent in (parents or []) for a in parent._actions):
        p.add_argument("--kv", metavar="STORE", help="lmdb:PATH or redis://HOST:PORT/DB (default: $ACTOR_DB_KV)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (8000; 0: any free port)")
    p.add_argument("--node-id", metavar="ID", help="unique node id (default: host-pid-random)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="node processes on this machine (1)")
    p.add_argument("--token", nargs="?", const="", default=None, metavar="TOKEN",
                   help="require this bearer token ($ACTOR_DB_TOKEN)")
    p.add_argument("--lease", type=float, default=10.0, metavar="S",
                   help="heartbeat lease, seconds (10)")
    # Documented in docs/deployment.md; kept out of --help so that it fits one screen.
    p.add_argument("--node-secret", metavar="SECRET", help=argparse.SUPPRESS)  # $ACTOR_DB_NODE_SECRET
    p.add_argument("--node-host", default=None, metavar="H", help=argparse.SUPPRESS)
    p.add_argument("--node-port", type=int, default=0, metavar="P", help=argparse.SUPPRESS)
    p.add_argument("--advertise-host", metavar="H", help=argparse.SUPPRESS)
    p.add_argument("--no-direct", action="store_true", help=argparse.SUPPRESS)  # advertise no direct URL
    p.add_argument("--forward-timeout", type=float, default=30.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("--drain-grace", type=float, default=2.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("--port-file", metavar="PATH", help=argparse.SUPPRESS)  # tests: the bound port is written here
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help=argparse.SUPPRESS)
    return p  # type: ignore[no-any-return]


def _load(target: str) -> Any:
    from actor_db.errors import ConfigurationError
    from actor_db.runtime.registry import Registry

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTR, got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # (as uvicorn does: modules of the working directory)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Registry):
        raise ConfigurationError(f"{target} is a {type(obj).__name__}, not an actor_db.Registry")
    return obj


def _bind(host: str, port: int, *, listen: bool = True, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port``; with ``reuse_port``, several processes bind
    the same port and the kernel spreads connections evenly over their sockets."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def _direct_url(args: argparse.Namespace, port: int) -> str | None:
    """The base URL advertised for a node whose own HTTP port is ``port`` (or ``None``
    with ``--no-direct``)."""
    if args.no_direct:
        return None
    host = args.advertise_host or args.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve_one(args: argparse.Namespace, sockets: list[socket.socket], node_id: str | None, node_host: str,
               http_url: str | None) -> int:
    """Run one node on ``sockets`` until a signal has drained it."""
    import uvicorn

    registry = _load(args.target)
    app = registry.asgi(token=args.token, node_id=node_id, lease_s=args.lease, node_secret=args.node_secret,
                        node_host=node_host, node_port=args.node_port, advertise_host=args.advertise_host,
                        forward_timeout_s=args.forward_timeout, http_url=http_url)

    class Server(uvicorn.Server):
        """uvicorn, whose first SIGTERM/SIGINT drains the node before stopping."""

        draining: asyncio.Task[None] | None = None
        _loop: asyncio.AbstractEventLoop | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            loop = self._loop
            if self.draining is not None or loop is None:
                self.should_exit = True
                self.force_exit = self.draining is not None and sig == signal.SIGINT
                return
            loop.call_soon_threadsafe(self._drain)

        def _drain(self) -> None:
            async def drain() -> None:
                try:
                    await app.drain()
                    # Still answering (forwarding, "Connection: close"): clients and load
                    # balancers see the node leave before its port closes.
                    await asyncio.sleep(args.drain_grace)
                finally:
                    self.should_exit = True
            self.draining = asyncio.get_running_loop().create_task(drain())

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().startup(sockets=sockets)

    # (proxy_headers off: the app never reads the client's address, and the middleware
    # costs microseconds on every request)
    config = uvicorn.Config(app, lifespan="on", log_level=args.log_level, access_log=False, proxy_headers=False,
                            timeout_graceful_shutdown=max(5.0, args.forward_timeout))
    server = Server(config)
    server._loop = None
    server.run(sockets=sockets)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the ``serve`` command; the exit status."""
    from actor_db.errors import ConfigurationError

    if getattr(args, "kv", None):
        os.environ["ACTOR_DB_KV"] = args.kv
    if args.token is not None and args.token == "":
        args.token = os.environ.get("ACTOR_DB_TOKEN") or None
        if not args.token:
            raise ConfigurationError("--token without a value needs $ACTOR_DB_TOKEN")
    if args.workers < 1:
        raise ConfigurationError(f"--workers must be >= 1, not {args.workers}")
    logging.getLogger("actor_db").setLevel(args.log_level.upper())
    workers = args.workers > 1 and hasattr(socket, "SO_REUSEPORT")
    # With workers, this process only holds the port (bound, not listening: it gets no
    # connection); each worker listens on its own SO_REUSEPORT socket.
    sock = _bind(args.host, args.port, listen=not workers, reuse_port=workers)
    port = sock.getsockname()[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(args.port_file + ".tmp", args.port_file)
    node_host = args.node_host or (args.host if args.workers == 1 else "127.0.0.1")
    if args.workers == 1:
        return _serve_one(args, [sock], args.node_id, node_host, _direct_url(args, port))
    if not args.node_secret and not os.environ.get("ACTOR_DB_NODE_SECRET"):
        os.environ["ACTOR_DB_NODE_SECRET"] = uuid.uuid4().hex  # shared by the forked workers
    base = args.node_id or f"{socket.gethostname()}-{os.getpid()}"
    return _supervise(args, sock, base, node_host)


def _supervise(args: argparse.Namespace, sock: socket.socket, base: str, node_host: str) -> int:
    """Fork ``args.workers`` workers, restart any that dies, pass signals on."""
    children: dict[int, int] = {}  # pid -> worker number
    born: dict[int, float] = {}
    stopping = False
    quick_failures = 0

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: imports the module itself (nothing of the store crosses a fork)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                own = sock
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
                    own = _bind(args.host, sock.getsockname()[1], reuse_port=True)
                    sock.close()
                sockets, url = [own], None
                if not args.no_direct:  # this worker's own port: clients reach its actors directly
                    direct = _bind(args.host, 0)
                    sockets.append(direct)
                    url = _direct_url(args, direct.getsockname()[1])
                code = _serve_one(args, sockets, f"{base}-{number}", node_host, url)
            except BaseException as exc:
                from actor_db.errors import ActorDBError

                if isinstance(exc, ActorDBError):  # a user mistake: one line, as the command does
                    log.error("worker %d: %s", number, exc)
                else:
                    log.exception("worker %d failed", number)
            finally:
                os._exit(code)
        children[pid] = number
        born[pid] = time.monotonic()

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for number in range(1, args.workers + 1):
        spawn(number)
    last_restart = 0.0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        number = children.pop(pid, 0)
        lived = time.monotonic() - born.pop(pid, 0.0)
        if not number or stopping:
            continue
        quick_failures = quick_failures + 1 if lived < 5.0 else 0
        if quick_failures >= 3:  # e.g. MODULE:ATTR does not import: do not restart forever
            log.error("workers keep failing at start (status %d); stopping", status)
            forward(signal.SIGTERM, None)
            while children:
                try:
                    children.pop(os.wait()[0], None)
                except ChildProcessError:
                    break
            return 1
        log.warning("worker %d (pid %d) exited with status %d; restarting it", number, pid, status)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - last_restart)))  # at most one restart a second
        last_restart = time.monotonic()
        spawn(number)
    return 0
