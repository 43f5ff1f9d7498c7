"""How the durable drivers store a value: a storage encoding BELOW the KV protocol.

Callers of a driver (the VFS, RivetKit-format readers, the runtime) always see the
exact bytes they wrote; only the bytes at rest differ. LMDB and Redis stores written
with this encoding hold every actor value (keys in the actor range) as::

    0x00 | value                                  stored raw
    0x01 | u32 BE decoded length | LZ4 block      compressed (LZ4 block format)

Why: a 4096-byte chunk plus LMDB's 16-byte page header does not fit one 4096-byte page,
so a raw chunk costs two overflow pages (a store twice the database's size); SQLite
pages usually compress to well under one page, and on Redis memory is the bill.

Why LZ4 (measured on the 4 KiB pages of a text-heavy database, 2 cores: see
``docs/drivers.md``): it decodes a page in ~4 us against ~10-12 us for zstd level 1-3
(the cold-wake preload decodes up to 192 pages) and compresses text pages to ~2.6 KiB,
so a chunk costs ONE overflow page instead of two; zstd's smaller output (~1.8 KiB,
half a page) costs three times the decoding time.

Invariants:

- Self-describing and versioned: the first byte says how the rest is stored; an unknown
  tag, a bad length or an LZ4 block that does not decode to exactly the recorded
  length raises :class:`~actor_db.errors.KVCorruptValueError` (never wrong bytes).
- A value is stored compressed only when it is at least :data:`MIN_COMPRESS_BYTES`
  long and its compressed form saves at least 1/32 of it, or needs fewer of the
  store's allocation units (:class:`AllocationUnit`: LMDB overflow pages, Redis's
  jemalloc size classes) than the raw form: a chunk of random blobs with a few dozen
  bytes of free space in its SQLite page still drops from two LMDB pages to one, and
  from a 5 KiB to a 4 KiB allocation on Redis.
  Otherwise raw: one byte more than before, no decoding step. Small values (the meta,
  the lease, the hot-set hint) stay raw: the Redis scripts read the hint record, and
  compare small values, without decompressing.
- Deterministic: the compressed form of a value (:meth:`ValueCodec.lz4_form`) depends
  only on the value (the format fixes LZ4's fast mode, acceleration 1), so a conditional
  write on Redis can compare stored bytes with the expected value's compressed form,
  whichever thresholds the writer applied.
- Which stores use it is recorded IN the store (:data:`ENCODED`/:data:`LEGACY` under a
  store-level marker key, see :mod:`actor_db.kv.namespace`): a store written before this
  encoding existed holds untagged values, which no per-value tag could tell apart from
  tagged ones, so such a store keeps its raw values (:data:`PLAIN`) until it is
  rewritten (``actor-db compact`` does it for LMDB).

Left out: the drivers' small values outside the actor range (fencing counters, the
marker itself) are never encoded; MemoryKV holds values as given.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

import lz4.block

from actor_db.errors import KVCorruptValueError

__all__ = ["ValueCodec", "AllocationUnit", "LMDB_PAGE", "REDIS_ALLOCATION", "PLAIN", "TAG_RAW", "TAG_LZ4", "MIN_COMPRESS_BYTES", "ENCODED", "LEGACY",
           "codec_for_marker"]

TAG_RAW: Final = 0x00
"""First byte of a value stored as is."""
TAG_LZ4: Final = 0x01
"""First byte of a value stored as an LZ4 block, after its u32 BE decoded length."""
_LZ4_HEAD: Final = struct.Struct(">BI")
MIN_COMPRESS_BYTES: Final = 2048
"""Values shorter than this are stored raw: on LMDB they fit a leaf page with others
already, and the largest hot-set hint record (1,029 bytes) stays readable by scripts."""
MAX_DECODED_BYTES: Final = 0xFFFFFFFF
"""Longest value the compressed form can describe (its length is a u32)."""

ENCODED: Final = b"1"
"""Marker value of a store whose actor values carry this module's tag (format 1)."""
LEGACY: Final = b"0"
"""Marker value of a store written before value encoding existed: values are raw."""


