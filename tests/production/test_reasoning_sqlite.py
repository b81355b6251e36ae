"""SQLiteReasoningStore on its own, and how the settings choose a store."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest
import trio

from rawproxy.core.reasoning import Reasoning, entry_size
from rawproxy.core.settings import ConfigError
from rawproxy.service.cli import load_settings
from rawproxy.store import MemoryReasoningStore, open_store
from rawproxy.store.sqlite import SQLiteReasoningStore


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored_sizes(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT coalesce(sum(size), 0) FROM reasoning").fetchone()[0]


async def test_round_trip_counts_and_survives_reopening(tmp_path):
    path = str(tmp_path / "r.sqlite3")
    store = SQLiteReasoningStore(path, max_bytes=1 << 20, ttl=3600)
    await store.put("turnA", Reasoning("thinking about A", "sig-A"))
    await store.put("turnB", Reasoning("thinking about B"))
    await store.put("turnB", Reasoning("thinking about B, again"))  # a second put replaces
    found = await store.get_many(["turnA", "turnB", "nope"])
    assert found == {"turnA": Reasoning("thinking about A", "sig-A"), "turnB": Reasoning("thinking about B, again")}
    assert (store.hits, store.misses) == (2, 1)
    assert await store.get_many([]) == {}
    assert store.total_bytes() == stored_sizes(path) == entry_size("turnA", found["turnA"]) + entry_size("turnB", found["turnB"])
    await store.aclose()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the user's data: owner only

    reopened = SQLiteReasoningStore(path, max_bytes=1 << 20, ttl=3600)
    assert await reopened.get_many(["turnA"]) == {"turnA": Reasoning("thinking about A", "sig-A")}
    await reopened.aclose()


async def test_entries_expire_and_are_swept(tmp_path):
    clock = Clock()
    store = SQLiteReasoningStore(str(tmp_path / "r.sqlite3"), max_bytes=1 << 20, ttl=10, clock=clock)
    await store.put("old", Reasoning("old thoughts"))
    clock.now += 5
    assert await store.get_many(["old"]) == {"old": Reasoning("old thoughts")}
    clock.now += 6  # 11 s after the put: past the 10 s ttl
    assert await store.get_many(["old"]) == {} and store.misses == 1
    assert store.count() == 1  # not returned, not yet deleted
    clock.now += 60  # the next put sweeps (at most once a minute)
    await store.put("new", Reasoning("new thoughts"))
    assert store.count() == 1 and store.total_bytes() == entry_size("new", Reasoning("new thoughts"))
    await store.aclose()


async def test_bounded_in_bytes_least_recently_used_go_first(tmp_path):
    clock = Clock()
    one = entry_size("k00", Reasoning("x" * 100))
    store = SQLiteReasoningStore(str(tmp_path / "r.sqlite3"), max_bytes=10 * one, ttl=1e9, clock=clock)
    for i in range(10):
        await store.put(f"k{i:02}", Reasoning("x" * 100))
        clock.now += 1
    assert store.total_bytes() == 10 * one and store.count() == 10
    clock.now += 120
    assert await store.get_many(["k00"])  # a hit long after the put makes k00 recent
    for i in range(10, 15):
        await store.put(f"k{i:02}", Reasoning("x" * 100))
        clock.now += 1
        assert store.total_bytes() <= 10 * one
    assert store.total_bytes() == stored_sizes(store.path)
    found = await store.get_many(f"k{i:02}" for i in range(15))
    assert "k14" in found and "k00" in found and "k01" not in found
    for i in range(15, 40):  # k00 is not touched again: it goes in its turn
        await store.put(f"k{i:02}", Reasoning("x" * 100))
        clock.now += 1
    found = await store.get_many(f"k{i:02}" for i in range(40))
    assert "k39" in found and "k00" not in found and store.total_bytes() <= 10 * one
    await store.put("huge", Reasoning("y" * 20 * one))  # larger than the whole store: not kept
    assert await store.get_many(["huge", "k39"]) == {"k39": Reasoning("x" * 100)}
    await store.aclose()


async def test_concurrent_puts_from_two_stores_on_one_file(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    a = SQLiteReasoningStore(path, max_bytes=1 << 24, ttl=3600)
    b = SQLiteReasoningStore(path, max_bytes=1 << 24, ttl=3600)

    async def writer(store, name):
        for i in range(150):
            await store.put(f"{name}{i}", Reasoning(f"{name} thought {i} " * 20))

    async with trio.open_nursery() as nursery:
        for store, name in ((a, "a"), (b, "b"), (a, "c"), (b, "d")):
            nursery.start_soon(writer, store, name)
    keys = [f"{n}{i}" for n in "abcd" for i in range(150)]
    for store in (a, b):
        found = await store.get_many(keys)
        assert len(found) == len(keys) and found["d149"] == Reasoning("d thought 149 " * 20)
    assert a.total_bytes() == b.total_bytes() == stored_sizes(path) == sum(entry_size(k, v) for k, v in found.items())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await a.aclose()
    await b.aclose()


async def test_a_failing_store_costs_the_reasoning_not_the_request(tmp_path):
    store = SQLiteReasoningStore(str(tmp_path / "r.sqlite3"), max_bytes=1 << 20, ttl=3600)
    await store.put("k", Reasoning("kept"))
    store.close()  # every call now raises sqlite3.ProgrammingError inside
    await store.put("k2", Reasoning("lost"))
    assert await store.get_many(["k", "k2"]) == {} and store.misses == 2


async def test_settings_choose_the_store(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    s = load_settings([], env)
    assert (s.workers, s.store, s.store_default) == (1, "memory", False)
    assert isinstance(open_store(s), MemoryReasoningStore)

    s = load_settings(["--workers", "3"], env)
    expected = str(tmp_path / "state" / "rawproxy" / "reasoning.sqlite3")
    assert (s.workers, s.store, s.store_default) == (3, "sqlite:" + expected, True)
    store = open_store(s)
    assert isinstance(store, SQLiteReasoningStore) and os.path.exists(expected)
    assert stat.S_IMODE(os.stat(os.path.dirname(expected)).st_mode) == 0o700
    await store.aclose()

    s = load_settings([], {"PROXY_WORKERS": "2", "PROXY_STORE": f"sqlite:{tmp_path}/x.db"})
    assert (s.workers, s.store, s.store_default) == (2, f"sqlite:{tmp_path}/x.db", False)
    assert load_settings(["--store", "memory"], {"PROXY_STORE": "sqlite:/nowhere"}).store == "memory"


@pytest.mark.parametrize("argv,needle", [
    (["--workers", "2", "--store", "memory"], "not shared by 2 workers"),
    (["--store", "memcached://x"], "memory, sqlite:PATH or a redis:// URL"),
    (["--store", "sqlite:"], "memory, sqlite:PATH or a redis:// URL"),
    (["--store", "redis://x:port"], "is not a port number"),
    (["--workers", "0"], "PROXY_WORKERS must be positive"),
])
def test_bad_store_settings_say_what_is_wrong(argv, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(argv, {})
