"""``vfs.connect``: open an actor's KV-backed database as an ``apsw.Connection``."""

from __future__ import annotations

import functools
import logging
from typing import Any

import apsw

from vfs import kvvfs, locks, pragmas
from vfs.history import HistorySetting, Policy, policy_for
from vfs.lease import DEFAULT_LEASE_TTL_S
from vfs.locks import Locking
from vfs.errors import kv_failure, sqlite_error
from vfs.file import FileOptions, KVFile
from vfs.preload import PreloadMap
from vfs.protocol import KV, PreloadRequest
from vfs.keys import CHUNK_SIZE
from vfs.startup import DEFAULT_INTERIOR_MAX_BYTES, DEFAULT_SQLITE_PRELOAD_BYTES, sqlite_preload_keys, \
    sqlite_preload_ranges
from vfs.stats import VFSStats

log = logging.getLogger(__name__)

__all__ = ["KVConnection", "attach", "connect", "open_preload_request", "DEFAULT_OPEN_PRELOAD_BYTES"]

DEFAULT_PAGE_SIZE = 4096
DEFAULT_OPEN_PRELOAD_BYTES = DEFAULT_SQLITE_PRELOAD_BYTES
"""SQLite chunk budget of the preload ``vfs.connect`` makes itself (768 KiB)."""


def open_preload_request(max_bytes: int = DEFAULT_OPEN_PRELOAD_BYTES, *,
                         interior_max_bytes: int = DEFAULT_INTERIOR_MAX_BYTES) -> PreloadRequest:
    """What ``vfs.connect(kv)`` preloads in its one call when given no preload."""
    return PreloadRequest(keys=sqlite_preload_keys(),
                          ranges=sqlite_preload_ranges(max_bytes, interior_max_bytes=interior_max_bytes))


class KVConnection(apsw.Connection):
    """An ``apsw.Connection`` on a KV-backed database, with its VFS counters.

    :ivar stats: the file's :class:`~vfs.stats.VFSStats` (round trips, hits, commits).
    :ivar kv_file: the open :class:`~vfs.file.KVFile` (commit hooks, preload).
    :ivar kv: the actor-scoped KV view.
    """

    __slots__ = ("stats", "kv_file", "kv")  # (no __dict__: one per awake actor)

    stats: VFSStats
    kv_file: KVFile
    kv: KV

    @property
    def preload(self) -> PreloadMap:
        """The preload map serving this connection's first reads."""
        return self.kv_file.preload


