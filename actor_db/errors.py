"""The exceptions actor-db raises. Every one derives from :class:`ActorDBError`.

SQL errors inside a database are SQLite's own (``apsw`` exceptions on the low-level
connection, the stdlib ``sqlite3`` classes on the DB-API connection). A KV failure seen
by SQLite surfaces as an SQLite I/O error whose ``__cause__`` is one of the
:class:`KVError` subclasses below.
"""

from __future__ import annotations

from typing import TypeVar

from vfs import history as vfs_history
from vfs.protocol import ConditionFailedError

__all__ = [
    "find_cause", "ActorDBError", "KVError", "KVUnavailableError", "KVLimitError", "KVCorruptValueError", "FencedError",
    "KVConditionFailedError", "CommitFailedError",
    "ActorNotFoundError", "ConfigurationError", "InvalidActorKeyError", "ActorKeyTooLongError",
    "ActionNotFoundError", "ActorShuttingDownError", "ActorCallCycleError", "MigrationError", "StateError",
    "SpeculationAbortedError",
    "PlacementError", "ActorOwnedElsewhereError", "OwnerUnreachableError", "NodeDrainingError", "LeaseExpiredError",
    "OutcomeUnknownError", "RemoteError",
    "OperationError", "WriterBusyError", "HistoryError", "ScheduleError",
]


class ActorDBError(Exception):
    """Base class of every actor-db exception."""


class KVError(ActorDBError):
    """A KV call failed; nothing of a failed write batch was applied."""


class KVUnavailableError(KVError):
    """The store could not be reached or failed an I/O operation (retry later)."""


class KVLimitError(KVError, ValueError):
    """A key, value or batch is larger than the driver allows."""


class KVCorruptValueError(KVError):
    """A stored value is not in the store's value encoding (:mod:`actor_db.kv.codec`):
    an unknown tag, a bad length, a compressed block that does not decode. The store is
    damaged (or was written by a newer actor-db); no bytes are returned for that value."""


class FencedError(KVError):
    """Another runtime took ownership of the actor; this one may no longer write it."""


class KVConditionFailedError(KVError, ConditionFailedError):
    """A conditional write was refused: a key the batch expected
    (:attr:`vfs.protocol.WriteBatch.expect`) did not hold the expected value when the
    batch would have applied; nothing of the batch was applied (retry after re-reading,
    as a compare-and-set does).

    Both a :class:`KVError` and a :class:`vfs.protocol.ConditionFailedError`.

    :ivar key: the first expected key that did not hold, as the caller passed it
        (actor-relative, without the driver's prefix), or ``None`` when unknown.
    """

    def __init__(self, message: str = "", *, key: bytes | None = None) -> None:
        super().__init__(message, key=key)


class CommitFailedError(KVError):
    """A KV write that an actor's action depended on failed (the runtime's output
    gate): the action's result was withheld, the actor's in-memory state was discarded
    and the actor re-opens from the KV on its next call. ``__cause__`` is the driver's
    error. Whether the failed write was applied is unknown (a lost reply); writes of
    actions queued behind it were never sent."""


class SpeculationAbortedError(KVError):
    """(Internal: never reaches a caller.) A new actor's speculative first call
    (:class:`~actor_db.runtime.actor.ActorOptions` ``speculative_create``) did something
    that needs the KV or another actor (a read the empty image cannot answer, a
    conditional write, a call to another actor, a creation larger than one batch): the
    speculation is discarded unseen and the call runs the ordinary way."""


class ActorNotFoundError(ActorDBError, LookupError):
    """No actor (or actor type) with that name or key exists."""


class ConfigurationError(ActorDBError, ValueError):
    """An option or argument is invalid (e.g. a malformed ``--kv`` URL)."""


class InvalidActorKeyError(ConfigurationError):
    """An actor key (or actor id) cannot name an actor: it is not a ``str``, is empty,
    or is not valid Unicode encodable as UTF-8 (e.g. it holds a lone surrogate such as
    ``"\\udc80"``). Raised by ``Registry.get_or_create`` and ``KVStore.actor`` before
    anything is stored."""


class ActorKeyTooLongError(InvalidActorKeyError, KVLimitError):
    """An actor key (or actor id) is too long for the store: with its prefix, the keys
    the actor's database and state need would exceed the driver's key limit (LMDB:
    511 bytes), or it is longer than the key layout's 65535 bytes.

    Both an :class:`InvalidActorKeyError` and a :class:`KVLimitError`.

    :ivar length: the key's (or id's) length in UTF-8 bytes.
    :ivar max_length: the longest key (or id) the store accepts, in UTF-8 bytes.
    :ivar driver_limit: the driver's limit on a full store key in bytes, or ``None``
        (no driver limit: the key layout's bound applies).
    """

    def __init__(self, message: str, *, length: int = -1, max_length: int = -1,
                 driver_limit: int | None = None) -> None:
        super().__init__(message)
        self.length = length
        self.max_length = max_length
        self.driver_limit = driver_limit


