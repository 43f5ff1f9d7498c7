"""``RedisKV``: the networked driver, over redis-py (hiredis when installed), for one
Redis/Valkey server or a Redis Cluster.

Layout of one actor (``ns`` is the ``namespace=`` argument, ``H`` the hex of the actor
id's UTF-8 bytes; the braces make ``{H}`` the Redis Cluster *hash tag*, so every key of
one actor lives in one slot and every per-actor call is single-slot)::

    ns:{H}:d   hash        actor-relative key -> value     (the data)
    ns:{H}:i   sorted set  actor-relative key, score 0    (the ordered index)
    ns:{H}:f   string      fencing counter (INCR)          (outside the data: never range-deleted)
    ns:{H}:v   string      write version (INCR per batch)  (lets snapshot reads detect a commit;
                                                       a refused batch or a pure check does not bump it)

Why a hash plus a score-0 sorted set. Redis keys are unordered, but the protocol needs
ordered prefix scans (the preload, the redo log, ``delete_range``). A sorted set whose
members all have score 0 is ordered by ``memcmp`` of the member bytes, which is exactly
the protocol's byte order, so ``ZRANGEBYLEX`` gives ordered range scans and range
deletes in O(log N + M). Values sit in one hash per actor rather than one Redis key per
KV key: one ``HMGET`` answers a multi-get, an actor costs 4 Redis keys however many
chunks its database has (the keyspace, ``SCAN`` and cluster slot migration stay small),
and deleting an actor drops two keys. Members and values are binary-safe.

Invariants:

- The index and the hash hold the same set of keys: they change only together, inside
  one Lua script (Redis runs a script atomically, nothing interleaves).
- Every protocol call is ONE network round trip: ``HMGET`` for a multi-get, one
  ``EVALSHA`` for a scan, a write batch and a preload. The first use of a script on a
  server (or after a restart) answers ``NOSCRIPT`` and is retried once with ``EVAL``;
  that is still one protocol call.
- A write script checks everything that can fail (the fencing token, then the batch's
  expectations: conditional writes) before its first write, so a refused batch applies
  nothing (and does not bump the write version). Scripts carry a ``#!lua`` shebang: a
  writing script is refused up front when Redis is over ``maxmemory`` instead of
  failing half way (Redis >= 7 / Valkey; earlier servers are not supported).
- Preload budgets are evaluated server-side with exactly the rules of
  :func:`vfs.preload.evaluate_preload`.

Left out: Redis replication guarantees (``WAIT``) and failover; a write is as durable
as the server's persistence settings make it (see the README: ``appendonly yes``,
``appendfsync always``, ``maxmemory-policy noeviction``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from vfs.preload import PreloadMap, build_preload
from vfs.protocol import KeyRange, KVLimits, PreloadRequest, WriteBatch

from actor_db.errors import ConfigurationError, KVError, KVUnavailableError
from actor_db.kv.base import Fence, GroupItem, GroupWrite, KVStore, condition_failed
from actor_db.kv.fencing import fenced
from actor_db.kv.namespace import actor_prefix, parse_actor_key, prefix_end
from actor_db.kv.redis_channel import LoopChannel

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

log = logging.getLogger(__name__)

__all__ = ["RedisKV", "DEFAULT_NAMESPACE", "MAX_BATCH_BYTES"]

DEFAULT_NAMESPACE = "actor-db"
MAX_BATCH_BYTES = 64 * 1024 * 1024
"""Largest atomic batch, in key+value bytes: bounds how long one script blocks Redis
(the VFS's dirty-buffer bound, 32 MiB, stays below it, so commits need no redo log)."""
MAX_VALUE_BYTES = 512 * 1024 * 1024
"""Redis's default ``proto-max-bulk-len``."""

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]+(?::[A-Za-z0-9_.\-]+)*$")

# -- Lua ------------------------------------------------------------------------------
# Scan pages through the index with ZRANGEBYLEX ... LIMIT, continuing after the last key
# returned ("(" + key), so a call costs O(log N) per page and stops at the byte budget.
_LUA_SCAN_BODY = r"""
local d, z = KEYS[1], KEYS[2]
local lo, hi = ARGV[1], ARGV[2]
local limit, maxb = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, used, n = {}, 0, 0
while true do
  local want = 256
  if limit >= 0 then want = math.min(want, limit - n) end
  if want <= 0 then break end
  local keys = redis.call('ZRANGEBYLEX', z, lo, hi, 'LIMIT', 0, want)
  if #keys == 0 then break end
  local vals = redis.call('HMGET', d, unpack(keys))
  for j = 1, #keys do
    local v = vals[j]
    if v then
      if maxb >= 0 and used + #v > maxb then return out end
      out[#out + 1] = keys[j]; out[#out + 1] = v
      used = used + #v; n = n + 1
    end
  end
  if #keys < want then break end
  lo = '(' .. keys[#keys]
end
return out
"""
_LUA_SCAN = "#!lua flags=no-writes" + _LUA_SCAN_BODY

