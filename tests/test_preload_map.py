""":class:`vfs.preload.PreloadMap`'s coverage: what :meth:`~PreloadMap.covers` answers,
what a partial clear keeps, and that equal coverage is shared between maps (issue 23:
fewer objects the garbage collector tracks per awake actor)."""

from __future__ import annotations

from vfs.preload import ABSENT, NOT_LOADED, PreloadMap, build_preload
from vfs.protocol import KeyRange


def _map(tail: bytes = b"") -> PreloadMap:
    return build_preload(
        [b"\x01"], {b"\x01": b"state"},
        [(KeyRange(b"\x02", b"\x03"), [], True),  # complete and empty
         (KeyRange(b"\x08", b"\x09"), [(b"\x08\x00", b"a"), (b"\x08\x05" + tail, b"b")], False)])  # partial


def test_covers_whole_ranges_and_exact_keys_only() -> None:
    m = _map()
    assert m.covers(b"\x02", b"\x03") and m.covers(b"\x02\x10", b"\x02\x20")
    assert m.covers(b"\x08", b"\x08\x05\x00")  # up to the last kept key
    assert not m.covers(b"\x08", b"\x09")  # beyond it: not preloaded
    assert m.covers(b"\x01", b"\x01\x00") and not m.covers(b"\x01", b"\x02")  # an exact key as a one-key range
    for start, end in ((b"\x02", b"\x03"), (b"\x08", b"\x09"), (b"\x01", b"\x01\x00"), (b"\x05", b"\x06")):
        assert m.covers(start, end) == any(r.start <= start and end <= r.end for r in m.covered_ranges())


def test_a_partial_clear_keeps_what_it_does_not_touch() -> None:
    m = _map()
    m.clear(b"\x08", b"\x09")
    assert m.lookup(b"\x08\x00") is NOT_LOADED and m.lookup(b"\x02\x01") is ABSENT and m.lookup(b"\x01") == b"state"
    assert m.covers(b"\x02", b"\x03") and not m.covers(b"\x08", b"\x08\x01")
    m.clear()
    assert m.lookup(b"\x01") is NOT_LOADED and m.covered_ranges() == []


def test_equal_coverage_is_shared_between_maps() -> None:
    a, b = _map().without_prefix(b""), _map().without_prefix(b"")
    assert a._exact is b._exact and a._covered is b._covered
    assert all(x is y for x, y in zip(a.covered_ranges()[1:], b.covered_ranges()[1:]))
    c = _map(tail=b"\x01")  # another partial range: its own coverage
    assert c._covered is not a._covered and c.covers(b"\x08", b"\x08\x05\x01\x00")
