"""The HTTP contract's error mapping: which status an exception gets, and its body.

Body of every error: ``{"error": "<exception type name>", "message": "...",
"retry_after": seconds or null}``. Statuses:

- 404: no such actor type or action (:class:`~actor_db.errors.ActorNotFoundError`,
  :class:`~actor_db.errors.ActionNotFoundError`), or an unknown path;
- 400: the body is not a JSON array, the arguments do not fit the action
  (``TypeError`` before it runs), or the key is not a valid actor key;
- 401: a bearer token is required and was not given;
- 503 with ``Retry-After``: the call could not run now: fenced, draining, the owner
  unreachable, this node's lease expired (:class:`~actor_db.errors.PlacementError`,
  :class:`~actor_db.errors.FencedError`, :class:`~actor_db.errors.KVUnavailableError`);
- 500: any other error, the action's own included (its type name is in the body).
"""

from __future__ import annotations

import json
import math

from actor_db.errors import (
    ActorNotFoundError, FencedError, InvalidActorKeyError, KVUnavailableError, PlacementError,
)

__all__ = ["status_of", "error_name", "error_body", "ArgumentError", "retry_after_header", "BadRequest", "Unauthorized"]


class BadRequest(Exception):
    """The request itself is malformed (400)."""


class ArgumentError(TypeError):
    """The arguments do not fit the action (400; reported as ``TypeError``). Raised
    before the action runs."""


class Unauthorized(Exception):
    """A bearer token is required (401)."""


def status_of(exc: BaseException) -> int:
    """The HTTP status for ``exc``."""
    if isinstance(exc, ActorNotFoundError):
        return 404
    if isinstance(exc, (BadRequest, ArgumentError, InvalidActorKeyError, json.JSONDecodeError)):
        return 400
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, (PlacementError, FencedError, KVUnavailableError)):
        return 503
    return 500


def error_name(exc: BaseException) -> str:
    """The type name an error is reported under."""
    if isinstance(exc, ArgumentError):
        return "TypeError"
    return type(exc).__name__


def error_body(error: str, message: str, retry_after: float | None) -> bytes:
    return json.dumps({"error": error, "message": message, "retry_after": retry_after}).encode("utf-8")


def retry_after_header(seconds: float | None) -> bytes:
    """``Retry-After`` takes whole seconds: at least 1 (the body has the exact value)."""
    return str(max(1, math.ceil(seconds or 0))).encode("ascii")
