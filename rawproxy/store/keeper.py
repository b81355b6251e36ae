"""The proxy's one way to its reasoning store, whatever the store is.

Over any `ReasoningStore` (memory, SQLite, or one to come) the keeper adds what a shared
service needs, once:

- tenants: every store key is `<tenant>:<turn key>`, the tenant derived from the
  credential that produced the turn (`tenant_of`), so a turn key presented by another
  tenant recalls nothing. The pipeline and the relay see a `TenantView`, a store whose
  keys are plain turn keys;
- remembering never delays a client's bytes: `put` only queues, a writer task (`run`)
  drains the queue into the store, and past its bound a write is dropped and counted;
  a turn still queued is recalled from the queue, so a client's next request finds it;
- recalling is bounded: past `recall_timeout` the request goes on without it (the
  repair's fallback), counted;
- a store that fails costs the reasoning, never the request: failures are counted and
  logged once per outage (`Outage`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable

import trio

from ..core.reasoning import Reasoning, ReasoningStore, entry_size
from .outage import Outage

log = logging.getLogger("rawproxy.store")

SHARED_TENANT = "shared"
WRITE_BATCH = 64  # queued turns handed to a store's put_many at once
_TENANT_PERSON = b"rawproxy-tenant"


def tenant_of(credential: bytes | None) -> str:
    """The tenant a credential stands for, never the credential itself: a keyed BLAKE2b
    digest, the same in every process and after restarts (the SQLite store outlives
    both). No credential: the one shared tenant."""
    if not credential:
        return SHARED_TENANT
    return hashlib.blake2b(credential, digest_size=16, person=_TENANT_PERSON).hexdigest()


# Waits before asking a shared store again for turns it did not have (seconds).
_SHARED_MISS_PAUSES = (0.05, 0.15)

class ReasoningKeeper:
    def __init__(self, store: ReasoningStore, *, name: str = "", queue_entries: int = 256,
                 queue_bytes: int = 32 * 1024 * 1024, recall_timeout: float = 0.5, flush_timeout: float = 2.0) -> None:
        self.store = store
        self.queue_entries = queue_entries
        self.queue_bytes = queue_bytes
        self.recall_timeout = recall_timeout
        self.flush_timeout = flush_timeout  # at shutdown, for queued writes and for closing the store
        # A store that watches its own failures (SQLite swallows them) shares its tracker,
        # so one outage is told once whichever layer saw it.
        own = getattr(store, "outage", None)
        self._store_reports = isinstance(own, Outage)
        self.outage: Outage = own if isinstance(own, Outage) else Outage(name or type(store).__name__)
        self.hits = 0
        self.misses = 0
        self.dropped = 0          # writes not kept: the queue was full (or shutdown came first)
        self.recall_timeouts = 0  # recalls that gave up waiting for the store
        self._send, self._receive = trio.open_memory_channel[tuple[str, Reasoning, int]](math.inf)
        self._pending: dict[str, Reasoning] = {}  # queued, not yet written: recalled from here
        self._queued = 0
        self._queued_bytes = 0
        self._running = False
        self._closed = False
        self._stopped = trio.Event()
        self._writer_scope: trio.CancelScope | None = None

    @property
    def errors(self) -> int:
        return self.outage.errors

    def scoped(self, tenant: str) -> TenantView:
        return TenantView(self, tenant)

    # ---------------------------------------------------------------- recall

    async def recall(self, keys: Iterable[str]) -> dict[str, Reasoning]:
        keys = list(keys)
        found = {k: self._pending[k] for k in keys if k in self._pending}
        rest = [k for k in keys if k not in found]
        if rest and not self._closed:
            with trio.move_on_after(self.recall_timeout) as scope:
                try:
                    found.update(await self.store.get_many(rest))
                    # A store shared with other processes may be a moment behind: the turn
                    # was answered by another replica whose queued write has not landed yet
                    # (a fast client replays within milliseconds). A miss there waits a
                    # little, inside the recall's own time limit, before it counts.
                    for pause in _SHARED_MISS_PAUSES if getattr(self.store, "shared", False) else ():
                        missing = [k for k in rest if k not in found]
                        if not missing:
                            break
                        await trio.sleep(pause)
                        found.update(await self.store.get_many(missing))
                except Exception as exc:
                    self.outage.failed("a recall", exc)
                else:
                    self._ok()
            if scope.cancelled_caught:
                self.recall_timeouts += 1
                self.outage.trouble(f"a recall took longer than {self.recall_timeout:g}s")
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    # ---------------------------------------------------------------- remember

    async def remember(self, key: str, value: Reasoning) -> None:
        """Queue the write and return at once (never waits for the store)."""
        if self._closed:
            self.dropped += 1
            return
        if not self._running:
            # No writer task (an app built without run(), as in-process tests do): write
            # now, as bounded as a recall.
            with trio.move_on_after(self.recall_timeout) as scope:
                await self._write(key, value)
            if scope.cancelled_caught:
                self.dropped += 1
                self.outage.trouble(f"a write took longer than {self.recall_timeout:g}s")
            return
        size = entry_size(key, value)
        if self._queued >= self.queue_entries or self._queued_bytes + size > self.queue_bytes:
            self.dropped += 1
            self.outage.trouble("the write queue is full")
            return
        self._queued += 1
        self._queued_bytes += size
        self._pending[key] = value
        self._send.send_nowait((key, value, size))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: drains the queue into the store until `aclose()`. Start it with
        `nursery.start(keeper.run)`."""
        with trio.CancelScope() as self._writer_scope:
            self._running = True
            task_status.started()
            try:
                async for first in self._receive:
                    # What was queued meanwhile goes in the same round: a store that writes
                    # many at once (`put_many`, one Redis round trip) keeps up with a busy
                    # process, where one awaited write per turn would fall behind and drop.
                    batch = [first]
                    while len(batch) < WRITE_BATCH:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    try:
                        await self._write_batch(batch)
                    finally:
                        for key, value, size in batch:
                            self._queued -= 1
                            self._queued_bytes -= size
                            if self._pending.get(key) is value:
                                del self._pending[key]
            finally:
                self._running = False
                self._stopped.set()

    async def _write_batch(self, batch: list[tuple[str, Reasoning, int]]) -> None:
        put_many = getattr(self.store, "put_many", None)
        if put_many is None or len(batch) == 1:
            for key, value, _ in batch:
                await self._write(key, value)
            return
        try:
            await put_many([(key, value) for key, value, _ in batch])
        except Exception as exc:
            self.outage.failed(f"a write of {len(batch)} turns", exc)
        else:
            self._ok()

    async def _write(self, key: str, value: Reasoning) -> None:
        try:
            await self.store.put(key, value)
        except Exception as exc:
            self.outage.failed("a write", exc)
        else:
            self._ok()

    def _ok(self) -> None:
        if not self._store_reports:  # else the store says itself when it succeeded
            self.outage.ok()

    # ---------------------------------------------------------------- shutdown

    async def aclose(self) -> None:
        """Write what is queued (for up to `flush_timeout`), then close the store."""
        if self._closed:
            return
        self._closed = True
        self._send.close()
        if self._running:
            with trio.move_on_after(self.flush_timeout):
                await self._stopped.wait()
            if self._running and self._writer_scope is not None:
                self.dropped += self._queued
                log.warning("reasoning store %s: %d remembered turn(s) not written before shutdown",
                            self.outage.name, self._queued)
                self._writer_scope.cancel()
                with trio.move_on_after(self.flush_timeout):
                    await self._stopped.wait()
        with trio.move_on_after(self.flush_timeout):
            try:
                await self.store.aclose()
            except Exception as exc:
                self.outage.failed("closing", exc)


class TenantView:
    """The keeper as one tenant sees it: a `ReasoningStore` keyed by plain turn keys."""

    __slots__ = ("keeper", "prefix")

    def __init__(self, keeper: ReasoningKeeper, tenant: str) -> None:
        self.keeper = keeper
        self.prefix = tenant + ":"

    @property
    def hits(self) -> int:
        return self.keeper.hits

    @property
    def misses(self) -> int:
        return self.keeper.misses

    async def get_many(self, keys: Iterable[str]) -> dict[str, Reasoning]:
        scoped = {self.prefix + k: k for k in keys}
        found = await self.keeper.recall(scoped)
        return {scoped[k]: v for k, v in found.items()}

    async def put(self, key: str, value: Reasoning) -> None:
        await self.keeper.remember(self.prefix + key, value)

    async def aclose(self) -> None:
        pass  # the keeper owns the store