# Snapshot reads (actor_db.kv.snapshot): the same reads, answering {version, result}
# in the same atomic script; KEYS[3] (scan, get) or KEYS[4] (preload) is the version.
_LUA_SNAP_SCAN = ("#!lua flags=no-writes\nlocal version = redis.call('GET', KEYS[3]) or '0'"
                  + _LUA_SCAN_BODY.replace("return out", "return {version, out}"))
_LUA_SNAP_GET = r"""#!lua flags=no-writes
local version = redis.call('GET', KEYS[3]) or '0'
local out = {}
local STEP = 1000
for i = 1, #ARGV, STEP do
  local vals = redis.call('HMGET', KEYS[1], unpack(ARGV, i, math.min(i + STEP - 1, #ARGV)))
  for j = 1, #vals do out[#out + 1] = vals[j] end
end
return {version, out}
"""

# ARGV: token ('' = unfenced), nexpect, (key, '1' present / '0' absent, value or '')*,
# nranges, (min, max)*, ndeletes, key*, nputs, (key, value)*.
# Returns {1} when applied, {0, current_token} when fenced, {2, index (0-based) of the
# first expectation that failed} when a condition failed (nothing applied either way).
# Every check comes before the first write; the version is bumped only when the batch
# has operations (a pure check writes nothing).
_LUA_WRITE = r"""#!lua
local d, z, f = KEYS[1], KEYS[2], KEYS[3]
if ARGV[1] ~= '' then
  local current = redis.call('GET', f) or '0'
  if current ~= ARGV[1] then return {0, current} end
end
local STEP = 1000
local i = 2
local nexpect = tonumber(ARGV[i]); i = i + 1
for e = 0, nexpect - 1 do
  local v = redis.call('HGET', d, ARGV[i])
  if ARGV[i + 1] == '1' then
    if v ~= ARGV[i + 2] then return {2, e} end
  elseif v then
    return {2, e}
  end
  i = i + 3
end
local nops = 0
local nranges = tonumber(ARGV[i]); i = i + 1
nops = nops + nranges
for _ = 1, nranges do
  local lo, hi = ARGV[i], ARGV[i + 1]; i = i + 2
  while true do
    local keys = redis.call('ZRANGEBYLEX', z, lo, hi, 'LIMIT', 0, STEP)
    if #keys == 0 then break end
    redis.call('HDEL', d, unpack(keys))
    redis.call('ZREM', z, unpack(keys))
    if #keys < STEP then break end
  end
end
local ndeletes = tonumber(ARGV[i]); i = i + 1
nops = nops + ndeletes
local first = i
while i < first + ndeletes do
  local last = math.min(i + STEP, first + ndeletes) - 1
  redis.call('HDEL', d, unpack(ARGV, i, last))
  redis.call('ZREM', z, unpack(ARGV, i, last))
  i = last + 1
end
local nputs = tonumber(ARGV[i]); i = i + 1
nops = nops + nputs
local stop = i + 2 * nputs
while i < stop do
  local last = math.min(i + 2 * STEP, stop) - 1
  redis.call('HSET', d, unpack(ARGV, i, last))
  local members = {}
  for j = i, last, 2 do members[#members + 1] = 0; members[#members + 1] = ARGV[j] end
  redis.call('ZADD', z, unpack(members))
  i = last + 1
end
if nops > 0 then redis.call('INCR', KEYS[4]) end
return {1}
"""