def connect(
    kv: KV,
    name: str = "main.db",
    *,
    preload: PreloadMap | None = None,
    cache_chunks: int | None = None,
    readahead_max_chunks: int | None = None,
    max_dirty_bytes: int = 32 * 1024 * 1024,
    page_size: int = DEFAULT_PAGE_SIZE,
    vfs: str | None = None,
    readonly: bool = False,
    locking: Locking = "exclusive",
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    timeout: float = 5.0,
    large_commits: str = "journal",
    hint_interior_max_bytes: int = DEFAULT_INTERIOR_MAX_BYTES,
    history: HistorySetting = None,
    **connection_kwargs: Any,
) -> KVConnection:
    """Open the SQLite database stored in the actor-scoped ``kv``.

    The connection is set up for the one-batch commit (``journal_mode=MEMORY``,
    ``synchronous=NORMAL``, ``temp_store=MEMORY``, ``locking_mode=EXCLUSIVE``); a later
    ``PRAGMA`` that would break it is refused with ``apsw.SQLError``.

    :param kv: an actor-scoped view, e.g. ``MemoryKV().actor("a1")``.
    :param name: a label for SQLite (``PRAGMA database_list``); the actor's namespace,
        not the name, selects the keys.
    :param preload: the startup preload map; reads it covers cost no round trip.
        ``None`` (default): the open makes one preload call itself (1 round trip, as
        the open's own read of the meta would cost): the meta, the chunks the hot-set
        hint lists, then the lowest chunks, within :data:`DEFAULT_OPEN_PRELOAD_BYTES`.
        ``PreloadMap.empty()``: nothing preloaded (the open reads the meta and the
        first chunks, also 1 round trip).
    :param cache_chunks: this connection's cap on its share of the process-wide chunk
        cache, in 4096-byte chunks (:mod:`vfs.chunk_cache`; its byte budget is set with
        ``vfs.chunk_cache.configure`` or ``$ACTOR_DB_CACHE_BYTES``). ``None``: no cap of
        its own; 0: no caching.
    :param readahead_max_chunks: largest read-ahead window, in chunks (``None``: what
        the driver's limits and the cache budget allow; the window doubles per
        sequential miss).
    :param max_dirty_bytes: dirty bytes held before spilling to the redo staging range.
    :param page_size: page size of a NEW database, 512-65536 (ignored if it exists).
    :param vfs: ``"native"`` (the C VFS of :mod:`native`: same KV format and round
        trips, page reads without Python) or ``"python"`` (this package). ``None``, the
        default: ``"native"`` when its extension is built, else ``"python"``.
    :param readonly: open with ``SQLITE_OPEN_READONLY``: the connection never writes to
        the KV (not even to recover an interrupted large transaction: it reads through a
        committed one and ignores uncommitted staging). Use it for every reader of an
        actor it does not own; pair it with a snapshot view (``kv.snapshot()``) to read
        one consistent committed state while a writer runs.
    :param locking: how this connection shares the database (:mod:`vfs.locks`).
        ``"exclusive"`` (default): it is the only connection to the database in this
        process, with ``locking_mode=EXCLUSIVE`` (warm reads cost 0 round trips; other
        processes are kept out by the KV's fencing, e.g. the actor runtime's ownership).
        ``"in-process"``: any number of connections in this process, with SQLite's
        locks (``locking_mode=NORMAL``; readers run while one writer builds its
        transaction, a commit waits for readers, ``busy_timeout`` applies); no other
        process may write. ``"cross-process"``: the same, and other processes and
        hosts may open it too: each transaction checks the KV for their commits and
        a writer holds the KV writer lease (:mod:`vfs.lease`: a read transaction costs
        1 round trip more, a write transaction 2).
    :param lease_ttl_s: ``"cross-process"``: lifetime of the writer lease, in seconds.
    :param hint_interior_max_bytes: the wake preload's allowance for B-tree interior
        pages (``docs/preload.md``): the hot-set hint this connection writes lists at
        most that many bytes of them, and its own preload (``preload=None``) uses it.
    :param timeout: seconds a statement waits for a lock another connection holds
        before failing with ``apsw.BusyError`` (SQLite's ``busy_timeout``, set before
        the open's own PRAGMAs run; the stdlib's default, 5.0). Only meaningful when
        ``locking`` is not ``"exclusive"``.
    :param large_commits: how a commit larger than one KV batch stays atomic:
        ``"journal"`` (default: a SQLite rollback journal in file tag 1, which RivetKit's
        reader honours too) or ``"redo"`` (the redo log only; see
        :class:`~vfs.file.FileOptions`).
    :param history: whether commits record the database's history (``docs/history.md``):
        ``None`` (default) keeps recording if the database already has history (with
        its stored retention) and records nothing otherwise; ``True`` keeps 7 days;
        a ``timedelta`` sets the retention; :class:`vfs.history.HistoryOptions` sets
        retention by time and bytes; ``False`` records nothing and drops an existing
        history at the next commit.
    :raises TypeError: ``history`` is not one of those.
    :raises apsw.BusyError: the actor's database is already open in this process and
        ``locking`` (of either open) is ``"exclusive"``, or the two differ.
    :raises apsw.IOError: the KV failed while opening.
    :raises apsw.CorruptError: the stored meta is not a valid meta record.
    """
    backend = _backend(vfs)
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise ValueError(f"page_size must be a power of two from 512 to 65536, not {page_size}")
    backend.ensure_registered()
    if hint_interior_max_bytes < 0:
        raise ValueError(f"hint_interior_max_bytes must be >= 0, not {hint_interior_max_bytes!r}")
    options = _file_options(cache_chunks, readahead_max_chunks, max_dirty_bytes, readonly, lease_ttl_s,
                            large_commits, hint_interior_max_bytes // CHUNK_SIZE, policy_for(history))
    filename, binding, share, own_preload = _bind(backend, kv, name, options, locking, preload,
                                                  hint_interior_max_bytes)
    identity = kv.identity
    connection: KVConnection | None = None
    try:
        default_flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        flags = connection_kwargs.pop("flags", default_flags)
        connection = KVConnection(filename, flags=flags, vfs=backend.VFS_NAME, **connection_kwargs)
        assert binding.file is not None, "xOpen did not run"
        connection.stats = binding.stats
        if own_preload:
            connection.stats.round_trips += 1  # the open's one call, as when the open read the meta
        connection.kv_file = binding.file
        connection.kv = kv
        if binding.file.committed_size == 0 and not readonly:
            connection.execute(f"PRAGMA page_size={page_size}")
        if share is not None:
            connection.set_busy_timeout(int(timeout * 1000))
        binding.file.opening = True
        try:
            for statement in pragmas.open_pragmas(share is not None):
                connection.execute(statement)
        finally:
            binding.file.opening = False
        return connection
    except BaseException:
        if connection is not None:
            connection.close()
        if binding.file is None:
            locks.release(identity, filename, share)  # else the file's close released it
        raise
    finally:
        backend.unbind(filename)



@functools.lru_cache(maxsize=256)
def _file_options(cache_chunks: int | None, readahead_max_chunks: int | None, max_dirty_bytes: int, read_only: bool,
                  lease_ttl_s: float, large_commits: str, hint_max_interior_chunks: int,
                  history: Policy) -> FileOptions:
    """The (frozen) :class:`FileOptions` of these settings, one object shared by every
    connection opened with them: a runtime opens one per awake actor, all alike.

    :raises ValueError: a setting :class:`FileOptions` refuses (not cached).
    """
    return FileOptions(cache_chunks, readahead_max_chunks, max_dirty_bytes, read_only=read_only,
                       lease_ttl_s=lease_ttl_s, large_commits=large_commits,
                       hint_max_interior_chunks=hint_max_interior_chunks, history=history)


def _bind(backend: Any, kv: KV, name: str, options: FileOptions, locking: Locking, preload: PreloadMap | None,
          hint_interior_max_bytes: int) -> tuple[str, kvvfs.Binding, locks.DatabaseShare | None, bool]:
    """Bind ``kv`` under a new SQLite file name, claim the database (:mod:`vfs.locks`)
    and read its preload (1 round trip unless ``preload`` is usable).

    Returns ``(filename, binding, share, own_preload)``. The caller opens ``filename``
    (xOpen takes the binding; the file's close releases the claim), then unbinds it
    whatever happened, and releases the claim itself if xOpen never ran.

    :raises apsw.BusyError: the claim is refused (see :func:`connect`).
    :raises apsw.IOError: the preload failed (nothing is left bound or claimed).
    """
    binding = kvvfs.Binding(kv, PreloadMap.empty(), options)
    filename = backend.bind(name, binding)
    identity = kv.identity
    try:
        share = locks.claim(identity, filename, locking)
    except BaseException:
        backend.unbind(filename)
        raise
    binding.share = share
    binding.on_close = functools.partial(locks.release, identity, filename, share)  # (no closure cells)
    if share is not None:
        # Commits of this process's other connections after this point reach the file
        # as notes (vfs.locks); the preload must not predate it. A caller's preload
        # may, unless no other connection of this process has the database open.
        binding.seen_generation, fresh = share.join_point()
        if preload is not None and not fresh:
            log.debug("ignoring the preload passed for a database other connections have open")
            preload = None
    own_preload = preload is None
    if preload is None:
        try:
            preload = kv.preload(open_preload_request(interior_max_bytes=hint_interior_max_bytes))
        except Exception as exc:
            backend.unbind(filename)
            locks.release(identity, filename, share)
            raise kv_failure(apsw.SQLITE_IOERR_READ, "preload of the database at open", exc) from exc
    binding.preload = preload
    return filename, binding, share, own_preload


def attach(
    connection: apsw.Connection,
    kv: KV,
    schema: str,
    *,
    name: str | None = None,
    readonly: bool = False,
    locking: Locking = "exclusive",
    cache_chunks: int | None = None,
    readahead_max_chunks: int | None = None,
    max_dirty_bytes: int = 32 * 1024 * 1024,
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    large_commits: str = "journal",
    hint_interior_max_bytes: int = DEFAULT_INTERIOR_MAX_BYTES,
) -> None:
    """``ATTACH`` the database stored in the actor-scoped ``kv`` to ``connection`` as
    ``schema``, set up like a :func:`connect` of its own (journal in memory, the one-batch
    commit, ``locking``; the keyword arguments mean what they mean there); 1 round trip
    (its preload).

    ``connection`` is a :func:`connect` connection: the attached database uses the same
    VFS (Python or native) as its main database. ``readonly`` needs a connection opened with
    ``SQLITE_OPEN_URI`` (the attach is ``file:...?mode=ro``) or a read-only one (whose
    attachments are all read-only, as in SQLite). A transaction that writes
    to several attached KV databases commits each one atomically, not all together
    (SQLite keeps no super-journal for in-memory journals). DETACH or closing the
    connection releases the database.

    :raises apsw.BusyError: the database is open in this process in a way that excludes
        this one (see ``locking`` in :func:`connect`).
    :raises apsw.IOError: the KV failed.
    :raises apsw.SQLError: ``schema`` is in use, or too many databases are attached.
    :raises ValueError: ``connection`` is not on a KV-backed database.
    """
    backend = _backend_of(connection)
    open_flags = connection.open_flags
    read_only_connection = bool(open_flags & apsw.SQLITE_OPEN_READONLY)
    if readonly and not read_only_connection and not open_flags & apsw.SQLITE_OPEN_URI:
        raise ValueError("vfs.attach(readonly=True) needs a read-only connection or one opened with "
                         "SQLITE_OPEN_URI (the attach is a file: URI with mode=ro)")
    options = FileOptions(cache_chunks, readahead_max_chunks, max_dirty_bytes,
                          read_only=readonly or read_only_connection,
                          lease_ttl_s=lease_ttl_s, large_commits=large_commits,
                          hint_max_interior_chunks=hint_interior_max_bytes // CHUNK_SIZE)
    filename, binding, share, _ = _bind(backend, kv, name or schema, options, locking, None,
                                        hint_interior_max_bytes)
    quoted = '"' + schema.replace('"', '""') + '"'
    try:
        target = f"file:{filename}?mode=ro" if readonly and not read_only_connection else filename
        connection.execute(f"ATTACH ? AS {quoted}", (target,))
        if binding.file is None:
            raise sqlite_error(apsw.SQLITE_CANTOPEN, f"actor-db: ATTACH did not open {filename}")
        binding.file.opening = True
        try:
            # Its locking and journal modes; synchronous keeps SQLite's default (FULL: the
            # sync is still the commit point, and it cannot change inside a transaction);
            # temp_store is the connection's.
            for statement in pragmas.open_pragmas(share is not None):
                if statement.startswith(("PRAGMA locking_mode", "PRAGMA journal_mode")):
                    connection.execute(statement.replace("PRAGMA ", f"PRAGMA {quoted}.", 1))
        finally:
            binding.file.opening = False
    except BaseException:
        if binding.file is None:
            locks.release(kv.identity, filename, share)  # else DETACH / the file's close releases it
        else:
            try:
                connection.execute(f"DETACH {quoted}")
            except apsw.Error:
                pass
        raise
    finally:
        backend.unbind(filename)
    log.debug("attached %r as %s (locking=%s, readonly=%s)", kv.identity, schema, locking, readonly)

def _backend_of(connection: apsw.Connection) -> Any:
    """The registration module of the VFS ``connection``'s main database uses."""
    name = connection.open_vfs
    if name == kvvfs.VFS_NAME:
        return kvvfs
    import native

    if native.AVAILABLE:
        from native import registry

        if name == registry.VFS_NAME:
            return registry
    raise ValueError(f"vfs.attach needs a connection opened with vfs.connect (its VFS is {name!r})")


def _backend(vfs: str | None) -> Any:
    """The registration module of VFS ``vfs`` (:mod:`vfs.kvvfs` or :mod:`native.registry`)."""
    if vfs is None:
        import native

        vfs = "native" if native.AVAILABLE else "python"
    if vfs == "python":
        return kvvfs
    if vfs == "native":
        import native

        if not native.AVAILABLE:
            raise ValueError(f"vfs='native' is not available: the C extension is not built ({native.BUILD_ERROR})")
        from native import registry

        return registry
    raise ValueError(f"unknown vfs {vfs!r}: expected 'python' or 'native'")
