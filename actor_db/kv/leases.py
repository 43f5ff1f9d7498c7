"""Placement records in ordered drivers (MemoryKV, LMDB): node heartbeats with a lease
and the per-actor owner record's conditional take-over (:mod:`actor_db.serve`).

One rule, used inside each driver's atomic step (the MemoryKV lock, the LMDB write
transaction), so every check and the write that follows it are one atomic step:

- **Owner record** (``owner_key(actor_id)``): ``b"<node id>\\0<instance>"``. A claim takes
  the actor only if the record is absent, equals the claimant's, or is one of the
  records the claimant found dead (``replace``); then, in the same step, it writes
  the claimant's record and bumps the fencing counter. Otherwise it changes nothing
  and returns the current record.
- **Heartbeat** (``node_key(node_id)``): ``boot id \\n expiry ms \\n instance \\n
  payload``. Expiry is on this machine's ``CLOCK_BOOTTIME`` (monotonic, shared by every
  process of the machine, counting suspend); a record from another boot (another boot
  id) has expired. A *renewal* succeeds only while the record is unexpired and holds
  the renewing instance; a *join* succeeds unless an unexpired record of another
  instance holds the node id. So an instance whose lease ran out can never renew it:
  once another node judged it dead, it stays dead.

Left out: drivers shared by several machines use the store's own clock (Redis: key
TTLs, :mod:`actor_db.kv.redis`); LMDB is one machine by construction.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Iterable, Sequence

__all__ = ["lease_clock", "claim_owner", "renew_heartbeat", "live_nodes", "leave_node", "encode_owner",
           "decode_owner"]


@functools.lru_cache(maxsize=1)
def _boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip()
    except OSError:  # not Linux: wall-clock based records below still order within one boot
        return b"-"


def lease_clock() -> tuple[bytes, int]:
    """(boot id, milliseconds on ``CLOCK_BOOTTIME``): the clock every process of this
    machine shares for lease expiry."""
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return _boot_id(), int(time.clock_gettime(clock) * 1000)


def encode_owner(node_id: str, instance: str) -> bytes:
    """The owner record naming ``instance`` of node ``node_id``."""
    return node_id.encode("utf-8") + b"\0" + instance.encode("ascii")


def decode_owner(record: bytes) -> tuple[str, str]:
    """``(node_id, instance)`` of an owner record."""
    node, _, instance = record.partition(b"\0")
    return node.decode("utf-8", errors="replace"), instance.decode("ascii", errors="replace")


def claim_owner(current: bytes | None, owner: bytes, replace: Sequence[bytes]) -> bool:
    """Whether ``owner`` may take an actor whose owner record is ``current``."""
    return current is None or current == owner or current in replace


def _parse(value: bytes) -> tuple[bytes, int, bytes, bytes]:
    boot, expiry, instance, payload = value.split(b"\n", 3)
    return boot, int(expiry), instance, payload


def _alive(value: bytes | None, now: tuple[bytes, int]) -> tuple[bytes, bytes] | None:
    """``(instance, payload)`` of an unexpired heartbeat, else ``None``."""
    if value is None:
        return None
    try:
        boot, expiry, instance, payload = _parse(value)
    except ValueError:
        return None
    if boot != now[0] or expiry <= now[1]:
        return None
    return instance, payload


def renew_heartbeat(get: Callable[[bytes], bytes | None], put: Callable[[bytes, bytes], None], key: bytes,
                    instance: bytes, payload: bytes, lease_ms: int, join: bool) -> bool:
    """(Inside the driver's atomic step.) Write the heartbeat of ``instance`` for
    ``lease_ms`` milliseconds if the rules of the module docstring allow it."""
    now = lease_clock()
    alive = _alive(get(key), now)
    if join:
        if alive is not None and alive[0] != instance:
            return False
    elif alive is None or alive[0] != instance:
        return False
    put(key, b"%s\n%d\n%s\n%s" % (now[0], now[1] + lease_ms, instance, payload))
    return True


def live_nodes(items: Iterable[tuple[bytes, bytes]], prefix_len: int) -> dict[str, tuple[bytes, bytes]]:
    """``{node_id: (instance, payload)}`` of the unexpired heartbeats among ``items``."""
    now = lease_clock()
    out: dict[str, tuple[bytes, bytes]] = {}
    for key, value in items:
        alive = _alive(value, now)
        if alive is not None:
            out[key[prefix_len:].decode("utf-8", errors="replace")] = alive
    return out


def leave_node(get: Callable[[bytes], bytes | None], key: bytes, instance: bytes) -> bool:
    """Whether the heartbeat at ``key`` is ``instance``'s (then the caller deletes it)."""
    value = get(key)
    if value is None:
        return False
    try:
        return _parse(value)[2] == instance
    except ValueError:
        return False
