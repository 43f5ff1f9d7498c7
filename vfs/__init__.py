"""A pure-Python APSW VFS that stores SQLite databases as chunks in a key-value store.

Entry point: :func:`connect`. The KV side is the narrow :class:`KV` protocol; this
package never imports ``actor_db`` (drivers live there and satisfy the protocol).
"""

from vfs import chunk_cache, hint
from vfs.connect import KVConnection, attach, connect
from vfs.file import FileOptions, KVFile
from vfs.keys import CHUNK_SIZE
from vfs.kvvfs import VFS_NAME
from vfs.preload import ABSENT, NOT_LOADED, PreloadMap, PreloadMiss, evaluate_preload
from vfs.protocol import KV, KeyRange, KVLimits, PrefixBudget, PreloadRequest, WriteBatch
from vfs.startup import sqlite_preload_ranges, sqlite_preload_keys
from vfs.stats import VFSStats

__all__ = [
    "attach", "connect", "KVConnection", "KVFile", "FileOptions", "CHUNK_SIZE", "VFS_NAME",
    "PreloadMap", "PreloadMiss", "ABSENT", "NOT_LOADED", "evaluate_preload",
    "KV", "KVLimits", "KeyRange", "PrefixBudget", "PreloadRequest", "WriteBatch",
    "VFSStats", "sqlite_preload_keys", "sqlite_preload_ranges", "chunk_cache", "hint",
]
