"""Single-writer fencing per actor: the guarantee, its limits, and shared helpers.

How it works. Each actor has a fencing counter in the store, next to its keys (ordered
drivers: :func:`actor_db.kv.namespace.fence_key`; Redis: a string key with the actor's
hash tag). A runtime that opens an actor takes ownership with
:meth:`actor_db.kv.ActorKV.acquire_ownership` or, in the same single round trip as the
startup preload, :meth:`actor_db.kv.ActorKV.acquire_and_preload`: the counter is
incremented atomically and the new value is the view's token. Every later write of that
view carries the token, and the driver applies the batch only if the counter still
equals it, checked inside the same atomic step as the batch (a Lua script on Redis, the
LMDB write transaction, the MemoryKV lock). Otherwise nothing is applied and the write
raises :class:`~actor_db.errors.FencedError`.

Guarantee: once runtime B has acquired ownership, no write of a runtime that acquired
earlier (A) is ever applied, whatever the timing: a batch of A is either entirely
before B's acquisition (and B's preload, when combined, sees it) or refused. Since
every VFS commit is one batch (or a redo protocol of batches, each fenced, whose commit
point is one batch), A's transaction is never half applied and never interleaved with
B's pages. Through the VFS, A sees ``apsw.IOError`` whose ``__cause__`` is the
:class:`~actor_db.errors.FencedError` (:func:`fenced_cause` finds it); SQLite rolls the
transaction back, and A must close the actor.

Limits (what is left out):

- Reads are not fenced. A fenced-out runtime may serve stale reads until its next
  write fails; a runtime that must not serve stale reads re-acquires or stops serving
  when told (leases and clocks are out of scope).
- Only views that acquired ownership are checked. A view that never called
  ``acquire_*`` writes unconditionally (tests, tools, single-process use). Every runtime
  sharing a store must acquire.
- Fencing orders owners; it does not elect one. The last to acquire wins, so two
  runtimes that keep re-acquiring take the actor from each other (fencing keeps the
  data safe, the runtime's placement must avoid the ping-pong). :mod:`actor_db.serve`
  does: a view with a ``claim`` takes ownership only if the actor's owner record is
  absent, its own or found dead, checked in the same atomic step as the bump.
- On Redis the guarantee is as durable as Redis is (see the README): an acquisition
  lost in a crash without ``appendfsync always`` can let an old token write again.
- Tokens survive ``delete_all`` (the counter is outside the actor's key range), so a
  token is never handed out twice for one actor id.
"""

from __future__ import annotations

import struct

from actor_db.errors import FencedError, find_cause

__all__ = ["encode_token", "decode_token", "fenced", "fenced_cause"]

_TOKEN = struct.Struct(">Q")


def encode_token(token: int) -> bytes:
    """The stored form of a fencing counter (u64 big-endian, ordered drivers)."""
    return _TOKEN.pack(token)


def decode_token(value: bytes | None) -> int:
    """The counter held in ``value`` (``None``: never acquired, 0)."""
    if value is None:
        return 0
    if len(value) != _TOKEN.size:
        raise ValueError(f"fencing counter has {len(value)} bytes, expected {_TOKEN.size}")
    return int(_TOKEN.unpack(value)[0])


def fenced(actor_id: str, mine: int, current: int) -> FencedError:
    """The error for a write of token ``mine`` refused because the counter is ``current``."""
    return FencedError(
        f"actor {actor_id!r} was taken over by another runtime (fencing token {current}, this "
        f"runtime holds {mine}): the write was refused and nothing of it was applied; close the actor")


def fenced_cause(exc: BaseException | None) -> FencedError | None:
    """The :class:`FencedError` behind ``exc`` (itself, or along its ``__cause__`` /
    ``__context__`` chain, e.g. the ``apsw.IOError`` a fenced commit raises), else ``None``."""
    return find_cause(exc, FencedError)
