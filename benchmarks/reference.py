"""Published figures of the system actor-db is modelled on, shown as labelled reference rows.

These are citations, not measurements of this code: the report prints them in rows
marked as theirs, next to the rows measured in the same run.
"""

from __future__ import annotations

__all__ = ["RIVETKIT_1MIB_INSERT", "RIVETKIT_LIMITS"]

RIVETKIT_1MIB_INSERT = {
    "label": "RivetKit native path (published, theirs)",
    "round_trips": 317,
    "time_ms": 832.0,
    "note": "30 gets + 287 puts; batches capped at 128 keys / 976 KiB; on their network (DESIGN.md section 6)",
}
"""RivetKit's 1 MiB insert, as published (vs 1.8 ms for node:sqlite on a local file)."""

RIVETKIT_LIMITS = {"max_batch_keys": 128, "max_batch_bytes": 976 * 1024}
"""Their KV batch limits; ``MemoryKV(KVLimits(**RIVETKIT_LIMITS))`` models them."""
