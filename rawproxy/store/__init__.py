"""Where remembered reasoning lives: in memory (one process), SQLite (workers, restarts)
or Redis (replicas on many machines; the optional `redis` extra).

Each store satisfies `rawproxy.core.reasoning.ReasoningStore`; `open_store` is the one
place that turns the `store` setting into a store; the proxy reaches it through
`keeper.ReasoningKeeper` (tenants, writes off the client's path, bounded recalls,
outages). May import `rawproxy.core` only.
"""

from __future__ import annotations

import os
import sqlite3

from ..core.reasoning import ReasoningStore
from ..core.settings import Settings
from .keeper import ReasoningKeeper, tenant_of
from .memory import MemoryReasoningStore
from .redis_url import is_redis_url, parse_redis_url

__all__ = ["MemoryReasoningStore", "ReasoningKeeper", "ReasoningStore", "StoreUnavailable", "check_store",
           "open_store", "tenant_of"]


class StoreUnavailable(Exception):
    """The store cannot be opened at start-up (corrupt file, no permission, disk full);
    the message names the store and the cause, on one line."""


def open_store(settings: Settings) -> ReasoningStore:
    """`settings.store` is "memory", "sqlite:PATH" or a Redis URL (redis_url.py)."""
    kind, _, path = settings.store.partition(":")
    if kind == "memory":
        return MemoryReasoningStore(settings.store_max_bytes, settings.store_ttl)
    if kind == "sqlite" and path:
        from .sqlite import SQLiteReasoningStore

        try:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                os.makedirs(folder, mode=0o700, exist_ok=True)  # the default place under the user's state dir
            return SQLiteReasoningStore(path, settings.store_max_bytes, settings.store_ttl)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open the reasoning store {settings.store}: {exc}") from None
    if is_redis_url(settings.store):
        return _open_redis(settings)
    raise ValueError(f"unknown reasoning store {settings.store!r}")


def _open_redis(settings: Settings) -> ReasoningStore:
    """A Redis URL: the optional client library, then the URL (credentials never shown)."""
    target = parse_redis_url(settings.store)
    try:
        from .redis import RedisReasoningStore
    except ImportError as exc:
        raise StoreUnavailable(f"the reasoning store {target.shown} needs the redis extra, which is not installed "
                               f"({exc}): pip install 'rawproxy[redis]'") from None
    try:
        return RedisReasoningStore(target, settings.store_ttl)
    except Exception as exc:  # a setting the client rejects, e.g. an unknown ?option
        message = str(exc).replace(target.password, "<redacted>") if target.password else str(exc)
        raise StoreUnavailable(f"cannot open the reasoning store {target.shown}: {message}") from None


def check_store(settings: Settings) -> None:
    """Open the store and close it again: raises StoreUnavailable when it cannot serve
    (the supervisor checks once, before it starts any worker)."""
    store = open_store(settings)
    close = getattr(store, "close", None)
    if callable(close):
        close()
