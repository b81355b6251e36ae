"""A streamed answer's chunked body, read straight off its connection.

httpcore reads the response head. Reading the body through httpcore as well was the
largest per-event cost of a stream: each HTTP chunk passed a trace context, h11's chunked
reader, an exception map and a cancel scope. Instead, the body is read here in whole
network reads from the connection's stream (httpcore's documented `network_stream`
response extension) and decoded by `core.chunked.ChunkedDecoder`. One read is one step,
however many chunks (SSE events) it holds.

The connection stays httpcore's. h11 has parsed only the head, and it keeps whatever
arrived after the head in its receive buffer. Those bytes are the first body bytes given
to the decoder. When the decoder reads the body's clean end, h11 is brought to the end of
the body too: its buffer is emptied and it is fed a bare last chunk (`0\\r\\n\\r\\n`). Its
state machine then reaches DONE by its own rules, or MUST_CLOSE when the answer asked for
`Connection: close`. httpcore's own close of the response then returns the connection to
the pool, or closes it, exactly as if h11 had read the body. A body that did not end
cleanly (cut, malformed, bytes after its end, or left unread by the caller) leaves h11
mid-body, so httpcore closes that connection. A connection never goes back half-read.

This reaches two private attributes: the byte stream's `_connection._h11_state`
(httpcore 1.0) and h11's `_receive_buffer`. `open_chunked_body` checks their shapes and
returns None when it does not recognise them; the caller then reads through httpcore and
logs that once. A third, the trio stream under httpcore's network stream (`_stream`), is
read when it is there; without it the network stream's public `read` serves. `tests/unit/test_upstream_direct.py` fails if the installed versions stop
taking this path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from math import inf
from typing import Any

import h11
import httpcore
import trio

from ..core.chunked import ChunkedDecoder, ChunkedError

log = logging.getLogger("rawproxy.upstream")
_warned = False  # the fallback to httpcore's reader is logged once per process

READ_SIZE = 64 * 1024  # what httpcore reads at a time
_LAST_CHUNK = b"0\r\n\r\n"


class ChunkedBody:
    """The decoded body of one answer: iterate it once. One item per network read."""

    __slots__ = ("_network", "_state", "_read_timeout", "_leftover", "ended_cleanly")

    def __init__(self, network: Any, state: h11.Connection, leftover: bytes, read_timeout: float | None) -> None:
        self._network = network
        self._state = state
        self._read_timeout = read_timeout
        self._leftover = leftover
        self.ended_cleanly = False  # True once the body's end was read and h11 was told

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoder = ChunkedDecoder()
        data: bytes | None = self._leftover
        self._leftover = b""
        timeout = self._read_timeout
        # httpcore's network stream wraps each read in an exception-mapping context manager
        # and `trio.fail_after` (a second one): a plain cancel scope and an except clause
        # here cost a fraction of that. Its trio stream (TCP or TLS) is read directly when
        # it is there; otherwise through its public `read`.
        receive = getattr(getattr(self._network, "_stream", None), "receive_some", None)
        while True:
            if data:
                try:
                    body = decoder.feed(data)
                except ChunkedError as exc:
                    if exc.data:  # the whole chunks before the fault still go out
                        yield exc.data
                    raise
                if decoder.done:
                    self._finish(decoder.extra)
                if body:
                    yield body
                if decoder.done:
                    return
            if receive is None:
                data = await self._network.read(READ_SIZE, timeout)
            else:
                data = None  # stays None when the deadline passes first
                with trio.CancelScope(deadline=trio.current_time() + timeout if timeout is not None else inf):
                    try:
                        data = await receive(READ_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise httpcore.ReadError(str(exc) or type(exc).__name__) from None
                if data is None:
                    raise httpcore.ReadTimeout("no body bytes within the read timeout")
            if not data:
                decoder.close()  # raises: the connection ended inside the body
                return

    def _finish(self, extra: bytes) -> None:
        """The body ended cleanly: move h11 to the end of the body, unless the upstream sent
        bytes after it (then nothing is changed, and httpcore closes the connection)."""
        if extra:
            return
        state = self._state
        state._receive_buffer = type(state._receive_buffer)()  # its bytes went to the decoder
        state.receive_data(_LAST_CHUNK)
        if type(state.next_event()) is h11.EndOfMessage:
            self.ended_cleanly = True


def open_chunked_body(byte_stream: Any, network: Any, headers: list[tuple[bytes, bytes]],
                      read_timeout: float | None) -> ChunkedBody | None:
    """The direct reader for an answer httpcore has just returned (its byte stream not
    iterated yet), or None when it is not a chunked HTTP/1.1 body on a connection whose
    shape is recognised."""
    if not _is_chunked(headers):
        return None  # a length-delimited or close-delimited body: httpcore reads it
    connection = getattr(byte_stream, "_connection", None)
    state = getattr(connection, "_h11_state", None)
    if (not isinstance(state, h11.Connection) or not hasattr(network, "read")
            or not hasattr(state, "_receive_buffer") or state.their_state is not h11.SEND_BODY):
        global _warned
        if not _warned:
            _warned = True
            log.warning("streamed upstream bodies are read through httpcore, at a higher CPU cost per event: "
                        "the installed httpcore %s / h11 %s connection internals are not the ones this "
                        "version of rawproxy knows", getattr(httpcore, "__version__", "?"), h11.__version__)
        return None
    leftover, closed = state.trailing_data
    if closed:
        return None  # the upstream already hung up: httpcore reports how the body ended
    return ChunkedBody(network, state, leftover, read_timeout)


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    # h11 accepts no transfer coding but `chunked`, so a response that reached SEND_BODY with
    # the header present is chunked.
    return any(name.lower() == b"transfer-encoding" for name, _ in headers)
