"""Helpers every operation shares: actor ids, the database's size, ownership, snapshots.

Invariants:

- Nothing here prints or parses arguments; errors are :mod:`actor_db.errors` classes.
- Every read of a live actor that makes more than one KV call goes through
  :func:`read_consistently` (one committed state), so a concurrent owner never makes
  an operation see a mix of two commits.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, TypeVar

import apsw

import vfs
from vfs.keys import COMMIT_RECORD_KEY, FILE_MAIN, chunk_key, decode_meta, meta_key

from actor_db.errors import ActorNotFoundError, ConfigurationError, KVError, OperationError
from actor_db.kv.snapshot import retry_on_change

log = logging.getLogger(__name__)

__all__ = ["actor_id_for", "database_size", "require_database", "take_ownership", "fingerprint",
           "drop_if_no_database", "actor_has_keys", "not_found", "read_consistently", "describe_error",
           "ProgressCallback"]

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while an operation copies (units: the caller's
operation says: pages for SQLite copies, bytes for tabular imports)."""

_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
T = TypeVar("T")


def actor_id_for(actor: str, actor_type: str | None) -> str:
    """The actor id for ``actor`` (an id, or a key of ``actor_type``).

    :raises ConfigurationError: an empty id or an invalid type name.
    """
    if not actor:
        raise ConfigurationError("the actor id must not be empty")
    if actor_type is None:
        return actor
    if not _TYPE_NAME.match(actor_type):
        raise ConfigurationError(f"actor type name {actor_type!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
    # The runtime's mapping (actor_db.Registry.get_or_create): "<type>/<key>".
    return f"{actor_type}/{actor}"


def database_size(kv: Any) -> int | None:
    """The main database's size in bytes, or ``None`` if the actor has none (1 round trip).

    :raises OperationError: the meta record is corrupt.
    """
    raw = kv.get_many([meta_key(FILE_MAIN)])[0]
    if raw is None:
        return None
    try:
        return decode_meta(raw)
    except ValueError as exc:
        raise OperationError(f"actor {kv.actor_id!r}: the database meta record is corrupt: {exc}") from exc


def require_database(kv: Any) -> int:
    """The database's size in bytes (1 round trip).

    :raises ActorNotFoundError: the actor has no database (or an empty one).
    """
    size = database_size(kv)
    if not size:
        raise ActorNotFoundError(f"actor {kv.actor_id!r} has no database in this store "
                                 "(see `actor-db ls`; --actor-type NAME if ACTOR is a key; "
                                 "`actor-db shell ACTOR --create` makes one)")
    return size


def live_owner(kv: Any) -> str | None:
    """The node id of the live ``actor-db serve`` node that owns the actor, if any (two
    round trips: the owner record, then the live nodes; none on a store without
    placement). A node whose heartbeat expired does not count: its actors are free."""
    store = getattr(kv, "store", None)
    actor_id = getattr(kv, "actor_id", None)
    if store is None or actor_id is None or not getattr(store, "supports_placement", False):
        return None
    from actor_db.kv.leases import decode_owner

    record = store.owner_of(actor_id)
    if record is None:
        return None
    node, instance = decode_owner(record)
    alive = store.nodes().get(node)
    return node if alive is not None and alive[0] == instance.encode("ascii") else None


def take_ownership(kv: Any) -> None:
    """Fence off any other owner of the actor, if the driver supports fencing."""
    acquire = getattr(kv, "acquire_ownership", None)
    if acquire is None:
        return
    try:
        token = acquire()
    except NotImplementedError:
        return
    log.debug("actor %r: this process holds fencing token %s", kv.actor_id, token)


def fingerprint(kv: Any) -> tuple[bytes | None, bytes | None]:
    """The database's meta record and first chunk (one round trip): they change with
    every commit (chunk 0 holds SQLite's file change counter)."""
    meta, head = kv.get_many([meta_key(FILE_MAIN), chunk_key(FILE_MAIN, 0)])
    return meta, head


def actor_has_keys(kv: Any) -> bool:
    """Whether the actor has any key in the store (one round trip)."""
    return bool(kv.scan(b"", b"", limit=1))


def not_found(kv: Any) -> ActorNotFoundError:
    """The error for an actor without any key."""
    return ActorNotFoundError(f"actor {kv.actor_id!r} not found in this store "
                              "(see `actor-db ls`; --actor-type NAME if ACTOR is a key)")


def drop_if_no_database(kv: Any) -> None:
    """After a failed import into an actor that had no database: delete whatever keys
    the attempt left (a meta record of size 0, staging), so no half-created actor
    shows in ``ls``. Best effort: the original error is what the user must see."""
    try:
        if database_size(kv) or kv.get_many([COMMIT_RECORD_KEY])[0] is not None:
            return  # a database, or a durable commit the next open rolls forward
        if not kv.scan(b"", b"", limit=1):
            return
        delete_all = getattr(kv, "delete_all", None)
        if delete_all is not None:
            delete_all()
        else:  # a wrapping view: the same range delete, relative to the actor
            batch = vfs.WriteBatch()
            batch.delete_range(b"\x00", b"\xff" * 8)  # every actor-relative key
            kv.write(batch)
    except Exception as exc:
        log.warning("could not remove the keys of the failed import of actor %r (%s)",
                    getattr(kv, "actor_id", "?"), exc)


def read_consistently(kv: Any, read: Callable[[Any], T]) -> T:
    """Run ``read`` on a snapshot of ``kv``'s actor (one committed state), retrying
    when the driver detects a commit in between; a view without snapshots (a test
    wrapper) is read directly."""
    if not hasattr(kv, "snapshot"):
        log.warning("%r cannot take snapshots: reading the live actor", kv)
        return read(kv)
    return retry_on_change(kv, read)


def describe_error(exc: BaseException) -> str:
    """One line: the error, and for a SQLite I/O error its KV cause."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, apsw.Error):
        text = f"{type(exc).__name__}: {text}"
    cause = exc.__cause__
    if isinstance(cause, KVError) and str(cause) not in text:
        text += f" (KV: {str(cause).splitlines()[0]})"
    return text
