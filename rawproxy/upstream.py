"""The upstream client: an httpcore keep-alive pool on the running trio loop.

The only module that opens upstream sockets. It turns transport failures into
`UpstreamError`s that name the upstream (never a key), so the app can answer 502/504 in
the client's dialect.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import urlsplit

import httpcore

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
            await self._raw.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._raw.aiter_stream():
                yield chunk
        except httpcore.TimeoutException:
            raise UpstreamError(504, f"upstream {self._where} stopped sending (read timeout)") from None
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            raise UpstreamError(502, f"upstream {self._where} broke off the stream: {_reason(exc)}") from None

    async def aclose(self) -> None:
        await self._raw.aclose()


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Upstream:
    def __init__(self, *, connect_timeout: float, read_timeout: float, max_connections: int = 256,
                 proxy: httpcore.Proxy | None = None) -> None:
        self._timeouts = {"connect": connect_timeout, "read": read_timeout, "write": 60.0, "pool": 60.0}
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=60.0,
            proxy=proxy,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        where = _where(url)
        headers = [(b"host", urlsplit(url).netloc.encode("ascii")), *headers]
        if body or method == "POST":
            headers.append((b"content-length", str(len(body)).encode()))
        request = httpcore.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeouts}
        )
        try:
            raw = await self._pool.handle_async_request(request)
        except httpcore.ConnectTimeout:
            raise UpstreamError(502, f"upstream {where} unreachable: connect timed out") from None
        except httpcore.TimeoutException:
            raise UpstreamError(504, f"upstream {where} timed out") from None
        except httpcore.UnsupportedProtocol as exc:
            raise UpstreamError(502, f"upstream {where} unreachable: {_reason(exc)}") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError, OSError) as exc:
            raise UpstreamError(502, f"upstream {where} unreachable: {_reason(exc)}") from None
        response_headers = [(k.lower(), v) for k, v in raw.headers if k.lower() not in _HOP_BY_HOP]
        return UpstreamResponse(raw.status, response_headers, raw, where)

    async def aclose(self) -> None:
        await self._pool.aclose()
