"""Issue 11, items 5 and 6: nothing hangs and no error is confusing.

- Actor call cycles (``A -> B -> A``, through tasks, through ``on_wake``, an action
  putting its own actor to sleep) fail at once with ``ActorCallCycleError`` naming the
  chain, instead of hanging forever; calls that are not cycles still work.
- A too-long actor key fails when its view is made (``ActorKeyTooLongError``, a
  ``KVLimitError``) naming its length and the longest the store takes; a key that is
  not valid Unicode fails with ``InvalidActorKeyError`` instead of a raw
  ``UnicodeEncodeError``.
- Being fenced out while waking (creating, migrating, or dropping an earlier writer's
  staging) surfaces as ``FencedError``, not as ``apsw.IOError``.
- State that would not come back the same from JSON (``{1: 'x'}``, tuples, sets, NaN)
  is refused at commit with ``StateError`` naming the path; the action fails and
  nothing committed is lost.

Each case runs on every driver (``store``) and, where a database is involved, on both
VFSes (``vfs_kind``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
from typing import Any, Awaitable, Callable, TypeVar

import pytest

import actor_db
import vfs
from actor_db.errors import (
    ActorCallCycleError, ActorDBError, ActorKeyTooLongError, ConfigurationError, FencedError,
    InvalidActorKeyError, KVLimitError, StateError,
)
from actor_db.kv import KVStore, MemoryKV
from actor_db.kv.namespace import ACTOR_KEY_ROOM, max_actor_id_bytes
from actor_db.runtime import keys as runtime_keys
from actor_db.runtime.state import PersistedState, find_non_json
from tests.runtime_support import HookedStore, actor_keys, run
from vfs import keys as vfs_keys
from vfs import redo
from vfs.protocol import KVLimits, WriteBatch

log = logging.getLogger(__name__)

T = TypeVar("T")

DEADLINE_S = 5.0
"""A call cycle must fail well within this; today's code hangs (the test then fails)."""


def within(coro: Awaitable[T]) -> Awaitable[T]:
    """``coro`` bounded by :data:`DEADLINE_S` (a hang fails the test instead of blocking it)."""
    return asyncio.wait_for(coro, DEADLINE_S)


