"""Crash states of a plain SQLite rollback-journal commit, and SQLite's own reading of them.

A real SQLite (apsw's) runs a large commit with ``journal_mode=DELETE`` over
:class:`RecordingVFS`, an in-memory VFS that logs every change to the main file and
its ``-journal`` (write, truncate, delete). :func:`state_at` replays the first ``k``
changes: the files a crash after change ``k`` leaves. :func:`sqlite_reads` opens such
files with SQLite's default (unix) VFS, which rolls a hot journal back itself: the
oracle. :func:`store_state` maps the files into an actor's KV as RivetKit stores them
(tag 0 main, tag 1 journal; meta = u16 LE 1 + u64 LE size; 4096-byte chunks, the last
one short), so our VFS can be asked to read the same bytes.
"""

from __future__ import annotations

import hashlib
import pathlib
import tempfile
from dataclasses import dataclass, field
from typing import Any

import apsw

from vfs.keys import CHUNK_SIZE, FILE_JOURNAL, FILE_MAIN, chunk_key, encode_meta, meta_key
from vfs.protocol import KV, WriteBatch

Files = dict[str, bytes]
"""``"main"`` and (when it exists) ``"journal"`` → file bytes."""


@dataclass
class Recording:
    """The files before the commit, and every change the commit made, in order."""

    before: Files
    ops: list[tuple[str, str, Any]] = field(default_factory=list)
    """``(file, "write" | "truncate" | "delete", (offset, data) | size | None)``."""


class _MemFile:
    def __init__(self, vfs: RecordingVFS, name: str) -> None:
        self.vfs, self.name = vfs, name

    @property
    def data(self) -> bytearray:
        return self.vfs.files[self.name]

    def xRead(self, amount: int, offset: int) -> bytes:
        return bytes(self.data[offset:offset + amount])

    def xWrite(self, data: bytes, offset: int) -> None:
        buf = self.data
        if len(buf) < offset:
            buf.extend(bytes(offset - len(buf)))
        buf[offset:offset + len(data)] = data
        self.vfs.log(self.name, "write", (offset, bytes(data)))

    def xTruncate(self, size: int) -> None:
        del self.data[size:]
        self.vfs.log(self.name, "truncate", size)

    def xSync(self, flags: int) -> None:
        pass

    def xFileSize(self) -> int:
        return len(self.data)

    def xLock(self, level: int) -> None:
        pass

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xClose(self) -> None:
        pass


class RecordingVFS(apsw.VFS):
    """An in-memory VFS whose main file is ``"main"`` and journal ``"main-journal"``."""

    def __init__(self, name: str) -> None:
        super().__init__(name, base="")
        self.files: dict[str, bytearray] = {}
        self.recording: Recording | None = None

    def log(self, name: str, op: str, arg: Any) -> None:
        if self.recording is not None:
            self.recording.ops.append(("journal" if name.endswith("-journal") else "main", op, arg))

    def xOpen(self, name: Any, flags: list[int]) -> Any:
        filename = name.filename() if isinstance(name, apsw.URIFilename) else name
        if filename is None or not flags[0] & (apsw.SQLITE_OPEN_MAIN_DB | apsw.SQLITE_OPEN_MAIN_JOURNAL):
            return super().xOpen(name, flags)
        self.files.setdefault(filename, bytearray())
        flags[1] = flags[0]
        return _MemFile(self, filename)

    def xAccess(self, pathname: str, flags: int) -> bool:
        return pathname in self.files

    def xDelete(self, filename: str, syncdir: bool) -> None:
        if self.files.pop(filename, None) is not None:
            self.log(filename, "delete", None)

    def xFullPathname(self, name: str) -> str:
        return name

    def snapshot(self) -> Files:
        out = {"main": bytes(self.files.get("main", b""))}
        if "main-journal" in self.files:
            out["journal"] = bytes(self.files["main-journal"])
        return out


_serial = 0


