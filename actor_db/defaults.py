"""The one rule for the default store, shared by the CLI, the drop-in and ``Registry()``.

Rule: ``$ACTOR_DB_KV`` when it is set and not empty (``lmdb:PATH``, ``memory:``,
``redis://HOST:PORT/DB[?namespace=NS]`` or, for a Redis Cluster,
``redis+cluster://HOST:PORT[?namespace=NS]``; the namespace, i.e. the prefix of every
Redis key, defaults to ``actor-db``), else LMDB in ``./.actor-db`` (relative to the
working directory when the store is opened). ``$ACTOR_DB_PATH`` (an LMDB directory, the
drop-in's variable before this rule) still works when ``$ACTOR_DB_KV`` is not set, with
a :class:`DeprecationWarning`.

- ``actor-db`` (the CLI): ``--kv`` when given, else this rule.
- ``actor_db.connect("name")`` / ``actor_db.dbapi`` (bare names without ``kv=``): this rule.
- ``actor_db.Registry(actors)`` without ``kv=``: this rule.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.parse
import warnings
from typing import Any, Mapping

from actor_db.errors import ActorDBError, ConfigurationError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_KV", "ENV_KV", "ENV_PATH_DEPRECATED", "default_store_spec", "open_store", "open_default_store",
           "shared_store"]

DEFAULT_KV = "lmdb:./.actor-db"
"""The store used when ``$ACTOR_DB_KV`` (and the deprecated ``$ACTOR_DB_PATH``) is not set."""

ENV_KV = "ACTOR_DB_KV"
"""The environment variable naming the default store (a ``--kv`` value)."""

ENV_PATH_DEPRECATED = "ACTOR_DB_PATH"
"""Deprecated alias: an LMDB directory, used only when ``$ACTOR_DB_KV`` is not set."""


_path_warned = False
"""Whether this process already logged the deprecation of ``$ACTOR_DB_PATH``."""


def default_store_spec(environ: Mapping[str, str] | None = None) -> str:
    """The ``--kv``-style spec of the default store, by the rule in this module's docstring.

    :param environ: the environment to read (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    spec = env.get(ENV_KV, "").strip()
    if spec:
        return spec
    legacy = env.get(ENV_PATH_DEPRECATED, "").strip()
    if legacy:
        message = f"${ENV_PATH_DEPRECATED} is deprecated; set {ENV_KV}=lmdb:{legacy} instead"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        global _path_warned
        if not _path_warned:  # Python hides DeprecationWarning outside __main__: say it once, as a log warning
            _path_warned = True
            log.warning("%s", message)
        return f"lmdb:{legacy}"
    return DEFAULT_KV


def open_store(spec: str, *, create: bool = True, origin: str = "--kv") -> Any:
    """Open the :class:`~actor_db.kv.KVStore` a ``--kv``-style spec names.

    :param spec: ``lmdb:PATH`` (a directory; relative paths are resolved now),
        ``memory:`` (a new, empty in-memory store), or a ``redis://``/``rediss://``/
        ``unix://`` URL with an optional ``?namespace=NS``.
    :param create: allow creating a missing LMDB directory (only the last path
        component; ``False`` for callers that only read).
    :param origin: where ``spec`` came from, for error messages (``"--kv"``, or
        ``"$ACTOR_DB_KV"`` when the default store rule chose it).
    :raises ConfigurationError: unknown scheme, missing store, or driver unavailable.
    :raises KVError: the store exists but cannot be opened or reached.
    """
    if spec in ("memory:", "memory"):
        from actor_db.kv import MemoryKV

        return MemoryKV()
    if spec.startswith("lmdb:"):
        path = spec[len("lmdb:"):]
        if not path:
            raise ConfigurationError(f"{origin} lmdb: needs a directory, e.g. lmdb:./.actor-db")
        path = os.path.abspath(os.path.expanduser(path))
        if not create and not os.path.isdir(path):
            raise ConfigurationError(f"no LMDB store at {path} (nothing imported or created there yet)")
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigurationError(f"{origin} lmdb:{path} is not a directory")
        from actor_db.kv import LmdbKV

        return LmdbKV(path)
    scheme = spec.split(":", 1)[0].lower() if ":" in spec else ""
    if scheme in ("redis", "rediss", "unix"):
        return _open_redis(spec)
    if scheme in ("redis+cluster", "rediss+cluster"):
        # A Redis Cluster: any node's address; the client discovers the others.
        return _open_redis(scheme.split("+", 1)[0] + spec[len(scheme):], cluster=True)
    raise ConfigurationError(
        f"unknown {origin} {spec!r}: expected lmdb:PATH, memory:, redis://HOST:PORT/DB or "
        "redis+cluster://HOST:PORT")


def _open_redis(url: str, *, cluster: bool = False) -> Any:
    try:
        from actor_db import kv as kv_module

        redis_kv = getattr(kv_module, "RedisKV")
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"the Redis driver is not available ({exc}); install it with: pip install 'actor-db[redis]' "
            "(from a source checkout: pip install -e '.[redis]')") from None
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    namespace = [v for k, v in query if k == "namespace"]
    cluster_flag = [v for k, v in query if k == "cluster"]  # ?cluster=1: a Redis Cluster (any node's address)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in ("namespace", "cluster")])
    clean = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    kwargs: dict[str, Any] = {"namespace": namespace[-1]} if namespace else {}
    if cluster or (cluster_flag and cluster_flag[-1].lower() in ("1", "true", "yes")):
        kwargs["cluster"] = True
    try:
        return redis_kv(clean, **kwargs)
    except ActorDBError:
        raise
    except Exception as exc:  # redis-py raises its own types for a bad URL
        raise ConfigurationError(f"cannot open Redis store {url!r}: {exc}") from exc


def open_default_store(environ: Mapping[str, str] | None = None) -> Any:
    """Open the default store (:func:`default_store_spec`); the caller owns and closes it."""
    spec = default_store_spec(environ)
    log.debug("default store: %s", spec)
    env = os.environ if environ is None else environ
    origin = (f"${ENV_KV}" if env.get(ENV_KV, "").strip()
              else f"${ENV_PATH_DEPRECATED}" if env.get(ENV_PATH_DEPRECATED, "").strip() else "--kv")
    return open_store(spec, origin=origin)


_shared_lock = threading.Lock()
_shared: dict[str, Any] = {}


def shared_store(spec: str) -> Any:
    """The store ``spec`` names, opened once per process and kept open (integrations
    such as the SQLAlchemy dialect and the Django backend open many connections to one
    store; LMDB allows one environment per path per process). ``memory:`` is one shared
    in-memory store per process.

    :raises ConfigurationError: as :func:`open_store`.
    """
    key = spec.strip()
    with _shared_lock:
        store = _shared.get(key)
        if store is None:
            store = _shared[key] = open_store(key)
        return store
