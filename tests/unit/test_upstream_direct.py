"""A streamed upstream body is read straight off its connection (`upstream.direct`): the
bytes are the body's, however the upstream cut its writes; a connection whose body ended
cleanly is reused; one cut, malformed, over-long or left unread is closed, never reused
half-read."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from rawproxy.core.errors import UpstreamError
from rawproxy.upstream import direct
from rawproxy.upstream.client import Upstream

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = [b"event: ping\ndata: {\"n\": %d}\n\n" % i for i in range(6)]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


BODY = b"".join(chunk(e) for e in EVENTS) + b"0\r\n\r\n"


@dataclass
class Upstream1:
    """A raw HTTP/1.1 upstream on 127.0.0.1 that answers each request with the next list of
    writes (a short pause between writes, so each tends to be its own read), and keeps the
    connection open after it unless the list says `None` (hang up there)."""

    answers: list[list[bytes | None]]
    connections: int = 0
    port: int = 0
    served: list[int] = field(default_factory=list)  # the connection number of each request

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        buf = b""
        try:
            while self.answers:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                buf = buf[length:]
                self.served.append(number)
                for write in self.answers.pop(0):
                    if write is None:
                        return
                    await stream.send_all(write)
                    await trio.sleep(0.005)
        except trio.BrokenResourceError:
            return
        finally:
            await stream.aclose()


async def fetch(upstream: Upstream, port: int, *, stop_after: int | None = None) -> bytes:
    up = await upstream.send("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                             [(b"content-type", b"application/json")], b"{}")
    got = b""
    try:
        async for data in up.iter_bytes():
            got += data
            if stop_after is not None and len(got) >= stop_after:
                break
    finally:
        await up.aclose()
    return got


def splits(data: bytes, at: list[int]) -> list[bytes | None]:
    cuts = [0, *at, len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


async def run(answers: list[list[bytes | None]], *requests, read_timeout: float = 5) -> tuple[Upstream1, list]:
    server = Upstream1(answers)
    results: list = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        upstream = Upstream(connect_timeout=5, read_timeout=read_timeout)
        for kwargs in requests:
            try:
                results.append(await fetch(upstream, server.port, **kwargs))
            except UpstreamError as exc:
                results.append(exc)
        await upstream.aclose()
        nursery.cancel_scope.cancel()
    return server, results


@pytest.mark.parametrize("cuts", [[], [len(HEAD) + 3], [len(HEAD) - 2, len(HEAD) + 40, len(HEAD) + 41],
                                  list(range(1, len(HEAD + BODY)))])
async def test_the_body_arrives_whole_and_the_connection_is_reused(cuts):
    """Head and body in one write (the first body bytes reach h11 with the head), or cut at
    any bytes: the same events come out, and the next request rides the same connection."""
    server, results = await run([splits(HEAD + BODY, cuts), [HEAD, BODY]], {}, {})
    assert results == [b"".join(EVENTS)] * 2
    assert server.served == [1, 1]


async def test_the_direct_reader_is_the_one_taken(monkeypatch):
    """With the httpcore and h11 this project installs, streams do not fall back to
    httpcore's slower per-chunk reader."""
    taken: list[object] = []
    original = direct.open_chunked_body

    def spy(*args, **kwargs):
        body = original(*args, **kwargs)
        taken.append(body)
        return body

    monkeypatch.setattr("rawproxy.upstream.client.open_chunked_body", spy)
    _, results = await run([[HEAD + BODY]], {})
    assert results == [b"".join(EVENTS)]
    assert len(taken) == 1 and isinstance(taken[0], direct.ChunkedBody)
    assert taken[0].ended_cleanly


@pytest.mark.parametrize("broken, why", [
    ([HEAD, chunk(EVENTS[0]), b"40\r\nshort", None], "cut inside a chunk"),
    ([HEAD, chunk(EVENTS[0]), None], "cut between chunks"),
    ([HEAD, chunk(EVENTS[0]) + b"zz\r\n", None], "bad chunk size"),
    ([HEAD, b"5\r\nhelloXX0\r\n\r\n", None], "chunk data not followed by CRLF"),
])
async def test_a_broken_body_is_an_error_and_its_connection_is_not_reused(broken, why):
    server, results = await run([broken, [HEAD, BODY]], {}, {})
    assert isinstance(results[0], UpstreamError), why
    assert "broke off the stream" in results[0].message
    assert results[1] == b"".join(EVENTS)
    assert server.served == [1, 2], why


async def test_bytes_after_the_body_close_the_connection():
    server, results = await run([[HEAD, BODY + b"HTTP/1.1 200 OK\r\n"], [HEAD, BODY]], {}, {})
    assert results == [b"".join(EVENTS)] * 2
    assert server.served == [1, 2]


async def test_an_answer_asking_to_close_is_not_reused():
    head = HEAD.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    server, results = await run([[head, BODY], [HEAD, BODY]], {}, {})
    assert results == [b"".join(EVENTS)] * 2
    assert server.served == [1, 2]


async def test_a_body_left_unread_closes_its_connection():
    """The client went away after the first event: the rest is not read, and the
    connection is not handed to the next request with the rest still in it."""
    server, results = await run([[HEAD, chunk(EVENTS[0]), b"".join(chunk(e) for e in EVENTS[1:]) + b"0\r\n\r\n"],
                                 [HEAD, BODY]], {"stop_after": 1}, {})
    assert results[0] == EVENTS[0]
    assert results[1] == b"".join(EVENTS)
    assert server.served == [1, 2]


async def test_a_length_delimited_body_still_reads_through_httpcore():
    body = b"".join(EVENTS)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body)
    server, results = await run([[head, body], [HEAD, BODY]], {}, {})
    assert results == [body, body]
    assert server.served == [1, 1]


async def test_an_upstream_that_stops_sending_mid_body_times_out():
    """The upstream sends one event and then nothing (its connection stays open)."""
    server, results = await run([[HEAD, chunk(EVENTS[0])], [HEAD, BODY]], {}, {}, read_timeout=0.3)
    assert isinstance(results[0], UpstreamError)
    assert (results[0].status, results[0].message) == (504, f"upstream http://127.0.0.1:{server.port}"
                                                              "/v1/chat/completions stopped sending (read timeout)")
    assert results[1] == b"".join(EVENTS)
    assert server.served == [1, 2]


async def test_the_events_before_a_malformed_chunk_still_arrive():
    """One read holds a whole event and then junk: the event is delivered, then the error."""
    got: list[bytes] = []

    async def collect(upstream: Upstream, port: int) -> None:
        up = await upstream.send("POST", f"http://127.0.0.1:{port}/v1/chat/completions", [], b"{}")
        try:
            async for data in up.iter_bytes():
                got.append(data)
        finally:
            await up.aclose()

    server = Upstream1([[HEAD + chunk(EVENTS[0]) + b"zz\r\n"]])
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        upstream = Upstream(connect_timeout=5, read_timeout=5)
        with pytest.raises(UpstreamError, match="broke off the stream"):
            await collect(upstream, server.port)
        await upstream.aclose()
        nursery.cancel_scope.cancel()
    assert got == [EVENTS[0]]
