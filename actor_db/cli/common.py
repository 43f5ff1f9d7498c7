"""What every command module of the ``actor-db`` CLI shares: the one-line error types,
the parent parsers, opening the store, the progress bar, confirmation and output
escaping.

Invariants: a user mistake is a :class:`CLIError` (one line on stderr, exit 1); text
that comes from the store (actor ids) goes through :func:`safe` before it is printed,
so a key holding a newline or a terminal escape cannot forge output lines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Iterator

from actor_db.defaults import ENV_KV, ENV_PATH_DEPRECATED, default_store_spec, open_store
from actor_db.errors import ActorDBError, OperationError
from actor_db.ops.common import ProgressCallback
from actor_db.ops.lease import DEFAULT_LEASE_TIMEOUT_S

__all__ = ["CLIError", "Interrupted", "Parents", "Handler", "store_spec", "opened_store", "progress_bar",
           "confirm", "human", "safe", "SigintGuard", "PROGRESS_MIN_PAGES"]

CLIError = OperationError
"""A user mistake or an unusable store: reported as one line, exit status 1. The same
class as :class:`actor_db.errors.OperationError`, which the operations raise."""

PROGRESS_MIN_PAGES = 256
"""Copies of fewer pages (1 MiB at 4 KiB pages) get no progress bar by default."""

Handler = Callable[[argparse.Namespace], int]
"""A command's entry point: the parsed arguments in, the exit status out."""


class Interrupted(ActorDBError):
    """Ctrl-C stopped a command; the message says what was left (exit status 130)."""


@dataclass(frozen=True)
class Parents:
    """The pieces every command parser is built from.

    :ivar common: ``--kv`` and ``-v`` (pass in ``parents=[...]``).
    :ivar actor_type: ``--actor-type NAME``.
    :ivar parser_class: the parser class (one-line syntax errors).
    """

    common: argparse.ArgumentParser
    actor_type: argparse.ArgumentParser

    @staticmethod
    def add_actor(p: argparse.ArgumentParser) -> None:
        """The positional ``ACTOR``."""
        p.add_argument("actor", metavar="ACTOR", help="actor id (or key, with --actor-type)")

    @staticmethod
    def add_timeout(p: argparse.ArgumentParser) -> None:
        """``--timeout S``: how long a writer waits for a drop-in writer's lease."""
        p.add_argument("--timeout", type=float, default=DEFAULT_LEASE_TIMEOUT_S, metavar="S",
                       help="seconds to wait for another writer's lease (5)")

    @staticmethod
    def add_progress(p: argparse.ArgumentParser) -> None:
        """``--progress/--no-progress``."""
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar (default: on a terminal, from 1 MiB)")


def store_spec(args: argparse.Namespace) -> str:
    """``--kv``, else the default store rule (:mod:`actor_db.defaults`)."""
    return getattr(args, "kv", None) or default_store_spec()


def store_origin(args: argparse.Namespace) -> str:
    """Where the store spec came from, for error messages: ``--kv`` or the variable."""
    if getattr(args, "kv", None):
        return "--kv"
    if os.environ.get(ENV_KV, "").strip():
        return f"${ENV_KV}"
    if os.environ.get(ENV_PATH_DEPRECATED, "").strip():
        return f"${ENV_PATH_DEPRECATED}"
    return "--kv"


@contextlib.contextmanager
def opened_store(args: argparse.Namespace, *, create: bool = False) -> Iterator[Any]:
    """The store the command names, closed afterwards."""
    store = open_store(store_spec(args), create=create, origin=store_origin(args))
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def progress_bar(desc: str, enabled: bool | None, *, unit: str = "page",
                 min_total: int = PROGRESS_MIN_PAGES) -> Iterator[ProgressCallback]:
    """A tqdm bar on stderr fed by an operation's ``progress(done, total)`` callback.

    ``enabled=None`` shows it on a terminal when ``total >= min_total``; ``unit="B"``
    shows bytes scaled to KiB/MiB.
    """
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            show = enabled if enabled is not None else (total >= min_total and sys.stderr.isatty())
            bar = tqdm(total=total, desc=desc, unit=unit, disable=not show, file=sys.stderr, leave=False,
                       unit_scale=unit == "B", unit_divisor=1024)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def confirm(question: str) -> bool:
    """Ask on stderr, read one line from stdin (a terminal or a pipe): ``y``/``yes``."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n") or not sys.stdin.isatty():  # nothing echoed the newline
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def human(size: int) -> str:
    """``size`` bytes in B, KiB, MiB or GiB (one decimal)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def safe(text: str) -> str:
    """``text`` for one output line: printable characters as they are; control
    characters (newline, ESC, DEL, C1) and a backslash escaped as Python does
    (``\\n``, ``\\x1b``, ``\\\\``). Printable ids print unchanged."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:  # quotes are printable, so repr's quoting never applies here
            out.append(repr(ch)[1:-1])
    return "".join(out)


class SigintGuard:
    """The first Ctrl-C raises :class:`KeyboardInterrupt` and is remembered (even when the
    VFS turns it into an ``apsw.IOError``); later ones are ignored until the guarded work
    has rolled back."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def __enter__(self) -> SigintGuard:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            return
        self.interrupted = True
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)
