"""An actor's database: the SQLite connection, and ``c.db``.

:class:`ActorConnection` is the synchronous side and owns the actor's
``vfs.KVConnection``; its methods run one at a time, on a pool thread through the
actor's worker (:mod:`actor_db.runtime.worker`) or inline on the event loop when that
needs no KV round trip (:mod:`actor_db.runtime.inline`). :class:`Database` is the
asyncio side users get as ``c.db``; every call is at most one hop.

Transactions (write coalescing, as Cloudflare Durable Objects do): an action's
statements run in ONE implicit transaction, begun lazily before its first statement
and committed when the action returns. The commit carries the actor's state record in
the same atomic KV batch (the VFS ``commit_hook``), so an action that writes the
database and changes ``c.state`` costs one KV round trip, and is all-or-nothing: when
the action raises, its writes are rolled back and ``c.state`` returns to its last saved
value. ``c.db.transaction()`` nests as a SAVEPOINT. An action whose first statement is
``BEGIN``, ``COMMIT``, ``END``, ``ROLLBACK`` or ``VACUUM`` manages transactions itself
(no implicit one is begun; each commit still carries the state if it changed).

Invariants:

- Only one thread at a time touches the apsw connection (the actor's serial queue, or
  the event loop while that queue is idle).
- ``PersistedState.saved`` changes only in ``after_commit`` or after a successful
  state-only write, so it always equals what the KV holds.
- SQLite also syncs while it rolls back (writing original pages back after a failed
  commit or a cache spill). Those syncs never carry the state record: the runtime
  reverts the state before its own ROLLBACK, and a sync that follows a failed
  record-carrying sync is treated as the rollback's: it carries the last saved record,
  so even a commit whose reply was lost (applied, reported failed) ends with the
  database and the record both reverted (see ``_commit_hook``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Protocol, Sequence

import apsw

import vfs
from vfs.preload import PreloadMap

from actor_db.errors import ConfigurationError, KVError
from actor_db.runtime.keys import STATE_KEY
from actor_db.runtime.gate import OutputGate
from actor_db.runtime.metrics import CountingKV
from actor_db.runtime.rows import Row, column_index
from actor_db.runtime.schedule import PendingSchedule
from actor_db.runtime.state import PersistedState

if TYPE_CHECKING:
    from actor_db.runtime.inline import Runner

log = logging.getLogger(__name__)

__all__ = ["ActorConnection", "Database", "SQL_LOG_CHARS"]

SQL_LOG_CHARS = 200
"""SQL text longer than this is truncated in DEBUG logs (characters)."""

_NOT_PREPARED: Any = object()
"""``ActorConnection._prepared`` when no encoded record awaits the commit hook."""

_COMMENTS = re.compile(r"\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*", re.S)
_SELF_MANAGED = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "VACUUM"})


_QUERIES = frozenset({"SELECT", "WITH", "VALUES"})
"""First keywords of a query. Only a query may skip the implicit ``BEGIN``: SQLite also
calls transaction control (``SAVEPOINT``, ``RELEASE``, ...) read-only, and a
``SAVEPOINT`` outside a transaction would start one that its ``RELEASE`` ends."""

_READ_ONLY: dict[str, bool] = {}
"""Whether an SQL text runs as ONE statement that SQLite reports read-only
(``sqlite3_stmt_readonly``) and is a query (:data:`_QUERIES`), learned on its first
run inside an action (bounded like
:data:`_KEYWORDS`). Such a text needs no implicit ``BEGIN``: see
:meth:`ActorConnection.execute`."""


_KEYWORDS: dict[str, str] = {}
"""``first_keyword`` results by SQL text (bounded: cleared when it reaches 1024 entries)."""


def first_keyword(sql: str) -> str:
    """The first SQL keyword of ``sql``, upper-cased (leading comments skipped); cached
    per SQL text, so a statement run again costs one dict lookup."""
    found = _KEYWORDS.get(sql)
    if found is None:
        if len(_KEYWORDS) >= 1024:
            _KEYWORDS.clear()
        found = _KEYWORDS[sql] = _first_keyword(sql)
    return found


def _first_keyword(sql: str) -> str:
    pos = 0
    while True:
        m = _COMMENTS.match(sql, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
    m = re.match(r"\s*([A-Za-z]+)", sql[pos:])
    return m.group(1).upper() if m else ""


_opening = threading.local()
"""``cache_pages``: the ``PRAGMA cache_size`` for the connection this thread is opening
now (set only inside :meth:`ActorConnection.open`), else absent."""


def _size_page_cache(con: apsw.Connection) -> None:
    """apsw connection hook: runs on every new connection in the process, before its
    first page is read, and acts only on the runtime's own opens. SQLite allocates a
    20-page slab for a connection's page cache at its first page read unless the cache
    is smaller than 3 pages: ``cache_size=0`` saves ~87 KiB per awake actor (the
    VFS's chunk cache still holds the pages, so a read that misses SQLite's cache is a
    memory copy, not a KV call)."""
    pages = getattr(_opening, "cache_pages", None)
    if pages is not None:
        con.execute(f"PRAGMA cache_size={int(pages)}")


apsw.connection_hooks.append(_size_page_cache)


def _bindings(args: tuple[Any, ...]) -> Any:
    """``execute(sql, *args)`` positional values, or one dict / sequence of values."""
    if len(args) == 1 and isinstance(args[0], (dict, list, tuple)):
        return args[0]
    return args


class ActorConnection:
    """The actor's SQLite connection and state-saving logic (one caller at a time).

    :param kv: the actor's counting KV view (every KV call of the actor goes through it).
    :param state: the persisted record.
    :param label: ``"type/key"`` for log messages.
    """

    __slots__ = (
        "_cursor", "_in_flight", "_index", "_probe", "_prepared", "_savepoints", "_sched_carried", "_shapes",
        "action_active", "con", "kv", "label", "schedule", "state", "__weakref__",
    )

    def __init__(self, kv: CountingKV | OutputGate, state: PersistedState, label: str) -> None:
        self.kv = kv
        self.state = state
        self.label = label
        self.con: vfs.KVConnection | None = None
        self.action_active = False
        self._in_flight: bytes | None = None
        self._prepared: Any = _NOT_PREPARED
        self._savepoints = 0
        """Savepoints made so far (their names are numbered; an int, not a counter object)."""
        self._cursor: apsw.Cursor | None = None
        """The one cursor of the connection: every query, and the implicit ``BEGIN`` /
        ``COMMIT`` (reused, so they cost no cursor allocation as ``con.execute`` would;
        its exec tracer then runs for them too, with no learning probe open)."""
        self._index: dict[str, int] | None = None
        self._probe: list[bool] | None = None
        """While a new SQL text is learned (:data:`_READ_ONLY`): whether each of its
        statements is read-only, as SQLite reports them."""
        self._shapes: dict[tuple[str, ...], dict[str, int]] = {}
        self.schedule = PendingSchedule()
        """The running action's schedule changes: they ride its commit (same batch)."""
        self._sched_carried = False
        """The last commit hook carried :attr:`schedule` and no commit followed yet."""

    # ------------------------------------------------------------------ opening
    def open(self, preload: PreloadMap, options: dict[str, Any], cache_pages: int | None = None) -> None:
        """Open the database on the preloaded data (no round trip if the preload
        covers the meta, the commit record and the head chunk).

        :param cache_pages: SQLite's ``PRAGMA cache_size`` (pages) set before the first
            page is read; ``None`` keeps SQLite's default (a 2 MiB cache, 20 pages
            allocated at once).
        """
        _opening.cache_pages = cache_pages
        try:
            con = vfs.connect(self.kv, f"{self.label}.db", preload=preload, **options)
        finally:
            _opening.cache_pages = None
        con.kv_file.commit_hook = self._commit_hook
        con.kv_file.after_commit = self._after_commit
        con.kv_file.defer_bases = True  # (built by build_due_base on the worker, off the loop)
        self.con = con
        # One cursor for every query of the actor (queries never overlap, and each one's
        # rows are all fetched before the next statement): its exec tracer marks each
        # new statement, so a result's column names are read once per statement, not
        # once per row. (One cursor, not a second one for BEGIN/COMMIT: each cursor is
        # two objects the garbage collector tracks, per awake actor.)
        cursor = con.cursor()
        cursor.exec_trace = self._new_statement
        self._cursor = cursor

    def hot_objects(self) -> tuple[object, ...]:
        """The objects every query of an action touches (for the call prefetch of
        :mod:`actor_db.runtime.prefetch`): this connection, the state, the apsw
        connection and its cursor (``None`` for what is not open)."""
        return (self, self.state, self.con, self._cursor)

    def sqlite_pointer(self) -> int | None:
        """The address of SQLite's ``sqlite3`` struct of the open connection (apsw's
        ``sqlite3pointer()``), else ``None``."""
        return self.con.sqlite3pointer() if self.con is not None else None

    def _new_statement(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        self._index = None
        probe = self._probe
        if probe is not None:
            probe.append(bool(cursor.is_readonly))
        return True

    def _shape(self, cursor: apsw.Cursor) -> dict[str, int]:
        """The name index of the running statement's result (shared by its rows)."""
        names = tuple(d[0] for d in cursor.description)
        index = self._shapes.get(names)
        if index is None:
            if len(self._shapes) >= 256:
                self._shapes.clear()
            index = self._shapes[names] = column_index(names)
        self._index = index
        return index

    def create(self, application_id: int) -> None:
        """Write a new actor's first page, meta and state record in ONE batch.

        Setting ``application_id`` writes the database header (page 1); the commit
        hook adds the state record to that commit's batch.
        """
        con = self._require()
        con.execute(f"PRAGMA application_id={int(application_id)}")
        assert self.state.saved is not None, "the creation batch did not carry the state record"

    def create_without_db(self) -> None:
        """Write a new database-less actor's state record (one batch)."""
        raw = self.state.encode()
        self.kv.write(self.state.batch_for(raw))
        self.state.mark_saved(raw)

    def clear_sqlite_preload(self) -> None:
        """Forget the preloaded chunks before migrations; they move to the VFS chunk
        cache (same committed values), so the migration does not re-read them live."""
        self._require().kv_file.demote_preload()

    def user_version(self) -> int:
        row = self._require().execute("PRAGMA user_version").fetchone()
        assert row is not None
        return int(row[0])

    # ------------------------------------------------------------------ hooks
    def _commit_hook(self) -> vfs.WriteBatch | None:
        if self._in_flight is not None or self._sched_carried:
            # The last sync that carried the record failed: this sync is SQLite writing
            # the original pages back while it rolls that transaction back. If the
            # failed write was applied after all (a lost reply), those pages revert the
            # database, so the record must revert with them: write the saved one.
            # (Schedule changes it carried are not re-sent; see docs/schedules.md.)
            self._in_flight = None
            self._sched_carried = False
            saved = self.state.saved
            return None if saved is None else self.state.batch_for(saved)
        raw = self.state.pending() if self._prepared is _NOT_PREPARED else self._prepared
        self._prepared = _NOT_PREPARED
        self._in_flight = raw
        batch = None if raw is None else self.state.batch_for(raw)
        scheduled = self.schedule.batch
        if scheduled is not None:  # the action's schedule changes ride the same batch
            if batch is None:
                batch = vfs.WriteBatch()
            batch.merge(scheduled)
            self._sched_carried = True
        return batch

    def _after_commit(self) -> None:
        if self._in_flight is not None:
            self.state.mark_saved(self._in_flight)
            self._in_flight = None
        if self._sched_carried:
            self._sched_carried = False
            self.schedule.committed()

    @property
    def base_due(self) -> bool:
        """A commit made a history base due (the VFS defers it: see
        :meth:`build_due_base`)."""
        con = self.con
        return con is not None and con.kv_file.base_due

    def build_due_base(self) -> None:
        """Build the history base a commit made due (:attr:`base_due`): two or three
        KV round trips, so the runtime runs it on the actor's worker after the action,
        never inline on the event loop. With a transaction open it stays due."""
        con = self.con
        if con is not None and not con.in_transaction:
            con.kv_file.build_due_base()

    # ------------------------------------------------------------------ queries
    def _require(self) -> vfs.KVConnection:
        if self.con is None:
            raise ConfigurationError(
                f"actor {self.label} has no database: declare one with db=actor_db.db(...)")
        return self.con

    def _maybe_begin(self, con: vfs.KVConnection, sql: str) -> None:
        if self.action_active and not con.in_transaction and first_keyword(sql) not in _SELF_MANAGED:
            cursor = self._cursor
            if cursor is not None:
                cursor.execute("BEGIN")
            else:
                con.execute("BEGIN")

    def execute(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """Run ``sql`` (may hold several statements) and return every result row.

        Inside an action, a statement runs in the action's implicit transaction
        (``BEGIN`` before the first one), except a text known to be ONE read-only
        statement while no transaction is open: it runs in SQLite's autocommit mode,
        its own read transaction, and a read-only action then costs no ``BEGIN`` and
        no ``COMMIT``. That is equivalent: an actor's database has one writer (the
        actor itself, one action at a time, fenced against other runtimes), so no
        write can land between that read and a later ``BEGIN`` of the same action,
        and a read has nothing to roll back. A text is learned on its first run
        (inside the transaction, with SQLite's ``sqlite3_stmt_readonly`` of every
        statement it holds), so an unknown text always gets the ``BEGIN``.
        """
        con = self.con
        if con is None:
            con = self._require()  # raises
        cursor = self._cursor
        assert cursor is not None
        probe = None
        if self.action_active and not con.in_transaction:
            read_only = _READ_ONLY.get(sql)
            if not read_only:
                self._maybe_begin(con, sql)
                if read_only is None:
                    probe = self._probe = []
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            started, reads, writes = time.perf_counter(), self.kv.reads, self.kv.writes
        out: list[Row] = []
        try:
            # (_bindings, inlined)
            bindings = args[0] if len(args) == 1 and isinstance(args[0], (dict, list, tuple)) else args
            for values in cursor.execute(sql, bindings):
                out.append(Row(values, self._index or self._shape(cursor)))
            if probe is not None:
                if len(_READ_ONLY) >= 1024:
                    _READ_ONLY.clear()
                _READ_ONLY[sql] = probe == [True] and first_keyword(sql) in _QUERIES
            return out
        finally:
            self._probe = None
            if debug:
                self._log_query(sql, started, reads, writes)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any] | dict[str, Any]]) -> int:
        """Run ``sql`` once per bindings in ``seq``; returns the rows changed."""
        con = self._require()
        self._maybe_begin(con, sql)
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            started, reads, writes = time.perf_counter(), self.kv.reads, self.kv.writes
        before = con.total_changes()
        try:
            for _ in con.executemany(sql, seq):
                pass
            return int(con.total_changes() - before)
        finally:
            if debug:
                self._log_query(sql, started, reads, writes)

    def _log_query(self, sql: str, started: float, reads: int, writes: int) -> None:
        text = sql if len(sql) <= SQL_LOG_CHARS else sql[:SQL_LOG_CHARS] + "…"
        log.debug("actor %s query %.3f ms, kv reads %d, kv writes %d: %s", self.label,
                  (time.perf_counter() - started) * 1000.0, self.kv.reads - reads,
                  self.kv.writes - writes, text)

    def savepoint(self) -> str:
        """Begin a savepoint (a transaction if none is open); returns its name."""
        con = self._require()
        self._maybe_begin(con, "SAVEPOINT")
        self._savepoints += 1
        name = f"actor_db_sp{self._savepoints}"
        con.execute(f"SAVEPOINT {name}")
        return name

    def release(self, name: str) -> None:
        self._require().execute(f"RELEASE {name}")

    def rollback_to(self, name: str) -> None:
        con = self._require()
        if con.in_transaction:
            con.execute(f"ROLLBACK TO {name}; RELEASE {name}")

    # ------------------------------------------------------------------ actions
    def begin_action(self) -> None:
        self.action_active = True

    def end_action(self, ok: bool) -> None:
        """Commit (``ok``) or roll back the action's implicit transaction and state.

        On success the state record rides in the commit's batch; a state change with
        no database commit is one state-only write. On any failure the database is
        rolled back and ``c.state`` reverts to its saved value.
        """
        self.action_active = False
        con = self.con
        if not ok:
            self._rollback()
            return
        try:
            raw = self.state.pending()  # raises StateError before anything is written
            if con is not None and con.in_transaction:
                # No user code runs until the commit returns: the commit hook takes
                # these bytes instead of encoding the state again.
                self._prepared = raw
                cursor = self._cursor
                try:
                    # the commit hook adds the state record
                    (cursor if cursor is not None else con).execute("COMMIT")
                finally:
                    self._prepared = _NOT_PREPARED
            changed = raw is not None and raw != self.state.saved
            scheduled = self.schedule.batch
            if changed or scheduled is not None:  # no database commit carried them: ONE write
                batch = self.state.batch_for(raw) if changed else vfs.WriteBatch()  # type: ignore[arg-type]
                if scheduled is not None:
                    batch.merge(scheduled)
                self.kv.write(batch)
                if changed:
                    self.state.mark_saved(raw)  # type: ignore[arg-type]
                self.schedule.committed()
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, (apsw.IOError, KVError)) and getattr(self.kv, "failure", None) is None:
                self._reload_state()  # (a broken output gate discards the whole actor instead)
            raise

    def _reload_state(self) -> None:
        """After a failed KV write, read the record back: a lost reply may mean the
        write was applied, and memory must match the KV (one round trip)."""
        try:
            raw = self.kv.get_many([STATE_KEY])[0]
        except Exception as exc:  # the KV is still down: keep the reverted copy
            log.warning("actor %s: could not re-read the state after a failed write: %s", self.label, exc)
            return
        if raw is not None and raw != self.state.saved:
            log.warning("actor %s: a write reported as failed was applied; reloading the state", self.label)
            self.state.adopt(raw)

    def abandon(self) -> None:
        """Throw away the running action's work so far (database writes, state and
        schedule changes); the action goes on (a fired entry then commits its retry)."""
        self._rollback()

    def _rollback(self) -> None:
        # Revert first: a ROLLBACK after a cache spill syncs the original pages back,
        # and that sync must not carry the action's (discarded) state.
        self.state.revert()
        self._in_flight = None
        self.schedule.clear()
        self._sched_carried = False
        con = self.con
        if con is not None and con.in_transaction:
            con.execute("ROLLBACK")

    # ------------------------------------------------------------------ closing
    def bookmark(self) -> str:
        """The bookmark of the committed state (:meth:`Database.bookmark`)."""
        from vfs import history as vh

        from actor_db.errors import HistoryError

        head = self._require().kv_file.history.head
        if head is None:
            raise HistoryError(f"actor {self.label}: its database keeps no history (db(history=False))")
        return vh.encode_bookmark(head.last_seq, head.last_time_ms)

    def stats(self) -> vfs.VFSStats:
        """The open connection's VFS counters (zeros when closed)."""
        return self.con.stats.snapshot() if self.con is not None else vfs.VFSStats()

    def close(self) -> None:
        """Close the connection (rolling back anything uncommitted). Idempotent."""
        con, self.con = self.con, None
        self._cursor = None
        if con is None:
            return
        try:
            if con.in_transaction:
                con.execute("ROLLBACK")
        finally:
            con.close()


