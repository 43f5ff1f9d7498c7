"""``MemoryKV``: the in-process driver (tests, ephemeral actors, benchmarks).

A sorted dict under one lock: each call is atomic and counts as one round trip. Limits
are configurable so tests can model a store with a small atomic-batch limit (RivetKit's
is 128 keys / 976 KiB).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Hashable, Mapping, Sequence

from sortedcontainers import SortedDict

from vfs.preload import PreloadMap, evaluate_preload
from vfs.protocol import KVLimits, PreloadRequest, WriteBatch

from actor_db.kv.base import Fence, GroupItem, KVStore, check_expectations, scan_with_limits
from actor_db.kv.due import INDEX_END, INDEX_START, DueEntry, due_page, index_changes
from actor_db.kv.fencing import decode_token, encode_token, fenced
from actor_db.kv.leases import claim_owner, leave_node, live_nodes, renew_heartbeat
from actor_db.kv.namespace import NODES_END, NODES_START, actor_prefix, fence_key, node_key, owner_key, prefix_end

__all__ = ["MemoryKV"]

_dict_set = dict.__setitem__
"""A ``SortedDict`` is a ``dict`` plus a sorted list of its keys: replacing the value of a
key it holds needs only the dict's own ``__setitem__`` (no Python frame of its own)."""


