"""Where remembered reasoning lives: in memory (one process) or SQLite (workers, restarts).

Each store satisfies `rawproxy.core.reasoning.ReasoningStore`; `open_store` is the one
place that turns the `store` setting into a store. May import `rawproxy.core` only.
"""

from __future__ import annotations

import os

from ..core.reasoning import ReasoningStore
from ..core.settings import Settings
from .memory import MemoryReasoningStore

__all__ = ["MemoryReasoningStore", "ReasoningStore", "open_store"]


def open_store(settings: Settings) -> ReasoningStore:
    """`settings.store` is "memory" or "sqlite:PATH"."""
    kind, _, path = settings.store.partition(":")
    if kind == "memory":
        return MemoryReasoningStore(settings.store_max_bytes, settings.store_ttl)
    if kind == "sqlite" and path:
        from .sqlite import SQLiteReasoningStore

        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700, exist_ok=True)  # the default place under the user's state dir
        return SQLiteReasoningStore(path, settings.store_max_bytes, settings.store_ttl)
    raise ValueError(f"unknown reasoning store {settings.store!r}")