# The rules of vfs.preload.evaluate_preload, in Lua. ARGV: acquire ('1' bumps the
# fencing counter first), max_total (-1 none), nkeys, key*, nranges,
# (min, max, budget, partial, hint key ('' none), hinted chunk prefix, interior allowance)*.
# Returns {token, values, {complete, {k, v, ...}, hint record or false, {k, v or false, ...}}
# or {-1}}. A hint record (vfs.hint): u8 version 1, u32 BE count, count x u32 BE chunk
# index; or u8 version 2, u32 BE count, u32 BE interior, the indices (the first
# `interior` charged to the interior allowance while it lasts). The chunk key is the
# prefix followed by those 4 bytes, so no index is decoded.
_LUA_PRELOAD_BODY = r"""
local d, z, f = KEYS[1], KEYS[2], KEYS[3]
local function u32(v, at)
  local b1, b2, b3, b4 = string.byte(v, at, at + 3)
  return ((b1 * 256 + b2) * 256 + b3) * 256 + b4
end
local function hinted_suffixes(v)
  if not v or #v < 5 then return {}, 0 end
  local version, n, head, interior = string.byte(v, 1), u32(v, 2), 5, 0
  if version == 2 then
    if #v < 9 then return {}, 0 end
    head, interior = 9, u32(v, 6)
  elseif version ~= 1 then
    return {}, 0
  end
  if n > 65536 or #v ~= head + 4 * n or interior > n then return {}, 0 end
  local out = {}
  for j = 0, n - 1 do out[#out + 1] = string.sub(v, head + 1 + 4 * j, head + 4 + 4 * j) end
  return out, interior
end
local token = 0
if ARGV[1] == '1' then token = redis.call('INCR', f) end
local remaining = tonumber(ARGV[2])
if remaining < 0 then remaining = nil end
local i = 3
local nkeys = tonumber(ARGV[i]); i = i + 1
local values = {}
if nkeys > 0 then values = redis.call('HMGET', d, unpack(ARGV, i, i + nkeys - 1)) end
i = i + nkeys
if remaining then
  for j = 1, nkeys do if values[j] then remaining = remaining - #values[j] end end
end
local results = {}
local nranges = tonumber(ARGV[i]); i = i + 1
for r = 1, nranges do
  local lo, hi = ARGV[i], ARGV[i + 1]
  local max_bytes, partial = tonumber(ARGV[i + 2]), ARGV[i + 3] == '1'
  local hint_key, hint_prefix, interior_max = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  i = i + 7
  if max_bytes <= 0 then
    results[r] = {-1}
  else
    local budget = max_bytes
    if remaining then budget = math.min(max_bytes, math.max(remaining, 0)) end
    local kept, used, complete = {}, 0, true
    local record, hinted, fetched = false, {}, {}
    if hint_key ~= '' then
      record = redis.call('HGET', d, hint_key)
      local suffixes, interior = hinted_suffixes(record)
      local interior_used = 0
      for j, suffix in ipairs(suffixes) do
        local k = hint_prefix .. suffix
        if not fetched[k] then
          local v = redis.call('HGET', d, k)
          local size = 0
          if v then size = #v end
          if j <= interior and interior_used + size <= interior_max then
            interior_used = interior_used + size
          elseif used + size <= budget then
            used = used + size
          else
            break
          end
          hinted[#hinted + 1] = k; hinted[#hinted + 1] = v
          fetched[k] = true
        end
      end
    end
    while complete do
      local keys = redis.call('ZRANGEBYLEX', z, lo, hi, 'LIMIT', 0, 128)
      if #keys == 0 then break end
      local vals = redis.call('HMGET', d, unpack(keys))
      for j = 1, #keys do
        local v = vals[j]
        if v and not fetched[keys[j]] then
          if used + #v > budget then complete = false; break end
          kept[#kept + 1] = keys[j]; kept[#kept + 1] = v
          used = used + #v
        end
      end
      if #keys < 128 then break end
      lo = '(' .. keys[#keys]
    end
    if not complete and not partial then kept, used = {}, 0 end
    results[r] = {complete and 1 or 0, kept, record, hinted}
    if remaining then remaining = remaining - used end
  end
end
return {token, values, results}
"""
_LUA_PRELOAD = "#!lua flags=no-writes\n" + _LUA_PRELOAD_BODY
# A pinned snapshot: the actor's hash and index copied atomically to private keys in
# the same slot (COPY is O(size) on the server), expiring after ARGV[1] seconds in case
# the reader dies before it unlinks them.
_LUA_SNAP_PIN = r"""#!lua
local ttl = tonumber(ARGV[1])
redis.call('UNLINK', KEYS[3], KEYS[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('COPY', KEYS[1], KEYS[3])
  redis.call('EXPIRE', KEYS[3], ttl)
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('COPY', KEYS[2], KEYS[4])
  redis.call('EXPIRE', KEYS[4], ttl)
end
return 1
"""
_LUA_SNAP_PRELOAD = ("#!lua flags=no-writes\nlocal version = redis.call('GET', KEYS[4]) or '0'"
                     + _LUA_PRELOAD_BODY.replace("return {token, values, results}",
                                                 "return {token, values, results, version}"))
_LUA_ACQUIRE = "#!lua\n" + _LUA_PRELOAD_BODY


def _unique(keys: Sequence[bytes]) -> list[bytes]:
    """``keys`` without repeats, in first-seen order (what the preload scripts are sent)."""
    return list(dict.fromkeys(keys))


class _Script:
    """A Lua script run with EVALSHA, falling back to EVAL when the server lacks it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, client: Any, keys: Sequence[bytes], args: Sequence[bytes | int | str]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # After a restart, or a server that never saw it: EVAL runs and caches it.
            return client.eval(self.source, len(keys), *keys, *args)


_SCAN = _Script(_LUA_SCAN)
_WRITE = _Script(_LUA_WRITE)
_PRELOAD = _Script(_LUA_PRELOAD)
_ACQUIRE = _Script(_LUA_ACQUIRE)
_SNAP_SCAN = _Script(_LUA_SNAP_SCAN)
_SNAP_GET = _Script(_LUA_SNAP_GET)
_SNAP_PRELOAD = _Script(_LUA_SNAP_PRELOAD)
_SNAP_PIN = _Script(_LUA_SNAP_PIN)
_SCRIPTS = (_SCAN, _WRITE, _PRELOAD, _ACQUIRE, _SNAP_SCAN, _SNAP_GET, _SNAP_PRELOAD, _SNAP_PIN)
PINNED_SNAPSHOT_TTL_S = 3600
"""Seconds a pinned snapshot's copy survives a reader that never closed it."""


