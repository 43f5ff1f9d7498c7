"""The per-action fast paths keep behaviour exact.

- An unchanged state is recognised without encoding it (``same_json``), but any change
  the JSON encoding would show (a type, a key order, a float zero's sign) is saved.
- ``PreloadMap.update_many`` is ``update`` for each key (values and listeners).
- A write action still costs exactly one KV write, a cached read none, and a state change
  made in a write action rides in that same write.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import actor_db
from actor_db.kv import MemoryKV
from actor_db.runtime.state import FAST_CHECK_NODES, PersistedState, same_json
from vfs.preload import ABSENT, NOT_LOADED, PreloadMap
from vfs.protocol import KeyRange
from tests.runtime_support import run


class _Str(str):
    pass


class _Int(int):
    pass


@pytest.mark.parametrize("live, saved, expected", [
    ({"n": 0}, {"n": 0}, True),
    ([1, [2, {"x": None, "y": "s"}], 0.5], [1, [2, {"x": None, "y": "s"}], 0.5], True),
    ({"n": True}, {"n": 1}, False),
    ({"n": 1}, {"n": True}, False),
    ({"n": 1.0}, {"n": 1}, False),
    ({"n": 0.0}, {"n": -0.0}, False),
    ({"n": -0.0}, {"n": -0.0}, True),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, False),  # same dict, another encoding
    ({"n": (1, 2)}, {"n": [1, 2]}, False),
    ({"n": float("nan")}, {"n": float("nan")}, False),
    ({1: "x"}, {"1": "x"}, False),
    ({_Str("k"): 1}, {"k": 1}, False),
    ({"k": _Int(1)}, {"k": 1}, False),
    ({"k": [1, 2]}, {"k": [1, 2, 3]}, False),
    ({"k": {}}, {"k": {"a": 1}}, False),
    (None, None, True),
    ("s", "s", True),
])
def test_same_json(live: Any, saved: Any, expected: bool) -> None:
    assert same_json(live, saved) is expected


def test_same_json_gives_up_past_its_budget() -> None:
    big = list(range(FAST_CHECK_NODES + 1))
    assert same_json(big, list(big)) is None
    assert same_json(big[:FAST_CHECK_NODES], big[:FAST_CHECK_NODES]) is True


def _saved(value: Any) -> PersistedState:
    state = PersistedState.new("t", "k", value)
    state.mark_saved(state.encode())
    return state


@pytest.mark.parametrize("change", [
    lambda s: s.__setitem__("n", True),
    lambda s: s.__setitem__("n", 1.0),
    lambda s: s.__setitem__("f", -0.0),
    lambda s: s.update({"n": s.pop("n")}),  # the same dict with its keys in another order
    lambda s: s["l"].append(None),
])
def test_every_encoded_change_is_saved(change: Any) -> None:
    state = _saved({"n": 1, "f": 0.0, "l": []})
    assert state.pending() is None
    change(state.value)
    raw = state.pending()
    assert raw is not None and raw == state._dumps()
    assert json.loads(raw)["state"] == state.value
    state.mark_saved(raw)
    assert state.pending() is None


def test_fast_path_matches_the_encoding_path() -> None:
    """Whatever the state, ``pending()`` answers as an encoding would: ``None`` exactly
    when the encoding equals the saved bytes."""
    values = [{"n": 0}, {"n": 0, "s": "x"}, {"n": [1, 2.5, None]}, {"n": 1}, {"n": True},
              {"s": "x", "n": 0}, {"n": 0.0}, {"n": -0.0}, {"n": [1, 2.5, None, {}]}]
    state = _saved(values[0])
    for value in values * 2:
        state.value = json.loads(json.dumps(value))
        expected_changed = state._dumps() != state.saved
        raw = state.pending()
        assert (raw is not None) == expected_changed, value
        if raw is not None:
            state.mark_saved(raw)


def test_large_state_takes_the_encoding_path() -> None:
    state = _saved({"items": list(range(FAST_CHECK_NODES * 2))})
    assert state.pending() is None
    assert state._walk is False  # found too large once: not walked again
    state.value["items"][-1] = -1
    assert state.pending() is not None


def test_stored_record_in_another_encoding_is_rewritten_once() -> None:
    """A record not in this runtime's encoding (e.g. written with spaces) is not
    trusted by the fast path: the first save writes the canonical bytes, as before."""
    raw = json.dumps({"v": 1, "type": "t", "key": "k", "created_ms": 5, "state": {"n": 0}}).encode()
    state = PersistedState.decode("t", "k", raw)
    canonical = state.pending()
    assert canonical is not None and canonical != raw and json.loads(canonical) == json.loads(raw)
    state.mark_saved(canonical)
    assert state.pending() is None


def test_adopted_record_is_checked_again() -> None:
    state = _saved({"n": 0})
    assert state.pending() is None
    other = PersistedState.new("t", "k", {"n": 0})
    other.created_ms = state.created_ms + 1
    state.adopt(other.encode())  # same state, another record (created_ms differs)
    assert state.pending() is not None  # the live record's encoding differs from the adopted bytes


def test_update_many_equals_update_per_key() -> None:
    def build() -> tuple[PreloadMap, list[tuple[bytes, bytes | None]]]:
        heard: list[tuple[bytes, bytes | None]] = []
        preload = PreloadMap({b"a": b"1", b"m": b"2"}, exact_keys=[b"a", b"z"], covered=[KeyRange(b"l", b"n")])
        preload.add_listener(lambda start, end: heard.append((start, end)))
        return preload, heard

    items = [(b"a", b"x"), (b"b", b"y"), (b"m", b"z"), (b"mm", b"w"), (b"z", b"v"), (b"q", b"u")]
    one, heard_one = build()
    for key, value in items:
        one.update(key, value)
    many, heard_many = build()
    many.update_many(items)
    for key in [b"a", b"b", b"m", b"mm", b"z", b"q", b"l", b"zz"]:
        assert one.lookup(key) == many.lookup(key), key
    assert many.lookup(b"b") is NOT_LOADED and many.lookup(b"l") is ABSENT
    assert heard_one == heard_many == [(k, k + b"\x00") for k in (b"a", b"m", b"mm", b"z")]


def test_write_action_costs_one_write_and_carries_a_state_change() -> None:
    t = actor_db.actor("c", state=lambda: {"n": 0},
                       db=actor_db.db(migrations=["CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER)"]),
                       idle_timeout_s=None)

    @t.action
    async def seed(c: actor_db.Context) -> None:
        await c.db.executemany("INSERT INTO items (n) VALUES (?)", [(0,)] * 3)

    @t.action
    async def write(c: actor_db.Context, row: int) -> None:
        await c.db.execute("UPDATE items SET n = n + 1 WHERE id = ?", row)

    @t.action
    async def write_and_flag(c: actor_db.Context, row: int, flag: Any) -> None:
        await c.db.execute("UPDATE items SET n = n + 1 WHERE id = ?", row)
        c.state["n"] = flag

    @t.action
    async def read(c: actor_db.Context, row: int) -> tuple[int, Any]:
        rows = await c.db.execute("SELECT n FROM items WHERE id = ?", row)
        return int(rows[0]["n"]), c.state["n"]

    async def main() -> None:
        store = MemoryKV()
        registry = actor_db.Registry([t], kv=store)
        h = registry.get_or_create("c", "k")
        await h.call("seed")
        for action, args in [("write", (1,)), ("write_and_flag", (2, 1)), ("write_and_flag", (2, True)),
                             ("write_and_flag", (3, 1.0)), ("write", (3,))]:
            before = h.metrics()["kv_round_trips"]
            await h.call(action, *args)
            assert h.metrics()["kv_round_trips"] - before == 1, action
        before = h.metrics()["kv_round_trips"]
        assert await h.call("read", 2) == (2, 1.0)
        assert h.metrics()["kv_round_trips"] - before == 0
        await h.sleep()  # re-open from the KV: the type of the last saved value survives
        got = await h.call("read", 3)
        assert got == (2, 1.0) and type(got[1]) is float
        await registry.close()

    run(main())
