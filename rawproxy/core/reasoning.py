"""Remembered reasoning: what is kept per tool-call turn, and what a store must offer.

The stores themselves (memory, SQLite) live in `rawproxy.store`; the pure core (tap,
Kimi repair) only needs the value type and this protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str
    signature: str | None = None  # the upstream's own signature (Anthropic upstream)


_ENTRY_OVERHEAD = 120  # bytes of bookkeeping counted per entry besides the text


def entry_size(key: str, value: Reasoning) -> int:
    """The bytes one entry counts against a store's bound (every store counts alike)."""
    return len(key) + len(value.text.encode()) + len((value.signature or "").encode()) + _ENTRY_OVERHEAD


class ReasoningStore(Protocol):
    """Where reasoning is remembered under a turn key, bounded and expiring.

    `hits` and `misses` count replayed turns found and not found (read by /metrics).
    A store may raise when it fails: the proxy reaches it through `store.keeper`, which
    turns a failure into a request without the reasoning.
    """

    @property
    def hits(self) -> int: ...

    @property
    def misses(self) -> int: ...

    async def get_many(self, keys: Iterable[str]) -> dict[str, Reasoning]: ...

    async def put(self, key: str, value: Reasoning) -> None: ...

    async def aclose(self) -> None: ...