def record_commit(setup: list[str], commit: list[str], page_size: int = 4096, exclusive: bool = True) -> Recording:
    """Run ``setup`` (committed), then record the changes of the transaction ``commit``.

    :param exclusive: ``locking_mode=EXCLUSIVE`` as RivetKit sets it (a commit then
        zeroes the journal header instead of deleting the journal).
    """
    global _serial
    _serial += 1
    vfs = RecordingVFS(f"recording-{_serial}")
    try:
        con = apsw.Connection("main", vfs=f"recording-{_serial}")
        con.execute(f"PRAGMA page_size={page_size}")
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA cache_size=-100000")  # no cache spill: one journal header
        if exclusive:
            con.execute("PRAGMA locking_mode=EXCLUSIVE")
        for sql in setup:
            con.execute(sql)
        recording = Recording(vfs.snapshot())
        vfs.recording = recording
        con.execute("BEGIN")
        for sql in commit:
            con.execute(sql)
        con.execute("COMMIT")
        vfs.recording = None
        con.close()
        return recording
    finally:
        vfs.unregister()


def state_at(recording: Recording, cut: int) -> Files:
    """The files after the first ``cut`` changes of ``recording``."""
    files = {name: bytearray(data) for name, data in recording.before.items()}
    for name, op, arg in recording.ops[:cut]:
        if op == "delete":
            files.pop(name, None)
            continue
        buf = files.setdefault(name, bytearray())
        if op == "write":
            offset, data = arg
            if len(buf) < offset:
                buf.extend(bytes(offset - len(buf)))
            buf[offset:offset + len(data)] = data
        else:
            del buf[arg:]
    return {name: bytes(data) for name, data in files.items()}


DUMP_SQL = "SELECT * FROM sqlite_schema ORDER BY name"


def dump(con: Any, tables: list[str]) -> str:
    """``integrity_check`` and a SHA-256 over the schema and every row of ``tables``."""
    digest = hashlib.sha256()
    ok = [row[0] for row in con.execute("PRAGMA integrity_check")]
    for row in con.execute(DUMP_SQL):
        digest.update(repr(row).encode())
    for table in tables:
        if con.execute("SELECT count(*) FROM sqlite_schema WHERE name=?", (table,)).fetchall()[0][0]:
            for row in con.execute(f"SELECT * FROM {table} ORDER BY rowid"):
                digest.update(repr(row).encode())
    return f"{ok}:{digest.hexdigest()}"


def sqlite_reads(files: Files, tables: list[str]) -> tuple[str, Files]:
    """What SQLite itself reads from ``files`` (rolling a hot journal back), and the
    files it leaves (the rolled-back main file; a journal it did not delete)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "db.sqlite"
        path.write_bytes(files["main"])
        if "journal" in files:
            (pathlib.Path(tmp) / "db.sqlite-journal").write_bytes(files["journal"])
        con = apsw.Connection(str(path))
        try:
            result = dump(con, tables)
        finally:
            con.close()
        after = {"main": path.read_bytes()}
        journal = pathlib.Path(tmp) / "db.sqlite-journal"
        if journal.exists():
            after["journal"] = journal.read_bytes()
        return result, after


def store_state(kv: KV, files: Files) -> None:
    """Write ``files`` into ``kv`` as RivetKit stores them (one batch; a test set-up)."""
    batch = WriteBatch()
    for tag, name in ((FILE_MAIN, "main"), (FILE_JOURNAL, "journal")):
        data = files.get(name)
        if data is None:
            continue
        batch.put(meta_key(tag), encode_meta(len(data)))
        for index in range(0, -(-len(data) // CHUNK_SIZE)):
            batch.put(chunk_key(tag, index), data[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE])
    kv.write(batch)


def read_file(kv: KV, tag: int) -> bytes | None:
    """File ``tag`` as stored in ``kv`` (``None`` without a meta), missing chunks as zeros."""
    from vfs.keys import decode_meta

    meta = kv.get_many([meta_key(tag)])[0]
    if meta is None:
        return None
    size = decode_meta(meta)
    count = -(-size // CHUNK_SIZE)
    values = kv.get_many([chunk_key(tag, i) for i in range(count)]) if count else []
    return b"".join((v or b"").ljust(CHUNK_SIZE, b"\x00") for v in values)[:size]
