"""The exceptions actor-db raises. Every one derives from :class:`ActorDBError`.

SQL errors inside a database are SQLite's own (``apsw`` exceptions on the low-level
connection, the stdlib ``sqlite3`` classes on the DB-API connection). A KV failure seen
by SQLite surfaces as an SQLite I/O error whose ``__cause__`` is one of the
:class:`KVError` subclasses below.
"""

from __future__ import annotations

__all__ = [
    "ActorDBError", "KVError", "KVUnavailableError", "KVLimitError", "FencedError",
    "ActorNotFoundError", "ConfigurationError",
    "ActionNotFoundError", "ActorShuttingDownError", "MigrationError", "StateError",
]


class ActorDBError(Exception):
    """Base class of every actor-db exception."""


class KVError(ActorDBError):
    """A KV call failed; nothing of a failed write batch was applied."""


class KVUnavailableError(KVError):
    """The store could not be reached or failed an I/O operation (retry later)."""


class KVLimitError(KVError, ValueError):
    """A key, value or batch is larger than the driver allows."""


class FencedError(KVError):
    """Another runtime took ownership of the actor; this one may no longer write it."""


class ActorNotFoundError(ActorDBError, LookupError):
    """No actor (or actor type) with that name or key exists."""


class ConfigurationError(ActorDBError, ValueError):
    """An option or argument is invalid (e.g. a malformed ``--kv`` URL)."""


class ActionNotFoundError(ActorNotFoundError):
    """The actor type has no action with that name."""


class ActorShuttingDownError(ActorDBError):
    """The actor is going to sleep or being destroyed; the query was not run."""


class MigrationError(ActorDBError):
    """A migration failed; the database stays at :attr:`version` (its last good one).

    The SQLite or user error is the ``__cause__``; the actor is not started.
    """

    def __init__(self, message: str, *, version: int) -> None:
        super().__init__(message)
        self.version = version


class StateError(ActorDBError, TypeError):
    """The actor's persisted state cannot be encoded (it must be JSON-serializable)."""
