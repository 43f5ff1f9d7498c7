"""When a runtime speculates on a new actor's first call (one policy per actor type and
registry).

A first call to an actor the process has not started runs speculatively on the image a
NEW actor would have (:mod:`actor_db.runtime.instance`): one round trip when the actor is
new, but a run wasted (CPU only, never a round trip or a visible effect) when it exists.
After a restart nearly every first call is to an actor that exists, so the policy
pauses speculation for a type once its speculations found :data:`MISSES_TO_PAUSE`
existing actors in a row, and resumes it as soon as a first call of that type creates
an actor the ordinary way. So a wake storm after a restart wastes at most that many
runs per type, and a stream of new actors keeps its 1-round-trip first calls (the
first new actor after a pause costs the ordinary 3 round trips for a write call, 2
for a read).

Invariant: the policy only chooses between two correct paths; it never affects what an
actor holds or returns.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

__all__ = ["SpeculationPolicy", "MISSES_TO_PAUSE"]

MISSES_TO_PAUSE = 8
"""Consecutive speculations that found an existing actor before a type stops speculating."""


class SpeculationPolicy:
    """Whether first calls of one actor type speculate now (see the module docstring).

    :param label: the type's name, for log messages.
    """

    __slots__ = ("label", "misses")

    def __init__(self, label: str) -> None:
        self.label = label
        self.misses = 0
        """Speculations in a row that found the actor existing (reset by a creation)."""

    @property
    def active(self) -> bool:
        """Whether a first call of this type may speculate."""
        return self.misses < MISSES_TO_PAUSE

    def found_existing(self) -> None:
        """A speculation found the actor existing (its run was discarded)."""
        self.misses += 1
        if self.misses == MISSES_TO_PAUSE:
            log.info("actor type %s: %d first calls in a row found existing actors; new-actor speculation paused "
                     "until a first call creates one", self.label, MISSES_TO_PAUSE)

    def created(self) -> None:
        """A first call created an actor (speculatively or not): speculate again."""
        if self.misses >= MISSES_TO_PAUSE:
            log.info("actor type %s: a first call created an actor; new-actor speculation resumed", self.label)
        self.misses = 0
