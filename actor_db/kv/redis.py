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
    ns:{H}:o   string      owner record (placement)        (node id NUL instance; outside the data)

Placement (:mod:`actor_db.serve`, rules in :mod:`actor_db.kv.leases`): the owner record
is claimed in the same script as the fencing bump and the preload. Node heartbeats live
under one hash tag, ``ns:{ns:nodes}:h:<node id>`` (instance LF payload, with a ``PX``
lease: the Redis server's clock decides expiry, never the nodes'), plus the member set
``ns:{ns:nodes}:m``; one script reads them all, so liveness costs one round trip per
node and interval, whatever the number of actors.

and one key per namespace, ``ns.value-encoding`` (beside, not under, ``ns:``, so it is
no actor's key and a namespace listing does not see it): the store's value encoding
(:mod:`actor_db.kv.codec`; values are LZ4-compressed when that pays, ``compress=True``),
recorded by the first store object that finds none (``ENCODED`` for a namespace without
actor data, ``LEGACY`` for one written before the encoding: its values stay raw). It is
kept by :meth:`RedisKV.drop_namespace`; deleting it while actor data remains would make
the next store object read that data as legacy, so never delete it by hand.

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
  :func:`vfs.preload.evaluate_preload`, counting protocol (decoded) value bytes, as
  ``scan``'s ``max_bytes`` does.
- Conditional writes compare protocol values: a value stored raw is compared with the
  expected bytes; a compressed one with the expected value's compressed form, which the
  format makes a function of the value alone (see :mod:`actor_db.kv.codec`).

Left out: Redis replication guarantees (``WAIT``) and failover; a write is as durable
as the server's persistence settings make it (see the README: ``appendonly yes``,
``appendfsync always``, ``maxmemory-policy noeviction``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from vfs.preload import PreloadMap, build_preload
from vfs.protocol import KeyRange, KVLimits, PreloadRequest, WriteBatch

from actor_db.errors import ConfigurationError, KVError, KVUnavailableError
from actor_db.kv.base import Fence, GroupItem, GroupWrite, KVStore, condition_failed
from actor_db.kv.due import DueEntry
from actor_db.kv.codec import ENCODED, LEGACY, REDIS_ALLOCATION, ValueCodec, codec_for_marker
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
# Stored values are in the store's value encoding (actor_db.kv.codec): the scripts see
# them through three helpers, defined per encoding where _VALUES stands: vlen(v), the
# protocol (decoded) length, so every byte budget counts protocol bytes; same(v, raw,
# packed), whether stored v holds the protocol value raw (packed: its compressed form,
# deterministic, or '' when it has none); plain(v), the protocol value when a script can
# read it without decompressing (else nil). Scripts never decompress.
_VALUES = "-- @values\n"
_TAGGED_VALUES = r"""
local function vlen(v)
  if string.byte(v, 1) == 0 then return #v - 1 end
  local b1, b2, b3, b4 = string.byte(v, 2, 5)
  return ((b1 * 256 + b2) * 256 + b3) * 256 + b4
end
local function same(v, raw, packed)
  if not v then return false end
  if string.byte(v, 1) == 0 then return #v == #raw + 1 and string.sub(v, 2) == raw end
  return v == packed
end
local function plain(v)
  if v and string.byte(v, 1) == 0 then return string.sub(v, 2) end
  return nil
end
"""
_PLAIN_VALUES = r"""
local function vlen(v) return #v end
local function same(v, raw, packed) return v == raw end
local function plain(v) return v end
"""
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
      local size = vlen(v)
      if maxb >= 0 and used + size > maxb then return out end
      out[#out + 1] = keys[j]; out[#out + 1] = v
      used = used + size; n = n + 1
    end
  end
  if #keys < want then break end
  lo = '(' .. keys[#keys]
end
return out
"""
_LUA_SCAN = "#!lua flags=no-writes\n" + _VALUES + _LUA_SCAN_BODY

# Snapshot reads (actor_db.kv.snapshot): the same reads, answering {version, result}
# in the same atomic script; KEYS[3] (scan, get) or KEYS[4] (preload) is the version.
_LUA_SNAP_SCAN = ("#!lua flags=no-writes\n" + _VALUES + "local version = redis.call('GET', KEYS[3]) or '0'"
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

# ARGV: token ('' = unfenced), nexpect, (key, '1' present / '0' absent, value or '',
# its packed (compressed) form or '')*,
# nranges, (min, max)*, ndeletes, key*, nputs, (key, value)*.
# Returns {1} when applied, {0, current_token} when fenced, {2, index (0-based) of the
# first expectation that failed} when a condition failed (nothing applied either way).
# Every check comes before the first write; the version is bumped only when the batch
# has operations (a pure check writes nothing).
# Due marks (actor_db.kv.due: keys starting \7\0, value the 8-byte due ms) are mirrored
# into KEYS[5], the due index of the actor's slot: member ARGV[#ARGV] (the actor's hex id
# and ':') .. the entry id, score the due ms (ZADD moves an entry; ZREM drops it).
_LUA_WRITE_BODY = r"""
local d, z, f = KEYS[1], KEYS[2], KEYS[3]
local dz, mp = KEYS[5], ARGV[#ARGV]
local function is_mark(k) return string.byte(k, 1) == 7 and string.byte(k, 2) == 0 end
local function unmark(list, from, to)
  for j = from, to do
    local k = list[j]
    if is_mark(k) then redis.call('ZREM', dz, mp .. string.sub(k, 3)) end
  end
end
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
    if not same(v, ARGV[i + 2], ARGV[i + 3]) then return {2, e} end
  elseif v then
    return {2, e}
  end
  i = i + 4
end
local nops = 0
local nranges = tonumber(ARGV[i]); i = i + 1
nops = nops + nranges
for _ = 1, nranges do
  local lo, hi = ARGV[i], ARGV[i + 1]; i = i + 2
  while true do
    local keys = redis.call('ZRANGEBYLEX', z, lo, hi, 'LIMIT', 0, STEP)
    if #keys == 0 then break end
    unmark(keys, 1, #keys)
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
  unmark(ARGV, i, last)
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
  for j = i, last, 2 do
    local k = ARGV[j]
    members[#members + 1] = 0; members[#members + 1] = k
    if is_mark(k) then
      local v = plain(ARGV[j + 1])
      if v and #v == 8 then
        local due = 0
        for b = 1, 8 do due = due * 256 + string.byte(v, b) end
        redis.call('ZADD', dz, due, mp .. string.sub(k, 3))
      else
        redis.call('ZREM', dz, mp .. string.sub(k, 3))
      end
    end
  end
  redis.call('ZADD', z, unpack(members))
  i = last + 1
end
if nops > 0 then redis.call('INCR', KEYS[4]) end
return {1}
"""
_LUA_WRITE = "#!lua\n" + _VALUES + _LUA_WRITE_BODY

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
  v = plain(v)
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
  for j = 1, nkeys do if values[j] then remaining = remaining - vlen(values[j]) end end
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
          if v then size = vlen(v) end
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
          local size = vlen(v)
          if used + size > budget then complete = false; break end
          kept[#kept + 1] = keys[j]; kept[#kept + 1] = v
          used = used + size
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
_LUA_PRELOAD = "#!lua flags=no-writes\n" + _VALUES + _LUA_PRELOAD_BODY
# A pinned snapshot: the actor's hash and index copied atomically to private keys in
# the same slot (COPY is O(size) on the server), expiring after ARGV[1] seconds in case
# the reader dies before it unlinks them (its reads renew them). Returns which copies
# exist: 1 the hash, 2 the index (a renewal that finds one gone knows it was removed).
_LUA_SNAP_PIN = r"""#!lua
local ttl = tonumber(ARGV[1])
local made = 0
redis.call('UNLINK', KEYS[3], KEYS[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('COPY', KEYS[1], KEYS[3])
  redis.call('EXPIRE', KEYS[3], ttl)
  made = made + 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('COPY', KEYS[2], KEYS[4])
  redis.call('EXPIRE', KEYS[4], ttl)
  made = made + 2
end
return made
"""
_LUA_SNAP_PRELOAD = ("#!lua flags=no-writes\n" + _VALUES + "local version = redis.call('GET', KEYS[4]) or '0'"
                     + _LUA_PRELOAD_BODY.replace("return {token, values, results}",
                                                 "return {token, values, results, version}"))
_LUA_ACQUIRE = "#!lua\n" + _VALUES + _LUA_PRELOAD_BODY
# Placement. CLAIM: KEYS as the preload's plus KEYS[5] = the owner record; ARGV starts
# with owner, nreplace, replace*, then the preload's ARGV (acquire = '1'). Refused:
# {-2, current owner}; nothing changed.
_LUA_CLAIM = "#!lua\n" + _VALUES + r"""
local cur = redis.call('GET', KEYS[5])
local me = table.remove(ARGV, 1)
local nrep = tonumber(table.remove(ARGV, 1))
local ok = (not cur) or cur == me
for _ = 1, nrep do
  local r = table.remove(ARGV, 1)
  if cur == r then ok = true end
end
if not ok then return {-2, cur} end
redis.call('SET', KEYS[5], me)
if cur == me then cur = false end
""" + _LUA_PRELOAD_BODY.replace("return {token, values, results}", "return {token, values, results, cur or false}")
# CREATE (ActorKV.create_or_preload): KEYS as CLAIM's. ARGV: npre, the preload's ARGV
# (npre of them, acquire = '1'), claim ('1' then owner, nreplace, replace*; or '0'),
# nputs, (key, value)*. The claim (when asked) is checked first ({-2, current owner}:
# nothing changed); then, if the actor holds no key (its hash does not exist: Redis drops
# an empty hash), the fencing counter is bumped and the puts written: {-3, token,
# replaced owner or false}. Otherwise the preload runs, acquiring: {token, values,
# results, replaced owner or false}.
_LUA_CREATE = "#!lua\n" + _VALUES + "local function run_preload(ARGV)\n" + _LUA_PRELOAD_BODY + r"""end
local npre = tonumber(ARGV[1])
local i = 2 + npre
local cur = false
if ARGV[i] == '1' then
  cur = redis.call('GET', KEYS[5])
  local me, nrep = ARGV[i + 1], tonumber(ARGV[i + 2])
  local ok = (not cur) or cur == me
  for r = 0, nrep - 1 do if cur == ARGV[i + 3 + r] then ok = true end end
  if not ok then return {-2, cur} end
  redis.call('SET', KEYS[5], me)
  if cur == me then cur = false end
  i = i + 3 + nrep
else
  i = i + 1
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  local token = redis.call('INCR', KEYS[3])
  local nputs = tonumber(ARGV[i]); i = i + 1
  local STEP = 1000
  local stop = i + 2 * nputs
  while i < stop do
    local last = math.min(i + 2 * STEP, stop) - 1
    redis.call('HSET', KEYS[1], unpack(ARGV, i, last))
    local members = {}
    for j = i, last, 2 do members[#members + 1] = 0; members[#members + 1] = ARGV[j] end
    redis.call('ZADD', KEYS[2], unpack(members))
    i = last + 1
  end
  if nputs > 0 then redis.call('INCR', KEYS[4]) end
  return {-3, token, cur}
end
local out = run_preload({unpack(ARGV, 2, 1 + npre)})
out[4] = cur
return out
"""
# DUE: ARGV limit, then the due-index keys to read (one server: its one key; a cluster
# node: the keys of the slots it serves, accessed undeclared: allow-cross-slot-keys).
# Returns {now ms (the server's TIME), next due ms or -1, member, score, member, score, ...}
# (at most limit due entries; next: the earliest not-yet-due score seen, -1 if none or
# if the limit was reached).
_LUA_DUE = r"""#!lua flags=no-writes,allow-cross-slot-keys
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local out, n, nxt = {now, -1}, 0, nil
local function visit(i)
  local head = redis.call('ZRANGE', ARGV[i], 0, 0, 'WITHSCORES')
  if #head > 0 then
    local first = tonumber(head[2])
    if first <= now then
      if n < limit then
        local got = redis.call('ZRANGE', ARGV[i], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit - n, 'WITHSCORES')
        for j = 1, #got do out[#out + 1] = got[j] end
        n = n + #got / 2
        local after = redis.call('ZRANGE', ARGV[i], '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
        if #after > 0 and (not nxt or tonumber(after[2]) < nxt) then nxt = tonumber(after[2]) end
      end
    elseif not nxt or first < nxt then
      nxt = first
    end
  end
end
-- (One command per key: a command inside a cluster script must stay in one slot.
-- Redis drops an empty sorted set, so an idle index costs one EXISTS.)
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[i]) == 1 then visit(i) end
end
if nxt and n < limit then out[2] = nxt end
return out
"""
_LUA_RELEASE = r"""#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); return 1 end
return 0
"""
# HEARTBEAT: KEYS[1] heartbeat, KEYS[2] member set; ARGV instance, payload, lease ms,
# join ('1'), node id.
_LUA_HEARTBEAT = r"""#!lua
local cur = redis.call('GET', KEYS[1])
local tag = ARGV[1] .. '\n'
local mine = cur and string.sub(cur, 1, #tag) == tag
if ARGV[4] == '1' then
  if cur and not mine then return 0 end
elseif not mine then
  return 0
end
redis.call('SET', KEYS[1], tag .. ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
"""
# NODES: KEYS[1] member set; ARGV[1] the heartbeat key prefix (same hash tag). Prunes
# members whose heartbeat expired. Returns {id, value, ...}.
_LUA_NODES = r"""#!lua
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then out[#out + 1] = id; out[#out + 1] = v else redis.call('SREM', KEYS[1], id) end
end
return out
"""
_LUA_LEAVE = r"""#!lua
local cur = redis.call('GET', KEYS[1])
local tag = ARGV[1] .. '\n'
if cur and string.sub(cur, 1, #tag) == tag then
  redis.call('DEL', KEYS[1]); redis.call('SREM', KEYS[2], ARGV[2]); return 1
end
return 0
"""


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


_RELEASE = _Script(_LUA_RELEASE)
_DUE = _Script(_LUA_DUE)
_HEARTBEAT = _Script(_LUA_HEARTBEAT)
_NODES = _Script(_LUA_NODES)
_LEAVE = _Script(_LUA_LEAVE)
_PLACEMENT_SCRIPTS = (_RELEASE, _HEARTBEAT, _NODES, _LEAVE, _DUE)
"""Scripts that never read actor values (the same for both value encodings)."""


class _Scripts:
    """The driver's scripts for one value encoding (``values``: the Lua helpers)."""

    def __init__(self, values: str) -> None:
        def script(source: str) -> _Script:
            return _Script(source.replace(_VALUES, values))

        self.scan = script(_LUA_SCAN)
        self.write = script(_LUA_WRITE)
        self.preload = script(_LUA_PRELOAD)
        self.acquire = script(_LUA_ACQUIRE)
        self.claim = script(_LUA_CLAIM)
        self.create = script(_LUA_CREATE)
        self.snap_scan = script(_LUA_SNAP_SCAN)
        self.snap_get = script(_LUA_SNAP_GET)
        self.snap_preload = script(_LUA_SNAP_PRELOAD)
        self.snap_pin = script(_LUA_SNAP_PIN)
        self.all = (self.scan, self.write, self.preload, self.acquire, self.claim, self.create, self.snap_scan, self.snap_get,
                    self.snap_preload, self.snap_pin, *_PLACEMENT_SCRIPTS)


_TAGGED_SCRIPTS = _Scripts(_TAGGED_VALUES)
"""For stores in the tagged value encoding (:data:`actor_db.kv.codec.ENCODED`)."""
_PLAIN_SCRIPTS = _Scripts(_PLAIN_VALUES)
"""For legacy stores, whose values are raw (:data:`actor_db.kv.codec.LEGACY`)."""
PINNED_SNAPSHOT_TTL_S = 120
"""Seconds a pinned snapshot's copy survives a reader that never closed it (an
exporter killed mid-export); a live reader renews it (:data:`PINNED_RENEW_S`)."""
PINNED_RENEW_S = 30
"""A pinned snapshot read more than this many seconds after the copy's last renewal
first renews it (one extra round trip), and fails with ``SnapshotChangedError`` if the
copy is gone. So a reader never reads a copy that is older than this since its last
check, and a copy not renewed for ``2 * PINNED_RENEW_S`` belongs to a dead (or idle,
hence self-checking) reader: :meth:`RedisKV.drop_snapshot_copies` may remove it."""
_SNAPSHOT_COPY_TAG = b"s:"


_SLOT_TAGS: list[str] = []
"""The hash tag of each cluster slot, by slot (complete once set; built under the lock)."""
_SLOT_TAGS_LOCK = threading.Lock()
SLOT_MAP_TTL_S = 5.0
"""Seconds a cluster's slot-to-primary grouping is reused by due-index reads."""


def _slot_tag(slot: int) -> str:
    """A short hash tag whose Redis Cluster slot is ``slot`` (the table of all 16384 is
    found once per process by trying ``due-0``, ``due-1``, ...: about 0.2 s)."""
    if len(_SLOT_TAGS) != 16384:
        with _SLOT_TAGS_LOCK:  # (first use from several pool threads at once: built once, whole)
            if len(_SLOT_TAGS) != 16384:
                table: list[str | None] = [None] * 16384
                missing, n = 16384, 0
                while missing:
                    tag = f"due-{n}"
                    at = key_slot(tag.encode("ascii"))
                    if table[at] is None:
                        table[at] = tag
                        missing -= 1
                    n += 1
                _SLOT_TAGS[:] = [t for t in table if t is not None]  # (one C-level assignment)
    return _SLOT_TAGS[slot]


def due_index_key(namespace: str, slot: int | None) -> bytes:
    """The Redis key of a due index (:mod:`actor_db.kv.due`): one sorted set for a whole
    server (``slot`` ``None``), else one per cluster slot, in that slot (its hash tag
    is a tag of that slot, so an actor's write script reaches its slot's index)."""
    tag = f"{namespace}:due" if slot is None else _slot_tag(slot)
    return f"{namespace}:{{{tag}}}:z".encode("ascii")


class _Actor:
    """Where one actor's keys live: its store prefix and its four Redis keys."""

    __slots__ = ("actor_id", "prefix", "end", "data", "index", "fence", "version", "owner", "due", "member",
                 "write_keys")

    def __init__(self, namespace: str, actor_id: str, cluster: bool = False) -> None:
        self.actor_id = actor_id
        self.prefix = actor_prefix(actor_id)
        self.end = prefix_end(self.prefix)
        tag = actor_id.encode('utf-8').hex()
        base = f"{namespace}:{{{tag}}}:".encode("ascii")
        self.due = due_index_key(namespace, key_slot(tag.encode("ascii")) if cluster else None)
        """The due index this actor's due marks are mirrored into (its own slot's)."""
        assert not cluster or key_slot(self.due) == key_slot(base), "due index outside the actor's slot"
        self.member = tag.encode("ascii") + b":"
        """Prefix of this actor's members in the due index."""
        self.data = base + b"d"
        self.index = base + b"i"
        self.fence = base + b"f"
        self.version = base + b"v"
        self.owner = base + b"o"
        self.write_keys = [self.data, self.index, self.fence, self.version, self.due]
        """KEYS of the write script."""

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
    :param compress: store values LZ4-compressed when that pays (default); ``False``
        stores them raw (tagged). Values read back are the same either way
        (:mod:`actor_db.kv.codec`); byte budgets count protocol bytes either way.
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
        compress: bool = True,
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
        self._due_keys: list[bytes] | None = None
        """(A cluster) the due index key of every slot, by slot."""
        self._due_slots: tuple[float, dict[Any, list[int]]] = (0.0, {})
        """(A cluster) when the slot map was grouped, and ``{primary: [slot, ...]}``."""
        self._compress = compress
        self._codec: ValueCodec | None = None
        self._scripts = _TAGGED_SCRIPTS
        try:
            self._resolve_codec()
        except KVError as exc:  # unreachable now: resolved at the first call
            log.debug("cannot read the value encoding of Redis namespace %r yet (%s)", namespace, exc)
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
            for script in self._scripts.all:
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
        return _Actor(self.namespace, parsed[0], self._cluster)

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

    # -- value encoding -----------------------------------------------------------------
    @property
    def value_encoding_key(self) -> bytes:
        """The Redis key of this namespace's value-encoding marker."""
        return f"{self.namespace}.value-encoding".encode("ascii")

    @property
    def value_codec(self) -> ValueCodec:
        """How this store's values are stored (:mod:`actor_db.kv.codec`); read from the
        server's marker once per store object (recorded there if missing).

        :raises KVError: the server cannot be asked now.
        """
        codec = self._codec
        return codec if codec is not None else self._resolve_codec()

    def _resolve_codec(self) -> ValueCodec:
        key = self.value_encoding_key

        def marker() -> bytes | None:
            found = self._client.get(key)
            if found is None:
                # No marker: a namespace with actor data was written before the encoding.
                pattern = f"{self.namespace}:{{*}}:d".encode("ascii")
                legacy = next(iter(self._client.scan_iter(match=pattern, count=1000)), None) is not None
                self._client.set(key, LEGACY if legacy else ENCODED, nx=True)
                found = self._client.get(key)  # whoever set it first decided
                if found == LEGACY:
                    log.info("Redis namespace %r was written before value encoding: its values stay raw",
                             self.namespace)
            return found  # type: ignore[no-any-return]

        found = self._run("value-encoding check", marker)
        if found is None:
            raise KVError(f"Redis {self._describe()}: the value-encoding marker {key!r} vanished while read")
        codec = codec_for_marker(bytes(found), self._compress, REDIS_ALLOCATION)
        self._scripts = _TAGGED_SCRIPTS if codec.tagged else _PLAIN_SCRIPTS
        self._codec = codec
        return codec

    @property
    def _lua(self) -> _Scripts:
        """The scripts of this store's value encoding."""
        if self._codec is None:
            self._resolve_codec()
        return self._scripts

    # -- raw operations (one round trip each) ------------------------------------------
    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        actor = self._actor_of(keys[0])
        fields = [actor.rel(k) for k in keys]
        decode = self.value_codec.decode_optional
        return [decode(v) for v in self._run("get", self._client.hmget, actor.data, fields)]

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        actor = self._actor_of(start)
        flat = self._run("scan", self._lua.scan, self._client, [actor.data, actor.index],
                         [actor.lex_min(start), actor.lex_max(end),
                          -1 if limit is None else limit, -1 if max_bytes is None else max_bytes])
        p, decode = actor.prefix, self.value_codec.decode
        return [(p + flat[j], decode(flat[j + 1])) for j in range(0, len(flat), 2)]

    def _write(self, batch: WriteBatch, fence: Fence | None = None) -> None:
        call = self._write_call(batch, fence)
        if call is None:
            return
        actor, args = call
        error = self._write_outcome(self._run("write", self._lua.write, self._client, actor.write_keys, args), batch,
                                    fence)
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
        sha = self._lua.write.sha
        for i, (batch, fence) in enumerate(items):
            call = self._write_call(batch, fence)
            if call is None:
                continue
            actor, args = call
            send(("EVALSHA", sha, len(actor.write_keys), *actor.write_keys, *args))
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
        codec = self.value_codec
        args: list[bytes | int | str] = ["" if fence is None else str(fence.token), len(expected)]
        for k, v in expected:
            args += [actor.rel(k), b"0", b"", b""] if v is None else [actor.rel(k), b"1", v, codec.lz4_form(v) or b""]
        args.append(len(batch.delete_ranges))
        for r in batch.delete_ranges:
            args += [actor.lex_min(r.start), actor.lex_max(r.end)]
        args.append(len(batch.deletes))
        args += [actor.rel(k) for k in batch.deletes]
        args.append(len(batch.puts))
        encode = codec.encode
        for k, v in batch.puts.items():
            args += [actor.rel(k), encode(v)]
        args.append(actor.member)
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
        codec = self.value_codec
        decode, decode_optional = codec.decode, codec.decode_optional
        key_values = dict(zip(_unique(request.keys), map(decode_optional, values)))
        ranges: list[tuple[KeyRange, list[tuple[bytes, bytes]], bool]] = []
        hinted: dict[bytes, bytes | None] = {}
        p = actor.prefix
        for spec, result in zip(request.ranges, results):
            if int(result[0]) < 0:
                continue  # disabled range: not scanned, covers nothing
            flat = result[1]
            pairs = [(p + flat[j], decode(flat[j + 1])) for j in range(0, len(flat), 2)]
            ranges.append((spec.range, pairs, int(result[0]) == 1))
            if spec.hint is not None:
                hinted[spec.hint.key] = decode_optional(result[2])
                chunks = result[3]
                hinted.update((p + chunks[j], decode_optional(chunks[j + 1])) for j in range(0, len(chunks), 2))
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
        reply = self._run("preload", self._lua.preload, self._client, actor.keys, self._preload_args(actor, request, False))
        return self._preload_map(actor, request, reply)

    def _acquire(self, actor_id: str, request: PreloadRequest | None) -> tuple[int, PreloadMap | None]:
        actor = self._actor_cache(actor_prefix(actor_id))
        if request is None:
            token = self._run("acquire", self._client.incr, actor.fence)
            return int(token), None
        reply = self._run("acquire", self._lua.acquire, self._client, actor.keys, self._preload_args(actor, request, True))
        return int(reply[0]), self._preload_map(actor, request, reply)

    @property
    def groups_acquires(self) -> bool:  # type: ignore[override]
        """One server: :meth:`_acquire_many` is one pipeline of acquire scripts (one
        round trip). A cluster spreads actors over nodes: one acquisition at a time."""
        return not self._cluster

    def _acquire_many(self, items: Sequence[tuple[str, PreloadRequest]]) -> list[tuple[int, PreloadMap] | Exception]:
        """Every acquire script in ONE pipeline (not a transaction: each script is
        atomic on its own actor). A script the server lost (a restart) is run again on
        its own with EVAL. A cluster acquires one by one."""
        if self._cluster:
            return super()._acquire_many(items)
        lua = self._lua
        pipe = self._client.pipeline(transaction=False)
        actors = []
        for actor_id, request in items:
            actor = self._actor_cache(actor_prefix(actor_id))
            actors.append(actor)
            args = self._preload_args(actor, request, True)
            pipe.evalsha(lua.acquire.sha, len(actor.keys), *actor.keys, *args)
        replies = self._run("acquire", pipe.execute, False)
        out: list[tuple[int, PreloadMap] | Exception] = []
        for (actor_id, request), actor, reply in zip(items, actors, replies):
            try:
                if isinstance(reply, NoScriptError):
                    token, found = self._acquire(actor_id, request)
                    assert found is not None
                    out.append((token, found))
                elif isinstance(reply, Exception):
                    error = KVError(f"Redis {self._describe()} failed acquire: {type(reply).__name__}: {reply}")
                    error.__cause__ = reply
                    out.append(error)
                else:
                    out.append((int(reply[0]), self._preload_map(actor, request, reply)))
            except Exception as exc:
                out.append(exc)
        return out

    # -- placement (rules: actor_db.kv.leases; one script each) ------------------------
    supports_placement = True

    def _nodes_keys(self) -> tuple[bytes, bytes]:
        """(heartbeat key prefix, member set): one hash tag, so one slot in a cluster."""
        base = f"{self.namespace}:{{{self.namespace}:nodes}}:".encode("ascii")
        return base + b"h:", base + b"m"

    def _claim(self, actor_id: str, request: PreloadRequest, owner: bytes,
               replace: Sequence[bytes]) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        actor = self._actor_cache(actor_prefix(actor_id))
        args: list[bytes | int | str] = [owner, len(replace), *replace]
        args += self._preload_args(actor, request, True)
        reply = self._run("claim", self._lua.claim, self._client, actor.keys + [actor.owner], args)
        if int(reply[0]) == -2:
            return 0, None, bytes(reply[1]), None
        return int(reply[0]), self._preload_map(actor, request, reply[:3]), None, reply[3] or None

    supports_create = True

    def _create(self, actor_id: str, request: PreloadRequest, puts: Mapping[bytes, bytes],
                claim: tuple[bytes, Sequence[bytes]] | None
                ) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        actor = self._actor_cache(actor_prefix(actor_id))
        pre = self._preload_args(actor, request, True)
        args: list[bytes | int | str] = [len(pre), *pre]
        if claim is None:
            args.append("0")
        else:
            owner, replace = claim
            args += ["1", owner, len(replace), *replace]
        args.append(len(puts))
        encode = self.value_codec.encode
        for k, v in puts.items():
            args += [actor.rel(k), encode(v)]
        reply = self._run("create", self._lua.create, self._client, actor.keys + [actor.owner], args)
        status = int(reply[0])
        if status == -2:
            return 0, None, bytes(reply[1]), None
        if status == -3:
            return int(reply[1]), None, None, (bytes(reply[2]) if len(reply) > 2 and reply[2] else None)
        replaced = reply[3] if len(reply) > 3 and reply[3] else None
        return status, self._preload_map(actor, request, reply[:3]), None, None if replaced is None else bytes(replaced)

    def _release(self, actor_id: str, owner: bytes) -> bool:
        actor = self._actor_cache(actor_prefix(actor_id))
        return bool(self._run("release", _RELEASE, self._client, [actor.owner], [owner]))

    def _owner(self, actor_id: str) -> bytes | None:
        actor = self._actor_cache(actor_prefix(actor_id))
        return self._run("owner read", self._client.get, actor.owner)  # type: ignore[no-any-return]

    def _heartbeat(self, node_id: str, instance: bytes, payload: bytes, lease_ms: int, join: bool) -> bool:
        prefix, members = self._nodes_keys()
        node = node_id.encode("utf-8")
        return bool(self._run("heartbeat", _HEARTBEAT, self._client, [prefix + node, members],
                              [instance, payload, lease_ms, "1" if join else "0", node]))

    def _nodes(self) -> dict[str, tuple[bytes, bytes]]:
        prefix, members = self._nodes_keys()
        flat = self._run("node listing", _NODES, self._client, [members], [prefix])
        out: dict[str, tuple[bytes, bytes]] = {}
        for j in range(0, len(flat), 2):
            instance, _, payload = bytes(flat[j + 1]).partition(b"\n")
            out[bytes(flat[j]).decode("utf-8", errors="replace")] = (instance, payload)
        return out

    def _leave(self, node_id: str, instance: bytes) -> bool:
        prefix, members = self._nodes_keys()
        node = node_id.encode("utf-8")
        return bool(self._run("leave", _LEAVE, self._client, [prefix + node, members], [instance, node]))

    # -- whole-store operations ------------------------------------------------------
    # -- the due index (actor_db.kv.due) ------------------------------------------------
    due_index = True

    def _due(self, limit: int) -> tuple[int, list[DueEntry], int | None]:
        """One script per server (a cluster: per primary, over the slots it serves; the
        server's ``TIME`` is the answer's now: the primaries' clocks, not the nodes')."""
        if not self._cluster:
            replies = [self._run("due-index read", _DUE, self._client, [],
                                 [limit, due_index_key(self.namespace, None)])]
        else:
            replies = []
            if self._due_keys is None:
                self._due_keys = [due_index_key(self.namespace, slot) for slot in range(16384)]
            for node, slots in self._slots_by_primary().items():
                keys = [self._due_keys[slot] for slot in slots]

                def read(node: Any = node, keys: list[bytes] = keys) -> Any:
                    try:
                        return self._client.execute_command("EVALSHA", _DUE.sha, 0, limit, *keys, target_nodes=node)
                    except NoScriptError:
                        return self._client.execute_command("EVAL", _DUE.source, 0, limit, *keys, target_nodes=node)

                try:
                    replies.append(self._run("due-index read", read))
                except KVError:
                    self._due_slots = (0.0, {})  # (a slot moved, a node failed: re-read the map)
                    raise
            for _ in replies[1:]:
                self._count()  # (one round trip per primary; due() counted the first)
        now = max(int(r[0]) for r in replies) if replies else int(time.time() * 1000)
        entries: list[DueEntry] = []
        nexts: list[int] = []
        for reply in replies:
            if int(reply[1]) >= 0:
                nexts.append(int(reply[1]))
            for j in range(2, len(reply), 2):
                member, score = bytes(reply[j]), int(float(reply[j + 1]))
                hexid, _, rest = member.partition(b":")
                try:
                    actor_id = bytes.fromhex(hexid.decode("ascii")).decode("utf-8")
                except ValueError:
                    log.warning("Redis due index %s: a member that names no actor: %r", self.namespace, member[:64])
                    continue
                entries.append(DueEntry(score, actor_id, rest))
        entries.sort()
        if len(entries) > limit:
            entries = entries[:limit]
            nexts = []
        return now, entries, min(nexts) if nexts and len(entries) < limit else None

    def _slots_by_primary(self) -> dict[Any, list[int]]:
        """``{primary node: [slot, ...]}`` from the client's slot map (recomputed at
        most every :data:`SLOT_MAP_TTL_S` seconds, or when a read failed)."""
        at, cached = self._due_slots
        if cached and time.monotonic() - at < SLOT_MAP_TTL_S:
            return cached
        groups: dict[str, tuple[Any, list[int]]] = {}
        cache = self._client.nodes_manager.slots_cache
        for slot in range(16384):
            nodes = cache.get(slot)
            if not nodes:
                continue
            primary = nodes[0]
            groups.setdefault(primary.name, (primary, []))[1].append(slot)
        found = {node: slots for node, slots in groups.values()}
        self._due_slots = (time.monotonic(), found)
        return found

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

    def snapshot_copies(self, actor_id: str | None = None) -> list[dict[str, Any]]:
        """The pinned snapshot copies in this namespace (of one actor, or all): one dict
        per copy with ``actor``, ``key`` (the copy's hash key), ``ttl_s`` (seconds left,
        ``-1`` none) and ``stale`` (not renewed for ``2 * PINNED_RENEW_S``: its reader
        died or is idle; :meth:`drop_snapshot_copies` removes those). ``SCAN`` of every
        primary plus one ``TTL`` per copy; not a protocol call."""
        inner = "*" if actor_id is None else actor_id.encode("utf-8").hex()
        pattern = f"{self.namespace}:{{{inner}}}:".encode("ascii") + _SNAPSHOT_COPY_TAG + b"*"
        keys = self._run("snapshot copy listing", lambda: list(self._client.scan_iter(match=pattern, count=1000)))
        copies: dict[bytes, list[bytes]] = {}
        for key in keys:
            copies.setdefault(key[:-1], []).append(key)
        rows: list[dict[str, Any]] = []
        stale_below = PINNED_SNAPSHOT_TTL_S - 2 * PINNED_RENEW_S
        for tag, members in sorted(copies.items()):
            hex_id = tag[len(self.namespace) + 2:].split(b"}", 1)[0]
            try:
                owner = bytes.fromhex(hex_id.decode("ascii")).decode("utf-8")
            except ValueError:
                continue
            ttl = max(int(self._run("snapshot copy ttl", self._client.ttl, key)) for key in members)
            if ttl == -2:
                continue  # gone meanwhile
            # A live reader renews its copy to the full time to live at least every
            # PINNED_RENEW_S; a copy without expiry or with a longer one (an older version
            # of this driver made them for an hour) has no live reader of this code either.
            stale = ttl < stale_below or ttl > PINNED_SNAPSHOT_TTL_S or ttl == -1
            rows.append({"actor": owner, "key": members[0].decode("ascii", "replace"), "ttl_s": ttl,
                         "stale": stale})
        return rows

    def drop_snapshot_copies(self, actor_id: str, *, stale_only: bool = True) -> int:
        """Delete the pinned snapshot copies of ``actor_id`` (only the stale ones unless
        ``stale_only=False``: a live reader's copy is never taken from under it).

        :returns: the number of copies deleted.
        """
        dropped = 0
        for row in self.snapshot_copies(actor_id):
            if stale_only and not row["stale"]:
                continue
            tag = row["key"].encode("ascii")[:-1]
            self._run("snapshot copy removal", self._client.unlink, tag + b"d", tag + b"i")
            dropped += 1
        return dropped

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
        self._made = 0
        self._renewed = 0.0
        if pinned:
            import secrets

            tag = actor.data[:-1] + _SNAPSHOT_COPY_TAG + secrets.token_hex(8).encode("ascii") + b":"
            copy = (tag + b"d", tag + b"i")
            self._made = int(store._run("snapshot copy", store._lua.snap_pin, store.client,
                                        [actor.data, actor.index, *copy], [PINNED_SNAPSHOT_TTL_S]))
            self._renewed = time.monotonic()
            self._pinned = copy

    def _renew(self) -> None:
        """Before a pinned read: renew the copy's time to live when its last renewal is
        :data:`PINNED_RENEW_S` old, and refuse to read a copy that is gone."""
        if self._pinned is None or time.monotonic() - self._renewed < PINNED_RENEW_S:
            return
        from actor_db.kv.snapshot import SnapshotChangedError

        pipe = self._store.client.pipeline(transaction=False)
        for bit, key in ((1, self._pinned[0]), (2, self._pinned[1])):
            if self._made & bit:
                pipe.expire(key, PINNED_SNAPSHOT_TTL_S)
        alive = self._store._run("snapshot renewal", pipe.execute)
        if not all(alive):
            raise SnapshotChangedError(f"the pinned snapshot copy of actor {self._actor.actor_id!r} expired or was "
                                       "removed while it was read; retry the read")
        self._renewed = time.monotonic()

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
        decode = self._store.value_codec.decode_optional
        if self._pinned is not None:
            self._renew()
            return [decode(v) for v in self._store._run("snapshot get", self._store.client.hmget, self._pinned[0],
                                                        fields)] if fields else []
        version, values = self._store._run("snapshot get", self._store._lua.snap_get, self._store.client,
                                           [a.data, a.index, a.version], fields)
        self._check(version)
        return [decode(v) for v in values]

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        a = self._actor
        args = [a.lex_min(start), a.lex_max(end), -1 if limit is None else limit, -1 if max_bytes is None else max_bytes]
        if self._pinned is not None:
            self._renew()
            flat = self._store._run("snapshot scan", self._store._lua.scan, self._store.client, list(self._pinned),
                                    args)
        else:
            version, flat = self._store._run("snapshot scan", self._store._lua.snap_scan, self._store.client,
                                             [a.data, a.index, a.version], args)
            self._check(version)
        decode = self._store.value_codec.decode
        return [(a.prefix + flat[j], decode(flat[j + 1])) for j in range(0, len(flat), 2)]

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        a = self._actor
        args = self._store._preload_args(a, request, False)
        if self._pinned is not None:
            self._renew()
            reply = self._store._run("snapshot preload", self._store._lua.preload, self._store.client,
                                     [*self._pinned, a.fence, a.version], args)
            return self._store._preload_map(a, request, reply)
        reply = self._store._run("snapshot preload", self._store._lua.snap_preload, self._store.client, a.keys, args)
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