class ConnectionSource(Protocol):
    """What :class:`Database` asks for the actor's live connection."""

    def _gate(self) -> ActorConnection:
        """The live connection, or raise :class:`~actor_db.errors.ActorShuttingDownError`."""


class Database:
    """``c.db``: the actor's SQLite database, from asyncio.

    :param runner: runs the actor's SQLite calls, inline on the event loop when that
        needs no KV round trip, else on its worker (:mod:`actor_db.runtime.inline`).
    :param source: its ``_gate()`` returns the live :class:`ActorConnection`, or raises
        :class:`~actor_db.errors.ActorShuttingDownError` when the actor is going to
        sleep or was destroyed (the actor instance: held as is, no bound method per
        awake actor).

    Example, inside an action::

        await c.db.execute("INSERT INTO events (delta) VALUES (?)", 5)
        rows = await c.db.execute("SELECT sum(delta) AS total FROM events")
        rows[0]["total"], rows[0][0]
    """

    __slots__ = ("_runner", "_source")

    def __init__(self, runner: Runner, source: ConnectionSource) -> None:
        self._runner = runner
        self._source = source

    def _gate(self) -> ActorConnection:
        return self._source._gate()

    async def execute(self, sql: str, *args: Any) -> list[Row]:
        """Run ``sql`` with ``args`` bound to its ``?`` parameters (or one dict for
        ``:name`` parameters) and return all result rows (at most one worker hop).

        :raises apsw.Error: SQLite's error for bad SQL or a failed constraint;
            ``apsw.IOError`` (``__cause__``: a :class:`~actor_db.errors.KVError`) when
            the KV failed.
        """
        return await self._runner.call(self._gate().execute, sql, args)

    async def executemany(self, sql: str, seq_of_args: Iterable[Sequence[Any] | dict[str, Any]]) -> int:
        """Run ``sql`` once per bindings; returns the number of rows changed."""
        return await self._runner.call(self._gate().executemany, sql, list(seq_of_args))

    async def bookmark(self) -> str:
        """An opaque string naming the database's current committed state (0 round
        trips: the history head is in memory). Inside an action, that is the state
        before the action's own writes, which commit when it returns; pass it to
        ``handle.restore(bookmark=...)`` (docs/history.md).

        :raises HistoryError: the actor's type keeps no history (``db(history=False)``).
        """
        return self._gate().bookmark()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        """A savepoint: its statements commit together with the action, or all roll
        back when the block raises (the exception propagates)."""
        core = self._gate()
        name = await self._runner.call(core.savepoint)
        try:
            yield self
        except BaseException:
            await self._runner.call(core.rollback_to, name)
            raise
        await self._runner.call(core.release, name)
