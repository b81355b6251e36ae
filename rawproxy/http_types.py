"""The request and response an app sees: the only types shared by server and apps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator


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


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    # When set the body is ignored and each item is written as it comes; the server
    # closes the iterator (aclose) whether the client stayed or left, even when it never
    # started iterating. Raising StreamAborted ends the connection after what was sent.
    stream: AsyncIterator[bytes] | None = None


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
