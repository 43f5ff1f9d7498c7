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
- Only state that comes back the same after a save and a reload is saved: JSON types
  (``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``,
  ``None``). ``json.dumps`` alone would silently turn ``{1: 'x', 'tup': (1, 2)}`` into
  ``{'1': 'x', 'tup': [1, 2]}``; :meth:`PersistedState.pending` refuses it with
  :class:`~actor_db.errors.StateError` naming the path (``state[1]``, ``state['tup']``).
  The check is cheap: each new encoding is decoded once (C-speed ``json.loads``) and
  compared with the live state (``==``); an unchanged encoding costs one ``==`` against
  the decoded saved state. Only a mismatch runs the Python walk that finds the path.
- An unchanged small state costs no encoding at all: once :attr:`PersistedState.saved`
  is known to be the canonical encoding of its decoded copy, a live state that is the
  same JSON tree as that copy (same builtin types, same key order, same values, so the
  same encoding) is unchanged (:func:`same_json`, bounded by :data:`FAST_CHECK_NODES`;
  a larger state, or any doubt, takes the encoding path above).

Left out: state formats other than JSON, partial (per-field) saves, throttling.
"""

from __future__ import annotations

import json
import logging
import math
from math import copysign
import threading
import time
from typing import Any

from vfs.protocol import WriteBatch

from actor_db.errors import ConfigurationError, StateError
from actor_db.runtime.keys import STATE_KEY

log = logging.getLogger(__name__)

__all__ = ["PersistedState", "RECORD_VERSION", "find_non_json", "same_json", "FAST_CHECK_NODES"]

RECORD_VERSION = 1

_UNSET: Any = object()

_local = threading.local()
"""``encoder``: this thread's C JSON encoder for records (``None`` until first use)."""


def _encoder() -> Any:
    """A C encoder equal to ``json.dumps(..., separators=(",", ":"), allow_nan=False)``
    without building a ``JSONEncoder`` on every call (a few microseconds per action);
    one per thread, since an encoder keeps a circular-reference table while it runs."""
    enc = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        {}, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ":", ",",
        False, False, False)
    _local.encoder = enc
    return enc


_C_ENCODER = getattr(json.encoder, "c_make_encoder", None) is not None


FAST_CHECK_NODES = 64
"""Largest state (values in dicts and lists, all levels) whose "unchanged?" check walks
the state instead of encoding it (:func:`same_json`); a state found larger is encoded
every time, as before, and not walked again."""

_NONE = type(None)


def same_json(live: Any, saved: Any, budget: int = FAST_CHECK_NODES) -> bool | None:
    """Whether ``live`` is the same JSON tree as ``saved`` (a ``json.loads`` result):
    the same builtin types (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
    ``None``; subclasses do not count), dict keys in the same order, equal values and
    float zeros of the same sign. Then both have the same JSON encoding.

    :returns: ``True`` / ``False``, or ``None`` when the walk would visit more than
        ``budget`` values (undecided). Never calls a user type's ``__eq__``.
    """
    stack = [(live, saved)]
    pop, push = stack.pop, stack.append
    while stack:
        a, b = pop()
        t = type(a)
        if t is not type(b):
            return False
        if t is dict or t is list:
            if len(a) != len(b):
                return False
            budget -= len(a)
            if budget < 0:
                return None
            if t is list:
                stack.extend(zip(a, b))
                continue
            for (ka, va), (kb, vb) in zip(a.items(), b.items()):
                if type(ka) is not str or ka != kb:
                    return False
                tv = type(va)
                if tv is int or tv is str or tv is bool:  # (the usual leaves, checked here)
                    if tv is not type(vb) or va != vb:
                        return False
                else:
                    push((va, vb))
        elif t is str or t is int or t is bool:
            if a != b:
                return False
        elif t is float:
            # (NaN != NaN: never "same"; 0.0 == -0.0 but they encode differently)
            if a != b or (a == 0.0 and copysign(1.0, a) != copysign(1.0, b)):
                return False
        elif t is not _NONE:
            return False
    return True


def _path(parent: str, key: Any) -> str:
    return f"{parent}[{key!r}]"


