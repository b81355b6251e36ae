"""Remembered reasoning in Redis (one node or a Redis Cluster): shared by replicas on any
number of machines, kept across their restarts. Needs the `redis` extra (coredis).

One turn is one string key, `rawproxy:<tenant>:<turn key>` (the keeper hands over
`<tenant>:<turn key>`), whose value is compact JSON, `["reasoning"]` or
`["reasoning", "signature"]`, written with the store's expiry (`SET ... PX ttl`, the turns
queued together in one pipelined round trip); a recall is one `MGET` of the turns a
request replays (per node on a cluster). Redis bounds the memory itself: run it with
`maxmemory` and `maxmemory-policy volatile-lru` (every key here has an expiry); the byte
bound the memory and SQLite stores keep does not apply.

A store that never makes a client wait:

- every command is bounded (`COMMAND_TIMEOUT`, connecting `CONNECT_TIMEOUT`), well
  inside the keeper's recall bound, so the store, not the keeper's timer, notices a slow
  Redis;
- once a command gets no answer in time (or its connection is lost) the store is
  *down* (Redis answering with an error fails that call only): calls fail at once (no
  connection attempt per request) while a background check pings Redis every
  `RETRY_EVERY`; the first answer makes it *up* again. While up, the same check runs
  every `CHECK_EVERY`, so an outage shows in /health even without traffic;
- the outage is told once (`Outage`, shared with the keeper, which counts each failed
  call) and so is the recovery; the name it is told under never has the credentials.

The client lives in a background task of the trio run that first uses the store (a
system task: the store needs no nursery of its own and the proxy no special start-up);
`aclose()` ends it. A client whose connection pool failed is replaced by a new one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import coredis
import coredis.exceptions
import coredis.retry
import trio

from ..core.reasoning import Reasoning
from .outage import Outage
from .redis_url import RedisTarget

log = logging.getLogger("rawproxy.store")
# The client logs each retry at INFO: during an outage that is lines every second. The
# store tells an outage itself, once, and its recovery.
logging.getLogger("coredis").setLevel(logging.WARNING)

KEY_PREFIX = "rawproxy:"
CONNECT_TIMEOUT = 0.25  # seconds to open a connection (a LAN or a cluster network: milliseconds)
COMMAND_TIMEOUT = 0.3   # seconds for one command, retry included: below the keeper's 0.5 s recall bound
CHECK_EVERY = 2.0       # seconds between two health checks while Redis answers
RETRY_EVERY = 0.5       # ... and while it does not: how soon a recovered Redis is used again


class StoreDown(Exception):
    """Redis did not answer (or answered with an error); the message has no credentials."""


def encode(value: Reasoning) -> bytes:
    fields = [value.text] if value.signature is None else [value.text, value.signature]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def decode(raw: bytes) -> Reasoning | None:
    """None for a value this store did not write (another program's key, a newer format)."""
    try:
        fields = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(fields, list) or not 1 <= len(fields) <= 2 or not all(isinstance(f, str) for f in fields):
        return None
    return Reasoning(fields[0], fields[1] if len(fields) == 2 else None)


class RedisReasoningStore:
    kind = "redis"
    shared = True  # other replicas write to the same Redis

    def __init__(self, target: RedisTarget, ttl: float, *, connect_timeout: float = CONNECT_TIMEOUT,
                 command_timeout: float = COMMAND_TIMEOUT, check_every: float = CHECK_EVERY,
                 retry_every: float = RETRY_EVERY) -> None:
        self.target = target
        self.ttl_ms = max(1, int(ttl * 1000))
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.check_every = check_every
        self.retry_every = retry_every
        self.outage = Outage(target.shown)
        self.hits = 0
        self.misses = 0
        self._next_client: Any = self._new_client()  # built now: a setting it rejects fails start-up
        self._client: Any = None  # the client while Redis answers; None while down
        self._started = False
        self._closing = False
        self._wake = trio.Event()
        self._first_check = trio.Event()  # the first connection attempt has an answer
        self._stopped = trio.Event()

    # ------------------------------------------------------------------ the client

    def _new_client(self) -> Any:
        t = self.target
        common: dict[str, Any] = {"connect_timeout": self.connect_timeout, "stream_timeout": self.command_timeout}
        if t.cluster:
            return coredis.RedisCluster(
                startup_nodes=[{"host": host, "port": port} for host, port in t.nodes],
                username=t.username, password=t.password, ssl=t.tls, non_atomic_cross_slot=True,
                # A moved slot or a failover: once more at once, then the store is down.
                retry_policy=coredis.retry.CompositeRetryPolicy(
                    coredis.retry.ConstantRetryPolicy((coredis.exceptions.ClusterDownError,), retries=1, delay=0.05),
                    coredis.retry.ConstantRetryPolicy((coredis.exceptions.ConnectionError,), retries=1, delay=0),
                ),
                **common,
            )
        # One retry on a lost connection: the first command after Redis restarted finds
        # the old connection closed and goes again on a new one.
        retry = coredis.retry.ConstantRetryPolicy((coredis.exceptions.ConnectionError,), retries=1, delay=0)
        return coredis.Redis.from_url(t.url, decode_components=True, retry_policy=retry, **common)

    def _ensure_started(self) -> None:
        if not self._started and not self._closing:
            self._started = True
            trio.lowlevel.spawn_system_task(self._keep_connected, name="rawproxy redis store")

    async def _keep_connected(self) -> None:
        """Holds a client open while the store lives; checks Redis; replaces a client whose
        pool failed. Never raises (an exception in a system task would end the run)."""
        try:
            while not self._closing:
                client, self._next_client = self._next_client or self._new_client(), None
                try:
                    async with client:
                        while not self._closing:
                            await self._check(client)
                            await self._sleep(self.check_every if self._client is not None else self.retry_every)
                except Exception as exc:
                    self._went_down("the connection", exc)
                finally:
                    self._client = None
                    self._first_check.set()
                if not self._closing:
                    await self._sleep(self.retry_every)
        except Exception as exc:  # a bug, not an outage: say so, and leave the store down
            log.error("reasoning store %s: stopped checking Redis: %r", self.target.shown, exc)
        finally:
            self._client = None
            self._stopped.set()

    async def _sleep(self, seconds: float) -> None:
        """Until the next check: `seconds`, or sooner when a call fails or the store closes
        (a failure from before this sleep does not count: the check just ran)."""
        self._wake = trio.Event()
        with trio.move_on_after(seconds):
            await self._wake.wait()

    async def _check(self, client: Any) -> None:
        try:
            with trio.fail_after(self.command_timeout + self.connect_timeout):
                await client.ping()
        except Exception as exc:
            self._went_down("a health check", exc)
        else:
            if self._client is None:
                self._client = client
            self.outage.ok()
        finally:
            self._first_check.set()

    def _failed(self, what: str, exc: BaseException) -> StoreDown:
        """The error a failed call raises. Redis answering with an error (out of memory
        under `noeviction`, a command refused) is that call's failure only: the store is
        not down, and nothing is re-checked. No answer, a lost connection or a cluster in
        trouble is an outage."""
        if isinstance(exc, coredis.exceptions.ResponseError) and not isinstance(
                exc, coredis.exceptions.RedisClusterError):
            return StoreDown(f"{what} failed: {self._describe(exc)}")
        return self._went_down(what, exc)

    def _went_down(self, what: str, exc: BaseException) -> StoreDown:
        """Marks the store down (calls fail at once until the next check succeeds), tells
        the outage once, wakes the check; returns the error for the caller to raise."""
        self._client = None
        self._wake.set()
        error = StoreDown(f"{what} failed: {self._describe(exc)}")
        self.outage.trouble(str(error))
        return error

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, trio.TooSlowError | TimeoutError):
            return f"no answer within {self.command_timeout:g}s"
        text = f"{type(exc).__name__}: {exc}"
        for secret in (self.target.password, self.target.url):
            if secret:  # a client library's message quoting the URL or password
                text = text.replace(secret, "<redacted>")
        return text

    async def _first_answer(self) -> None:
        """Starts connecting on the process's first use of the store and waits for the
        outcome, bounded; once known, returns at once (a down store then fails at once)."""
        self._ensure_started()
        if not self._first_check.is_set():
            with trio.move_on_after(self.connect_timeout + self.command_timeout):
                await self._first_check.wait()

    async def _usable(self) -> Any:
        await self._first_answer()
        client = self._client
        if client is None:
            raise StoreDown(f"Redis is not answering (checked again every {self.retry_every:g}s)")
        return client

    # ------------------------------------------------------------------ the store protocol

    async def get_many(self, keys: Iterable[str]) -> dict[str, Reasoning]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        client = await self._usable()
        try:
            with trio.fail_after(self.command_timeout):
                values = await client.mget([KEY_PREFIX + k for k in keys])
        except Exception as exc:
            raise self._failed("a recall", exc) from None
        found: dict[str, Reasoning] = {}
        for key, raw in zip(keys, values):
            value = decode(raw) if raw is not None else None
            if value is not None:
                found[key] = value
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        self.outage.ok()
        return found

    async def put(self, key: str, value: Reasoning) -> None:
        client = await self._usable()
        try:
            with trio.fail_after(self.command_timeout):
                await client.set(KEY_PREFIX + key, encode(value), px=self.ttl_ms)
        except Exception as exc:
            raise self._failed("a write", exc) from None
        self.outage.ok()

    async def put_many(self, items: list[tuple[str, Reasoning]]) -> None:
        """Several turns in one round trip (a pipeline; one per node on a cluster): the
        keeper's writer hands over everything queued at once, so a busy process keeps up."""
        client = await self._usable()
        try:
            with trio.fail_after(self.command_timeout + 0.001 * len(items)):
                async with client.pipeline(transaction=False) as pipe:
                    for key, value in items:
                        pipe.set(KEY_PREFIX + key, encode(value), px=self.ttl_ms)
        except Exception as exc:
            raise self._failed("a write", exc) from None
        self.outage.ok()

    async def status(self) -> str:
        """"ok" while Redis answers, else "down" (for /health, which never fails for it)."""
        await self._first_answer()
        return "ok" if self._client is not None else "down"

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._started:
            await self._stopped.wait()
        self._next_client = None