class MemoryKV(KVStore):
    """An in-memory store. Nothing survives the process.

    :param limits: limits to enforce (default: none).
    """

    instant_writes = True
    groups_writes = True
    supports_placement = True
    due_index = True

    def __init__(self, limits: KVLimits | None = None) -> None:
        super().__init__(limits or KVLimits())
        self._data: SortedDict = SortedDict()
        self._lock = threading.Lock()

    @property
    def identity(self) -> Hashable:
        return ("memory", id(self._data))

    def new_handle(self) -> MemoryKV:
        """Another driver object on the same data, as a second process would see it
        (its own ``round_trips``; same identity, so the one-open-per-actor rule holds)."""
        other = MemoryKV(self.limits)
        other._data = self._data
        other._lock = self._lock
        return other

    def _iterate(self, start: bytes, end: bytes):  # type: ignore[no-untyped-def]
        for key in self._data.irange(start, end, inclusive=(True, False)):
            yield key, self._data[key]

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with self._lock:
            return [self._data.get(k) for k in keys]

    def _scan(self, start: bytes, end: bytes, limit: int | None, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return scan_with_limits(self._iterate(start, end), limit, max_bytes)

    def _write(self, batch: WriteBatch, fence: Fence | None = None) -> None:
        with self._lock:
            self._apply(batch, fence)

    def _write_many(self, items: Sequence[GroupItem]) -> list[Exception | None]:
        results: list[Exception | None] = []
        with self._lock:  # one lock round: every batch checked and applied on its own
            for batch, fence in items:
                try:
                    self._apply(batch, fence)
                except Exception as exc:  # its checks failed before anything of it changed
                    results.append(exc)
                else:
                    results.append(None)
        return results

    def _apply(self, batch: WriteBatch, fence: Fence | None) -> None:
        """(Lock held.) Check ``batch``'s fence and expectations, then apply it."""
        data = self._data
        if fence is not None:
            current = decode_token(data.get(fence_key(fence.actor_id)))
            if current != fence.token:
                raise fenced(fence.actor_id, fence.token, current)
        if batch.expect:
            check_expectations(batch.expect, data.get)
        index_deletes, index_puts = index_changes(batch, data.get, lambda start, end: list(self._iterate(start, end)))
        for r in batch.delete_ranges:
            # By key (``irange``), never by position: a positional lookup (``bisect_left``,
            # ``islice``) makes the sorted list keep a positional index, which every
            # later insertion of a new key then walks (log n Python steps per key). An
            # empty range (the usual one: a commit clearing leftovers that are not
            # there) costs one bisection.
            doomed = list(data.irange(r.start, r.end, inclusive=(True, False)))
            for key in doomed:
                del data[key]
        for key in batch.deletes:
            data.pop(key, None)
        for key, value in batch.puts.items():  # (SortedDict.update re-sorts every key when
            if key in data:                     # a batch is >10% of the store: not per key)
                _dict_set(data, key, value)  # a key already in the sorted key list: only its value changes
            else:
                data[key] = value
        for key in index_deletes:  # the due index mirrors the batch's due marks
            data.pop(key, None)
        for key in index_puts:
            data[key] = b""

    def _due(self, limit: int) -> tuple[int, list[DueEntry], int | None]:
        now = int(time.time() * 1000)
        with self._lock:
            keys = list(itertools.islice(self._data.irange(INDEX_START, INDEX_END, inclusive=(True, False)), limit + 1))
        return due_page(now, keys, limit)

    def _preload(self, request: PreloadRequest) -> PreloadMap:
        with self._lock:
            return evaluate_preload(request, self._data.get, self._iterate)

    def _acquire(self, actor_id: str, request: PreloadRequest | None) -> tuple[int, PreloadMap | None]:
        with self._lock:
            key = fence_key(actor_id)
            token = decode_token(self._data.get(key)) + 1
            self._data[key] = encode_token(token)
            found = None if request is None else evaluate_preload(request, self._data.get, self._iterate)
            return token, found

    groups_acquires = True

    def _acquire_many(self, items: Sequence[tuple[str, PreloadRequest]]) -> list[tuple[int, PreloadMap] | Exception]:
        """Every acquisition under the one lock (one round trip), each as :meth:`_acquire`."""
        out: list[tuple[int, PreloadMap] | Exception] = []
        with self._lock:
            for actor_id, request in items:
                key = fence_key(actor_id)
                token = decode_token(self._data.get(key)) + 1
                self._data[key] = encode_token(token)
                out.append((token, evaluate_preload(request, self._data.get, self._iterate)))
        return out

    # -- placement (rules: actor_db.kv.leases), each under the one lock --------------
    def _claim(self, actor_id: str, request: PreloadRequest, owner: bytes,
               replace: Sequence[bytes]) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        with self._lock:
            key = owner_key(actor_id)
            current = self._data.get(key)
            if not claim_owner(current, owner, replace):
                return 0, None, current, None
            self._data[key] = owner
            fence = fence_key(actor_id)
            token = decode_token(self._data.get(fence)) + 1
            self._data[fence] = encode_token(token)
            replaced = current if current is not None and current != owner else None
            return token, evaluate_preload(request, self._data.get, self._iterate), None, replaced

    supports_create = True

    def _create(self, actor_id: str, request: PreloadRequest, puts: Mapping[bytes, bytes],
                claim: tuple[bytes, Sequence[bytes]] | None
                ) -> tuple[int, PreloadMap | None, bytes | None, bytes | None]:
        with self._lock:
            replaced = None
            if claim is not None:
                key, (owner, replace) = owner_key(actor_id), claim
                current = self._data.get(key)
                if not claim_owner(current, owner, replace):
                    return 0, None, current, None
                self._data[key] = owner
                replaced = current if current is not None and current != owner else None
            fence = fence_key(actor_id)
            token = decode_token(self._data.get(fence)) + 1
            self._data[fence] = encode_token(token)
            start = actor_prefix(actor_id)
            if next(iter(self._data.irange(start, prefix_end(start), inclusive=(True, False))), None) is None:
                for key, value in puts.items():
                    self._data[key] = value
                return token, None, None, replaced
            return token, evaluate_preload(request, self._data.get, self._iterate), None, replaced

    def _release(self, actor_id: str, owner: bytes) -> bool:
        with self._lock:
            key = owner_key(actor_id)
            if self._data.get(key) != owner:
                return False
            del self._data[key]
            return True

    def _owner(self, actor_id: str) -> bytes | None:
        with self._lock:
            return self._data.get(owner_key(actor_id))  # type: ignore[no-any-return]

    def _heartbeat(self, node_id: str, instance: bytes, payload: bytes, lease_ms: int, join: bool) -> bool:
        with self._lock:
            return renew_heartbeat(self._data.get, self._data.__setitem__, node_key(node_id), instance, payload,
                                   lease_ms, join)

    def _nodes(self) -> dict[str, tuple[bytes, bytes]]:
        with self._lock:
            return live_nodes(list(self._iterate(NODES_START, NODES_END)), len(NODES_START))

    def _leave(self, node_id: str, instance: bytes) -> bool:
        with self._lock:
            key = node_key(node_id)
            if not leave_node(self._data.get, key, instance):
                return False
            del self._data[key]
            return True

    def _open_snapshot(self, start: bytes, end: bytes, pinned: bool = True) -> MemoryKV:
        """A frozen copy of the keys in ``[start, end)`` (one actor), taken under the
        lock: every read of the snapshot sees this one state (:mod:`actor_db.kv.snapshot`)."""
        copy = MemoryKV(self.limits)
        with self._lock:
            copy._data = SortedDict((k, self._data[k]) for k in self._data.irange(start, end, inclusive=(True, False)))
        return copy

    def __len__(self) -> int:
        """Number of keys held (all actors)."""
        return len(self._data)
