"""The SSE framer's bounds against a hostile upstream: an event that never ends costs
linear time while it is buffered, and one event may not grow past the cap."""

from __future__ import annotations

import time

import pytest

from rawproxy.core.sse import DEFAULT_MAX_EVENT_BYTES, EventTooLarge, SSEParser


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_an_unterminated_line_is_scanned_once(line_end):
    # 16 MiB of one line in 4 KiB reads: rescanning the open line on every read is
    # ~8 GiB of searching (seconds); scanning each byte once is milliseconds.
    parser = SSEParser(max_event_bytes=32 * 1024 * 1024)
    assert [e.data for e in parser.feed(b"data: first" + line_end * 2)] == ["first"]
    chunk = b"x" * 4096
    started = time.perf_counter()
    parser.feed(b"data: ")
    for _ in range(16 * 256):
        assert parser.feed(chunk) == []
    events = parser.feed(line_end * 2)
    elapsed = time.perf_counter() - started
    assert [len(e.data) for e in events] == [16 * 1024 * 1024]
    assert elapsed < 1.0, f"{elapsed:.2f}s to buffer 16 MiB: the open line is rescanned"


def test_a_cr_held_back_at_a_chunk_end_is_still_a_line_end_after_a_long_line():
    for after in ([b"\n", b"\r\n"], [b"\r\n"], [b"\r", b"\n"]):
        parser = SSEParser()
        parser.feed(b"data: a\r\n\r\n")
        assert parser.feed(b"data: " + b"y" * 10_000 + b"\r") == []
        got = [e for piece in after for e in parser.feed(piece)]
        assert [len(e.data) for e in got] == [10_000], after


def test_an_event_growing_past_the_cap_is_refused_with_the_events_before_it():
    parser = SSEParser(max_event_bytes=1000)
    with pytest.raises(EventTooLarge) as refused:
        parser.feed(b"data: ok\n\ndata: " + b"z" * 600)
        parser.feed(b"z" * 600)
    assert [e.data for e in refused.value.events] == [] and refused.value.limit == 1000
    parser = SSEParser(max_event_bytes=1000)
    with pytest.raises(EventTooLarge) as refused:
        parser.feed(b"data: ok\n\ndata: " + b"z" * 1200)
    assert [e.data for e in refused.value.events] == ["ok"]  # whole events before it still go out


def test_a_whole_event_over_the_cap_in_one_read_is_refused_too():
    with pytest.raises(EventTooLarge):
        SSEParser(max_event_bytes=1000).feed(b"data: " + b"z" * 1200 + b"\n\n")


def test_events_up_to_the_cap_pass_however_many():
    block = b"data: " + b"q" * (1000 - 8) + b"\n\n"
    assert len(block) == 1000
    parser = SSEParser(max_event_bytes=1000)
    got = [e for byte in block * 5 for e in parser.feed(bytes([byte]))]
    assert len(got) == 5 and all(len(e.raw) == 1000 for e in got)
    assert DEFAULT_MAX_EVENT_BYTES == 16 * 1024 * 1024
