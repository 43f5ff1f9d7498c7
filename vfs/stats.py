"""Per-connection counters of the VFS (all monotonic, units in the field names)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["VFSStats"]


@dataclass
class VFSStats:
    """What one connection's database file cost, counted exactly.

    Counters only grow; :meth:`snapshot` copies them so callers can take differences.
    """

    round_trips: int = 0
    """KV calls made by this connection's file (reads, writes, scans), each one round trip."""
    live_reads: int = 0
    """KV read calls (round trips) made to fetch chunks or meta that were not held locally."""
    chunks_fetched: int = 0
    """Chunks returned by live reads, read-ahead included."""
    preload_hits: int = 0
    """Chunk lookups answered by the preload map (found or confirmed absent)."""
    cache_hits: int = 0
    """Chunk lookups answered by the chunk cache."""
    chunks_written: int = 0
    """Chunks written to the KV by commits (staged chunks count once more when applied)."""
    commits: int = 0
    """Transactions made durable in the KV."""
    large_commits: int = 0
    """Commits that used the multi-batch redo protocol."""
    roll_forwards: int = 0
    """Interrupted large commits completed from their commit record."""

    def snapshot(self) -> VFSStats:
        """A copy of the current values."""
        return VFSStats(**self.as_dict())

    def as_dict(self) -> dict[str, int]:
        # (not dataclasses.asdict: it deep-copies each int, ~0.1 ms per call; every
        # actor's sleep folds its counters)
        return {name: getattr(self, name) for name in _FIELDS}

    def __sub__(self, other: VFSStats) -> VFSStats:
        a, b = self.as_dict(), other.as_dict()
        return VFSStats(**{k: a[k] - b[k] for k in a})


_FIELDS = tuple(f.name for f in fields(VFSStats))
