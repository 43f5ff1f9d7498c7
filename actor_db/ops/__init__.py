"""Operations on a store and its actors, for the ``actor-db`` command and any other
front end (an HTTP server): import, export, list, inspect, integrity check, remove.

Each function takes a store (:class:`actor_db.kv.KVStore`) or an actor-scoped view
(``store.actor(actor_id)``), returns plain values and raises :mod:`actor_db.errors`
exceptions (:class:`~actor_db.errors.OperationError` for refused input,
:class:`~actor_db.errors.ActorNotFoundError`, :class:`~actor_db.errors.WriterBusyError`,
``apsw.Error`` for SQLite failures whose ``__cause__`` may be a ``KVError``). Nothing
here parses arguments or prints; progress goes to a callback, details to ``logging``.

Example::

    from actor_db.defaults import open_store
    from actor_db import ops

    store = open_store("memory:")
    ops.import_database("app.db", store.actor("a1"))
    ops.export_database(store.actor("a1"), "copy.db")
    assert ops.check_integrity(store.actor("a1")) == ["ok"]

Modules: :mod:`~actor_db.ops.common` (actor ids, sizes, ownership, snapshots),
:mod:`~actor_db.ops.transfer` (import/export), :mod:`~actor_db.ops.inspect`
(``list_actors``, ``inspect_actor``), :mod:`~actor_db.ops.maintenance`
(``remove_actor``, ``check_integrity``), :mod:`~actor_db.ops.history` (``bookmark``,
``bookmark_for_time``, ``restore``, ``branch``), :mod:`~actor_db.ops.backup` (S3 backups).
"""

from actor_db.ops.common import (ProgressCallback, actor_has_keys, actor_id_for, database_size, describe_error,
                                 read_consistently, require_database)
from actor_db.ops.inspect import inspect_actor, list_actors, list_snapshot_copies
from actor_db.ops.maintenance import check_integrity, remove_actor
from actor_db.ops.transfer import (SQLITE_HEADER, ImportResult, check_sqlite_file, copy_database, export_database,
                                   import_database, import_tabular, validate_source)

__all__ = ["ProgressCallback", "actor_has_keys", "actor_id_for", "database_size", "describe_error",
           "read_consistently", "require_database", "inspect_actor", "list_actors", "list_snapshot_copies", "check_integrity",
           "remove_actor", "SQLITE_HEADER", "ImportResult", "check_sqlite_file", "copy_database",
           "export_database", "import_database", "import_tabular", "validate_source"]
