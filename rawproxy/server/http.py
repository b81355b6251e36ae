"""The types at the server's edge: the request and response an app sees, the app and
error-responder signatures, and the limits the server enforces."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """First value of a header; `name` lower-case, as h11 delivers names."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class BodyStream(Protocol):
    """A streamed body: iterated for its chunks, then always closed by the server."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    # When set the body is ignored and each item is written as it comes; the server
    # closes the iterator (aclose) whether the client stayed or left, even when it never
    # started iterating. Raising StreamAborted ends the connection after what was sent.
    stream: BodyStream | None = None


class StreamAborted(Exception):
    """Raised by a response stream after it has yielded its own report of a failure (an
    error event). The server then ends the connection without the body's last chunk, so
    no client can take the cut stream for a complete one."""


JSON = (b"content-type", b"application/json")
EVENT_STREAM = (b"content-type", b"text/event-stream; charset=utf-8")


def json_response(status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> Response:
    headers = [JSON]
    if extra:
        headers.extend(extra)
    return Response(status, headers, body)


App = Callable[[Request], Awaitable[Response]]
# Build an error in the dialect the path implies (the server knows no dialects): a whole
# response before the head went out, the bytes of one stream event after.
ErrorResponder = Callable[[str, int, str], Response]
StreamErrorResponder = Callable[[str, int, str], bytes]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 30.0      # a slow client sending its head is cut off
    keepalive_timeout: float = 75.0   # an idle keep-alive connection is closed
    body_timeout: float = 120.0
    request_timeout: float = 3600.0   # from the head received to the response's last byte
    max_connections: int = 4096
