"""Every actor-level key the runtime stores (the SQLite keys live in :mod:`vfs.keys`).

All keys are relative to one actor's namespace, laid out as RivetKit does
(DESIGN.md section 2)::

    [1]        persisted record: the actor's state and metadata (JSON envelope)
    [2, ...]   connections (reserved; preloaded all-or-nothing)
    [6, 1 ...] workflows (reserved; preloaded all-or-nothing)
    [7, 0 ...] schedule due marks (mirrored into the store's due index: actor_db.kv.due)
    [7, 1 ...] schedule records (actor_db.runtime.schedule)
    [8, 1 ...] the SQLite database (vfs.keys)

The record at ``[1]`` exists exactly when the actor exists: it is written in the
creation batch and removed by destroy.
"""

from __future__ import annotations

from typing import Final

from vfs.protocol import KeyRange

__all__ = ["STATE_KEY", "CONNECTIONS_RANGE", "WORKFLOWS_RANGE", "SCHEDULES_RANGE", "SCHEDULE_RECORDS"]

STATE_KEY: Final = bytes([1])
"""The persisted-state key (RivetKit's ``[1]``)."""

CONNECTIONS_RANGE: Final = KeyRange(bytes([2]), bytes([3]))
"""Keys of persisted connections (RivetKit's ``[2]`` subspace)."""

WORKFLOWS_RANGE: Final = KeyRange(bytes([6, 1]), bytes([6, 2]))
"""Keys of workflows (RivetKit's ``[6, 1]`` subspace)."""

SCHEDULES_RANGE: Final = KeyRange(bytes([7]), bytes([8]))
"""Every schedule key of the actor: due marks ``[7, 0]`` and records ``[7, 1]``."""

SCHEDULE_RECORDS: Final = KeyRange(bytes([7, 1]), bytes([7, 2]))
"""Schedule entry records (``[7, 1] + entry id``)."""
