"""``LmdbKV``: the embedded, durable default driver.

One LMDB environment holds many actors; every call is one LMDB transaction, so a write
batch is atomic and, with ``durable=True`` (the default), on disk when the call returns
(LMDB's copy-on-write B-tree survives ``kill -9`` and power loss without recovery).

LMDB forbids opening one environment twice in a process, so environments are shared
per real path and reference-counted. Keys are limited to LMDB's max key size (511
bytes); values and batches are limited only by ``map_size``.

Values are stored in the value encoding of :mod:`actor_db.kv.codec` (LZ4-compressed
when that pays, ``compress=True``): a 4 KiB chunk then costs one LMDB page or less
instead of two overflow pages. Callers see the bytes they wrote. A store written before
that encoding (no marker, actor data present) is marked legacy at open and keeps its
raw values; :func:`actor_db.compact.compact_lmdb` rewrites it encoded.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import Any, Hashable, Iterator, Mapping, Sequence

import lmdb

from vfs.preload import PreloadMap, evaluate_preload
from vfs.protocol import KVLimits, PreloadRequest, WriteBatch

from actor_db.errors import KVError, KVLimitError, KVUnavailableError
from actor_db.kv.base import Fence, GroupItem, KVStore, check_expectations, scan_with_limits
from actor_db.kv.codec import ENCODED, LEGACY, AllocationUnit, ValueCodec, codec_for_marker
from actor_db.kv.due import INDEX_END, INDEX_START, DueEntry, due_page, index_changes
from actor_db.kv.fencing import decode_token, encode_token, fenced
from actor_db.kv.leases import claim_owner, leave_node, live_nodes, renew_heartbeat
from actor_db.kv.namespace import (
    ACTORS_END, ACTORS_START, NODES_END, NODES_START, VALUE_ENCODING_KEY, actor_prefix, fence_key, node_key, owner_key,
    prefix_end,
)

__all__ = ["LmdbKV", "DEFAULT_MAP_SIZE"]

log = logging.getLogger(__name__)

DEFAULT_MAP_SIZE = 1 << 36
"""64 GiB of address space; LMDB files grow only as data is written."""

_envs_lock = threading.Lock()
_envs: dict[str, tuple[Any, int]] = {}
_fork_generation = 0
"""Forks this process has gone through as a child (:func:`_after_fork_in_child`)."""
_inherited: dict[str, Any] = {}
"""Environments inherited through ``fork``, by path: kept referenced, never used or closed."""


def _after_fork_in_child() -> None:
    """LMDB forbids using an environment in a child of the process that opened it: its
    reader slots carry the opener's pid, so a forked child's read transactions take slots
    that are never freed, until every process of the machine fails with
    ``MDB_READERS_FULL`` (the parent included); and closing the inherited environment in
    the child would free the parent's live reader slots. So the child keeps the inherited
    environments referenced, never touches them, and its handles refuse to run with a
    clear error (:attr:`LmdbKV._env`). py-lmdb also refuses to open the same files again
    in this process while they stay referenced: open stores after forking."""
    global _envs_lock, _fork_generation
    _envs_lock = threading.Lock()  # it may have been held by another thread at the fork
    _inherited.update((path, env) for path, (env, _) in _envs.items())
    _envs.clear()
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def _forked_error(path: str) -> KVUnavailableError:
    return KVUnavailableError(
        f"the LMDB store at {path} was opened before this process was forked, and an LMDB "
        "environment cannot be used across fork(): open the store in the child process (gunicorn: "
        "a post_fork hook; multiprocessing: the 'spawn' start method), or close every handle on "
        "it before forking")


def _open_env(path: str, map_size: int, durable: bool) -> Any:
    with _envs_lock:
        entry = _envs.get(path)
        if entry is not None:
            _envs[path] = (entry[0], entry[1] + 1)
            return entry[0]
        # Only the last directory, never its parents (as sqlite3.connect creates only
        # the file): a typo in a parent is an error, not a new directory tree.
        try:
            os.mkdir(path)
        except FileExistsError:
            pass  # lmdb.open reports a path that is not a directory
        except FileNotFoundError:
            from actor_db.errors import ConfigurationError

            raise ConfigurationError(f"cannot create LMDB store {path}: its parent directory "
                                     f"{os.path.dirname(path)} does not exist") from None
        env = lmdb.open(path, map_size=map_size, subdir=True, max_dbs=0, sync=durable,
                        metasync=durable, readahead=False, max_readers=1024, lock=True)
        _envs[path] = (env, 1)
        return env


def _close_env(path: str) -> None:
    with _envs_lock:
        entry = _envs.get(path)
        if entry is None:
            return
        env, refs = entry
        if refs > 1:
            _envs[path] = (env, refs - 1)
            return
        del _envs[path]
        env.close()


class LmdbKV(KVStore):
    """A durable store in the LMDB environment directory ``path`` (created if missing).

    :param path: directory holding ``data.mdb`` and ``lock.mdb``.
    :param map_size: largest size the store may grow to, in bytes.
    :param durable: fsync at every write call (default). ``False`` trades durability of
        the last commits on power loss for speed; atomicity is kept either way.
    :param compress: store values LZ4-compressed when that pays (default); ``False``
        stores them raw (tagged). Values read back are the same either way, and stores
        written with either setting open with either (:mod:`actor_db.kv.codec`).
    """

    due_index = True
    """Due marks are mirrored into the ordered index range (:mod:`actor_db.kv.due`) in the
    same write transaction."""

    groups_writes = True
    """:meth:`write_many` is one write transaction: one commit, one fsync for many actors."""

    supports_placement = True
    """Owner records and heartbeats (:mod:`actor_db.kv.leases`), each checked and written
    in one write transaction: LMDB serializes those across the machine's processes."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE, durable: bool = True,
                 compress: bool = True) -> None:
        self.path = os.path.realpath(os.fspath(path))
        self._generation = _fork_generation
        self._closed = False
        if self.path in _inherited:
            raise _forked_error(self.path)
        try:
            self._opened_env = _open_env(self.path, map_size, durable)
        except lmdb.Error as exc:
            raise KVUnavailableError(f"cannot open LMDB environment at {self.path}: {exc}") from exc
        super().__init__(KVLimits(max_key_bytes=self._env.max_key_size()))
        self._closed = False
        try:
            marker = self._value_encoding_marker()
        except BaseException:
            self.close()
            raise
        psize = self._env.stat()["psize"]
        self.value_codec: ValueCodec = codec_for_marker(marker, compress, AllocationUnit(psize, 16))
        """How this store's values are stored (:mod:`actor_db.kv.codec`)."""

    @property
    def _env(self) -> Any:
        """The LMDB environment of this process.

        :raises KVUnavailableError: the handle was opened before this process was forked
            (see :func:`_after_fork_in_child`), or is closed.
        """
        if self._generation != _fork_generation:
            raise _forked_error(self.path)
        return self._opened_env

    def _value_encoding_marker(self) -> bytes:
        """The store's value-encoding marker, recorded at the first open that finds none:
        :data:`~actor_db.kv.codec.ENCODED` for a store without actor data,
        :data:`~actor_db.kv.codec.LEGACY` for one written before the encoding existed
        (one write transaction, once per store; LMDB serializes it across processes)."""
        try:
            with self._env.begin() as txn:
                marker = txn.get(VALUE_ENCODING_KEY)
            if marker is not None:
                return bytes(marker)
            with self._env.begin(write=True) as txn:
                marker = txn.get(VALUE_ENCODING_KEY)
                if marker is None:
                    cursor = txn.cursor()
                    legacy = cursor.set_range(ACTORS_START) and cursor.key() < ACTORS_END
                    marker = LEGACY if legacy else ENCODED
                    txn.put(VALUE_ENCODING_KEY, marker)
                    if legacy:
                        log.info("LMDB store %s was written before value encoding: its values stay raw "
                                 "(actor-db compact rewrites it compressed)", self.path)
            return bytes(marker)
        except lmdb.Error as exc:
            raise KVUnavailableError(f"cannot read the value encoding of the LMDB store at {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"LmdbKV({self.path!r})"

    @property
    def identity(self) -> Hashable:
        return ("lmdb", self.path)

    def _iterate(self, txn: Any, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Pairs of ``[start, end)`` in key order, values decoded."""
        cursor = txn.cursor()
        if not cursor.set_range(start):
            return
        decode = self.value_codec.decode
        for key, value in cursor:
            if key >= end:
                return
            yield key, decode(value)

    @staticmethod
    def _iterate_raw(txn: Any, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Pairs of ``[start, end)`` as stored (records outside the actors' values:
        heartbeats, owner records, which are never value-encoded)."""
        cursor = txn.cursor()
        if not cursor.set_range(start):
            return
        for key, value in cursor:
            if key >= end:
                return
            yield key, value

    def _getter(self, txn: Any) -> Any:
        """``get(key) -> decoded value or None`` in ``txn``."""
        get, decode = txn.get, self.value_codec.decode_optional
        return lambda key: decode(get(key))

    def _txn(self, write: bool = False) -> Any:
        if self._closed:
            raise KVUnavailableError(f"{self!r} is closed")
        return self._env.begin(write=write, buffers=False)

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with self._txn() as txn:
            get, decode = txn.get, self.value_codec.decode_optional
            return [decode(get(k)) for k in keys]

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        with self._txn() as txn:
            return scan_with_limits(self._iterate(txn, start, end), limit, max_bytes)

    def _write(self, batch: WriteBatch, fence: Fence | None = None) -> None:
        try:
            with self._txn(write=True) as txn:
                self._check(txn, batch, fence)
                self._apply(txn, batch)
        except lmdb.BadValsizeError as exc:
            raise KVLimitError(f"LMDB rejected a key or value size: {exc}") from exc
        except lmdb.MapFullError as exc:
            raise KVLimitError(f"LMDB store at {self.path} is full (map_size): {exc}") from exc

    def _write_many(self, items: Sequence[GroupItem]) -> list[Exception | None]:
        """Every batch in ONE write transaction (one commit, one fsync): a batch whose
        fence or expectations fail is skipped (its checks run before any of its
        changes). Should LMDB refuse a change itself (a full map, a bad size), the
        transaction is aborted and each batch is written on its own instead, so every
        batch still gets its own exact result."""
        results: list[Exception | None] = []
        try:
            with self._txn(write=True) as txn:
                for batch, fence in items:
                    try:
                        self._check(txn, batch, fence)
                    except KVError as exc:
                        results.append(exc)
                        continue
                    self._apply(txn, batch)
                    results.append(None)
        except lmdb.Error as exc:
            log.warning("LMDB refused a group write (%s); writing its %d batches one by one", exc, len(items))
            return super()._write_many(items)
        return results

    def _check(self, txn: Any, batch: WriteBatch, fence: Fence | None) -> None:
        """Raise (nothing changed yet) unless ``fence`` and ``batch.expect`` hold in ``txn``."""
        if fence is not None:
            # Inside the write transaction: LMDB serializes write transactions
            # across processes, so no other owner can slip in between.
            current = decode_token(txn.get(fence_key(fence.actor_id)))
            if current != fence.token:
                raise fenced(fence.actor_id, fence.token, current)
        # Expectations too: checked in the same write transaction, before any change.
        # Decoded values are compared: exact whatever encoding each was stored in.
        if batch.expect:
            check_expectations(batch.expect, self._getter(txn))

    def _apply(self, txn: Any, batch: WriteBatch) -> None:
        index_deletes, index_puts = index_changes(batch, self._getter(txn),
                                                  lambda start, end: list(self._iterate(txn, start, end)))
        for r in batch.delete_ranges:
            cursor = txn.cursor()
            if cursor.set_range(r.start):
                while cursor.key() and cursor.key() < r.end:
                    if not cursor.delete():
                        break
        for key in batch.deletes:
            txn.delete(key)
        encode = self.value_codec.encode
        for key, value in batch.puts.items():
            txn.put(key, encode(value))
        for key in index_deletes:  # the due index mirrors the batch's due marks (raw, empty)
            txn.delete(key)
        for key in index_puts:
            txn.put(key, b"")

    def _due(self, limit: int) -> tuple[int, list[DueEntry], int | None]:
        now = int(time.time() * 1000)
        with self._txn() as txn:
            keys = [k for k, _ in itertools.islice(self._iterate_raw(txn, INDEX_START, INDEX_END), limit + 1)]
        return due_page(now, keys, limit)

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        with self._txn() as txn:
            return evaluate_preload(request, self._getter(txn), lambda s, e: self._iterate(txn, s, e))

    def _acquire(self, actor_id: str, request: PreloadRequest | None) -> tuple[int, PreloadMap | None]:
        key = fence_key(actor_id)
        with self._txn(write=True) as txn:
            token = decode_token(txn.get(key)) + 1
            txn.put(key, encode_token(token))
            found = None if request is None else evaluate_preload(
                request, self._getter(txn), lambda s, e: self._iterate(txn, s, e))
        return token, found

    groups_acquires = True

    def _acquire_many(self, items: Sequence[tuple[str, PreloadRequest]]) -> list[tuple[int, PreloadMap] | Exception]:
        """Every acquisition in ONE write transaction (one fsync), each as :meth:`_acquire`
        (the tokens and preloads of all, or, if the transaction fails, none)."""
        out: list[tuple[int, PreloadMap] | Exception] = []
        with self._txn(write=True) as txn:
            getter = self._getter(txn)
            for actor_id, request in items:
                key = fence_key(actor_id)
                token = decode_token(txn.get(key)) + 1
                txn.put(key, encode_token(token))
                out.append((token, evaluate_preload(request, getter, lambda s, e: self._iterate(txn, s, e))))
        return out

    # -- placement (rules: actor_db.kv.leases), each one write transaction ----------
    def _claim(self, actor_id: str, request: PreloadRequest, owner: bytes,
               replace: Sequence[bytes]) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        key = owner_key(actor_id)
        with self._txn(write=True) as txn:
            current = txn.get(key)
            if not claim_owner(current, owner, replace):
                return 0, None, current, None  # (the unchanged transaction commits nothing)
            txn.put(key, owner)
            fence = fence_key(actor_id)
            token = decode_token(txn.get(fence)) + 1
            txn.put(fence, encode_token(token))
            found = evaluate_preload(request, self._getter(txn), lambda s, e: self._iterate(txn, s, e))
        return token, found, None, current if current is not None and current != owner else None

    supports_create = True

    def _create(self, actor_id: str, request: PreloadRequest, puts: Mapping[bytes, bytes],
                claim: tuple[bytes, Sequence[bytes]] | None
                ) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        try:
            with self._txn(write=True) as txn:
                replaced = None
                if claim is not None:
                    key, (owner, replace) = owner_key(actor_id), claim
                    current = txn.get(key)
                    if not claim_owner(current, owner, replace):
                        return 0, None, current, None  # (the unchanged transaction commits nothing)
                    txn.put(key, owner)
                    replaced = current if current is not None and current != owner else None
                fence = fence_key(actor_id)
                token = decode_token(txn.get(fence)) + 1
                txn.put(fence, encode_token(token))
                start = actor_prefix(actor_id)
                cursor = txn.cursor()
                if not cursor.set_range(start) or cursor.key() >= prefix_end(start):
                    encode = self.value_codec.encode
                    for key, value in puts.items():
                        txn.put(key, encode(value))
                    return token, None, None, replaced
                found = evaluate_preload(request, self._getter(txn), lambda s, e: self._iterate(txn, s, e))
                return token, found, None, replaced
        except lmdb.BadValsizeError as exc:
            raise KVLimitError(f"LMDB rejected a key or value size: {exc}") from exc
        except lmdb.MapFullError as exc:
            raise KVLimitError(f"LMDB store at {self.path} is full (map_size): {exc}") from exc

    def _release(self, actor_id: str, owner: bytes) -> bool:
        key = owner_key(actor_id)
        with self._txn(write=True) as txn:
            if txn.get(key) != owner:
                return False
            txn.delete(key)
            return True

    def _owner(self, actor_id: str) -> bytes | None:
        with self._txn() as txn:
            return txn.get(owner_key(actor_id))  # type: ignore[no-any-return]

    def _heartbeat(self, node_id: str, instance: bytes, payload: bytes, lease_ms: int, join: bool) -> bool:
        with self._txn(write=True) as txn:
            return renew_heartbeat(txn.get, txn.put, node_key(node_id), instance, payload, lease_ms, join)

    def _nodes(self) -> dict[str, tuple[bytes, bytes]]:
        with self._txn() as txn:
            return live_nodes(list(self._iterate_raw(txn, NODES_START, NODES_END)), len(NODES_START))

    def _leave(self, node_id: str, instance: bytes) -> bool:
        key = node_key(node_id)
        with self._txn(write=True) as txn:
            if not leave_node(txn.get, key, instance):
                return False
            txn.delete(key)
            return True

    def _open_snapshot(self, start: bytes, end: bytes, pinned: bool = True) -> _LmdbSnapshot:
        """A read transaction held open: every read of the snapshot sees the state of
        this moment (LMDB's MVCC; writers are not blocked). See :mod:`actor_db.kv.snapshot`."""
        return _LmdbSnapshot(self, self._txn())

    def backup(self, destination: str | os.PathLike[str]) -> int:
        """Write a consistent copy of the whole store (every actor, the fencing counters,
        the value-encoding marker) into the directory ``destination``, while this and
        other processes keep reading and writing: LMDB copies inside ONE read
        transaction, so the copy is the store at one commit (free pages left out, values
        copied as stored). Restore by opening the copy's directory as the store, with
        every process of the old one stopped.

        :param destination: a directory that does not exist yet (created; not its parents).
        :returns: the copy's ``data.mdb`` size in bytes.
        :raises ConfigurationError: ``destination`` exists, or its parent does not.
        :raises KVUnavailableError: the copy failed (a partial copy is removed).
        """
        from actor_db.errors import ConfigurationError

        target = os.fspath(destination)
        try:
            os.mkdir(target)
        except (FileExistsError, FileNotFoundError) as exc:
            raise ConfigurationError(f"cannot back up {self.path} into {target}: {exc.strerror}") from None
        if self._closed:
            raise KVUnavailableError(f"{self!r} is closed")
        try:
            self._env.copy(target, compact=True)  # in one read transaction of its own
        except lmdb.Error as exc:
            import shutil

            shutil.rmtree(target, ignore_errors=True)
            raise KVUnavailableError(f"backup of LMDB store {self.path} into {target} failed: {exc}") from exc
        return os.path.getsize(os.path.join(target, "data.mdb"))

    def close(self) -> None:
        """Release this handle; the environment closes with its last handle."""
        if not self._closed:
            self._closed = True
            if self._generation == _fork_generation:  # else an inherited environment: never closed
                _close_env(self.path)


class _LmdbSnapshot:
    """One LMDB read transaction serving a :class:`~actor_db.kv.snapshot.SnapshotKV`."""

    def __init__(self, store: LmdbKV, txn: Any) -> None:
        self._store = store
        self._txn = txn

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        get = self._store._getter(self._txn)
        return [get(k) for k in keys]

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        return scan_with_limits(self._store._iterate(self._txn, start, end), limit, max_bytes)

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        return evaluate_preload(request, self._store._getter(self._txn),
                                lambda s, e: self._store._iterate(self._txn, s, e))

    def close(self) -> None:
        self._txn.abort()
