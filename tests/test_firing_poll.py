"""The poller (:class:`actor_db.runtime.firing.Firer`): a poll whose read began before a
dispatch ended does not dispatch that entry again (the read may predate the run's
commit: at 1,000 fires/s those stale dispatches were ~10% of all, each a wasted call or
a wake for nothing); a poll begun after it does."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from actor_db.kv import MemoryKV
from actor_db.kv.due import DueEntry
from actor_db.runtime.firing import Firer, ScheduleOptions
from actor_db.runtime.schedule import Entry, PendingSchedule

DEADLINE_S = 20.0


class HeldReads(MemoryKV):
    """A MemoryKV whose due-index reads, while ``hold`` is set, are answered only when
    a permit is given (``held`` tells a read is waiting)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.permits = threading.Semaphore(0)
        self.held = threading.Event()

    def _due(self, limit: int) -> Any:
        found = super()._due(limit)  # (read first: the answer predates what follows)
        if self.hold.is_set():
            self.held.set()
            self.permits.acquire(timeout=DEADLINE_S)
        return found


async def until(predicate: Any) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_poll_read_before_a_run_ended_does_not_dispatch_it_again() -> None:
    store = HeldReads()
    pending = PendingSchedule()
    pending.put(Entry("e1", "once", "hit", [], int(time.time() * 1000) - 10))
    batch = pending.take()
    assert batch is not None
    store.actor("t/a").write(batch)  # due now; the fake dispatch never removes it
    release = asyncio.Event()
    runs: list[DueEntry] = []

    async def dispatch(entry: DueEntry) -> dict[str, str]:
        runs.append(entry)
        await release.wait()
        return {"outcome": "fired"}

    async def main() -> None:
        firer = Firer(store, dispatch, lambda actor_id: True,
                      ScheduleOptions(poll_interval_s=0.01, tick_s=0.005))
        firer.start()
        try:
            await until(lambda: len(runs) == 1)
            store.hold.set()  # the next read is answered, then held
            await until(store.held.is_set)
            release.set()  # the run ends while that read is held: its answer predates the end
            await until(lambda: firer.metrics.outcomes["fired"] == 1)  # type: ignore[index]
            polls = firer.metrics.polls
            store.held.clear()
            store.permits.release()  # that read is answered; the next one is held again
            await until(lambda: firer.metrics.polls > polls and store.held.is_set())
            assert firer.metrics.dispatched == 1  # not dispatched from the read that began before the end
            assert firer.metrics.skipped == 1
            store.hold.clear()
            store.permits.release()
            # A read begun after the end lists it again (the fake never removed it): run again.
            await until(lambda: len(runs) == 2)
        finally:
            store.hold.clear()
            store.permits.release()
            release.set()
            await firer.stop()

    asyncio.run(main())
    assert runs[0] == runs[1]
