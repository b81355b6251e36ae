"""The keeper's writer hands a store everything queued at once when the store can take it
(`put_many`: one Redis round trip), so a busy process's writes keep up with its turns."""

from __future__ import annotations

import trio

from rawproxy.core.reasoning import Reasoning
from rawproxy.store.keeper import ReasoningKeeper


class RoundTripStore:
    """A store whose every call costs one network round trip (10 ms)."""

    def __init__(self, batches: bool) -> None:
        self.hits = self.misses = 0
        self.round_trips = 0
        self.data: dict[str, Reasoning] = {}
        if batches:
            self.put_many = self._put_many

    async def get_many(self, keys):
        return {k: self.data[k] for k in keys if k in self.data}

    async def put(self, key: str, value: Reasoning) -> None:
        self.round_trips += 1
        await trio.sleep(0.01)
        self.data[key] = value

    async def _put_many(self, items: list[tuple[str, Reasoning]]) -> None:
        self.round_trips += 1
        await trio.sleep(0.01)
        self.data.update(items)

    async def aclose(self) -> None:
        pass


async def _remember(store: RoundTripStore, turns: int) -> None:
    keeper = ReasoningKeeper(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        view = keeper.scoped("tenant")
        for i in range(turns):  # a burst: queued faster than one write takes
            await view.put(f"turn{i}", Reasoning(f"reasoning {i}"))
        await keeper.aclose()  # writes what is queued, then stops the writer


async def test_a_burst_of_turns_reaches_a_batching_store_in_few_round_trips():
    store = RoundTripStore(batches=True)
    await _remember(store, 100)
    assert len(store.data) == 100 and store.data["tenant:turn99"] == Reasoning("reasoning 99")
    assert store.round_trips <= 3  # 100 turns, at most 64 a call


async def test_a_store_without_put_many_still_gets_every_turn_one_by_one():
    store = RoundTripStore(batches=False)
    await _remember(store, 20)
    assert len(store.data) == 20 and store.round_trips == 20


async def test_a_miss_on_a_shared_store_waits_briefly_for_a_write_in_flight():
    """Another replica answered the turn and its write lands a moment later: the recall
    still finds it, within the recall's time limit; a memory store is not waited on."""
    from rawproxy.core.reasoning import Reasoning
    from rawproxy.store.keeper import ReasoningKeeper
    from rawproxy.store.memory import MemoryReasoningStore

    class LateSharedStore(MemoryReasoningStore):
        shared = True

    store = LateSharedStore(1 << 20, 60.0)
    keeper = ReasoningKeeper(store)

    async def other_replica_writes_late() -> None:
        await trio.sleep(0.03)
        await store.put("t:turn", Reasoning("real reasoning"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_replica_writes_late)
        assert await keeper.recall(["t:turn"]) == {"t:turn": Reasoning("real reasoning")}

    plain = ReasoningKeeper(MemoryReasoningStore(1 << 20, 60.0))
    started = trio.current_time()
    assert await plain.recall(["t:other"]) == {}
    assert trio.current_time() - started < 0.01
