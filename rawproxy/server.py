"""The listener and the HTTP/1.1 connection loop (trio + h11).

The only module that touches client sockets. It reads a whole request (bounded), hands it
to an app, and writes the response: a body, or a stream whose items each leave in one
write as soon as they are produced. While a stream is being written it also watches the
client socket, so a client that leaves cancels the upstream work at once.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable

import h11
import trio

from .http_types import Request, Response

log = logging.getLogger("rawproxy.server")

App = Callable[[Request], Awaitable[Response]]
# Builds an error response in the dialect the path implies (the server knows no dialects).
ErrorResponder = Callable[[str, int, str], Response]

_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 30.0      # a slow client sending its head is cut off
    keepalive_timeout: float = 75.0   # an idle keep-alive connection is closed
    body_timeout: float = 120.0


def _plain_error(path: str, status: int, message: str) -> Response:
    import json

    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return Response(status, [(b"content-type", b"application/json")], body)


class _ClientGone(Exception):
    pass


class _Connection:
    __slots__ = ("stream", "conn", "app", "limits", "on_error")

    def __init__(self, stream: trio.SocketStream, app: App, limits: ServerLimits, on_error: ErrorResponder):
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.app = app
        self.limits = limits
        self.on_error = on_error

    async def _next_event(self):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(_READ_SIZE)
            self.conn.receive_data(data)  # b"" marks EOF

    async def _send(self, event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def run(self) -> None:
        first = True
        while True:
            timeout = self.limits.header_timeout if first else self.limits.keepalive_timeout
            with trio.move_on_after(timeout) as idle:
                try:
                    event = await self._next_event()
                except h11.RemoteProtocolError as exc:
                    await self._reject(exc.error_status_hint, f"malformed HTTP request: {exc}")
                    return
            if idle.cancelled_caught:
                # Mid-head (some bytes buffered) gets a 408; a quiet keep-alive just closes.
                if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                    await self._reject(408, "timed out reading the request head")
                return
            first = False
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            keep_going = await self._handle(event)
            if not keep_going or self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()

    async def _reject(self, status: int, message: str, path: str = "") -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = self.on_error(path, status, message)
        response.headers.append((b"connection", b"close"))
        try:
            await self._send_simple(response)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass

    async def _read_body(self, path: str, declared: int | None) -> bytes | None:
        limit = self.limits.max_body_bytes
        if declared is not None and declared > limit:
            await self._reject(413, f"request body of {declared} bytes is over the limit of {limit} bytes", path)
            return None
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.limits.body_timeout) as slow:
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        await self._reject(413, f"request body is over the limit of {limit} bytes", path)
                        return None
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return b"".join(chunks)
                else:  # ConnectionClosed mid-body
                    return None
        if slow.cancelled_caught:
            await self._reject(408, "timed out reading the request body", path)
        return None

    async def _handle(self, head: h11.Request) -> bool:
        target = head.target.decode("latin-1")
        path, _, query = target.partition("?")
        declared = None
        for name, value in head.headers:
            if name == b"content-length":
                declared = int(value)
        try:
            body = await self._read_body(path, declared)
        except h11.RemoteProtocolError as exc:
            await self._reject(400, f"malformed HTTP request: {exc}", path)
            return False
        if body is None:
            return False
        request = Request(head.method.decode("ascii"), path, query, list(head.headers), body)
        try:
            response = await self.app(request)
        except Exception:  # an app bug must not kill the connection loop silently
            log.exception("unhandled error serving %s %s", request.method, path)
            response = self.on_error(path, 500, "internal error in the proxy")
        if response.stream is None:
            await self._send_simple(response)
            return True
        return await self._send_stream(response)

    async def _send_simple(self, response: Response) -> None:
        headers = list(response.headers)
        headers.append((b"content-length", str(len(response.body)).encode()))
        await self._send(h11.Response(status_code=response.status, headers=headers))
        if response.body:
            await self._send(h11.Data(data=response.body))
        await self._send(h11.EndOfMessage())

    async def _send_stream(self, response: Response) -> bool:
        stream = response.stream
        finished = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_client, nursery.cancel_scope)
                await self._send(h11.Response(status_code=response.status, headers=list(response.headers)))
                async for item in stream:
                    if item:
                        await self._send(h11.Data(data=item))
                await self._send(h11.EndOfMessage())
                finished = True
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, _ClientGone):
            finished = False
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()
        return finished

    async def _watch_client(self, scope: trio.CancelScope) -> None:
        """Cancel the response when the client closes its end mid-stream."""
        while True:
            data = await self.stream.receive_some(_READ_SIZE)
            if not data:
                scope.cancel()
                return
            self.conn.receive_data(data)  # a pipelined next request waits in h11's buffer


async def _serve_connection(app: App, limits: ServerLimits, on_error: ErrorResponder, stream: trio.SocketStream) -> None:
    try:
        stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    try:
        await _Connection(stream, app, limits, on_error).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:
        log.exception("connection loop failed")
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def serve(
    app: App,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    on_error: ErrorResponder | None = None,
    reuse_port: bool = False,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled; reports the bound port through task_status.

    `reuse_port` lets several worker processes accept on one port (SO_REUSEPORT), the
    kernel spreading connections between them.
    """
    limits = limits or ServerLimits()
    if reuse_port:
        listeners = [await _reuse_port_listener(host, port)]
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
    bound = listeners[0].socket.getsockname()[1]
    handler = _make_handler(app, limits, on_error or _plain_error)
    task_status.started(bound)
    await trio.serve_listeners(handler, listeners)


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    await sock.bind((host, port))
    sock.listen(1024)
    return trio.SocketListener(sock)


def _make_handler(app: App, limits: ServerLimits, on_error: ErrorResponder):
    async def handler(stream: trio.SocketStream) -> None:
        await _serve_connection(app, limits, on_error, stream)

    return handler
