"""The Registry the multi-node schedule test serves: ``actor-db serve tests.schedule_app:registry``
(the store comes from ``--kv``)."""

from __future__ import annotations

import actor_db
from tests.schedule_support import jobs_type

registry = actor_db.Registry([jobs_type()], schedules=actor_db.ScheduleOptions(poll_interval_s=0.05))
