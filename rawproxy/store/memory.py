"""Remembered reasoning in this process's memory, keyed by turn key.

Bounded in bytes (least recently used entries go first), and entries expire. For one
process; several workers share the SQLite store instead.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ..core.reasoning import Reasoning, entry_size


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