class ActionNotFoundError(ActorNotFoundError):
    """The actor type has no action with that name."""


class ActorShuttingDownError(ActorDBError):
    """The actor is going to sleep or being destroyed; the query was not run."""


class ActorCallCycleError(ActorDBError):
    """An action called an actor that is already busy further up the same call chain
    (``A -> B -> A``, or an action calling its own actor): waiting for it would
    deadlock, so the call is refused at once. The calling action fails with this error
    (its writes roll back) unless it catches it.

    Raised by ``ActorHandle.call`` (and ``wake``/``sleep``/``destroy``) inside an
    action, ``on_wake`` or ``on_sleep`` of an actor on the chain, including tasks that
    such code starts while it runs.

    :ivar chain: the labels (``"type/key"``) of the actors on the chain, the refused
        one last, e.g. ``("pair/a", "pair/b", "pair/a")``.
    """

    def __init__(self, message: str, *, chain: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.chain = chain


class MigrationError(ActorDBError):
    """A migration failed; the database stays at :attr:`version` (its last good one).

    The SQLite or user error is the ``__cause__``; the actor is not started.
    """

    def __init__(self, message: str, *, version: int) -> None:
        super().__init__(message)
        self.version = version


class StateError(ActorDBError, TypeError):
    """The actor's persisted state cannot be saved as JSON, or would not come back the
    same: a value that is not a JSON type (a ``tuple``, ``set``, ``bytes``, an object),
    a dict key that is not a ``str``, a NaN or infinite float, or a cycle.

    Raised when the state is encoded at commit (the end of an action, or the creation
    of the actor): the action fails, its database writes roll back and ``c.state``
    returns to its last saved value; nothing already committed is lost.

    :ivar path: where in the state the offending value is, e.g. ``"state['tup']"`` or
        ``"state[1]"``, or ``None`` when unknown.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


_E = TypeVar("_E", bound=BaseException)


def find_cause(exc: BaseException | None, kind: type[_E]) -> _E | None:
    """The first exception of type ``kind`` in ``exc``'s chain (itself, then along
    ``__cause__`` / ``__context__``, e.g. behind the ``apsw.IOError`` a KV failure
    becomes), else ``None``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class PlacementError(ActorDBError):
    """Placement (:mod:`actor_db.serve`): the call could not run on the actor's one node.
    Every subclass but :class:`OutcomeUnknownError` means the action did NOT run, so the
    call may be retried (the server answers 503 with ``Retry-After``)."""

    retry_safe = True
    """Whether the action is known not to have run (a retry cannot apply it twice)."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which a retry may succeed (``None``: soon)."""


class ActorOwnedElsewhereError(PlacementError):
    """This node may not take the actor: the store names another owner (``owner``, the
    raw owner record ``b"<node id>\\0<instance>"``). Internal: the node forwards."""

    def __init__(self, message: str = "", *, owner: bytes = b"", retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.owner = owner


class OwnerUnreachableError(PlacementError):
    """The actor's owner node could not be reached (the call was not delivered), or it
    is still inside its lease; retry after ``retry_after`` seconds."""


class NodeDrainingError(PlacementError):
    """The node is shutting down (SIGTERM drain) and no longer runs actions."""


class LeaseExpiredError(PlacementError):
    """The node's own heartbeat lease ran out (it was paused or partitioned): it
    answers nothing from memory until it has rejoined; another node takes its actors."""


class OutcomeUnknownError(PlacementError):
    """The call reached the owner node but no answer came back (the node died or the
    connection broke mid-call): the action may or may not have run. Not retried
    automatically."""

    retry_safe = False


class RemoteError(ActorDBError):
    """(Client side) an error raised by a remote action whose type is not a built-in
    exception nor one of actor-db's: a class of this name, derived from this one, is
    raised (``type(exc).__name__`` is the remote type's name)."""

    status: int = 500
    """The HTTP status of the answer."""


class OperationError(ActorDBError):
    """An operation of :mod:`actor_db.ops` (import, export, ``rm``, ...) refused its
    input or its target: a file that is not a usable SQLite database, a target that
    already exists without ``force``, a corrupt meta record. Nothing was changed. The
    message is one line meant for a person (the CLI prints it as is)."""


class WriterBusyError(OperationError):
    """Another connection holds the actor's writer lease (a drop-in connection in a
    write transaction) and did not release it within the operation's timeout; the
    operation wrote nothing. Retry later, or stop that writer.

    :ivar holder: a description of the holder (from the lease record), or ``None``.
    """

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class HistoryError(OperationError, vfs_history.HistoryError):
    """A bookmark or a time names no state the actor's history retains (pruned, before
    its first recorded commit, in its future, or the actor keeps no history), or a
    bookmark string is malformed. Nothing was changed (docs/history.md)."""


class ScheduleError(ActorDBError, ValueError):
    """A schedule or cron entry was refused when it was set (``c.schedule`` /
    ``c.cron``): an unknown action, arguments that are not JSON, a bad time, a bad cron
    expression or time zone. Nothing was scheduled; the action may catch it."""
