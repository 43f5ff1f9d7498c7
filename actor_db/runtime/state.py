"""The actor's persisted record at key ``[1]``: its state plus metadata, as JSON.

Record (UTF-8 JSON object)::

    {"v": 1, "type": <actor type>, "key": <actor key>, "created_ms": <unix ms>, "state": <state>}

Invariants:

- :attr:`PersistedState.saved` is the exact record bytes the KV holds (``None``
  before the creation batch is written). It changes only after a KV write holding
  the new record succeeded (:meth:`PersistedState.mark_saved`).
- The state is saved only when its encoding differs from :attr:`saved`, so an action
  that leaves the state alone costs no state write.
- :meth:`PersistedState.pending_batch` is what the VFS commit hook returns: the
  record travels in the same atomic batch as the database commit.

Left out: state formats other than JSON, partial (per-field) saves, throttling.
"""

from __future__ import annotations

import json
import time
from typing import Any

from vfs.protocol import WriteBatch

from actor_db.errors import ConfigurationError, StateError
from actor_db.runtime.keys import STATE_KEY

__all__ = ["PersistedState", "RECORD_VERSION"]

RECORD_VERSION = 1


class PersistedState:
    """The in-memory copy of one actor's record and its save bookkeeping.

    :ivar value: the live state object (``c.state``); user code mutates it.
    """

    def __init__(self, actor_type: str, key: str, value: Any, created_ms: int, saved: bytes | None) -> None:
        self.actor_type = actor_type
        self.key = key
        self.value = value
        self.created_ms = created_ms
        self.saved = saved

    @classmethod
    def new(cls, actor_type: str, key: str, value: Any) -> PersistedState:
        """The record of an actor being created (nothing saved yet)."""
        return cls(actor_type, key, value, int(time.time() * 1000), None)

    @classmethod
    def decode(cls, actor_type: str, key: str, raw: bytes) -> PersistedState:
        """Load a stored record.

        :raises ConfigurationError: it belongs to another actor type (the id collided)
            or has an unknown format version.
        """
        try:
            record = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"actor {actor_type}/{key}: stored record is not valid JSON: {exc}") from exc
        if not isinstance(record, dict) or record.get("v") != RECORD_VERSION:
            raise ConfigurationError(f"actor {actor_type}/{key}: stored record has an unsupported format")
        if record.get("type") != actor_type:
            raise ConfigurationError(
                f"actor {actor_type}/{key}: the stored record belongs to actor type {record.get('type')!r}")
        return cls(actor_type, key, record.get("state"), int(record.get("created_ms", 0)), bytes(raw))

    def encode(self) -> bytes:
        """The record bytes for the current state.

        :raises StateError: the state is not JSON-serializable.
        """
        record = {"v": RECORD_VERSION, "type": self.actor_type, "key": self.key,
                  "created_ms": self.created_ms, "state": self.value}
        try:
            return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise StateError(f"actor {self.actor_type}/{self.key}: state cannot be saved as JSON: {exc}") from exc

    def pending(self) -> bytes | None:
        """The record bytes if they differ from what is saved, else ``None``."""
        raw = self.encode()
        return None if raw == self.saved else raw

    def batch_for(self, raw: bytes) -> WriteBatch:
        """A batch putting ``raw`` at the state key."""
        batch = WriteBatch()
        batch.put(STATE_KEY, raw)
        return batch

    def mark_saved(self, raw: bytes) -> None:
        """Record that the KV now holds ``raw``."""
        self.saved = raw

    def revert(self) -> None:
        """Throw away unsaved changes: :attr:`value` becomes the saved state again."""
        if self.saved is not None:
            self.value = json.loads(self.saved)["state"]

    def adopt(self, raw: bytes) -> None:
        """The KV holds ``raw`` (found by re-reading it): make it the live and saved state."""
        self.value = json.loads(raw)["state"]
        self.saved = bytes(raw)