class _Actor:
    """Where one actor's keys live: its store prefix and its four Redis keys."""

    __slots__ = ("actor_id", "prefix", "end", "data", "index", "fence", "version")

    def __init__(self, namespace: str, actor_id: str) -> None:
        self.actor_id = actor_id
        self.prefix = actor_prefix(actor_id)
        self.end = prefix_end(self.prefix)
        base = f"{namespace}:{{{actor_id.encode('utf-8').hex()}}}:".encode("ascii")
        self.data = base + b"d"
        self.index = base + b"i"
        self.fence = base + b"f"
        self.version = base + b"v"

    def rel(self, key: bytes) -> bytes:
        assert key.startswith(self.prefix), f"key {key!r} is outside actor {self.actor_id!r}"
        return key[len(self.prefix):]

    def lex_min(self, start: bytes) -> bytes:
        rel = self.rel(start) if start > self.prefix else b""
        return b"[" + rel if rel else b"-"

    def lex_max(self, end: bytes) -> bytes:
        # The actor's own range end (prefix_end) does not start with the prefix.
        return b"+" if end >= self.end else b"(" + self.rel(end)

    @property
    def keys(self) -> list[bytes]:
        """KEYS of the write and preload scripts."""
        return [self.data, self.index, self.fence, self.version]


DEFAULT_MAX_CONNECTIONS = 128
"""Default cap on one ``RedisKV``'s connections to one server (calls beyond it wait)."""


