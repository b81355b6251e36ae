"""Keep-alive connections to upstreams, handed out and taken back in O(1).

httpcore still makes the connections (directly or through the outbound proxy, by its
pool's public `create_connection`), speaks TLS and HTTP on them; this module only decides
which idle connection a request reuses and when one is closed.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import certifi  # httpcore's CA bundle, loaded once here instead of per connection
import httpcore
import trio


def _ssl_context() -> ssl.SSLContext:
    """httpcore's default (system defaults, certifi's CAs), made once: left to httpcore, each
    new TLS connection would load the CA bundle again (milliseconds of CPU)."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    return context


class Pool:
    """Keep-alive connections to the upstream, handed out and taken back in O(1).

    httpcore's AsyncConnectionPool re-examines every connection at each request's start
    and end (a poll() per idle connection, and quadratic counting): with a few hundred
    pooled connections that was nearly all of the proxy's CPU (1,000 concurrent streams:
    116 of 119 CPU seconds). The proxy speaks HTTP/1.1 to one upstream, so a stack of idle
    connections and a semaphore for the limit suffice: a connection is checked (keep-alive
    expired, or closed by the server) when it is about to be reused, and the idle ones
    are swept now and then. httpcore still makes the connections (direct or through the
    outbound proxy, by its pool's public `create_connection`) and speaks HTTP on them.
    """

    _SWEEP_EVERY = 5.0

    def __init__(self, *, max_connections: int, keepalive_expiry: float, proxy: httpcore.Proxy | None,
                 socket_options) -> None:
        self._factory = httpcore.AsyncConnectionPool(
            max_connections=max_connections, keepalive_expiry=keepalive_expiry, proxy=proxy,
            socket_options=socket_options, ssl_context=_ssl_context())
        self._slots = trio.Semaphore(max_connections)
        self._idle: list = []   # most recently used last: it is reused first
        self._open: set = set()  # every connection not yet closed, for aclose()
        self._swept = time.monotonic()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._slots.value:  # a slot free (no one is queued then): taken without a cancel scope
            self._slots.acquire_nowait()
        else:
            wait = request.extensions.get("timeout", {}).get("pool")
            with trio.move_on_after(wait if wait is not None else float("inf")) as waited:
                await self._slots.acquire()
            if waited.cancelled_caught:
                raise httpcore.PoolTimeout("no upstream connection came free in time")
        try:
            origin = request.url.origin
            connection = await self._reusable(origin)
            try:
                response, connection = await self._send(connection, origin, request)
            except httpcore.ConnectionNotAvailable:  # it was not idle after all: a new one then
                response, connection = await self._send(None, origin, request)
        except BaseException:
            self._slots.release()
            raise
        stream = PooledStream(response.stream, self, connection)
        return httpcore.Response(status=response.status, headers=response.headers, content=stream,
                                 extensions=response.extensions)

    async def _send(self, connection, origin, request: httpcore.Request):
        if connection is None:
            connection = self._factory.create_connection(origin)
            self._open.add(connection)
        try:
            response = await connection.handle_async_request(request)
        except BaseException:
            if connection.is_closed() or not connection.is_idle():
                self._open.discard(connection)
                with trio.CancelScope(shield=True):
                    await connection.aclose()
            else:
                self._idle.append(connection)
            raise
        return response, connection

    async def _reusable(self, origin):
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.is_idle() and connection.can_handle_request(origin) and not connection.has_expired():
                return connection
            await self._close(connection)
        return None

    async def release(self, connection: Any) -> None:
        """A response was closed: its connection goes back to the stack, or away."""
        try:
            if connection is not None:
                if connection.is_idle():
                    self._idle.append(connection)
                else:  # closed by httpcore (an answer not read to its end), or in doubt
                    await self._close(connection)
            now = time.monotonic()
            if now - self._swept > self._SWEEP_EVERY:
                self._swept = now
                keep = []
                for idle in self._idle:
                    if idle.is_idle() and not idle.has_expired():
                        keep.append(idle)
                    else:
                        await self._close(idle)
                self._idle = keep
        finally:
            self._slots.release()

    async def _close(self, connection) -> None:
        self._open.discard(connection)
        with trio.CancelScope(shield=True):
            await connection.aclose()

    async def aclose(self) -> None:
        self._idle.clear()
        for connection in list(self._open):
            await self._close(connection)


class PooledStream:
    """An answer's body: iterated as httpcore's own stream (no extra layer per chunk);
    closing it hands the connection back to the pool."""

    __slots__ = ("_stream", "_pool", "_connection", "_closed")

    def __init__(self, stream, pool: "Pool", connection) -> None:
        self._stream = stream
        self._pool = pool
        self._connection = connection
        self._closed = False

    def __aiter__(self):
        return self._stream.__aiter__()

    @property
    def byte_stream(self) -> Any:
        """httpcore's own stream of the body (`upstream.direct` may read past it)."""
        return self._stream

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                await self._stream.aclose()
            finally:
                await self._pool.release(self._connection)
