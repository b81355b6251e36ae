"""Remembered reasoning, keyed by the turn key inside the tool-call ids the proxy issued.

In memory, bounded in bytes (least recently used entries go first) and entries expire.
The interface is async so a shared store (SQLite, for several workers:
reasoning_sqlite.py) fits behind it; open_store picks one from the settings.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from .config import Settings


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str
    signature: str | None = None  # the upstream's own signature (Anthropic upstream)


_ENTRY_OVERHEAD = 120  # bytes of bookkeeping counted per entry besides the text


def entry_size(key: str, value: Reasoning) -> int:
    """The bytes one entry counts against a store's bound (both stores count alike)."""
    return len(key) + len(value.text.encode()) + len((value.signature or "").encode()) + _ENTRY_OVERHEAD


class MemoryReasoningStore:
    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Reasoning, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Reasoning]:
        now = self._clock()
        found: dict[str, Reasoning] = {}
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                continue
            expires, value, size = entry
            if expires < now:
                del self._entries[key]
                self.bytes -= size
                self.misses += 1
                continue
            self._entries.move_to_end(key)
            found[key] = value
            self.hits += 1
        return found

    async def put(self, key: str, value: Reasoning) -> None:
        size = entry_size(key, value)
        if size > self.max_bytes:
            return  # larger than the whole store: keeping it would evict everything
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        self._entries[key] = (self._clock() + self.ttl, value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0


def open_store(settings: "Settings"):
    """The one place that turns `Settings.store` ("memory" or "sqlite:PATH") into a store."""
    kind, _, path = settings.store.partition(":")
    if kind == "memory":
        return MemoryReasoningStore(settings.store_max_bytes, settings.store_ttl)
    if kind == "sqlite" and path:
        import os

        from .reasoning_sqlite import SQLiteReasoningStore

        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700, exist_ok=True)  # the default place under the user's state dir
        return SQLiteReasoningStore(path, settings.store_max_bytes, settings.store_ttl)
    raise ValueError(f"unknown reasoning store {settings.store!r}")
