"""The types at the server's edge: the request and response an app sees, the app and
error-responder signatures, and the limits the server enforces."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class RequestHead:
    """What arrives before the body: what an `Admit` hook judges a request by."""

    method: str
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None:
        """First value of a header; `name` lower-case, as h11 delivers names."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Request(RequestHead):
    body: bytes
    # Counts `n` more bytes against the server's bound on memory held for requests (what
    # the app builds from the body) until the app has returned its Response (a stream it
    # returns holds none of it); False when the bound has no room for them. The body's own
    # bytes count until the answer is finished. None outside a server (tests).
    reserve: Callable[[int], bool] | None = None


class BodyStream(Protocol):
    """A streamed body: iterated for its chunks, then always closed by the server.

    A stream may also offer `cut_event(status, message) -> bytes`: the last bytes the server
    writes when it cuts the stream itself (request ceiling, shutdown), for streams whose
    error event must fit what they already sent."""

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
# Called with each request's head before its body is read (and before `100 Continue`): a
# Response answers the request at once and the connection closes, its body never read;
# None lets it in. Synchronous: it may only look at the head.
Admit = Callable[[RequestHead], Response | None]
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
    body_timeout: float = 60.0        # from the head received to the body's last byte
    request_timeout: float = 3600.0   # from the head received to the response's last byte
    max_connections: int = 4096
    # Bytes of request bodies held at once by the process, each until its answer is
    # finished, and what apps count through Request.reserve; past it a body waits
    # briefly, then gets a 503.
    max_inflight_body_bytes: int = 256 * 1024 * 1024
