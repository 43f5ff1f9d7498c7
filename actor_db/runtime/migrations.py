"""``actor_db.db(...)``: an actor's database declaration, and running its migrations.

Two styles, combinable:

- ``migrations=[...]``: a versioned list. Entry ``i`` (0-based) takes the database from
  version ``i`` to ``i + 1``; the version is ``PRAGMA user_version``. An entry is an SQL
  string (may hold several statements), a plain callable ``fn(con)`` run on the worker
  thread with the ``apsw.Connection``, or an ``async def fn(db)`` awaited with the
  actor's :class:`~actor_db.runtime.database.Database`.
- ``on_migrate=callable``: run at every start, after the versioned list, same calling
  convention; make it idempotent (``CREATE TABLE IF NOT EXISTS ...``).

Invariants:

- All pending versioned steps run in ONE transaction (one KV commit), each step inside
  its own SAVEPOINT together with its ``user_version`` bump. When step ``k`` fails, its
  savepoint is rolled back and steps before it are committed: the database is left at
  its last good version ``k`` and :class:`~actor_db.errors.MigrationError` is raised
  with the cause attached.
- The caller clears the preload's SQLite chunks before anything here runs, and only
  when something will run (a pending version, or an ``on_migrate``).
- Migrations must not manage transactions themselves (no ``BEGIN``/``COMMIT``).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, Union

import apsw

from vfs.history import HistorySetting, policy_for

from actor_db.errors import ConfigurationError, MigrationError

if TYPE_CHECKING:
    from actor_db.runtime.database import ActorConnection, Database
    from actor_db.runtime.worker import Worker

log = logging.getLogger(__name__)

__all__ = ["DatabaseConfig", "db", "Migration", "run_migrations"]

Migration = Union[str, Callable[[apsw.Connection], None], Callable[[Any], Awaitable[None]]]
"""An SQL string, ``fn(con: apsw.Connection)`` (worker thread), or ``async def fn(db)``."""

DEFAULT_APPLICATION_ID = 0x41444231
"""``PRAGMA application_id`` of databases created by actor-db (ASCII ``"ADB1"``)."""


@dataclass(frozen=True)
class DatabaseConfig:
    """An actor's database declaration (build it with :func:`db`).

    :ivar migrations: the versioned steps; version ``len(migrations)`` is current.
    :ivar on_migrate: run at every start after the versioned steps, or ``None``.
    :ivar vfs_options: extra keyword arguments for :func:`vfs.connect`
        (``cache_chunks``, ``readahead_max_chunks``, ``max_dirty_bytes``, ``page_size``).
    :ivar history: the database's history (``docs/history.md``): ``True`` (default: 7
        days), ``False`` (none, and an existing history is dropped at the next commit),
        a ``timedelta`` (that retention) or :class:`vfs.history.HistoryOptions`.
    """

    migrations: tuple[Migration, ...] = ()
    on_migrate: Migration | None = None
    vfs_options: tuple[tuple[str, Any], ...] = ()
    history: HistorySetting = True

    @property
    def version(self) -> int:
        """The schema version the migrations lead to."""
        return len(self.migrations)


def db(
    migrations: Sequence[Migration] = (),
    *,
    on_migrate: Migration | None = None,
    history: HistorySetting = True,
    **vfs_options: Any,
) -> DatabaseConfig:
    """Declare an actor's SQLite database.

    >>> config = db(migrations=["CREATE TABLE t (x)"])
    >>> config.version
    1

    :param migrations: versioned steps (see the module docstring).
    :param on_migrate: a step run at every start.
    :param history: keep the database's past (``docs/history.md``): ``True`` (default,
        7 days), ``False`` (off: costs nothing), a ``timedelta`` retention, or
        :class:`vfs.history.HistoryOptions` (retention by time and bytes).
    :param vfs_options: passed to :func:`vfs.connect` (sizes in chunks / bytes).
    :raises ConfigurationError: a step is neither a string nor a callable, or
        ``history`` is not one of the accepted values.
    """
    steps = tuple(migrations)
    for i, step in enumerate(steps):
        if not (isinstance(step, str) or callable(step)):
            raise ConfigurationError(f"migration {i + 1} must be an SQL string or a callable, not {type(step).__name__}")
    if on_migrate is not None and not (isinstance(on_migrate, str) or callable(on_migrate)):
        raise ConfigurationError("on_migrate must be an SQL string or a callable")
    allowed = {"cache_chunks", "readahead_max_chunks", "max_dirty_bytes", "page_size"}
    unknown = set(vfs_options) - allowed
    if unknown:
        raise ConfigurationError(f"unknown db() options {sorted(unknown)}; allowed: {sorted(allowed)}")
    if history is None:
        raise ConfigurationError("history must be True, False, a timedelta or HistoryOptions (not None)")
    try:
        policy_for(history)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"db(history=...): {exc}") from None
    return DatabaseConfig(steps, on_migrate, tuple(sorted(vfs_options.items())), history)


def _run_sync_step(con: apsw.Connection, step: Migration) -> None:
    if isinstance(step, str):
        con.execute(step)
    else:
        step(con)


async def _run_step(worker: Worker, core: ActorConnection, database: Database, step: Migration) -> None:
    if isinstance(step, str) or not inspect.iscoroutinefunction(step):
        await worker.run(_run_sync_step, core.con, step)
    else:
        await step(database)  # type: ignore[arg-type]


def _begin(core: ActorConnection) -> None:
    assert core.con is not None
    core.con.execute("BEGIN")


def _savepoint(core: ActorConnection, name: str) -> None:
    assert core.con is not None
    core.con.execute(f"SAVEPOINT {name}")


def _step_done(core: ActorConnection, name: str, version: int) -> None:
    assert core.con is not None
    core.con.execute(f"PRAGMA user_version={int(version)}; RELEASE {name}")


def _step_failed(core: ActorConnection, name: str) -> None:
    assert core.con is not None
    if core.con.in_transaction:
        core.con.execute(f"ROLLBACK TO {name}; RELEASE {name}")


def _commit(core: ActorConnection) -> None:
    assert core.con is not None
    if core.con.in_transaction:
        core.con.execute("COMMIT")


def _rollback(core: ActorConnection) -> None:
    assert core.con is not None
    if core.con.in_transaction:
        core.con.execute("ROLLBACK")


async def run_migrations(
    worker: Worker,
    core: ActorConnection,
    database: Database,
    config: DatabaseConfig,
    current: int,
    timing: Callable[[str], Any],
) -> int:
    """Run the pending versioned steps, then ``on_migrate``; returns the final version.

    :param current: the database's ``user_version`` now.
    :param timing: ``timing(phase)`` returns a context manager that times a user
        phase (``"migrations"``, ``"on_migrate"``).
    :raises MigrationError: a step failed (the database is at its last good version),
        or the database is newer than the code (``current > config.version``).
    """
    label = core.label
    if current > config.version:
        raise MigrationError(
            f"actor {label}: database is at version {current} but the code knows only {config.version} "
            "migrations (was it written by a newer release?)", version=current)
    if current < config.version:
        log.info("actor %s: migrating from version %d to %d", label, current, config.version)
        await worker.run(_begin, core)
        version = current
        try:
            with timing("migrations"):
                for index in range(current, config.version):
                    name = f"actor_db_migration_{index + 1}"
                    await worker.run(_savepoint, core, name)
                    try:
                        await _run_step(worker, core, database, config.migrations[index])
                        await worker.run(_step_done, core, name, index + 1)
                    except BaseException as exc:
                        await worker.run(_step_failed, core, name)
                        await worker.run(_commit, core)  # keep the good steps
                        raise MigrationError(
                            f"actor {label}: migration {index + 1} failed: {type(exc).__name__}: {exc}; "
                            f"the database stays at version {version}", version=version) from exc
                    version = index + 1
            await worker.run(_commit, core)
        except MigrationError:
            raise
        except BaseException:
            await worker.run(_rollback, core)
            raise
        current = version
    if config.on_migrate is not None:
        await worker.run(_begin, core)
        try:
            with timing("on_migrate"):
                await _run_step(worker, core, database, config.on_migrate)
            await worker.run(_commit, core)
        except BaseException as exc:
            await worker.run(_rollback, core)
            raise MigrationError(f"actor {label}: on_migrate failed: {type(exc).__name__}: {exc}",
                                 version=current) from exc
    return current
