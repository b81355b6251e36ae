"""One client connection: the HTTP/1.1 exchange loop on h11.

Reads a whole request (bounded in size and time), hands it to the server's app, and
writes the response: a body in one write, or a stream whose items each leave in one
write as soon as they are produced, while a task watches the client's socket so a client
that leaves cancels the work at once. The listener, connection limits and draining are
listener.py's; the connection reaches them only through `ConnectionHost`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import h11
import trio

from .budget import BodyBudget
from .http import (
    Admit,
    App,
    BodyStream,
    ErrorResponder,
    Request,
    RequestHead,
    Response,
    ServerLimits,
    StreamAborted,
    StreamErrorResponder,
)

log = logging.getLogger("rawproxy.server")

READ_SIZE = 65536
# After an early answer (413, 431, 503) the client may still be sending; its bytes are
# read and dropped this long so it sees the answer rather than a connection reset.
LINGER_SECONDS = 2.0
REFUSE_HEAD_SECONDS = 5.0   # an over-limit connection gets this long to send its head
# How long a body waits for room under the in-flight bound before its client gets a 503.
BODY_ROOM_SECONDS = 1.0
# At the connection cap, a connection still without a whole head after this long gives
# way to a newcomer (a real client sends its head at once; a younger one may just not
# have been read yet).
SLOW_HEAD_SECONDS = 1.0
BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)


class ConnectionHost(Protocol):
    """What a connection needs from the server that accepted it, and all it may touch."""

    app: App
    admit: Admit | None
    limits: ServerLimits
    budget: BodyBudget
    on_error: ErrorResponder
    on_stream_error: StreamErrorResponder
    draining: bool

    def app_started(self, conn: "ClientConnection") -> None: ...

    def app_finished(self, conn: "ClientConnection") -> None: ...


class ClientConnection:
    __slots__ = ("server", "stream", "conn", "limits", "idle_scope", "request_scope", "gone", "torn",
                 "streaming", "abort_reason", "resting", "head_since", "linger_scope", "evicted", "held", "app_held",
                 "head_request", "body_stream")

    def __init__(self, server: ConnectionHost, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.limits = server.limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.idle_scope: trio.CancelScope | None = None     # set while waiting for a head
        self.request_scope: trio.CancelScope | None = None  # set while a request is served
        self.gone = False        # the client closed its end mid-request
        self.torn = False        # a write was cut half-way: nothing more may follow it
        self.streaming = False   # the response in progress is a stream
        self.abort_reason: tuple[int, str] | None = None
        self.resting = False     # kept alive between requests, nothing of the next one yet
        self.head_since: float | None = None  # waiting for the rest of a head since then
        self.linger_scope: trio.CancelScope | None = None  # set while dropping bytes after an early answer
        self.evicted = False
        self.held = 0            # bytes of the in-flight bound this request's body holds
        self.app_held = 0        # and what the app counted (Request.reserve) while it works
        self.head_request = False  # the request being answered is a HEAD: no body goes out
        self.body_stream: BodyStream | None = None  # the stream being written, if any

    # ------------------------------------------------------------------ control

    def eviction_rank(self, now: float) -> int | None:
        """How readily this connection gives way to a newcomer at the connection cap,
        lowest first: answered early and only dropping the client's bytes, then a head
        slower than SLOW_HEAD_SECONDS (or no byte at all), then resting between requests.
        None: busy with a request, never evicted."""
        if self.linger_scope is not None:
            return 0
        if self.head_since is not None and now - self.head_since >= SLOW_HEAD_SECONDS:
            return 1
        if self.resting and self.idle_scope is not None:
            return 2
        return None

    def evict(self) -> None:
        """Close now, quietly: the connection was ranked by eviction_rank()."""
        self.evicted = True
        self.resting = False
        for scope in (self.linger_scope, self.idle_scope):
            if scope is not None:
                scope.cancel()

    def drain(self) -> None:
        """Close now if waiting for a request that has not begun; else after the response."""
        scope = self.idle_scope
        if scope is not None and not self.conn.trailing_data[0]:
            scope.cancel()

    def cancel_if_client_gone(self) -> None:
        """Cancel the request in progress if the client has closed its end (a non-blocking
        peek, asked by the server's watchdog of connections the app has worked on a while)."""
        if self.request_scope is not None and _peer_closed(self.stream):
            self.gone = True
            self.request_scope.cancel()

    def abort(self, status: int, message: str) -> None:
        self.abort_reason = (status, message)
        for scope in (self.request_scope, self.idle_scope):
            if scope is not None:
                scope.cancel()

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        first = True
        conn = self.conn
        while not self.server.draining or first:
            head = await self._read_head(self.limits.header_timeout if first else None)
            if head is None:
                return
            first = False
            if not await self._handle(head):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def refuse(self, status: int, message: str) -> None:
        """Answer an over-limit connection's first request with `status`, then close."""
        head = await self._read_head(min(self.limits.header_timeout, REFUSE_HEAD_SECONDS))
        if head is not None:
            path = head.target.decode("latin-1").partition("?")[0]
            await self._reject(status, message, path, [(b"retry-after", b"1")])

    async def _read_head(self, timeout: float | None) -> h11.Request | None:
        """The next request head, or None when the connection should close. `timeout`
        covers the whole head; None means a keep-alive wait first (keepalive_timeout for
        the first byte) and then the header timeout for the rest."""
        conn = self.conn
        error: h11.RemoteProtocolError | None = None
        event = None
        self.head_request = False
        with trio.CancelScope() as scope:
            self.idle_scope = scope
            try:
                event = conn.next_event()
                head_time = self.limits.header_timeout if timeout is None else timeout
                if event is h11.NEED_DATA and timeout is None:
                    if not conn.trailing_data[0]:  # nothing of the next request yet
                        if self.server.draining:
                            scope.cancel()
                        scope.deadline = trio.current_time() + self.limits.keepalive_timeout
                        self.resting = True
                        try:
                            conn.receive_data(await self.stream.receive_some(READ_SIZE))
                        finally:
                            self.resting = False
                        event = conn.next_event()
                if event is h11.NEED_DATA:
                    self.head_since = trio.current_time()
                    scope.deadline = self.head_since + head_time
                    while event is h11.NEED_DATA:
                        conn.receive_data(await self.stream.receive_some(READ_SIZE))  # b"" marks EOF
                        event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                error = exc
        self.idle_scope = None
        self.head_since = None
        if error is not None:
            await self._reject(error.error_status_hint, f"malformed HTTP request: {error}")
            return None
        if scope.cancelled_caught:
            # Mid-head (some bytes buffered) gets a 408; a quiet keep-alive just closes.
            if self.abort_reason is None and not self.evicted and conn.their_state is h11.IDLE and conn.trailing_data[0]:
                await self._reject(408, "timed out reading the request head")
            return None
        return event if isinstance(event, h11.Request) else None  # ConnectionClosed, ...

    async def _read_body(self, path: str, declared: int | None) -> bytes | None:
        limit = self.limits.max_body_bytes
        if declared is not None and declared > limit:
            await self._reject(413, f"request body of {declared} bytes is over the limit of {limit} bytes", path)
            return None
        budget = self.server.budget
        # A declared length is reserved whole, before `100 Continue` invites the bytes.
        if declared and not await budget.take(declared, BODY_ROOM_SECONDS):
            await self._no_room(path)
            return None
        self.held += declared or 0
        if self.conn.they_are_waiting_for_100_continue:  # curl, for bodies over 1 MB
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        # One growing buffer, not a list of read-sized pieces: many pieces left alive
        # between other allocations keep the heap from shrinking after a burst.
        body = bytearray()
        # A cancel scope only once the body must be waited for: a small body usually came
        # in the same read as its head, and is taken from h11's buffer without one.
        deadline = trio.current_time() + self.limits.body_timeout
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_at(deadline) as slow:
                    self.conn.receive_data(await self.stream.receive_some(READ_SIZE))
                if slow.cancelled_caught:
                    break
            elif isinstance(event, h11.Data):
                if len(body) + len(event.data) > limit:
                    await self._reject(413, f"request body is over the limit of {limit} bytes", path)
                    return None
                if declared is None:  # chunked: reserved as it comes
                    if not budget.try_take(len(event.data)):
                        await self._no_room(path)
                        return None
                    self.held += len(event.data)
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # ConnectionClosed mid-body
                return None
        await self._reject(408, "timed out reading the request body", path)
        return None

    async def _no_room(self, path: str) -> None:
        await self._reject(503, "the proxy is holding as many request bodies as its memory limit allows; "
                                "retry shortly", path, [(b"retry-after", b"1")])

    def _reserve(self, n: int) -> bool:
        """Request.reserve: more of the in-flight bound, until the app has answered."""
        if n <= 0:
            return True
        if not self.server.budget.try_take(n):
            return False
        self.app_held += n
        return True

    def _give_back_app_held(self) -> None:
        self.server.budget.give_back(self.app_held)
        self.app_held = 0

    async def _handle(self, head: h11.Request) -> bool:
        """Serve one request; True when the connection may carry another."""
        target = head.target.decode("latin-1")
        path, _, query = target.partition("?")
        self.head_request = head.method == b"HEAD"
        declared = None
        chunked = False
        for name, value in head.headers:
            if name == b"content-length":
                declared = int(value)  # h11 has checked it is a number
            elif name == b"transfer-encoding":
                chunked = True
        if chunked and declared is not None:
            # RFC 9112 section 6.1: another hop may frame such a body by the other header,
            # so the bytes after it could be taken for a second request. Refused, closed.
            await self._reject(400, "a request may not carry both Content-Length and Transfer-Encoding", path)
            return False
        method = head.method.decode("ascii")
        headers = list(head.headers)
        if self.server.admit is not None:
            early = self._admit(RequestHead(method, path, query, headers), path)
            if early is not None:  # its body is never read, so the connection cannot go on
                await self._answer_early(early)
                return False
        try:
            try:
                body = await self._read_body(path, declared)
            except h11.RemoteProtocolError as exc:
                await self._reject(400, f"malformed HTTP request: {exc}", path)
                return False
            if body is None:
                return False
            request = Request(method, path, query, headers, body, self._reserve)
            return await self._respond(request, path)
        finally:
            self._give_back_app_held()
            self.server.budget.give_back(self.held)
            self.held = 0

    def _admit(self, head: RequestHead, path: str) -> Response | None:
        admit = self.server.admit
        assert admit is not None
        try:
            return admit(head)
        except Exception:  # an app bug: answered like one in the app itself
            log.exception("unhandled error admitting %s %s", head.method, path)
            return self.server.on_error(path, 500, "internal error in the proxy")

    async def _respond(self, request: Request, path: str) -> bool:
        self.gone = self.torn = self.streaming = False
        self.body_stream = None
        keep = done = False
        with trio.CancelScope(deadline=trio.current_time() + self.limits.request_timeout) as scope:
            self.request_scope = scope
            if self.abort_reason is not None:
                scope.cancel()
            keep = await self._exchange(request, path)
            done = True
        self.request_scope = None
        if done or self.gone:
            return keep and not self.gone
        # Cut short by the request ceiling or a shutdown: tell the client in its dialect.
        status, message = self.abort_reason or (
            504, f"the request took longer than the proxy's limit of {self.limits.request_timeout:g} s")
        our = self.conn.our_state
        with trio.move_on_after(1.0):
            if our is h11.SEND_RESPONSE:
                await self._reject(status, message, path, linger=False)
            elif our is h11.SEND_BODY and self.streaming and not self.torn:
                try:
                    await self._send(h11.Data(data=self._cut_event(path, status, message)))
                except BROKEN:
                    pass
        return False

    async def _exchange(self, request: Request, path: str) -> bool:
        self.server.app_started(self)
        try:
            response = await self._call_app(request, path)
        finally:
            self.server.app_finished(self)
            self._give_back_app_held()  # what the app built from the body is gone with its call
        if self.server.draining:
            response.headers.append((b"connection", b"close"))
        if response.stream is not None:
            if self.head_request:
                return await self._send_head_of_stream(response, response.stream)
            return await self._send_stream(response, response.stream)
        try:
            await self._send_simple(response)
        except BROKEN:
            return False
        except h11.LocalProtocolError:
            log.exception("cannot send the response to %s %s", request.method, path)
            return False
        return True

    async def _call_app(self, request: Request, path: str) -> Response:
        try:
            return await self.server.app(request)
        except Exception:  # an app bug must not kill the connection loop silently
            log.exception("unhandled error serving %s %s", request.method, path)
            return self.server.on_error(path, 500, "internal error in the proxy")

    async def _send(self, event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def _send_simple(self, response: Response) -> None:
        headers = list(response.headers)
        headers.append((b"content-length", str(len(response.body)).encode()))
        # Head, body and end in one write: one syscall per answer instead of three.
        conn = self.conn
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        if response.body and not self.head_request:  # HEAD: the length of what GET would send
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def _send_head_of_stream(self, response: Response, stream: BodyStream) -> bool:
        """HEAD of a streamed answer: its head alone; the stream is closed unread."""
        try:
            await self._send(h11.Response(status_code=response.status, headers=list(response.headers)))
            await self._send(h11.EndOfMessage())
            return True
        except BROKEN:
            return False
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()

    def _cut_event(self, path: str, status: int, message: str) -> bytes:
        """The last event of a stream the server cuts: the stream's own when it can write one
        that fits what it already sent (a Responses stream's `response.failed` must carry
        its response id and next sequence number), else the app's for the path."""
        own = getattr(self.body_stream, "cut_event", None)
        if own is not None:
            data = own(status, message)
            if data:
                return data
        return self.server.on_stream_error(path, status, message)

    async def _send_stream(self, response: Response, stream: BodyStream) -> bool:
        self.streaming = True
        self.body_stream = stream
        sending = True  # until the head is out, a cut write leaves nothing to add to
        finished = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_client, nursery.cancel_scope if self.request_scope is None
                               else self.request_scope)
            # Everything is caught inside the nursery: trio would wrap it in an ExceptionGroup.
            try:
                head = self.conn.send(h11.Response(status_code=response.status, headers=list(response.headers)))
                # h11 chose the body's framing when it wrote this head. Its chunked writer
                # keeps no state between Data events (only the head and the end move its
                # state machine), so framing each item here leaves h11 where its own Data
                # events would: in SEND_BODY, and the EndOfMessage sent through it below
                # writes the last chunk and moves it to DONE. Any other framing (a length
                # the app set, HTTP/1.0's close-delimited body) goes through h11.Data.
                chunked = b"\r\ntransfer-encoding: chunked\r\n" in head.lower()
                await self.stream.send_all(head)
                sending = False
                send_all = self._stream_writer()
                async for item in stream:
                    if item:
                        sending = True
                        if chunked:
                            await send_all(b"%x\r\n%b\r\n" % (len(item), item))
                        else:
                            await self._send(h11.Data(data=item))
                        sending = False
                await self._send(h11.EndOfMessage())
                finished = True
            except StreamAborted:
                pass  # the stream told the client itself; its body stays unfinished
            except BROKEN:
                pass
            except Exception as exc:  # a failing stream: cut, never finished as if whole
                log.warning("response stream failed: %s: %s", type(exc).__name__, exc)
            finally:
                self.torn = sending
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with trio.CancelScope(shield=True):
                        await aclose()
            nursery.cancel_scope.cancel()
        return finished

    def _stream_writer(self) -> Callable[[bytes], Awaitable[None]]:
        """`send_all` for a stream's chunks, one call per upstream read. trio's
        SocketStream.send_all wraps every call in a conflict detector and an
        error-translating context manager; this task is the connection's only writer
        while it streams, so the socket's own `send` (with its checkpoints) is called
        directly, with the same errors: a peer gone is BrokenResourceError."""
        send = self.stream.socket.send

        async def send_all(data: bytes) -> None:
            try:
                sent = await send(data)
                if sent < len(data):
                    view = memoryview(data)
                    while sent < len(view):
                        sent += await send(view[sent:])
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
        return send_all

    async def _watch_client(self, scope: trio.CancelScope) -> None:
        """Cancel the request when the client closes its end before the response is done."""
        fed = 0
        try:
            while True:
                data = await self.stream.receive_some(READ_SIZE)
                if not data:
                    break
                self.conn.receive_data(data)  # a pipelined next request waits in h11's buffer
                fed += len(data)
                if fed > self.limits.max_header_bytes:
                    await trio.sleep_forever()  # buffer no more; the response ends this task
        except BROKEN:
            pass
        self.gone = True
        scope.cancel()

    async def _reject(self, status: int, message: str, path: str = "",
                      extra: list[tuple[bytes, bytes]] | None = None, linger: bool = True) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        # Only the message's first part: h11's details can quote header values (keys).
        log.info("answered %d without the app: %s (%s)", status, message.split(":", 1)[0], path or "no path")
        response = self.server.on_error(path, status, message)
        if extra:
            response.headers.extend(extra)
        await self._answer_early(response, linger)

    async def _answer_early(self, response: Response, linger: bool = True) -> None:
        """Send `response` and close: the request's body, if any, stays unread."""
        response.headers.append((b"connection", b"close"))
        try:
            await self._send_simple(response)
            if linger:
                await self._linger()
        except (*BROKEN, h11.LocalProtocolError):
            pass

    async def _linger(self) -> None:
        await self.stream.send_eof()
        with trio.move_on_after(LINGER_SECONDS) as scope:
            self.linger_scope = scope  # evictable now: the answer is out
            try:
                while await self.stream.receive_some(READ_SIZE):
                    pass
            finally:
                self.linger_scope = None



def _peer_closed(stream: trio.SocketStream) -> bool:
    """True when the client closed or reset its end; bytes it sent (a pipelined request)
    stay unread. One non-blocking recv on the descriptor, wrapped without a dup."""
    trio_sock = stream.socket
    try:
        sock = socket.socket(trio_sock.family, trio_sock.type, fileno=trio_sock.fileno())
    except OSError:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        sock.detach()  # the descriptor stays trio's
