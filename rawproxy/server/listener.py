"""The listener: accepts client connections, bounds them, drains them (trio).

With connection.py (one client's HTTP/1.1 exchange) the only code that touches client
sockets. A client that leaves cancels the work done for it: at once while a stream is
written (connection.py watches its socket), within a second while the app is still
working on the answer (one task per server looks at the connections that have waited
that long, so a quick request pays nothing for it).

Limits it enforces: head size (431) and time (408, or a quiet close), body size (413)
and time (408), bytes of bodies held at once by the process (503), a keep-alive idle
time, a ceiling on one whole request (an error in the client's dialect, as a body or,
once a stream has started, as an error event), and a number of open connections (at the
cap a connection answered early, one slow to send its head, or one resting between
requests makes room, else the newcomer gets a 503 and is closed). An optional `admit`
hook answers a request from its head alone, before its body is read.
`Server.drain()` stops accepting and lets in-flight requests finish; `Server.abort()`
then cuts what is left.
"""

from __future__ import annotations

import errno
import json
import logging
import socket

import trio

from .budget import BodyBudget
from .connection import BROKEN, ClientConnection
from .http import Admit, App, ErrorResponder, Response, ServerLimits, StreamErrorResponder
from .sockets import reuse_port_socket

log = logging.getLogger("rawproxy.server")

_MAX_REFUSING = 256          # beyond this many at once, over-limit connections just close
_WAIT_CHECK = 0.5            # how often the server looks for clients gone while the app works
# accept() failing for lack of descriptors or memory: wait, the load may pass.
_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def _plain_error(path: str, status: int, message: str) -> Response:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return Response(status, [(b"content-type", b"application/json")], body)


def _plain_stream_error(path: str, status: int, message: str) -> bytes:
    return b"event: error\ndata: " + json.dumps({"error": {"message": message, "status": status}}).encode() + b"\n\n"


class Server:
    """One listening app: accepts, serves, drains. `serve()` below is the short form."""

    def __init__(self, app: App, *, limits: ServerLimits | None = None, on_error: ErrorResponder | None = None,
                 on_stream_error: StreamErrorResponder | None = None, admit: Admit | None = None) -> None:
        self.app = app
        self.admit = admit
        self.limits = limits or ServerLimits()
        self.budget = BodyBudget(self.limits.max_inflight_body_bytes)
        self.on_error = on_error or _plain_error
        self.on_stream_error = on_stream_error or _plain_stream_error
        self.connections: set[ClientConnection] = set()
        self.waiting: dict[ClientConnection, float] = {}  # connections whose app is working, since when
        self.draining = False
        self._watchdog: trio.CancelScope | None = None
        self._refusing = 0
        self._accepting: trio.CancelScope | None = None
        self._closed = trio.Event()

    async def serve(self, host: str, port: int, *, reuse_port: bool = False,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until drained (or cancelled); reports the bound port through task_status.

        `reuse_port` lets several worker processes accept on one port (SO_REUSEPORT), the
        kernel spreading connections between them.
        """
        if reuse_port:
            listeners = [await _reuse_port_listener(host, port)]
        else:
            listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
        task_status.started(listeners[0].socket.getsockname()[1])
        await self.serve_listeners(listeners)

    async def serve_listeners(self, listeners: list[trio.SocketListener]) -> None:
        try:
            async with trio.open_nursery() as connections:
                connections.start_soon(self._watch_waiting)
                with trio.CancelScope() as accepting:
                    self._accepting = accepting
                    if self.draining:
                        accepting.cancel()
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(self._accept_loop, listener, connections)
                # Draining: no new connections; the nursery waits for the open ones.
                for listener in listeners:
                    await listener.aclose()
        finally:
            self._closed.set()

    def drain(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their response."""
        self.draining = True
        if self._accepting is not None:
            self._accepting.cancel()
        for conn in list(self.connections):
            conn.drain()
        self._stop_watchdog_when_idle()

    def app_started(self, conn: ClientConnection) -> None:
        """The app is working for `conn`: the watchdog may look at its client from now on."""
        self.waiting[conn] = trio.current_time()

    def app_finished(self, conn: ClientConnection) -> None:
        self.waiting.pop(conn, None)

    def _evict_one(self) -> bool:
        """Close the connection readiest to give way (ClientConnection.eviction_rank)."""
        now = trio.current_time()
        victim, victim_rank = None, 3
        for conn in self.connections:  # only at the cap: a scan then is fine
            rank = conn.eviction_rank(now)
            if rank is not None and rank < victim_rank:
                victim, victim_rank = conn, rank
                if rank == 0:
                    break
        if victim is None:
            return False
        victim.evict()
        self.connections.discard(victim)  # its place is the newcomer's from now
        return True

    def _stop_watchdog_when_idle(self) -> None:
        if self.draining and not self.connections and self._watchdog is not None:
            self._watchdog.cancel()

    async def _watch_waiting(self) -> None:
        """Cancel the work of clients that left while their answer was being prepared.

        Every half second, the connections whose app has worked that long are asked, by a
        non-blocking peek, whether their client closed; a quick request is never looked at.
        """
        with trio.CancelScope() as scope:
            self._watchdog = scope
            self._stop_watchdog_when_idle()
            while True:
                await trio.sleep(_WAIT_CHECK)
                cutoff = trio.current_time() - _WAIT_CHECK
                for conn, since in list(self.waiting.items()):
                    if since <= cutoff:
                        conn.cancel_if_client_gone()

    def abort(self, status: int = 503, message: str = "the proxy is shutting down") -> None:
        """Cut every request still running; each client gets `message` in its dialect."""
        self.drain()
        for conn in list(self.connections):
            conn.abort(status, message)

    async def wait_closed(self) -> None:
        """Returns once serving has ended: after drain(), when the last connection closed."""
        await self._closed.wait()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise
                log.error("accept failed (%s): waiting 100 ms", errno.errorcode.get(exc.errno, exc.errno))
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        conn = ClientConnection(self, stream)
        # At the cap, a connection that is done, slow to send its head or resting between
        # requests gives way (its client simply reconnects) before a new one is turned away.
        over = len(self.connections) >= self.limits.max_connections and not self._evict_one()
        try:
            if not over:
                self.connections.add(conn)
                await conn.run()
            elif self._refusing < _MAX_REFUSING:
                self._refusing += 1
                try:
                    await conn.refuse(503, f"the proxy is at its limit of {self.limits.max_connections} "
                                           "open connections; retry shortly")
                finally:
                    self._refusing -= 1
        except BROKEN:
            pass
        except Exception:
            log.exception("connection loop failed")
        finally:
            self.connections.discard(conn)
            self._stop_watchdog_when_idle()
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def serve(
    app: App,
    host: str,
    port: int,
    *,
    limits: ServerLimits | None = None,
    on_error: ErrorResponder | None = None,
    on_stream_error: StreamErrorResponder | None = None,
    admit: Admit | None = None,
    reuse_port: bool = False,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled; reports the bound port through task_status."""
    server = Server(app, limits=limits, on_error=on_error, on_stream_error=on_stream_error, admit=admit)
    await server.serve(host, port, reuse_port=reuse_port, task_status=task_status)


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    sock = trio.socket.from_stdlib_socket(reuse_port_socket(host, port))
    sock.listen(1024)
    return trio.SocketListener(sock)
