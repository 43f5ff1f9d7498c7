"""The native (C) VFS fast path. Not built yet: :data:`AVAILABLE` is ``False`` and
``vfs.connect(..., vfs="python")`` is used everywhere."""

AVAILABLE = False
