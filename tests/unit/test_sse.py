"""The SSE framer under any chunking and every framing rule of docs/protocols.md section 4."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rawproxy.core.sse import SSEParser, encode_event

from .cuts import split_at


def parse_all(chunks):
    parser = SSEParser()
    out = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    out.extend(parser.close())
    return out


field_text = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30)
event_st = st.tuples(
    st.one_of(st.none(), st.sampled_from(["message_start", "content_block_delta", "ping", "error"])),
    st.lists(field_text, min_size=1, max_size=3),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),  # a comment line before the event
    st.booleans(),  # "data:" without the space
)


def render(events) -> tuple[bytes, list[tuple[str | None, str]]]:
    raw, expected = [], []
    for name, lines, eol, comment, nospace in events:
        block = ""
        if comment:
            block += f": keep-alive{eol}"
        if name is not None:
            block += f"event: {name}{eol}"
        for line in lines:
            block += ("data:" if nospace else "data: ") + line + eol
        block += eol
        raw.append(block.encode())
        value = "\n".join(line[1:] if nospace and line.startswith(" ") else line for line in lines)
        expected.append((name, value))
    return b"".join(raw), expected


@settings(max_examples=300, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_gives_the_same_events(events, cuts):
    data, expected = render(events)
    got = [(e.event, e.data) for e in parse_all(split_at(data, cuts)) if e.dispatch]
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=6), st.lists(st.integers(0, 10_000), max_size=8))
def test_raw_bytes_reassemble_the_stream(events, cuts):
    """Pass-through relies on this: the blocks' raw bytes are exactly the input."""
    data, _ = render(events)
    assert b"".join(e.raw for e in parse_all(split_at(data, cuts))) == data


def test_bytewise_feeding_crlf_split_across_chunks():
    data = b"event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n"
    events = parse_all([bytes([b]) for b in data])
    assert [(e.event, e.data) for e in events] == [("a", "1"), ("b", "2")]


def test_lone_cr_at_chunk_end_waits_for_next_byte():
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    # The LF completes a CRLF, not a second (blank) line.
    assert parser.feed(b"\n") == []
    events = parser.feed(b"\r\n")
    assert [(e.data, e.raw) for e in events] == [("x", b"data: x\r\n\r\n")]


def test_multiline_data_joins_with_lf_and_trailing_lf_stripped():
    [event] = parse_all([b"data: a\ndata:\ndata: b\n\n"])
    assert event.data == "a\n\nb"


def test_comment_only_block_is_forwarded_but_not_dispatched():
    events = parse_all([b": ping\n\ndata: x\n\n"])
    assert [(e.dispatch, e.raw) for e in events] == [(False, b": ping\n\n"), (True, b"data: x\n\n")]


def test_final_event_without_blank_line_is_discarded():
    assert [e.data for e in parse_all([b"data: a\n\ndata: b\n"])] == ["a"]


def test_leading_bom_is_stripped_once_even_when_split():
    events = parse_all([b"\xef", b"\xbb", b"\xbfdata: a\n\n"])
    assert [e.data for e in events] == ["a"]


def test_field_without_colon_and_unknown_fields():
    [event] = parse_all([b"data\nid: 7\nretry: 10\nfoo: bar\n\n"])
    assert event.data == "" and event.dispatch  # a `data` line with no colon is empty data


def test_only_one_space_after_colon_is_removed():
    [event] = parse_all([b"data:  two\n\n"])
    assert event.data == " two"


def test_many_events_in_one_chunk_arrive_together():
    chunk = b"".join(encode_event(str(i), "x") for i in range(50))
    events = SSEParser().feed(chunk)
    assert [e.data for e in events] == [str(i) for i in range(50)]


def test_encode_event_roundtrips_multiline():
    raw = encode_event("line1\nline2", "message_start")
    [event] = parse_all([raw])
    assert (event.event, event.data, event.raw) == ("message_start", "line1\nline2", raw)


lf_event_st = st.tuples(event_st.map(lambda e: e[0]), st.lists(field_text, min_size=1, max_size=3), st.just("\n"),
                        st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(lf_event_st, event_st), min_size=1, max_size=8), st.lists(st.integers(0, 8), max_size=8),
       st.integers(0, 3))
def test_reads_of_whole_events_give_what_bytewise_reads_give(events, groups, blanks):
    """Upstreams mostly send one or a few whole events per read: grouped that way (with
    extra blank lines here and there), the events, fields and raw bytes are the same as
    when the stream arrives a byte at a time."""
    blocks = [render([e])[0] for e in events]
    for k in range(min(blanks, len(blocks))):
        blocks[k] = b"\n" + blocks[k]
    reads, at = [], 0
    for size in [*groups, len(blocks)]:
        if at < len(blocks):
            reads.append(b"".join(blocks[at:at + max(size, 1)]))
            at += max(size, 1)
    data = b"".join(reads)
    whole = parse_all(reads)
    bytewise = parse_all([data[i:i + 1] for i in range(len(data))])
    assert [(e.event, e.data, e.raw, e.dispatch) for e in whole] == [(e.event, e.data, e.raw, e.dispatch)
                                                                      for e in bytewise]
    assert b"".join(e.raw for e in whole) == data
