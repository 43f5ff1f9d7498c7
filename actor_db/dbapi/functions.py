"""User-defined functions and aggregates: results checked like the stdlib, stdlib-style
aggregate/window classes wrapped for apsw."""

from __future__ import annotations

from typing import Any, Callable

from .errors import DataError, _CallbackError, _report

def _checked_result(value: Any) -> Any:
    """A UDF result SQLite can store, or raise like the stdlib (unsupported type)."""
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, str):
        if not value.isascii():
            value.encode("utf-8")  # surrogates: the stdlib reports the UnicodeEncodeError
        return value
    if isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        view = memoryview(value)
        if not view.c_contiguous:
            raise BufferError("underlying buffer is not C-contiguous")
        return view.tobytes()
    raise _CallbackError("user-defined function raised exception")


def _aggregate_factory(cls: Any, *, window: bool) -> Callable[[], Any]:
    """An apsw aggregate/window factory around a stdlib-style aggregate class.

    The instance is created at the first ``step`` (so an aggregate over no rows yields
    NULL without instantiating, as in the stdlib); errors are reported with ``cls`` as the
    unraisable object and become the stdlib's messages.
    """

    def call(instance: Any, method: str, *args: Any) -> Any:
        try:
            fn = getattr(instance, method)
        except AttributeError as exc:
            _report(exc, cls)
            raise _CallbackError(f"user-defined aggregate's '{method}' method not defined") from exc
        try:
            return fn(*args)
        except Exception as exc:
            _report(exc, cls)
            raise _CallbackError(f"user-defined aggregate's '{method}' method raised error") from exc

    def factory() -> Any:
        state: list[Any] = []

        def instance() -> Any:
            if not state:
                try:
                    state.append(cls())
                except Exception as exc:
                    _report(exc, cls)
                    raise _CallbackError("user-defined aggregate's '__init__' method raised error") from exc
            return state[0]

        def step(_ctx: Any, *args: Any) -> None:
            call(instance(), "step", *args)

        def final(_ctx: Any) -> Any:
            if not state and not window:
                return None
            if window:
                # SQLite does not propagate a window function's xFinal error (the stdlib
                # documents this): report it and return NULL.
                try:
                    return _checked_result(call(instance(), "finalize"))
                except (_CallbackError, OverflowError, BufferError):
                    return None
            result = call(instance(), "finalize")
            try:
                return _checked_result(result)
            except OverflowError:
                raise _CallbackError("string or blob too big", DataError) from None
            except (_CallbackError, BufferError):
                raise _CallbackError("user-defined aggregate's 'finalize' method raised error") from None

        if not window:
            return (None, step, final)

        def value(_ctx: Any) -> Any:
            try:
                return _checked_result(call(instance(), "value"))
            except OverflowError:
                raise _CallbackError("string or blob too big", DataError) from None
            except BufferError:
                raise _CallbackError("user-defined aggregate's 'value' method raised error") from None

        def inverse(_ctx: Any, *args: Any) -> None:
            call(instance(), "inverse", *args)

        return (None, step, final, value, inverse)

    return factory
