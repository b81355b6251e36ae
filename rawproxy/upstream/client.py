"""The upstream client: sends one request, with retries, over the pool's connections.

It turns transport failures into `UpstreamError`s that name the upstream (never a key),
so the proxy can answer 502/504 in the client's dialect, and it re-sends a request the
upstream turned away for now (429, overload) as `retry.RetryPolicy` says: always before
the client has seen a byte, since the proxy has not answered yet while `send` runs.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpcore
import trio

from ..core.chunked import ChunkedError
from ..core.errors import UpstreamError
from ..core.metrics import Metrics
from ..core.urls import host_port, without_userinfo
from .direct import open_chunked_body
from .outbound import make_proxy
from .pool import Pool, PooledStream
from .retry import RetryPolicy, parse_retry_after

log = logging.getLogger("rawproxy.upstream")

# Hop-by-hop and length headers are the connection's business, not the message's.
_HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"content-encoding",
}


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _raw: httpcore.Response
    _where: str
    _sent_at: float = 0.0
    _metrics: Metrics | None = None
    _read_timeout: float | None = None
    _closed: bool = False

    @property
    def where(self) -> str:
        """The upstream's URL as errors name it: without credentials."""
        return self._where

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def read(self) -> bytes:
        try:
            return await self._raw.aread()
        except httpcore.TimeoutException:
            raise UpstreamError(f"upstream {self._where} timed out sending its answer", 504) from None
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            raise UpstreamError(f"upstream {self._where} broke off its answer: {_reason(exc)}") from None
        finally:
            await self.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a chunked one (every SSE stream) one item per network read."""
        raw = self._raw
        stream = raw.stream
        body = open_chunked_body(stream.byte_stream, raw.extensions.get("network_stream"), raw.headers,
                                 self._read_timeout) if isinstance(stream, PooledStream) else None
        try:
            async for chunk in (body if body is not None else raw.aiter_stream()):
                yield chunk
        except httpcore.TimeoutException:
            raise UpstreamError(f"upstream {self._where} stopped sending (read timeout)", 504) from None
        except (httpcore.NetworkError, httpcore.RemoteProtocolError, ChunkedError) as exc:
            raise UpstreamError(f"upstream {self._where} broke off the stream: {_reason(exc)}") from None

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


# Why a request got no answer: (httpcore exception, metric kind, status, what the client is
# told, whether re-sending can help). First match wins, so the
# specific classes stand before their bases.
_FAILURES: tuple[tuple[type[Exception], str, int, str, bool], ...] = (
    # Not retried: the connect timeout already spans the kernel's own SYN retries.
    (httpcore.ConnectTimeout, "connect", 502, "upstream {where} unreachable: connect timed out", False),
    (httpcore.ConnectError, "connect", 502, "upstream {where} unreachable: {reason}", True),
    # The proxy's own limit, not the upstream's fault: say which setting raises it.
    (httpcore.PoolTimeout, "pool", 503, "all upstream connections to {where} are busy; raise --upstream-connections", False),
    (httpcore.TimeoutException, "timeout", 504, "upstream {where} timed out", False),
    (httpcore.UnsupportedProtocol, "protocol", 502, "upstream {where} unreachable: {reason}", False),
    (httpcore.ProxyError, "proxy", 502, "upstream {where} unreachable through the outbound proxy: {reason}", False),
    (httpcore.NetworkError, "network", 502, "upstream {where} unreachable: {reason}", False),
    (httpcore.ProtocolError, "network", 502, "upstream {where} unreachable: {reason}", False),
    (OSError, "network", 502, "upstream {where} unreachable: {reason}", False),
)


class Upstream:
    """Sends requests to upstreams over one pool; `send` retries as its policy says."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, max_connections: int = 256,
                 proxy: httpcore.Proxy | str | None = None, retry: RetryPolicy | None = None,
                 metrics: Metrics | None = None) -> None:
        # Waiting for a free pool slot is part of getting a connection: the connect timeout bounds it.
        self._timeouts = {"connect": connect_timeout, "read": read_timeout, "write": 60.0, "pool": connect_timeout}
        if isinstance(proxy, str):
            proxy = make_proxy(proxy) if proxy else None
        self.retry = retry if retry is not None else RetryPolicy(retries=0)
        self.metrics = metrics
        self._pool = Pool(
            max_connections=max_connections,
            keepalive_expiry=60.0,
            proxy=proxy,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        where = without_userinfo(url)
        headers = [(b"host", host_port(url).encode("ascii")), *headers]
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

    async def _send_once(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes,
                         where: str) -> UpstreamResponse:
        request = httpcore.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeouts}
        )
        sent = time.perf_counter()
        try:
            raw = await self._pool.handle_async_request(request)
        except Exception as exc:
            for kind, metric, status, what, retryable in _FAILURES:
                if isinstance(exc, kind):
                    if self.metrics is not None:
                        self.metrics.upstream_errors.inc(metric)
                    error = UpstreamError(what.format(where=where, reason=_reason(exc)), status)
                    raise _Unreachable(error, retryable) from None
            raise
        if self.metrics is not None:
            self.metrics.upstream_ttfb.observe(time.perf_counter() - sent)
        response_headers = [(k.lower(), v) for k, v in raw.headers if k.lower() not in _HOP_BY_HOP]
        return UpstreamResponse(raw.status, response_headers, raw, where, sent, self.metrics, self._timeouts["read"])

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Unreachable(Exception):
    """Inside `send`: a failed attempt, and whether sending again can help."""

    def __init__(self, error: UpstreamError, retryable: bool) -> None:
        self.error = error
        self.retryable = retryable