@pytest.fixture
def runtime_vfs(vfs_kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the runtime open its databases with VFS ``vfs_kind``."""
    monkeypatch.setattr(vfs, "connect", functools.partial(vfs.connect, vfs=vfs_kind))
    return vfs_kind


# ---------------------------------------------------------------------------- item 5: call cycles

def pair_type(handles: dict[str, actor_db.ActorHandle], **kwargs: Any) -> actor_db.runtime.ActorDefinition:
    """Actors that call each other: ``hop(path)`` calls ``path[0]`` with ``path[1:]``."""
    t = actor_db.actor("pair", state=lambda: {"hops": 0}, **kwargs)

    @t.action
    async def hop(c: actor_db.Context, path: list[str]) -> list[str]:
        c.state["hops"] += 1
        if not path:
            return [c.key]
        return [c.key] + list(await handles[path[0]].call("hop", path[1:]))

    @t.action
    async def hop_in_task(c: actor_db.Context, path: list[str]) -> list[str]:
        # The chain must follow the call into a task the action starts and awaits.
        results = await asyncio.gather(handles[path[0]].call("hop", path[1:]))
        return [c.key] + list(results[0])

    @t.action
    def hops(c: actor_db.Context) -> int:
        return int(c.state["hops"])

    return t


def test_two_actor_call_cycle_fails_at_once_naming_the_chain(store: KVStore) -> None:
    handles: dict[str, actor_db.ActorHandle] = {}

    async def main() -> None:
        registry = actor_db.Registry([pair_type(handles)], kv=store)
        for key in "abc":
            handles[key] = registry.get_or_create("pair", key=key)
        assert await within(handles["a"].call("hop", ["b"])) == ["a", "b"]
        # Detected, not waited out: without detection this call deadlocks, and
        # within() turns a hang into a failure (a guard, not a timing measurement).
        with pytest.raises(ActorCallCycleError) as info:
            await within(handles["a"].call("hop", ["b", "a"]))
        assert isinstance(info.value, ActorDBError)
        assert info.value.chain == ("pair/a", "pair/b", "pair/a")
        assert "pair/a -> pair/b -> pair/a" in str(info.value)
        # A longer cycle names every actor on it.
        with pytest.raises(ActorCallCycleError, match="pair/a -> pair/b -> pair/c -> pair/b"):
            await within(handles["a"].call("hop", ["b", "c", "b"]))
        # Every action on a failed chain rolled back; the actors still work.
        assert [await handles[k].call("hops") for k in "abc"] == [1, 1, 0]
        assert await within(handles["b"].call("hop", ["a"])) == ["b", "a"]  # the reverse order is no cycle
        await registry.close()

    run(main())


def test_call_cycle_through_a_task_and_through_on_wake() -> None:
    handles: dict[str, actor_db.ActorHandle] = {}

    async def on_wake(c: actor_db.Context) -> None:
        if c.key == "w":  # waking w calls back into whoever woke it
            await handles["a"].call("hops")

    async def main() -> None:
        registry = actor_db.Registry([pair_type(handles, on_wake=on_wake)], kv=MemoryKV())
        for key in "abw":
            handles[key] = registry.get_or_create("pair", key=key)
        with pytest.raises(ActorCallCycleError) as info:
            await within(handles["a"].call("hop_in_task", ["b", "a"]))
        assert info.value.chain == ("pair/a", "pair/b", "pair/a")
        with pytest.raises(ActorCallCycleError) as info:
            await within(handles["a"].call("hop", ["w"]))  # w's on_wake calls a
        assert info.value.chain == ("pair/a", "pair/w", "pair/a")
        assert await within(handles["b"].call("hop", ["a"])) == ["b", "a"]
        await registry.close()

    run(main())


def test_self_call_and_own_sleep_are_cycles_and_keep_the_old_contract() -> None:
    holder: dict[str, actor_db.ActorHandle] = {}
    t = actor_db.actor("selfish", state=lambda: {"n": 0})

    @t.action
    async def call_self(c: actor_db.Context) -> None:
        c.state["n"] += 1
        await holder["h"].call("n")

    @t.action
    async def sleep_self(c: actor_db.Context) -> None:
        await holder["h"].sleep()

    @t.action
    async def destroy_self(c: actor_db.Context) -> None:
        await holder["h"].destroy()

    @t.action
    def n(c: actor_db.Context) -> int:
        return int(c.state["n"])

    async def main() -> None:
        registry = actor_db.Registry([t], kv=MemoryKV())
        holder["h"] = registry.get_or_create("selfish", key="s")
        with pytest.raises(ActorCallCycleError, match="deadlock") as info:  # the old message still matches
            await within(holder["h"].call("call_self"))
        assert info.value.chain == ("selfish/s", "selfish/s")
        with pytest.raises(ActorCallCycleError, match=r"selfish/s -> selfish/s: sleep"):
            await within(holder["h"].call("sleep_self"))
        with pytest.raises(ActorCallCycleError, match=r"selfish/s -> selfish/s: destroy"):
            await within(holder["h"].call("destroy_self"))
        assert await holder["h"].call("n") == 0
        assert holder["h"].metrics()["status"] == "awake"
        await registry.close()

    run(main())


def test_calls_that_are_not_cycles_still_work() -> None:
    """A diamond (a calls b and c, both call d) and a task that outlives the action
    that started it: the chain holds only actors still busy on it."""
    handles: dict[str, actor_db.ActorHandle] = {}
    later: list[asyncio.Task[Any]] = []
    t = pair_type(handles)

    @t.action
    async def diamond(c: actor_db.Context) -> list[list[str]]:
        return list(await asyncio.gather(handles["b"].call("hop", ["d"]), handles["c"].call("hop", ["d"])))

    @t.action
    async def call_me_later(c: actor_db.Context) -> None:
        async def after() -> list[list[str]]:
            await gate.wait()
            # This actor (directly, and through b) once the action that started the task is over.
            return [list(await handles[c.key].call("hop", [])), list(await handles["b"].call("hop", [c.key]))]

        later.append(asyncio.create_task(after()))

    gate = asyncio.Event()

    async def main() -> None:
        registry = actor_db.Registry([t], kv=MemoryKV())
        for key in "abcd":
            handles[key] = registry.get_or_create("pair", key=key)
        assert await within(handles["a"].call("diamond")) == [["b", "d"], ["c", "d"]]
        await within(handles["a"].call("call_me_later"))
        gate.set()  # the task started inside a's action calls a after that action returned
        assert await within(later[0]) == [["a"], ["b", "a"]]
        await registry.close()

    run(main())


# ---------------------------------------------------------------------------- item 6: actor keys

def keyed_type() -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("t", state=lambda: {"n": 0}, db=actor_db.db(migrations=["CREATE TABLE x (v)"]))

    @t.action
    async def add(c: actor_db.Context, v: int) -> int:
        await c.db.execute("INSERT INTO x VALUES (?)", v)
        c.state["n"] += 1
        return int((await c.db.execute("SELECT count(*) FROM x"))[0][0])

    return t


def test_actor_key_room_covers_every_key_an_actor_stores() -> None:
    vfs_longest = max(len(k) for k in (
        vfs_keys.meta_key(vfs_keys.FILE_MAIN), vfs_keys.chunk_key(vfs_keys.FILE_SHM, vfs_keys.MAX_CHUNK_INDEX),
        vfs_keys.staged_key(vfs_keys.FILE_MAIN, vfs_keys.MAX_CHUNK_INDEX), vfs_keys.COMMIT_RECORD_KEY,
        *vfs_keys.chunk_range(vfs_keys.FILE_SHM), *vfs_keys.staged_range(),
        vfs_keys.history_delta_key(2**64 - 1, vfs_keys.MAX_CHUNK_INDEX),
        vfs_keys.history_base_key(2**64 - 1, vfs_keys.MAX_CHUNK_INDEX), *vfs_keys.HISTORY_RANGE))
    runtime_longest = max(len(k) for k in (
        runtime_keys.STATE_KEY, runtime_keys.CONNECTIONS_RANGE.start, runtime_keys.CONNECTIONS_RANGE.end,
        runtime_keys.WORKFLOWS_RANGE.start, runtime_keys.WORKFLOWS_RANGE.end))
    assert vfs_longest == 16  # the history's chunk keys (8 for chunk keys)
    assert ACTOR_KEY_ROOM >= max(vfs_longest, runtime_longest)


def test_too_long_actor_key_fails_at_once_naming_the_limits(store: KVStore, runtime_vfs: str) -> None:
    driver_limit = store.limits.max_key_bytes
    longest = max_actor_id_bytes(driver_limit) - len("t/")
    name = type(store).__name__

    async def main() -> None:
        registry = actor_db.Registry([keyed_type()], kv=store)
        # The longest accepted key works end to end: create, commit, sleep, wake.
        handle = registry.get_or_create("t", key="k" * longest)
        assert await handle.call("add", 1) == 1
        await handle.sleep()
        assert await handle.call("add", 2) == 2
        for length in {longest + 1, 10_000} if longest < 10_000 else {longest + 1}:
            with pytest.raises(ActorKeyTooLongError) as info:
                registry.get_or_create("t", key="k" * length)
            error = info.value
            assert isinstance(error, KVLimitError) and isinstance(error, InvalidActorKeyError)
            assert (error.length, error.max_length, error.driver_limit) == (length, longest, driver_limit)
            message = str(error)
            assert message.startswith(f"actor key of {length} bytes is too long for {name}: ")
            assert message.endswith(f"so actor keys (of type 't') to {longest} bytes")
            if driver_limit is not None:
                assert f"its keys are limited to {driver_limit} bytes" in message
        await registry.close()

    run(main())
    # The store-level view refuses the id when it is made, not at its first key.
    with pytest.raises(ActorKeyTooLongError, match=f"actor id of {longest + 3} bytes is too long for {name}"):
        store.actor("t/" + "k" * (longest + 1))


def test_store_view_refuses_an_id_leaving_no_room_for_keys() -> None:
    store = MemoryKV(KVLimits(max_key_bytes=28))
    assert store.actor("a" * 9).get_many([vfs_keys.history_delta_key(1, 7)]) == [None]  # 3 + 9 + 16 = 28
    with pytest.raises(ActorKeyTooLongError) as info:
        store.actor("a" * 10)
    assert str(info.value) == ("actor id of 10 bytes is too long for MemoryKV: its keys are limited to 28 bytes, "
                               "so actor ids to 9 bytes")
    with pytest.raises(ActorKeyTooLongError, match="actor ids to 0 bytes"):
        MemoryKV(KVLimits(max_key_bytes=13)).actor("a")


def test_actor_key_that_is_not_valid_unicode_is_refused_clearly(store: KVStore) -> None:
    async def main() -> None:
        registry = actor_db.Registry([keyed_type()], kv=store)
        with pytest.raises(InvalidActorKeyError) as info:
            registry.get_or_create("t", key="a\udc80")
        error = info.value
        assert isinstance(error, ConfigurationError) and isinstance(error, ValueError)
        assert not isinstance(error, UnicodeError)
        assert "actor key 'a\\udc80' is not valid Unicode" in str(error)
        assert "encodable as UTF-8" in str(error)
        with pytest.raises(InvalidActorKeyError, match="actor key must be a str, not int"):
            registry.get_or_create("t", key=7)  # type: ignore[arg-type]
        assert await registry.get_or_create("t", key="ok \u00e9\U0001f600").call("add", 1) == 1
        await registry.close()

    run(main())
    with pytest.raises(InvalidActorKeyError, match="actor id 't/\\\\ud800x' is not valid Unicode"):
        store.actor("t/\ud800x")
    assert store.actor_ids() == ["t/ok \u00e9\U0001f600"]  # nothing else was created


# ---------------------------------------------------------------------------- item 6: fenced while waking

def steal_on_first_write(hooked: HookedStore, actor_id: str) -> dict[str, int]:
    """Make another runtime take ``actor_id`` over just before this runtime's first write
    to it (the write then carries a stale token). Returns a counter of steals."""
    stolen = {"n": 0}

    def hook(op: str, actor: str | None, payload: Any) -> None:
        if op == "write" and actor == actor_id and stolen["n"] == 0:
            stolen["n"] += 1
            hooked.inner.actor(actor_id).acquire_ownership()

    hooked.hook = hook
    return stolen


def test_fenced_while_creating_the_actor_raises_fenced_error(store: KVStore, runtime_vfs: str) -> None:
    hooked = HookedStore(store)
    stolen = steal_on_first_write(hooked, "t/new")

    async def main() -> None:
        registry = actor_db.Registry([keyed_type()], kv=hooked)
        handle = registry.get_or_create("t", key="new")
        with pytest.raises(FencedError) as info:
            await handle.call("add", 1)
        assert stolen["n"] == 1
        # what refused the write, kept as the cause: the driver's FencedError (the output
        # gate's write at the end of the start)
        assert isinstance(info.value.__cause__, FencedError)
        assert "while waking actor t/new" in str(info.value)
        assert handle.metrics()["status"] == "asleep"
        assert actor_keys(store, "t/new") == []  # nothing of the fenced creation landed
        # The next call takes ownership again and creates the actor.
        assert await handle.call("add", 2) == 1
        await registry.close()

    run(main())


def test_fenced_while_migrating_at_wake_raises_fenced_error(store: KVStore, runtime_vfs: str) -> None:
    def typed(migrations: list[str]) -> actor_db.runtime.ActorDefinition:
        t = actor_db.actor("t", state=lambda: {"n": 0}, db=actor_db.db(migrations=migrations))

        @t.action
        async def tables(c: actor_db.Context) -> list[str]:
            rows = await c.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            return [r[0] for r in rows]

        return t

    async def main() -> None:
        first = actor_db.Registry([typed(["CREATE TABLE one (v)"])], kv=store)
        assert await first.get_or_create("t", key="m").call("tables") == ["one"]
        await first.close()
        hooked = HookedStore(store)
        stolen = steal_on_first_write(hooked, "t/m")
        second = actor_db.Registry([typed(["CREATE TABLE one (v)", "CREATE TABLE two (v)"])], kv=hooked)
        handle = second.get_or_create("t", key="m")
        with pytest.raises(FencedError):
            await handle.call("tables")
        assert stolen["n"] == 1 and handle.metrics()["status"] == "asleep"
        assert await handle.call("tables") == ["one", "two"]
        await second.close()

    run(main())


def test_fenced_with_an_earlier_writers_staging_left_raises_fenced_error(store: KVStore, runtime_vfs: str) -> None:
    """The issue's case: an interrupted large transaction left staging (no commit point);
    whoever drops it (the wake, or the first commit) is fenced: ``FencedError``."""

    async def main() -> None:
        first = actor_db.Registry([keyed_type()], kv=store)
        assert await first.get_or_create("t", key="s").call("add", 1) == 1
        await first.close()
        leftovers = WriteBatch()
        leftovers.put(vfs_keys.COMMIT_RECORD_KEY, redo.STAGING_MARKER)
        leftovers.put(vfs_keys.staged_key(vfs_keys.FILE_MAIN, 5), bytes(vfs_keys.CHUNK_SIZE))
        store.actor("t/s").write(leftovers)
        hooked = HookedStore(store)
        stolen = steal_on_first_write(hooked, "t/s")
        second = actor_db.Registry([keyed_type()], kv=hooked)
        handle = second.get_or_create("t", key="s")
        with pytest.raises(FencedError):
            await handle.call("add", 2)
        assert stolen["n"] == 1 and handle.metrics()["status"] == "asleep"
        assert await handle.call("add", 3) == 2  # the fenced commit (2) was never applied
        await second.close()

    run(main())


# ---------------------------------------------------------------------------- item 6: non-JSON state

def stateful_type(initial: Callable[[], Any] = lambda: {"n": 0}) -> actor_db.runtime.ActorDefinition:
    t = actor_db.actor("st", state=initial, db=actor_db.db(migrations=["CREATE TABLE x (v)"]))

    @t.action
    async def put(c: actor_db.Context, key: Any, value: Any, as_tuple: bool = False) -> None:
        await c.db.execute("INSERT INTO x VALUES (?)", repr(value))
        c.state[key] = tuple(value) if as_tuple else value

    @t.action
    async def replace(c: actor_db.Context, value: Any) -> None:
        await c.db.execute("INSERT INTO x VALUES ('replace')")
        c.state = value

    @t.action
    async def snapshot(c: actor_db.Context) -> tuple[Any, int]:
        return c.state, int((await c.db.execute("SELECT count(*) FROM x"))[0][0])

    return t


BAD_STATES: list[tuple[Callable[[], Any], str, str]] = [
    (lambda: {1: "x"}, "state[1]", "key is int, not str"),
    (lambda: {"tup": (1, 2)}, "state['tup']", "tuple is not a JSON type"),
    (lambda: {"a": [1, {2: 3}]}, "state['a'][1][2]", "key is int, not str"),
    (lambda: {"s": {1, 2}}, "state['s']", "set is not a JSON type"),
    (lambda: {"b": b"raw"}, "state['b']", "bytes is not a JSON type"),
    (lambda: {"f": [0.5, math.nan]}, "state['f'][1]", "float nan is not allowed in JSON"),
    (lambda: {None: 1}, "state[None]", "key is NoneType, not str"),
]


def test_find_non_json_names_the_path() -> None:
    for make, path, reason in BAD_STATES:
        found = find_non_json(make())
        assert found is not None and found[0] == path and reason in found[1], (path, found)
    assert find_non_json({"a": [1, 2.5, "x", None, True, {"b": []}]}) is None
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert find_non_json({"c": cyclic}) == ("state['c'][0]", "list contains itself (a cycle)")
    shared = [1]
    assert find_non_json({"a": shared, "b": shared, "c": (1,)}) == ("state['c']", "tuple is not a JSON type "
                                                                    "(it would come back as a list; use a list)")


def test_non_json_state_is_refused_at_commit_and_nothing_is_lost(store: KVStore, runtime_vfs: str) -> None:
    async def main() -> None:
        registry = actor_db.Registry([stateful_type()], kv=store)
        handle = registry.get_or_create("st", key="k")
        await handle.call("put", "good", [1, 2])
        committed = ({"n": 0, "good": [1, 2]}, 1)
        assert await handle.call("snapshot") == committed
        for make, path, reason in BAD_STATES:
            value = make()
            with pytest.raises(StateError) as info:
                await handle.call("replace", value)
            assert info.value.path == path
            assert f"{path}: {reason}" in str(info.value) and "actor st/k" in str(info.value)
            assert isinstance(info.value, TypeError) and isinstance(info.value, ActorDBError)
            assert await handle.call("snapshot") == committed  # state and database rolled back
        # The bytes equal the saved ones, but a tuple would come back as a list: refused.
        with pytest.raises(StateError, match=r"state\['good'\]: tuple is not a JSON type"):
            await handle.call("put", "good", [1, 2], True)
        assert await handle.call("snapshot") == committed
        await handle.sleep()
        assert await handle.call("snapshot") == committed
        await registry.close()

    run(main())


def test_non_json_initial_state_creates_nothing(store: KVStore, runtime_vfs: str) -> None:
    async def main() -> None:
        registry = actor_db.Registry([stateful_type(lambda: {1: "x", "tup": (1, 2)})], kv=store)
        handle = registry.get_or_create("st", key="bad")
        with pytest.raises(StateError, match=r"state\[1\]: key is int, not str"):
            await handle.call("snapshot")
        assert actor_keys(store, "st/bad") == []
        await registry.close()

    run(main())


def test_state_check_decodes_only_new_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strict check stays cheap: an unchanged state is never decoded again, a changed
    one once per new encoding (however many times the commit path asks)."""
    state = PersistedState.new("st", "k", {"items": [{"id": i, "name": f"n{i}"} for i in range(1000)]})
    raw = state.encode()
    state.mark_saved(raw)
    decodes = {"n": 0}
    real_loads = json.loads

    def counting_loads(*args: Any, **kwargs: Any) -> Any:
        decodes["n"] += 1
        return real_loads(*args, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    for _ in range(100):
        assert state.pending() is None
    assert decodes["n"] == 0  # the check's copy came from encode(): nothing to decode
    state.value["items"].append({"id": -1})
    for _ in range(3):  # end_action, the commit hook, after the commit
        changed = state.pending()
    assert changed is not None and decodes["n"] == 1
    state.mark_saved(changed)
    assert state.pending() is None and decodes["n"] == 1
    state.value["items"][0]["id"] = (1,)
    with pytest.raises(StateError, match=r"state\['items'\]\[0\]\['id'\]: tuple"):
        state.pending()