class AllocationUnit(NamedTuple):
    """How a store allocates a value of ``n`` bytes: ``ceil((n + overhead) / size)``
    units of ``size`` bytes."""

    size: int
    overhead: int

    def units(self, nbytes: int) -> int:
        return -(-(nbytes + self.overhead) // self.size)


LMDB_PAGE: Final = AllocationUnit(4096, 16)
"""A value past LMDB's inline limit takes overflow pages of 4096 bytes after a 16-byte
page header (a 4097-byte value: two pages; one of up to 4080 bytes: one)."""
REDIS_ALLOCATION: Final = AllocationUnit(1024, 6)
"""Redis keeps a hash value as an sds string (5-byte header and a NUL for these sizes)
in a jemalloc allocation, whose size classes are 1 KiB apart from 4 to 8 KiB (512 bytes
from 2 to 4): a 4097-byte value takes 5 KiB, one of up to 4090 bytes 4 KiB."""


class ValueCodec:
    """Encode values for storage and decode them back (tagged format, see the module).

    :param compress: store values compressed when that pays (see the module); with
        ``False`` every value is stored tagged raw. Either way every tagged value is
        decoded, so stores written with either setting read the same.
    :param unit: how the store allocates values: a compressed form that needs fewer
        units than the raw form is kept even when it saves less than 1/32 of the value.
        ``None``: bytes alone decide.
    """

    tagged = True
    """Whether stored values carry the tag (``False`` only for :data:`PLAIN`)."""

    def __init__(self, compress: bool = True, *, unit: AllocationUnit | None = None) -> None:
        self.compress = compress
        self.unit = unit

    def __repr__(self) -> str:
        return f"ValueCodec(compress={self.compress}, unit={self.unit})"

    @staticmethod
    def lz4_form(value: bytes) -> bytes | None:
        """``value``'s compressed form (a function of ``value`` only), or ``None`` for a
        value this format never stores compressed (shorter than
        :data:`MIN_COMPRESS_BYTES`, or longer than a u32 length describes)."""
        size = len(value)
        if size < MIN_COMPRESS_BYTES or size > MAX_DECODED_BYTES:
            return None
        block: bytes = lz4.block.compress(value, mode="default", store_size=False)
        return _LZ4_HEAD.pack(TAG_LZ4, size) + block

    def _pays(self, raw: int, packed: int) -> bool:
        if packed <= raw - (raw >> 5):
            return True
        unit = self.unit
        return unit is not None and packed <= raw and unit.units(packed) < unit.units(raw + 1)

    def encode(self, value: bytes) -> bytes:
        """``value`` as stored: compressed when that pays and :attr:`compress`, else raw."""
        if self.compress:
            packed = self.lz4_form(value)
            if packed is not None and self._pays(len(value), len(packed)):
                return packed
        return b"\x00" + value

    def decode(self, stored: bytes) -> bytes:
        """The value :meth:`encode` was given.

        :raises KVCorruptValueError: ``stored`` is not a value of this format.
        """
        if not stored:
            raise KVCorruptValueError("stored value is empty: not a tagged value (corrupt store?)")
        tag = stored[0]
        if tag == TAG_RAW:
            return stored[1:]
        if tag == TAG_LZ4 and len(stored) >= _LZ4_HEAD.size:
            (size,) = struct.unpack_from(">I", stored, 1)
            try:
                value: bytes = lz4.block.decompress(memoryview(stored)[_LZ4_HEAD.size:], uncompressed_size=size)
            except lz4.block.LZ4BlockError as exc:
                raise KVCorruptValueError(f"stored LZ4 value of {len(stored)} bytes does not decode: {exc}") from exc
            if len(value) != size:
                raise KVCorruptValueError(f"stored LZ4 value decodes to {len(value)} bytes, not the recorded {size}")
            return value
        raise KVCorruptValueError(f"stored value of {len(stored)} bytes has unknown tag {tag} (corrupt store, or "
                                  "written by a newer actor-db?)")

    def decode_optional(self, stored: bytes | None) -> bytes | None:
        """:meth:`decode`, passing ``None`` (a missing key) through."""
        return None if stored is None else self.decode(stored)


class _PlainCodec(ValueCodec):
    """The identity: values of a store written before value encoding are stored raw."""

    tagged = False

    def __init__(self) -> None:
        super().__init__(compress=False)

    def __repr__(self) -> str:
        return "PLAIN"

    @staticmethod
    def lz4_form(value: bytes) -> bytes | None:
        return None

    def encode(self, value: bytes) -> bytes:
        return value

    def decode(self, stored: bytes) -> bytes:
        return stored

    def decode_optional(self, stored: bytes | None) -> bytes | None:
        return stored


PLAIN: Final[ValueCodec] = _PlainCodec()
"""The codec of a legacy store (marker :data:`LEGACY`): values as they are."""


def codec_for_marker(marker: bytes, compress: bool, unit: AllocationUnit | None = None) -> ValueCodec:
    """The codec a store's marker value asks for.

    :raises KVCorruptValueError: a marker of a format this version does not know.
    """
    if marker == ENCODED:
        return ValueCodec(compress, unit=unit)
    if marker == LEGACY:
        return PLAIN
    raise KVCorruptValueError(f"store value-encoding marker {marker!r} is not one this actor-db knows "
                              f"({ENCODED!r}, {LEGACY!r}): written by a newer version?")