def _blocking_client(url: str, max_connections: int, pool_timeout: float, options: dict[str, Any]) -> redis.Redis:
    """A client on ``url`` whose pool holds at most ``max_connections`` connections and
    makes a call wait up to ``pool_timeout`` seconds for a free one (then redis-py raises
    ``ConnectionError``, which the driver reports as ``KVUnavailableError``)."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout,
                                                 retry=Retry(NoBackoff(), 1), **options)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


class RedisKV(KVStore):
    """A store on a Redis/Valkey server or a Redis Cluster.

    :param url_or_client: a ``redis://`` / ``rediss://`` / ``unix://`` URL, a
        ``redis.Redis`` client, or a ``redis.cluster.RedisCluster`` client. A client
        must have ``decode_responses=False``; it is not closed by :meth:`close`.
    :param namespace: prefix of every Redis key (letters, digits, ``_.-`` and ``:``
        separators); stores with different namespaces on one server never see each
        other's actors.
    :param cluster: with a URL, connect with ``RedisCluster`` (any node's address).
    :param socket_timeout: seconds to wait for a reply before the call fails with
        :class:`~actor_db.errors.KVUnavailableError` (clients built from a URL).
    :param check_persistence: ask the server (``CONFIG GET``, once) whether it is set
        up for durable commits and log a warning when it is not.
    :param max_connections: (one server, from a URL) the most connections the client
        opens; size it for the callers' concurrency (the runtime makes at most
        ``Registry(max_threads=...)`` calls at once, default 64). A call that finds
        every connection busy WAITS for one (a ``BlockingConnectionPool``) instead of
        failing with redis-py's "Too many connections". Default 128.
    :param pool_timeout: seconds a call waits for a free connection before it fails
        with :class:`~actor_db.errors.KVUnavailableError`; ``None``: ``socket_timeout``.
    :raises ConfigurationError: a bad namespace, URL, client or pool size.

    Example::

        store = RedisKV("redis://127.0.0.1:6379/0", namespace="prod")
        con = vfs.connect(store.actor("room-1"))
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | RedisCluster,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        cluster: bool = False,
        socket_timeout: float = 10.0,
        check_persistence: bool = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float | None = None,
    ) -> None:
        super().__init__(KVLimits(max_value_bytes=MAX_VALUE_BYTES, max_batch_bytes=MAX_BATCH_BYTES))
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigurationError(f"max_connections must be an int >= 1, not {max_connections!r}")
        if not _NAMESPACE_RE.match(namespace):
            raise ConfigurationError(f"invalid Redis namespace {namespace!r}: use letters, digits, '_.-' and ':'")
        self.namespace = namespace
        self._owns_client = isinstance(url_or_client, str)
        self._url: str | None = None
        from redis.cluster import RedisCluster

        if isinstance(url_or_client, str):
            # One immediate retry: a pooled socket that died while idle (server restart)
            # fails once, and the retry reconnects. Batches are idempotent (the same
            # range deletes, deletes and puts), so repeating one is safe.
            options: dict[str, Any] = dict(decode_responses=False, socket_timeout=socket_timeout,
                                           socket_connect_timeout=socket_timeout)
            try:
                if cluster:
                    self._client: Any = RedisCluster.from_url(url_or_client, **options)
                else:
                    self._client = _blocking_client(url_or_client, max_connections,
                                                    socket_timeout if pool_timeout is None else pool_timeout, options)
            except (ValueError, RedisError) as exc:
                raise ConfigurationError(f"cannot connect to Redis at {url_or_client!r}: {exc}") from exc
            self._url = url_or_client
        elif isinstance(url_or_client, (redis.Redis, RedisCluster)):
            self._client = url_or_client
        else:
            raise ConfigurationError(f"expected a Redis URL or client, got {type(url_or_client).__name__}")
        self._cluster = isinstance(self._client, RedisCluster)
        if self._client.get_encoder().decode_responses:
            raise ConfigurationError("the Redis client must be created with decode_responses=False (values are bytes)")
        self._identity = self._compute_identity()
        self._closed = False
        self._socket_timeout = socket_timeout
        self._channel: LoopChannel | None = None
        """The connection group writes waited for by an event loop are pipelined on
        (made at the first one; :attr:`loop_writes`)."""
        self._actor_cache = functools.lru_cache(maxsize=4096)(self._locate)
        self.load_scripts()
        if check_persistence:
            self.check_persistence()

    def __repr__(self) -> str:
        return f"RedisKV({self._describe()!r}, namespace={self.namespace!r})"

    def _describe(self) -> str:
        if self._cluster:
            return "cluster:" + ",".join(sorted(n.name for n in self._client.get_nodes()))
        kwargs = self._client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"

    def _compute_identity(self) -> Hashable:
        return ("redis", self._describe(), self.namespace)

    @property
    def identity(self) -> Hashable:
        return self._identity

    @property
    def url(self) -> str | None:
        """The URL this store was created from (``None`` when given a client)."""
        return self._url

    @property
    def is_cluster(self) -> bool:
        """Whether the client is a ``RedisCluster``."""
        return self._cluster

    @property
    def groups_writes(self) -> bool:  # type: ignore[override]
        """One server: :meth:`write_many` is one pipeline of write scripts (one round
        trip). A cluster spreads actors over nodes, so it writes batch by batch."""
        return not self._cluster

    @property
    def client(self) -> Any:
        """The redis-py client (``redis.Redis`` or ``RedisCluster``)."""
        return self._client

    def load_scripts(self) -> bool:
        """``SCRIPT LOAD`` the driver's scripts (every primary of a cluster), so that even
        the first call of each is one send. Not required: a server that lost them (a
        restart) gets them back through the ``NOSCRIPT`` fallback.

        :returns: whether the server took them (``False`` if it is unreachable now).
        """
        try:
            for script in _SCRIPTS:
                self._client.script_load(script.source)
        except RedisError as exc:
            log.debug("cannot preload the Lua scripts into Redis (%s); they load on first use", exc)
            return False
        return True

    # -- persistence --------------------------------------------------------------
    def check_persistence(self) -> dict[str, str]:
        """Read the server's persistence settings and warn about unsafe ones.

        :returns: ``appendonly``, ``appendfsync`` and ``maxmemory-policy`` as the server
            reports them (empty if ``CONFIG`` is disabled, e.g. on a managed service).
        """
        settings: dict[str, str] = {}
        try:
            for name in ("appendonly", "appendfsync", "maxmemory-policy"):
                reply = self._client.config_get(name)
                if self._cluster and reply and isinstance(next(iter(reply.values())), dict):
                    reply = next(iter(reply.values()))  # per-node answers: take one
                for k, v in reply.items():
                    settings[k.decode() if isinstance(k, bytes) else k] = v.decode() if isinstance(v, bytes) else v
        except RedisError as exc:
            log.debug("cannot read Redis persistence settings (%s); assuming the operator set them", exc)
            return settings
        if settings.get("appendonly") != "yes" or settings.get("appendfsync") != "always":
            log.warning("Redis %s: appendonly=%s appendfsync=%s: committed transactions can be lost in a "
                        "Redis crash (use appendonly yes, appendfsync always)", self._describe(),
                        settings.get("appendonly"), settings.get("appendfsync"))
        if settings.get("maxmemory-policy", "noeviction") != "noeviction":
            log.warning("Redis %s: maxmemory-policy=%s can evict database chunks (use noeviction)",
                        self._describe(), settings.get("maxmemory-policy"))
        return settings

    # -- plumbing -----------------------------------------------------------------
    def _locate(self, prefix: bytes) -> _Actor:
        parsed = parse_actor_key(prefix)
        assert parsed is not None and parsed[1] == len(prefix), f"not an actor prefix: {prefix!r}"
        return _Actor(self.namespace, parsed[0])

    def _actor_of(self, key: bytes) -> _Actor:
        parsed = parse_actor_key(key)
        if parsed is None:
            raise KVError(f"RedisKV serves actor keys only, got {key[:32]!r}")
        return self._actor_cache(key[:parsed[1]])

    def _run(self, what: str, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise KVUnavailableError(f"{self!r} is closed")
        try:
            return fn(*args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise KVUnavailableError(f"Redis {self._describe()} unreachable during {what}: {exc}") from exc
        except RedisError as exc:
            raise KVError(f"Redis {self._describe()} failed {what}: {type(exc).__name__}: {exc}") from exc

    # -- raw operations (one round trip each) ------------------------------------------
    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        actor = self._actor_of(keys[0])
        fields = [actor.rel(k) for k in keys]
        return list(self._run("get", self._client.hmget, actor.data, fields))

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        actor = self._actor_of(start)
        flat = self._run("scan", _SCAN, self._client, [actor.data, actor.index],
                         [actor.lex_min(start), actor.lex_max(end),
                          -1 if limit is None else limit, -1 if max_bytes is None else max_bytes])
        p = actor.prefix
        return [(p + flat[j], flat[j + 1]) for j in range(0, len(flat), 2)]

    def _write(self, batch: WriteBatch, fence: Fence | None = None) -> None:
        call = self._write_call(batch, fence)
        if call is None:
            return
        actor, args = call
        error = self._write_outcome(self._run("write", _WRITE, self._client, actor.keys, args), batch, fence)
        if error is not None:
            raise error

    def _write_many(self, items: Sequence[GroupItem]) -> list[Exception | None]:
        """Every batch's write script in ONE pipeline (one network round trip); each
        script is atomic, fenced and checked on its own. A script the server does not
        have (after a restart) is sent again with EVAL, one by one. A cluster writes
        batch by batch (its actors live on different nodes)."""
        if self._cluster:
            return super()._write_many(items)
        pipe = self._client.pipeline(transaction=False)
        sent = self._group_calls(items, lambda command: pipe.evalsha(*command[1:]))
        if not sent:
            return [None] * len(items)
        replies = self._run("write", pipe.execute, False)
        return self._group_outcome(items, sent, replies)

    @property
    def loop_writes(self) -> bool:  # type: ignore[override]
        """One server, a client this store built (a ``BlockingConnectionPool`` of at
        least 2 connections): group writes are pipelined on ONE connection and the event
        loop waits for their replies on its socket (:mod:`actor_db.kv.redis_channel`)."""
        pool = getattr(self._client, "connection_pool", None)
        return (not self._cluster and self._owns_client and isinstance(pool, redis.BlockingConnectionPool)
                and pool.max_connections >= 2 and not self._closed)

    def _start_write_many(self, items: Sequence[GroupItem]) -> GroupWrite:
        """:meth:`_write_many`'s pipeline, sent now on the store's group-write channel;
        the :class:`GroupWrite` is notified when the replies are in and reads them then
        (a write whose channel failed is written again the blocking way, which retries
        once on a new connection: every batch is idempotent)."""
        commands: list[tuple[Any, ...]] = []
        sent = self._group_calls(items, commands.append)
        if not sent:
            return GroupWrite.done([None] * len(items))
        channel = self._channel
        if channel is None:
            channel = self._channel = LoopChannel(self._client.connection_pool, self._socket_timeout)
        try:
            write = channel.send(commands)
        except RedisError:
            return GroupWrite.done(self._write_many(items))

        def finish() -> list[Exception | None]:
            if not write.complete:
                channel.read_through(write)
            if write.failure is not None:
                return self._write_many(items)
            return self._group_outcome(items, sent, write.replies)

        return GroupWrite(finish, subscribe=lambda loop, callback: channel.subscribe(write, loop, callback))

    def _group_calls(self, items: Sequence[GroupItem], send: Any) -> list[int]:
        """``send`` the write script command of each batch that has something to send
        (``("EVALSHA", sha, numkeys, *keys, *args)``); the positions of those batches."""
        sent: list[int] = []
        for i, (batch, fence) in enumerate(items):
            call = self._write_call(batch, fence)
            if call is None:
                continue
            actor, args = call
            send(("EVALSHA", _WRITE.sha, len(actor.keys), *actor.keys, *args))
            sent.append(i)
        return sent

    def _group_outcome(self, items: Sequence[GroupItem], sent: list[int], replies: Sequence[Any]) -> list[Exception | None]:
        """Each batch's result from its script's reply (a script the server lost is
        sent again with EVAL)."""
        results: list[Exception | None] = [None] * len(items)
        for i, reply in zip(sent, replies):
            batch, fence = items[i]
            if isinstance(reply, NoScriptError):
                try:
                    self._write(batch, fence)
                except Exception as exc:
                    results[i] = exc
            elif isinstance(reply, Exception):
                results[i] = KVError(f"Redis {self._describe()} failed write: {type(reply).__name__}: {reply}")
                results[i].__cause__ = reply  # type: ignore[union-attr]
            else:
                results[i] = self._write_outcome(reply, batch, fence)
        return results

    def _write_call(self, batch: WriteBatch, fence: Fence | None) -> tuple[_Actor, list[bytes | int | str]] | None:
        """The actor and the arguments of ``batch``'s write script (``None``: nothing to send)."""
        expected = list(batch.expect.items())
        keys = ([k for k, _ in expected] + [r.start for r in batch.delete_ranges] + list(batch.deletes)
                + list(batch.puts))
        if not keys and fence is None:
            return None
        actor = self._actor_of(keys[0]) if keys else self._actor_cache(actor_prefix(fence.actor_id))  # type: ignore[union-attr]
        assert fence is None or fence.actor_id == actor.actor_id
        args: list[bytes | int | str] = ["" if fence is None else str(fence.token), len(expected)]
        for k, v in expected:
            args += [actor.rel(k), b"0", b""] if v is None else [actor.rel(k), b"1", v]
        args.append(len(batch.delete_ranges))
        for r in batch.delete_ranges:
            args += [actor.lex_min(r.start), actor.lex_max(r.end)]
        args.append(len(batch.deletes))
        args += [actor.rel(k) for k in batch.deletes]
        args.append(len(batch.puts))
        for k, v in batch.puts.items():
            args += [actor.rel(k), v]
        return actor, args

    @staticmethod
    def _write_outcome(reply: Any, batch: WriteBatch, fence: Fence | None) -> Exception | None:
        """The error the write script's ``reply`` reports (``None``: applied)."""
        status = int(reply[0])
        if status == 2:
            key, value = list(batch.expect.items())[int(reply[1])]
            return condition_failed(key, value, found_known=False)
        if status != 1:
            assert fence is not None
            return fenced(fence.actor_id, fence.token, int(reply[1]))
        return None

    def _preload_args(self, actor: _Actor, request: PreloadRequest, acquire: bool) -> list[bytes | int | str]:
        keys = _unique(request.keys)  # a key asked twice is read, and counted, once
        args: list[bytes | int | str] = ["1" if acquire else "0",
                                         -1 if request.max_total_bytes is None else request.max_total_bytes,
                                         len(keys)]
        args += [actor.rel(k) for k in keys]
        args.append(len(request.ranges))
        for b in request.ranges:
            args += [actor.lex_min(b.range.start), actor.lex_max(b.range.end), b.max_bytes, "1" if b.partial else "0"]
            args += [b"", b"", 0] if b.hint is None else [actor.rel(b.hint.key), actor.rel(b.hint.chunk_prefix),
                                                          b.hint.interior_max_bytes]
        return args

    def _preload_map(self, actor: _Actor, request: PreloadRequest, reply: Any) -> PreloadMap:
        _, values, results = reply
        key_values = dict(zip(_unique(request.keys), values))
        ranges: list[tuple[KeyRange, list[tuple[bytes, bytes]], bool]] = []
        hinted: dict[bytes, bytes | None] = {}
        p = actor.prefix
        for spec, result in zip(request.ranges, results):
            if int(result[0]) < 0:
                continue  # disabled range: not scanned, covers nothing
            flat = result[1]
            pairs = [(p + flat[j], flat[j + 1]) for j in range(0, len(flat), 2)]
            ranges.append((spec.range, pairs, int(result[0]) == 1))
            if spec.hint is not None:
                hinted[spec.hint.key] = result[2]
                chunks = result[3]
                hinted.update((p + chunks[j], chunks[j + 1]) for j in range(0, len(chunks), 2))
        return build_preload(request.keys, key_values, ranges, hinted)

    def _request_actor(self, request: PreloadRequest) -> _Actor | None:
        if request.keys:
            return self._actor_of(request.keys[0])
        if request.ranges:
            return self._actor_of(request.ranges[0].range.start)
        return None

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        actor = self._request_actor(request)
        if actor is None:
            return PreloadMap()
        reply = self._run("preload", _PRELOAD, self._client, actor.keys, self._preload_args(actor, request, False))
        return self._preload_map(actor, request, reply)

    def _acquire(self, actor_id: str, request: PreloadRequest | None) -> tuple[int, PreloadMap | None]:
        actor = self._actor_cache(actor_prefix(actor_id))
        if request is None:
            token = self._run("acquire", self._client.incr, actor.fence)
            return int(token), None
        reply = self._run("acquire", _ACQUIRE, self._client, actor.keys, self._preload_args(actor, request, True))
        return int(reply[0]), self._preload_map(actor, request, reply)

    # -- whole-store operations ------------------------------------------------------
    def actor_ids(self) -> list[str]:
        """Ids of actors with at least one key, in store-key order (``SCAN`` of every
        primary: one round trip per page per node, not a protocol call)."""
        pattern = f"{self.namespace}:{{*}}:i".encode("ascii")
        ids: set[str] = set()
        for key in self._run("actor listing", lambda: list(self._client.scan_iter(match=pattern, count=1000))):
            inner = key[len(self.namespace) + 2:-3]
            try:
                ids.add(bytes.fromhex(inner.decode("ascii")).decode("utf-8"))
            except ValueError:
                log.warning("ignoring foreign Redis key %r in namespace %r", key, self.namespace)
        return sorted(ids, key=actor_prefix)

    def drop_namespace(self) -> int:
        """Delete every key of this namespace (all actors, fencing counters included).

        :returns: the number of Redis keys deleted.
        """
        pattern = f"{self.namespace}:{{*}}:*".encode("ascii")
        keys = self._run("namespace listing", lambda: list(self._client.scan_iter(match=pattern, count=1000)))
        if keys:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            self._run("namespace drop", pipe.execute)
        return len(keys)

    def _open_snapshot(self, start: bytes, end: bytes, pinned: bool = False) -> _RedisSnapshot:
        """Version-checked reads of one actor, or (``pinned``) reads of a server-side
        copy taken in one atomic script (see :mod:`actor_db.kv.snapshot`)."""
        return _RedisSnapshot(self, self._actor_of(start), pinned)

    def close(self) -> None:
        """Close the client if this store created it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._channel is not None:
            self._channel.close()
        if self._owns_client:
            self._client.close()


class _RedisSnapshot:
    """Snapshot reads of one actor on Redis, in one of two modes:

    - versioned (cheap): every read returns the actor's write version in the same
      atomic script, and a version other than the first read's raises
      :class:`~actor_db.kv.snapshot.SnapshotChangedError` (no data from another state is
      ever returned; the caller retries);
    - pinned (always completes): one script COPYs the actor's hash and index to private
      keys in the same slot (O(size) on the server, and as much memory again while the
      snapshot lives); reads go to the copy; :meth:`close` unlinks it (a TTL cleans up
      after a reader that died).
    """

    def __init__(self, store: RedisKV, actor: _Actor, pinned: bool) -> None:
        self._store = store
        self._actor = actor
        self._version: bytes | None = None
        self._pinned: tuple[bytes, bytes] | None = None
        if pinned:
            import secrets

            tag = actor.data[:-1] + b"s:" + secrets.token_hex(8).encode("ascii") + b":"
            copy = (tag + b"d", tag + b"i")
            store._run("snapshot copy", _SNAP_PIN, store.client, [actor.data, actor.index, *copy],
                       [PINNED_SNAPSHOT_TTL_S])
            self._pinned = copy

    def _check(self, version: bytes) -> None:
        from actor_db.kv.snapshot import SnapshotChangedError

        if self._version is None:
            self._version = version
        elif version != self._version:
            raise SnapshotChangedError(
                f"actor {self._actor.actor_id!r} was written during a snapshot read "
                f"(version {self._version.decode()} -> {version.decode()}); retry the read")

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        a = self._actor
        fields = [a.rel(k) for k in keys]
        if self._pinned is not None:
            return list(self._store._run("snapshot get", self._store.client.hmget, self._pinned[0], fields)) \
                if fields else []
        version, values = self._store._run("snapshot get", _SNAP_GET, self._store.client,
                                           [a.data, a.index, a.version], fields)
        self._check(version)
        return list(values)

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        a = self._actor
        args = [a.lex_min(start), a.lex_max(end), -1 if limit is None else limit, -1 if max_bytes is None else max_bytes]
        if self._pinned is not None:
            flat = self._store._run("snapshot scan", _SCAN, self._store.client, list(self._pinned), args)
        else:
            version, flat = self._store._run("snapshot scan", _SNAP_SCAN, self._store.client,
                                             [a.data, a.index, a.version], args)
            self._check(version)
        return [(a.prefix + flat[j], flat[j + 1]) for j in range(0, len(flat), 2)]

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        a = self._actor
        args = self._store._preload_args(a, request, False)
        if self._pinned is not None:
            reply = self._store._run("snapshot preload", _PRELOAD, self._store.client,
                                     [*self._pinned, a.fence, a.version], args)
            return self._store._preload_map(a, request, reply)
        reply = self._store._run("snapshot preload", _SNAP_PRELOAD, self._store.client, a.keys, args)
        self._check(reply[3])
        return self._store._preload_map(a, request, reply[:3])

    def close(self) -> None:
        self._version = None
        if self._pinned is not None:
            copy, self._pinned = self._pinned, None
            try:
                self._store._run("snapshot release", self._store.client.unlink, *copy)
            except KVError as exc:  # the TTL removes it
                log.warning("could not delete a snapshot copy of actor %r (%s); it expires in %d s",
                            self._actor.actor_id, exc, PINNED_SNAPSHOT_TTL_S)
