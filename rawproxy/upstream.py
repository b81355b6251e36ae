"""The upstream client: keep-alive httpcore connections on the running trio loop.

The only module that opens upstream sockets (directly or through the outbound proxy). It turns transport failures into
`UpstreamError`s that name the upstream (never a key), so the app can answer 502/504 in
the client's dialect, and it re-sends a request the upstream turned away for now (429,
overload) as `retry.RetryPolicy` says: always before the client has seen a byte, since
the app has not answered yet while `send` runs.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import unquote, urlsplit

import certifi  # httpcore's own dependency, for its default CA bundle
import httpcore
import trio

from .retry import RetryPolicy, parse_retry_after

log = logging.getLogger("rawproxy.upstream")

# Hop-by-hop and length headers are the connection's business, not the message's.
_HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"content-encoding",
}


class UpstreamError(Exception):
    """The upstream could not be reached or stopped answering; status is what the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _raw: httpcore.Response
    _where: str
    _sent_at: float = 0.0
    _metrics: object = None
    _closed: bool = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def read(self) -> bytes:
        try:
            return await self._raw.aread()
        except httpcore.TimeoutException:
            raise UpstreamError(504, f"upstream {self._where} timed out sending its answer") from None
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            raise UpstreamError(502, f"upstream {self._where} broke off its answer: {_reason(exc)}") from None
        finally:
            await self.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._raw.aiter_stream():
                yield chunk
        except httpcore.TimeoutException:
            raise UpstreamError(504, f"upstream {self._where} stopped sending (read timeout)") from None
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            raise UpstreamError(502, f"upstream {self._where} broke off the stream: {_reason(exc)}") from None

    async def aclose(self) -> None:
        """Idempotent. An answer not read to its end closes its connection (httpcore never
        returns a half-read connection to the pool), so nothing leaks either way."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._raw.aclose()
        finally:
            if self._metrics is not None:
                self._metrics.upstream_seconds.observe(time.perf_counter() - self._sent_at)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


def _where(url: str) -> str:
    """The upstream as messages name it: never the userinfo part of a URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def make_proxy(url: str) -> httpcore.Proxy:
    """An httpcore proxy from `http://[user:pass@]host:port` (or https, socks5, socks5h)."""
    parts = urlsplit(url)
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 1080)
    return httpcore.Proxy(f"{parts.scheme}://{host}:{parts.port or default_port}", auth=auth)


def _ssl_context() -> ssl.SSLContext:
    """httpcore's default (system defaults, certifi's CAs), made once: left to httpcore, each
    new TLS connection would load the CA bundle again (milliseconds of CPU)."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    return context


class _Pool:
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
        stream = _PooledStream(response.stream, self, connection)
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

    async def _release(self, connection) -> None:
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


class _PooledStream:
    """An answer's body: iterated as httpcore's own stream (no extra layer per chunk);
    closing it hands the connection back to the pool."""

    __slots__ = ("_stream", "_pool", "_connection", "_closed")

    def __init__(self, stream, pool: _Pool, connection) -> None:
        self._stream = stream
        self._pool = pool
        self._connection = connection
        self._closed = False

    def __aiter__(self):
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                await self._stream.aclose()
            finally:
                await self._pool._release(self._connection)


class Upstream:
    def __init__(self, *, connect_timeout: float, read_timeout: float, max_connections: int = 256,
                 proxy: httpcore.Proxy | str | None = None, retry: RetryPolicy | None = None,
                 metrics=None) -> None:
        # Waiting for a free pool slot is part of getting a connection: the connect timeout bounds it.
        self._timeouts = {"connect": connect_timeout, "read": read_timeout, "write": 60.0, "pool": connect_timeout}
        if isinstance(proxy, str):
            proxy = make_proxy(proxy) if proxy else None
        self.retry = retry if retry is not None else RetryPolicy(retries=0)
        self.metrics = metrics
        self._pool = _Pool(
            max_connections=max_connections,
            keepalive_expiry=60.0,
            proxy=proxy,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        where = _where(url)
        headers = [(b"host", urlsplit(url).netloc.rpartition("@")[2].encode("ascii")), *headers]
        if body or method == "POST":
            headers.append((b"content-length", str(len(body)).encode()))
        attempt = 0
        while True:
            try:
                up = await self._send_once(method, url, headers, body, where)
            except _Unreachable as exc:
                wait = self.retry.delay(attempt, None) if exc.retryable else None
                if wait is None:
                    raise exc.error from None
                reason = "connect"
            else:
                if up.status < 400:
                    return up
                retry_after = parse_retry_after(up.header(b"retry-after"), up.header(b"retry-after-ms"))
                wait = self.retry.delay(attempt, up.status, retry_after)
                if wait is None:
                    return up
                await up.aclose()  # its body is not the answer: drop it, free the connection
                reason = str(up.status)
            attempt += 1
            if self.metrics is not None:
                self.metrics.retries.inc(reason)
            log.info("upstream %s: %s; retry %d in %.2fs", where,
                     "could not connect" if reason == "connect" else f"answered {reason}", attempt, wait)
            await trio.sleep(wait)

    async def _send_once(self, method: str, url: str, headers, body: bytes, where: str) -> UpstreamResponse:
        request = httpcore.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeouts}
        )
        sent = time.perf_counter()
        try:
            raw = await self._pool.handle_async_request(request)
        except httpcore.ConnectTimeout:
            # Not retried: the connect timeout already spans the kernel's own SYN retries.
            raise self._failed("connect", UpstreamError(502, f"upstream {where} unreachable: connect timed out"))
        except httpcore.ConnectError as exc:
            raise self._failed("connect", UpstreamError(502, f"upstream {where} unreachable: {_reason(exc)}"), True)
        except httpcore.PoolTimeout:
            # The proxy's own limit, not the upstream's fault: say so (--upstream-connections).
            raise self._failed("pool", UpstreamError(
                503, f"all upstream connections to {where} are busy; raise --upstream-connections"))
        except httpcore.TimeoutException:
            raise self._failed("timeout", UpstreamError(504, f"upstream {where} timed out"))
        except httpcore.UnsupportedProtocol as exc:
            raise self._failed("protocol", UpstreamError(502, f"upstream {where} unreachable: {_reason(exc)}"))
        except httpcore.ProxyError as exc:
            raise self._failed("proxy", UpstreamError(502, f"upstream {where} unreachable through the outbound proxy: {_reason(exc)}"))
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            raise self._failed("network", UpstreamError(502, f"upstream {where} unreachable: {_reason(exc)}"))
        if self.metrics is not None:
            self.metrics.upstream_ttfb.observe(time.perf_counter() - sent)
        response_headers = [(k.lower(), v) for k, v in raw.headers if k.lower() not in _HOP_BY_HOP]
        return UpstreamResponse(raw.status, response_headers, raw, where, sent, self.metrics)

    def _failed(self, kind: str, error: UpstreamError, retryable: bool = False) -> "_Unreachable":
        if self.metrics is not None:
            self.metrics.upstream_errors.inc(kind)
        return _Unreachable(error, retryable)

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Unreachable(Exception):
    """Inside `send`: a failed attempt, and whether sending again can help."""

    def __init__(self, error: UpstreamError, retryable: bool) -> None:
        self.error = error
        self.retryable = retryable