def find_non_json(value: Any, path: str = "state") -> tuple[str, str] | None:
    """The first place in ``value`` that would not come back the same from JSON.

    :returns: ``(path, reason)``, e.g. ``("state[1]", "key is int, not str")`` or
        ``("state['tup']", "tuple is not a JSON type")``; ``None`` if every value is a
        JSON type (``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``
        (finite), ``bool``, ``None``). A Python walk: used only to explain a failure.
    """
    ancestors: set[int] = set()  # containers being walked: a cycle, not a shared value
    exit_marker = object()
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if item is exit_marker:
            ancestors.discard(int(where))
            continue
        if item is None or isinstance(item, (str, bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return where, f"float {item!r} is not allowed in JSON"
            continue
        if isinstance(item, (dict, list)):
            if id(item) in ancestors:
                return where, f"{type(item).__name__} contains itself (a cycle)"
            ancestors.add(id(item))
            stack.append((exit_marker, str(id(item))))
            if isinstance(item, dict):
                children: list[tuple[Any, str]] = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        return _path(where, key), f"key is {type(key).__name__}, not str (JSON object keys are strings)"
                    children.append((child, _path(where, key)))
            else:
                children = [(child, _path(where, i)) for i, child in enumerate(item)]
            stack.extend(reversed(children))
            continue
        if isinstance(item, tuple):
            return where, "tuple is not a JSON type (it would come back as a list; use a list)"
        return where, f"{type(item).__name__} is not a JSON type"
    return None


class PersistedState:
    """The in-memory copy of one actor's record and its save bookkeeping.

    :ivar value: the live state object (``c.state``); user code mutates it.
    """

    __slots__ = (
        "_canonical", "_checked", "_checked_state", "_saved_state", "_walk", "actor_type", "created_ms", "key",
        "saved", "value",
    )

    def __init__(self, actor_type: str, key: str, value: Any, created_ms: int, saved: bytes | None) -> None:
        self.actor_type = actor_type
        self.key = key
        self.value = value
        self.created_ms = created_ms
        self.saved = saved
        # The state decoded from ``saved`` (never handed out: user code cannot mutate
        # it), decoded lazily; and the last encoding checked to round-trip, decoded.
        self._saved_state: Any = _UNSET
        self._checked: bytes | None = None
        self._checked_state: Any = _UNSET
        # ``saved`` is known to be the encoding of ``_saved_state`` (made here, or checked
        # against a fresh encoding), so a live state that is the same JSON tree as
        # ``_saved_state`` encodes to ``saved``: :meth:`pending` skips the encoding.
        self._canonical = False
        self._walk = True
        """The state was not found too large for :func:`same_json` (per instance)."""

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

    def _dumps(self) -> bytes:
        record = {"v": RECORD_VERSION, "type": self.actor_type, "key": self.key,
                  "created_ms": self.created_ms, "state": self.value}
        try:
            if _C_ENCODER:
                enc = getattr(_local, "encoder", None) or _encoder()
                try:
                    return "".join(enc(record, 0)).encode("utf-8")
                except BaseException:
                    _local.encoder = None  # its circular-reference table may hold leftovers
                    raise
            return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from exc

    def _error(self, fallback: str) -> StateError:
        """The :class:`StateError` for the live state, naming the offending path."""
        try:
            found = find_non_json(self.value)
        except RecursionError:
            found = None
        if found is None:
            return StateError(f"actor {self.actor_type}/{self.key}: state cannot be saved as JSON: {fallback}")
        path, reason = found
        return StateError(
            f"actor {self.actor_type}/{self.key}: state cannot be saved as JSON: {path}: {reason}; "
            "the state must be made of dict (str keys), list, str, int, float, bool and None", path=path)

    def _same(self, decoded: Any) -> bool:
        """Whether the live state equals ``decoded`` (a JSON decoding)."""
        try:
            return bool(decoded == self.value)
        except Exception:  # a user type with an odd __eq__, or nesting too deep
            return False

    def _round_trips(self, raw: bytes) -> None:
        """Check that ``raw`` (the encoding of :attr:`value`) decodes back to an equal
        value (decoding each new encoding once; the copy is kept for :meth:`mark_saved`)."""
        if raw != self._checked:
            self._checked, self._checked_state = raw, json.loads(raw)["state"]
        if not self._same(self._checked_state):
            raise self._error("it would not come back the same after a reload")

    def encode(self) -> bytes:
        """The record bytes for the current state.

        :raises StateError: the state is not made of JSON types (it would not come back
            the same after a reload); the message names the offending path.
        """
        raw = self._dumps()
        self._round_trips(raw)
        return raw

    def pending(self) -> bytes | None:
        """The record bytes if they differ from what is saved, else ``None``.

        :raises StateError: as :meth:`encode`, also when the bytes equal the saved ones
            but the live state differs from the saved one (e.g. ``(1, 2)`` where
            ``[1, 2]`` is saved).
        """
        if self._canonical and self._walk:
            same = same_json(self.value, self._saved_state)
            if same:
                return None  # the same tree as the saved one: the same encoding
            if same is None:
                self._walk = False  # too large to walk: encode it every time, as before
        raw = self._dumps()
        if raw != self.saved:
            self._round_trips(raw)
            return raw
        if self._saved_state is _UNSET:
            self._saved_state = json.loads(raw)["state"]
        if not self._same(self._saved_state):
            raise self._error("it would not come back the same after a reload")
        self._canonical = True  # saved == the encoding of a state equal to _saved_state
        return None

    def batch_for(self, raw: bytes) -> WriteBatch:
        """A batch putting ``raw`` at the state key."""
        batch = WriteBatch()
        batch.put(STATE_KEY, raw)
        return batch

    def mark_saved(self, raw: bytes) -> None:
        """Record that the KV now holds ``raw``."""
        if raw != self.saved:
            if raw == self._checked:
                # ``raw`` is this object's encoding of a state equal to its decoding.
                self._saved_state, self._canonical = self._checked_state, True
            else:
                self._saved_state, self._canonical = _UNSET, False
        self.saved = raw

    def revert(self) -> None:
        """Throw away unsaved changes: :attr:`value` becomes the saved state again."""
        if self.saved is not None:
            self.value = json.loads(self.saved)["state"]

    def adopt(self, raw: bytes) -> None:
        """The KV holds ``raw`` (found by re-reading it): make it the live and saved state."""
        self.value = json.loads(raw)["state"]
        self.saved = bytes(raw)
        self._saved_state = _UNSET
        self._canonical = False
