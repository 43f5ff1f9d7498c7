"""How actor ids become key prefixes (the only place store-level keys are built).

Store key = ``b"a" + u16 BE length of the UTF-8 actor id + the id + actor-relative key``.
The length makes prefixes prefix-free: actor ``"a"`` can never see keys of actor
``"ab"``, and every key of one actor is contiguous in key order.

Fencing counter of an actor (ordered drivers) = ``b"f" + u16 BE length + the id``: outside
every actor's range, so range deletes of the actor (``delete_all``) never reset it.
"""

from __future__ import annotations

import struct

from actor_db.errors import KVLimitError

__all__ = ["ACTORS_START", "ACTORS_END", "actor_prefix", "prefix_end", "parse_actor_key", "fence_key"]

_TAG = b"a"
ACTORS_START = _TAG
ACTORS_END = bytes([_TAG[0] + 1])
_LEN = struct.Struct(">H")
_FENCE_TAG = b"f"


def actor_prefix(actor_id: str) -> bytes:
    """The key prefix of ``actor_id``'s namespace.

    :raises KVLimitError: the id is empty or longer than 65535 UTF-8 bytes.
    """
    raw = actor_id.encode("utf-8")
    if not raw or len(raw) > 0xFFFF:
        raise KVLimitError(f"actor id must be 1..65535 UTF-8 bytes, got {len(raw)}")
    return _TAG + _LEN.pack(len(raw)) + raw


def fence_key(actor_id: str) -> bytes:
    """The store key of ``actor_id``'s fencing counter (outside its key range)."""
    return _FENCE_TAG + actor_prefix(actor_id)[len(_TAG):]


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("a prefix of only 0xff bytes has no end")
    return stripped[:-1] + bytes([stripped[-1] + 1])


def parse_actor_key(key: bytes) -> tuple[str, int] | None:
    """``(actor_id, prefix_length)`` of a store key, or ``None`` if it is not an actor key."""
    if not key.startswith(_TAG) or len(key) < 3:
        return None
    (length,) = _LEN.unpack_from(key, 1)
    end = 3 + length
    if len(key) < end:
        return None
    return key[3:end].decode("utf-8", errors="replace"), end
