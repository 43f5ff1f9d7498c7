"""How actor ids become key prefixes (the only place store-level keys are built).

Store key = ``b"a" + u16 BE length of the UTF-8 actor id + the id + actor-relative key``.
The length makes prefixes prefix-free: actor ``"a"`` can never see keys of actor
``"ab"``, and every key of one actor is contiguous in key order.

Fencing counter of an actor (ordered drivers) = ``b"f" + u16 BE length + the id``: outside
every actor's range, so range deletes of the actor (``delete_all``) never reset it.

Owner record of an actor (placement, :mod:`actor_db.serve`) = ``b"o" + u16 BE length + the
id``; heartbeat of a node = ``b"n" + the node id's UTF-8 bytes``. Both outside every
actor's range too.

Value-encoding marker (LMDB) = :data:`VALUE_ENCODING_KEY`, outside every actor's range:
which storage encoding the store's actor values use (:mod:`actor_db.kv.codec`).

Actor ids must be valid Unicode encodable as UTF-8 (no lone surrogates), 1..65535 bytes,
and short enough that the prefix leaves :data:`ACTOR_KEY_ROOM` bytes under the driver's
key limit (:func:`max_actor_id_bytes`); :class:`actor_db.kv.ActorKV` checks this when the
view is made, so a too-long id fails at once with a message naming the lengths.
"""

from __future__ import annotations

import functools

import logging
import struct
from typing import Final

from actor_db.errors import ActorKeyTooLongError, InvalidActorKeyError

log = logging.getLogger(__name__)

__all__ = ["ACTORS_START", "ACTORS_END", "ACTOR_KEY_ROOM", "MAX_ACTOR_ID_BYTES", "PREFIX_OVERHEAD", "actor_prefix",
           "prefix_end", "parse_actor_key", "actor_prefix_length", "fence_key", "owner_key", "node_key", "VALUE_ENCODING_KEY",
           "NODES_START", "NODES_END", "encode_actor_id", "max_actor_id_bytes"]

_TAG = b"a"
_TAG_BYTE = _TAG[0]
ACTORS_START = _TAG
ACTORS_END = bytes([_TAG[0] + 1])
_LEN = struct.Struct(">H")
_FENCE_TAG = b"f"
_OWNER_TAG = b"o"
_NODE_TAG = b"n"
NODES_START = _NODE_TAG
NODES_END = bytes([_NODE_TAG[0] + 1])

VALUE_ENCODING_KEY: Final = b"e:value-encoding"
"""Store key of the value-encoding marker (:data:`actor_db.kv.codec.ENCODED` or
:data:`~actor_db.kv.codec.LEGACY`); outside the actor range, so no actor operation, range
delete or listing ever touches it."""

PREFIX_OVERHEAD: Final = len(_TAG) + _LEN.size
"""Bytes an actor prefix adds to the id: the tag and the u16 length."""

MAX_ACTOR_ID_BYTES: Final = 0xFFFF
"""The key layout's bound on an actor id (its length is stored as a u16)."""

ACTOR_KEY_ROOM: Final = 16
"""Bytes an actor's own (actor-relative) keys need under the driver's key limit: the
longest key the VFS stores is 16 bytes (a history chunk key ``[8, 1, 7, 3|4, u64 seq,
u32 index]``, :mod:`vfs.keys`; chunk and staged-chunk keys are 8); the runtime's keys
(:mod:`actor_db.runtime.keys`) are at most 2 bytes."""


def encode_actor_id(actor_id: str, what: str = "actor id") -> bytes:
    """``actor_id`` as UTF-8 bytes.

    :param what: how messages name the value (``"actor id"``, ``"actor key"``).
    :raises InvalidActorKeyError: it is not a ``str``, or not valid Unicode encodable as
        UTF-8 (a lone surrogate such as ``"\\udc80"``).
    """
    if not isinstance(actor_id, str):
        raise InvalidActorKeyError(f"{what} must be a str, not {type(actor_id).__name__}")
    try:
        return actor_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = actor_id[exc.start:exc.end]
        raise InvalidActorKeyError(
            f"{what} {actor_id!r} is not valid Unicode: {bad!r} at position {exc.start} cannot be encoded as "
            f"UTF-8 (lone surrogate); an {what} must be a str encodable as UTF-8") from None


def max_actor_id_bytes(max_key_bytes: int | None) -> int:
    """The longest actor id, in UTF-8 bytes, for a driver whose full keys are limited to
    ``max_key_bytes`` (``None``: no limit; the layout's 65535 bytes apply): the prefix
    plus :data:`ACTOR_KEY_ROOM` must fit. 0 when no id fits."""
    if max_key_bytes is None:
        return MAX_ACTOR_ID_BYTES
    return max(0, min(MAX_ACTOR_ID_BYTES, max_key_bytes - PREFIX_OVERHEAD - ACTOR_KEY_ROOM))


def actor_prefix(actor_id: str) -> bytes:
    """The key prefix of ``actor_id``'s namespace.

    :raises InvalidActorKeyError: the id is empty, not a ``str`` or not encodable as UTF-8.
    :raises ActorKeyTooLongError: the id is longer than 65535 UTF-8 bytes (also a
        :class:`~actor_db.errors.KVLimitError`).
    """
    raw = encode_actor_id(actor_id)
    if not raw:
        raise InvalidActorKeyError("actor id must not be empty")
    if len(raw) > MAX_ACTOR_ID_BYTES:
        raise ActorKeyTooLongError(
            f"actor id of {len(raw)} bytes is too long: actor ids are limited to {MAX_ACTOR_ID_BYTES} UTF-8 bytes",
            length=len(raw), max_length=MAX_ACTOR_ID_BYTES)
    return _TAG + _LEN.pack(len(raw)) + raw


@functools.lru_cache(maxsize=4096)
def fence_key(actor_id: str) -> bytes:
    """The store key of ``actor_id``'s fencing counter (outside its key range); cached,
    as every fenced write of an ordered driver reads it."""
    return _FENCE_TAG + actor_prefix(actor_id)[len(_TAG):]


@functools.lru_cache(maxsize=4096)
def owner_key(actor_id: str) -> bytes:
    """The store key of ``actor_id``'s owner record (placement; outside its key range)."""
    return _OWNER_TAG + actor_prefix(actor_id)[len(_TAG):]


def node_key(node_id: str) -> bytes:
    """The store key of node ``node_id``'s heartbeat (placement)."""
    return _NODE_TAG + node_id.encode("utf-8")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("a prefix of only 0xff bytes has no end")
    return stripped[:-1] + bytes([stripped[-1] + 1])


def parse_actor_key(key: bytes) -> tuple[str, int] | None:
    """``(actor_id, prefix_length)`` of a store key, or ``None`` if it is not an actor key."""
    end = actor_prefix_length(key)
    if end is None:
        return None
    return key[3:end].decode("utf-8", errors="replace"), end


def actor_prefix_length(key: bytes) -> int | None:
    """The length of a store key's actor prefix (:func:`actor_prefix`), or ``None`` if
    it is not an actor key. :func:`parse_actor_key` without decoding the id (every
    write of an ordered driver asks it once for its due marks)."""
    if len(key) < 3 or key[0] != _TAG_BYTE:
        return None
    end = 3 + ((key[1] << 8) | key[2])
    if len(key) < end:
        return None
    return end
