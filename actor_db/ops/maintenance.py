"""Maintenance of one actor: ``remove_actor`` (delete every key) and ``check_integrity``.

Invariants:

- ``remove_actor`` deletes in ONE atomic batch after taking the actor's fencing token,
  so a runtime that held the actor cannot write again, under the actor's writer lease
  (:mod:`actor_db.ops.lease`), so a drop-in writer's transaction is never cut in half.
- ``check_integrity`` never writes: it reads one snapshot of the actor.
"""

from __future__ import annotations

import logging
from typing import Any

import apsw

import vfs

from actor_db.ops.common import (actor_has_keys, describe_error, not_found, read_consistently, require_database,
                                 take_ownership)
from actor_db.ops.lease import DEFAULT_LEASE_TIMEOUT_S, writer_lease
from actor_db.ops.transfer import INTEGRITY_MAX_ERRORS

log = logging.getLogger(__name__)

__all__ = ["remove_actor", "check_integrity"]


def remove_actor(kv: Any, *, lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> int:
    """Delete every key of the actor (database, state, staging) in one atomic batch,
    after taking its fencing token so a runtime that held it cannot write again, and
    while holding its writer lease, so a drop-in connection's write transaction is
    never cut in half: ``rm`` waits for its commit (up to ``lease_timeout_s``). Stale
    pinned snapshot copies of the actor (Redis: left by a reader that died) go too.

    :returns: the number of leftover snapshot copies deleted.
    :raises ActorNotFoundError: the actor has neither keys nor leftover copies.
    :raises WriterBusyError: a drop-in writer kept the lease for ``lease_timeout_s``.
    """
    store = getattr(kv, "store", None)
    drop_copies = getattr(store, "drop_snapshot_copies", None)
    if not actor_has_keys(kv):
        dropped = 0 if drop_copies is None else int(drop_copies(kv.actor_id))
        if not dropped:
            raise not_found(kv)
        log.info("deleted %d leftover snapshot copies of actor %r", dropped, kv.actor_id)
        return dropped
    with writer_lease(kv, timeout_s=lease_timeout_s) as leased:
        take_ownership(leased)
        leased.delete_all()
    dropped = 0 if drop_copies is None else int(drop_copies(kv.actor_id))
    log.info("deleted actor %r (and %d leftover snapshot copies)", kv.actor_id, dropped)
    return dropped


def check_integrity(kv: Any) -> list[str]:
    """``PRAGMA integrity_check`` of the actor's database: ``["ok"]`` or the problems
    SQLite reports (at most :data:`~actor_db.ops.transfer.INTEGRITY_MAX_ERRORS`; an error
    opening or reading the database is one problem). Read-only, on one snapshot.

    :raises ActorNotFoundError: the actor has no database.
    """
    require_database(kv)

    def check(view: Any) -> list[str]:
        try:
            con = vfs.connect(view, readonly=True)  # never writes: a live actor may be checked
        except apsw.Error as exc:
            return [describe_error(exc)]
        try:
            return [str(row[0]) for row in con.execute(f"PRAGMA integrity_check({INTEGRITY_MAX_ERRORS})")]
        except apsw.Error as exc:
            return [describe_error(exc)]
        finally:
            con.close()

    return read_consistently(kv, check)  # one committed state, even while its owner writes
