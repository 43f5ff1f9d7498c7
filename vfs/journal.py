"""SQLite rollback journals left in file tag 1, and the repair of page 1's WAL flag.

RivetKit (``@rivetkit/sqlite-vfs``) commits more than 127 pages through SQLite's own
rollback journal, stored as file tag 1 (meta ``[8, 1, 0, 1]``, chunks
``[8, 1, 1, 1, u32 BE]``). A crash in the middle of such a commit leaves a *hot
journal*: until it is rolled back, the main file holds a mix of old and new pages.
This module decides, by SQLite's own rules (``pager.c``: ``hasHotJournal``,
``pager_playback``, ``readJournalHdr``, ``pager_playback_one_page``), what rolling
the journal back yields, without touching the KV: :func:`playback` returns the
original database size and the before-image of every page to restore.

SQLite's rules, as implemented here (the file's own byte order is big-endian):

- The journal exists when its meta exists. It is *hot* when the database holds at
  least one page and the journal's first byte is nonzero (``hasHotJournal``; the
  writer's RESERVED lock is not consulted: RivetKit has no locks, and an actor has one
  writer at a time). A journal that exists but is not hot is ignored and left in place
  (RivetKit, with ``locking_mode=EXCLUSIVE``, commits by zeroing the header).
- A hot journal is played back header by header. A header is the 8-byte magic, then
  u32 record count ``nRec``, u32 checksum seed, u32 original page count ``mxPg``,
  u32 sector size, u32 page size, padded to the sector size. Playback stops (what was
  played stays played) at a header that does not fit the journal, has a wrong magic,
  or (the first one) an invalid page or sector size. ``nRec`` 0xFFFFFFFF means "up to
  the end of the journal". The first header truncates (or extends) the database to
  ``mxPg`` pages.
- A record is u32 page number, the page, u32 checksum (the seed plus every 200th byte
  of the page from ``page_size - 200`` down). Playback stops at a record that does not
  fit the journal, at page 0 or the pending-byte page, or at a bad checksum; a page past
  ``mxPg`` is skipped. Later records of one page overwrite earlier ones.
- A super-journal name at the end of the journal (multi-database transactions; RivetKit
  never writes one) changes nothing: SQLite (3.54, the test oracle) plays such a journal
  back too.

Either way, a hot journal is deleted once played (SQLite's ``pager_end_transaction``);
the caller does that in the same atomic batch as the restored pages (:mod:`vfs.file`).

Our own writer also writes journals here (:func:`build`, :func:`journaled_pages`):
a commit larger than one KV batch journals the before-images of the pages it rewrites,
rewrites them in place, and deletes the journal at its commit point
(:meth:`vfs.file.KVFile._commit_journaled`), so that any SQLite reader of the same keys
(RivetKit's too) rolls an interrupted one back.

Left out: journals of databases with other files (multi-database transactions), and
journals whose header predates SQLite 3.5.8 (page size field 0: not played).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Final

from vfs.chunks import chunk_count, spans
from vfs.keys import CHUNK_SIZE

log = logging.getLogger(__name__)

__all__ = ["JOURNAL_MAGIC", "Playback", "playback", "is_hot", "restore_chunks", "chunks_needed", "WAL_FLAG_OFFSET",
           "says_wal", "without_wal_flag", "build", "journaled_pages"]

JOURNAL_MAGIC: Final = bytes([0xD9, 0xD5, 0x05, 0xF9, 0x20, 0xA1, 0x63, 0xD7])
_U32: Final = struct.Struct(">I")
_PENDING_BYTE: Final = 0x40000000
_READER_SECTOR: Final = 512
"""The sector size SQLite assumes before it reads the first header: our VFS declares
``SQLITE_IOCAP_POWERSAFE_OVERWRITE``, for which the pager uses 512 bytes."""
_MAX_SECTOR: Final = 0x10000
_MAX_PAGE: Final = 65536


@dataclass
class Playback:
    """What rolling a hot journal back does to the database.

    :ivar size: the database size in bytes afterwards (``mxPg * page_size``), or
        ``None`` when playback stopped before the first header (size unchanged).
    :ivar page_size: the journal's page size in bytes (0 if no header was read).
    :ivar pages: page number (1-based) → the page's before-image (``page_size`` bytes).
    """

    size: int | None = None
    page_size: int = 0
    pages: dict[int, bytes] = field(default_factory=dict)


def _u32(data: bytes, offset: int) -> int:
    return int(_U32.unpack_from(data, offset)[0])


def is_hot(journal: bytes, db_size: int) -> bool:
    """Whether SQLite would roll ``journal`` back over a database of ``db_size`` bytes."""
    return db_size > 0 and len(journal) > 0 and journal[0] != 0


def _checksum(seed: int, page: bytes, page_size: int) -> int:
    total = seed
    i = page_size - 200
    while i > 0:
        total += page[i]
        i -= 200
    return total & 0xFFFFFFFF


def playback(journal: bytes) -> Playback:
    """Roll ``journal`` (a hot journal's bytes, up to its meta's size) back in memory.

    :returns: the resulting size and before-images; an empty :class:`Playback` when
        nothing is played (the journal is still deleted by the caller, as SQLite does).
    """
    result = Playback()
    size = len(journal)
    sector = _READER_SECTOR
    page_size = 0
    offset = 0
    first = True
    db_pages = 0
    while True:
        # journalHdrOffset: headers start at multiples of the sector size.
        if offset:
            offset = ((offset - 1) // sector + 1) * sector
        if offset + sector > size or journal[offset:offset + 8] != JOURNAL_MAGIC:
            return result
        n_rec, seed, mx_pg = _u32(journal, offset + 8), _u32(journal, offset + 12), _u32(journal, offset + 16)
        if first:
            sector_field, page_field = _u32(journal, offset + 20), _u32(journal, offset + 24)
            if page_field == 0:
                return result  # journals before 3.5.8; the reader's page size is unknown here
            if page_field < 512 or sector_field < 32 or page_field > _MAX_PAGE or sector_field > _MAX_SECTOR \
                    or page_field & (page_field - 1) or sector_field & (sector_field - 1):
                return result
            sector, page_size = sector_field, page_field
            result.page_size = page_size
        offset += sector
        record = page_size + 8
        if n_rec == 0xFFFFFFFF:
            n_rec = (size - sector) // record
        if first:
            result.size = mx_pg * page_size  # pager_truncate to mxPg pages
            db_pages = mx_pg
            first = False
        for _ in range(n_rec):
            if offset + record > size:
                return result  # SQLITE_IOERR_SHORT_READ: playback ends, successfully
            pgno = _u32(journal, offset)
            page = journal[offset + 4:offset + 4 + page_size]
            checksum = _u32(journal, offset + 4 + page_size)
            offset += record
            if pgno == 0 or pgno == _PENDING_BYTE // page_size + 1:
                return result
            if pgno > db_pages:
                continue
            if _checksum(seed, page, page_size) != checksum:
                return result
            result.pages[pgno] = page


def restore_chunks(play: Playback, base: dict[int, bytes], old_size: int) -> tuple[int, dict[int, bytes]]:
    """The chunks to write (or to read instead of the KV's) so that the database reads as
    after ``play``: ``(new size in bytes, chunk index → CHUNK_SIZE bytes)``.

    :param base: the current value of every chunk :func:`chunks_needed` lists (zero
        chunks for absent ones), each ``CHUNK_SIZE`` bytes.
    :param old_size: the database size in bytes before playback.
    The result covers every restored page, the zeroed tail of a partial last chunk, and
    (when the database grows back) every chunk between the old and the new end, so a
    chunk left in the KV past the old end never reads as data.
    """
    new_size = old_size if play.size is None else play.size
    out: dict[int, bytearray] = {}

    def chunk(index: int) -> bytearray:
        buf = out.get(index)
        if buf is None:
            buf = out[index] = bytearray(base.get(index, bytes(CHUNK_SIZE)))
            if (index + 1) * CHUNK_SIZE > old_size:  # bytes past the old end read as zeros
                keep = max(old_size - index * CHUNK_SIZE, 0)
                buf[keep:] = bytes(CHUNK_SIZE - keep)
        return buf

    for index in range(chunk_count(old_size), chunk_count(new_size)):
        chunk(index)
    for pgno, page in sorted(play.pages.items()):
        offset = (pgno - 1) * play.page_size
        if offset >= new_size:
            continue
        for piece in spans(offset, len(page)):
            chunk(piece.chunk)[piece.start:piece.end] = page[piece.buffer_offset:piece.buffer_offset + piece.end
                                                             - piece.start]
    if new_size % CHUNK_SIZE:
        last = chunk(new_size // CHUNK_SIZE)
        last[new_size % CHUNK_SIZE:] = bytes(CHUNK_SIZE - new_size % CHUNK_SIZE)
    return new_size, {i: bytes(b) for i, b in out.items() if i < chunk_count(new_size)}


def chunks_needed(play: Playback, old_size: int) -> list[int]:
    """Chunks whose current value :func:`restore_chunks` needs: those a restored page
    covers only in part, and the last chunk when the database ends inside it."""
    new_size = old_size if play.size is None else play.size
    needed: set[int] = set()
    old_end = chunk_count(old_size)
    for pgno in play.pages:
        offset = (pgno - 1) * play.page_size
        if offset >= new_size:
            continue
        for piece in spans(offset, play.page_size):
            if (piece.start or piece.end < CHUNK_SIZE) and piece.chunk < old_end:
                needed.add(piece.chunk)
    if new_size % CHUNK_SIZE and new_size // CHUNK_SIZE < old_end:
        needed.add(new_size // CHUNK_SIZE)
    return sorted(needed)


WAL_FLAG_OFFSET: Final = 18
"""Page 1's file format write/read version bytes: 1, 1 rollback journal; 2, 2 WAL."""


def says_wal(page1: bytes | bytearray | None) -> bool:
    """Whether page 1's header asks for WAL mode (bytes 18-19 are 2, 2 or either is 2)."""
    if page1 is None or len(page1) < 20 or page1[:16] != b"SQLite format 3\x00":
        return False
    return page1[WAL_FLAG_OFFSET] == 2 or page1[WAL_FLAG_OFFSET + 1] == 2


def without_wal_flag(page1: bytes) -> bytes:
    """Page 1 with the header set to rollback-journal mode (bytes 18-19 = 1, 1), as
    ``PRAGMA journal_mode=DELETE`` leaves it. Only those two bytes change."""
    return page1[:WAL_FLAG_OFFSET] + b"\x01\x01" + page1[WAL_FLAG_OFFSET + 2:]


def build(page_size: int, db_pages: int, pages: dict[int, bytes], seed: int, sector_size: int = 512) -> bytes:
    """A rollback journal SQLite (and so RivetKit) would roll back: one header (magic,
    ``nRec``, checksum seed, original page count ``db_pages``, sector and page size,
    padded to ``sector_size``), then one record per page of ``pages`` (page number →
    its before-image, ``page_size`` bytes), in page order.

    :returns: the journal's bytes (``sector_size + len(pages) * (page_size + 8)``).
    """
    assert page_size & (page_size - 1) == 0 and 512 <= page_size <= _MAX_PAGE, page_size
    header = JOURNAL_MAGIC + struct.pack(">IIIII", len(pages), seed, db_pages, sector_size, page_size)
    out = bytearray(header.ljust(sector_size, b"\x00"))
    for pgno in sorted(pages):
        page = pages[pgno]
        assert len(page) == page_size and 0 < pgno <= db_pages, (pgno, len(page))
        out += _U32.pack(pgno) + page + _U32.pack(_checksum(seed, page, page_size))
    return bytes(out)


def journaled_pages(dirty: list[int], page_size: int, db_pages: int) -> dict[int, list[int]]:
    """The pages a commit rewriting chunks ``dirty`` must journal (those that existed:
    page number ``<= db_pages``), each with the chunks holding it (page → chunk indices)."""
    out: dict[int, list[int]] = {}
    for index in dirty:
        start = index * CHUNK_SIZE
        for offset in range(start - start % page_size, start + CHUNK_SIZE, page_size):
            pgno = offset // page_size + 1
            if pgno > db_pages or pgno in out or pgno == _PENDING_BYTE // page_size + 1:
                continue  # (SQLite never uses the pending-byte page, and playback stops at it)
            out[pgno] = [piece.chunk for piece in spans(offset, page_size)]
    return out
