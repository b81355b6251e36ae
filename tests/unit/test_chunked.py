"""The chunked decoder against h11 on the same bytes (RFC 9112 section 7.1): the same body,
the same end, the same bytes left over and the same refusals, however the reads are cut."""

from __future__ import annotations

import time
from dataclasses import dataclass

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawproxy.core.chunked import ChunkedDecoder, ChunkedError

from .cuts import split_at

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
MAX = 65536


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


@dataclass
class Outcome:
    body: bytes
    done: bool
    extra: bytes
    failed: bool


def decode(pieces: list[bytes], max_line: int = MAX) -> Outcome:
    """Feed the pieces, then end the input."""
    decoder = ChunkedDecoder(max_line)
    body = []
    try:
        for piece in pieces:
            body.append(decoder.feed(piece))
        decoder.close()
    except ChunkedError as exc:
        body.append(exc.data)
        return Outcome(b"".join(body), decoder.done, decoder.extra, True)
    return Outcome(b"".join(body), decoder.done, decoder.extra, False)


def h11_decode(pieces: list[bytes], max_size: int = MAX) -> Outcome:
    """What h11 (httpcore's parser) makes of the same body bytes after a response head."""
    conn = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=max_size)
    conn.send(h11.Request(method="GET", target="/v1/messages", headers=[("Host", "upstream")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(HEAD)
    assert isinstance(conn.next_event(), h11.Response)
    body, done = [], False
    try:
        for piece in [p for p in pieces if p] + [b""]:  # b"" is the end of input to h11
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Data):
                    body.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    done = True
                else:  # NEED_DATA, PAUSED (bytes after the body), ConnectionClosed
                    break
    except h11.RemoteProtocolError:
        return Outcome(b"".join(body), done, b"", True)
    return Outcome(b"".join(body), done, conn.trailing_data[0], False)


# --- valid encodings ----------------------------------------------------------------------

# Random bytes mapped onto an alphabet: one draw per string, not one per character (the
# generation, not the decoding, is what these tests spend their time on).
def onto(alphabet: bytes) -> bytes:
    return bytes(alphabet[i % len(alphabet)] for i in range(256))


TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
token = st.binary(min_size=1, max_size=8).map(lambda b: b.translate(onto(TCHAR)))
ows = st.sampled_from([b"", b" ", b"\t", b" \t "])
eol = st.sampled_from([b"\r\n", b"\n"])  # trailer lines may end in a bare LF (h11 takes it)

# quoted-string: qdtext (HTAB, SP, VCHAR but DQUOTE and backslash, obs-text), and both of
# those two as quoted-pairs.
_QUOTABLE = onto(b"\t " + bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100)))
quoted = st.binary(max_size=8).map(
    lambda b: b'"' + b.translate(_QUOTABLE).replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')


def render_extension(parts) -> bytes:
    before_name, name, value = parts
    ext = b";" + before_name + name
    if value is not None:
        ext += value[0] + b"=" + value[1] + value[2]
    return ext


# chunk-ext = ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ]; never BWS before the
# ";" (h11 refuses it: see the malformed cases).
extension = st.tuples(ows, token, st.none() | st.tuples(ows, ows, token | quoted)).map(render_extension)
extensions = st.lists(extension, max_size=3).map(b"".join)
# How a chunk-size line is written, whatever its size: leading zeros (up to 20 digits in
# all), which digits are upper case, extensions, whitespace before the CRLF.
line_style = st.tuples(st.integers(0, 3) | st.just(20), st.integers(0, 2**20 - 1), extensions, ows)


def size_line(size: int, style) -> bytes:
    zeros, upper, exts, space = style
    digits = format(size, "x")
    digits = "0" * min(zeros, 20 - len(digits)) + digits
    digits = "".join(c.upper() if upper >> i & 1 else c for i, c in enumerate(digits))
    return digits.encode() + exts + space + b"\r\n"


_FIELD_VCHAR = onto(bytes(b for b in range(256) if b not in b"\x00\t\n\x0b\x0c\r "))
field_word = st.binary(min_size=1, max_size=6).map(lambda b: b.translate(_FIELD_VCHAR))
field_value = st.lists(field_word, max_size=3).map(b" ".join)
trailer_name = token.filter(lambda t: t.lower() not in (b"content-length", b"transfer-encoding"))
fold = st.tuples(st.sampled_from([b" ", b"\t", b"  "]), field_value, eol).map(b"".join)  # obs-fold
trailer = st.tuples(trailer_name, ows, field_value, ows, eol, st.lists(fold, max_size=2).map(b"".join)).map(
    lambda t: t[0] + b":" + b"".join(t[1:]))


@dataclass
class Encoded:
    wire: bytes  # the body's coding, then `extra`
    body: bytes
    extra: bytes


def render(parts) -> Encoded:
    chunks, last_zeros, last_exts, last_space, trailers, end, extra = parts
    wire = b"".join(size_line(len(data), style) + data + b"\r\n" for data, style in chunks)
    last = b"0" * last_zeros + last_exts + last_space + b"\r\n"
    body = b"".join(data for data, _ in chunks)
    return Encoded(wire + last + b"".join(trailers) + end + extra, body, extra)


def encoded(max_chunk: int = 40, extra: bool = True) -> st.SearchStrategy[Encoded]:
    data = st.binary(min_size=1, max_size=max_chunk)
    if max_chunk > 40:  # and SSE-event-sized chunks
        data = st.binary(min_size=1, max_size=40) | st.binary(min_size=200, max_size=max_chunk)
    return st.tuples(
        st.lists(st.tuples(data, line_style), max_size=8),
        st.integers(1, 4), extensions, ows,  # the last chunk
        st.lists(trailer, max_size=3), eol,  # trailers and the blank line
        st.binary(max_size=20) if extra else st.just(b""),
    ).map(render)


cuts = st.lists(st.integers(0, 100_000), max_size=16)


@settings(max_examples=200, deadline=None)
@given(encoded(max_chunk=2000), cuts)
def test_any_cutting_decodes_what_h11_decodes(enc, cut_points):
    pieces = split_at(enc.wire, cut_points)
    got = decode(pieces)
    assert got == Outcome(enc.body, True, enc.extra, False)
    assert h11_decode(pieces) == got


@settings(max_examples=100, deadline=None)
@given(encoded(max_chunk=12))
def test_one_byte_reads_decode_what_h11_decodes(enc):
    pieces = bytewise(enc.wire)
    got = decode(pieces)
    assert got == Outcome(enc.body, True, enc.extra, False)
    assert h11_decode(pieces) == got


@settings(max_examples=50, deadline=None)
@given(encoded(max_chunk=12, extra=False))
def test_a_stream_cut_at_any_byte_is_never_done(enc):
    wire = enc.wire
    decoder = ChunkedDecoder()
    for i in range(len(wire) - 1):
        decoder.feed(wire[i:i + 1])
        assert not decoder.done
    decoder.feed(wire[-1:])
    assert decoder.done
    for k in range(len(wire)):
        cut = decode([wire[:k]])
        assert cut.failed and not cut.done
        assert h11_decode([wire[:k]]) == cut


# --- malformed input ----------------------------------------------------------------------

_byte = st.one_of(st.sampled_from(list(b"\r\n \t;:=\",0aAfFgGxX\x00\x0b\x0c\x80")), st.integers(0, 255))
mutation = st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 100_000), _byte)


def mutate(wire: bytes, mutations) -> bytes:
    data = bytearray(wire)
    for kind, at, byte in mutations:
        if kind == "insert":
            data.insert(at % (len(data) + 1), byte)
        elif data:
            if kind == "replace":
                data[at % len(data)] = byte
            else:
                del data[at % len(data)]
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(encoded(max_chunk=12), st.lists(mutation, min_size=1, max_size=3), cuts)
def test_corrupted_streams_get_h11s_verdict_however_cut(enc, mutations, cut_points):
    """Refused iff h11 refuses, with the same body before the fault (or the same body, end
    and leftover bytes when the corruption left a valid coding), for any cutting."""
    wire = mutate(enc.wire, mutations)
    expected = h11_decode(split_at(wire, cut_points))
    assert decode(split_at(wire, cut_points)) == expected
    assert decode([wire]) == expected
    assert decode(bytewise(wire)) == expected


LAST = b"0\r\n\r\n"
# (what, body bytes, refused by h11 and by the decoder)
CASES = [
    ("size not hex", b"g\r\nhello\r\n" + LAST, True),
    ("size with 0x prefix", b"0x5\r\nhello\r\n" + LAST, True),
    ("size with a sign", b"+5\r\nhello\r\n" + LAST, True),
    ("size with an underscore", b"1_0\r\n" + b"x" * 16 + b"\r\n" + LAST, True),  # int() takes "1_0"
    ("space inside the size", b"1 0\r\n" + b"x" * 16 + b"\r\n" + LAST, True),
    ("space before the size", b" 5\r\nhello\r\n" + LAST, True),
    ("empty size line", b"\r\nhello\r\n" + LAST, True),
    ("21 hex digits", b"0" * 20 + b"5\r\nhello\r\n" + LAST, True),
    ("whitespace before the extension's semicolon", b"5 ;a=b\r\nhello\r\n" + LAST, True),
    ("bare LF ending the size line", b"5\nhello\r\n" + LAST, True),
    ("bare LF ending the last chunk", b"5\r\nhello\r\n0\n\r\n", True),
    ("bare LF inside an extension", b"5;a\nb\r\nhello\r\n" + LAST, True),
    ("CR inside the size line", b"5\r;a\r\nhello\r\n" + LAST, True),
    ("no CRLF after chunk data", b"5\r\nhello" + LAST, True),
    ("bare LF after chunk data", b"5\r\nhello\n" + LAST, True),
    ("bare CR after chunk data", b"5\r\nhello\r" + LAST, True),
    ("data longer than its size", b"5\r\nhello!\r\n" + LAST, True),
    ("junk instead of trailers", b"5\r\nhello\r\n0\r\njunk\r\n\r\n", True),
    ("space in a trailer name", b"0\r\nX Y: z\r\n\r\n", True),
    ("space before a trailer's colon", b"0\r\nX : z\r\n\r\n", True),
    ("trailers starting with a continuation", b"0\r\n folded\r\nX: y\r\n\r\n", True),
    ("NUL in a trailer value", b"0\r\nX: a\x00b\r\n\r\n", True),
    ("CR inside a trailer value", b"0\r\nX: a\rb\r\n\r\n", True),
    ("VT in a trailer value", b"0\r\nX: a\x0bb\r\n\r\n", True),
    ("FF in a folded trailer line", b"0\r\nX: a\r\n b\x0cc\r\n\r\n", True),
    ("NUL in a folded trailer line", b"0\r\nX: a\r\n\t\x00\r\n\r\n", True),
    ("non-digit Content-Length trailer", b"0\r\nContent-Length: 1x\r\n\r\n", True),
    ("conflicting Content-Length trailers", b"0\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n", True),
    ("Content-Length trailer of 21 digits", b"0\r\nContent-Length: " + b"1" * 21 + b"\r\n\r\n", True),
    ("Content-Length trailer listing two values", b"0\r\nContent-Length: 1, 2\r\n\r\n", True),
    ("Content-Length trailer folded into junk", b"0\r\nContent-Length: 1\r\n 2\r\n\r\n", True),
    ("Transfer-Encoding trailer other than chunked", b"0\r\nTransfer-Encoding: gzip\r\n\r\n", True),
    ("two Transfer-Encoding trailers", b"0\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    ("ends inside chunk data", b"5\r\nhel", True),
    ("ends inside a size line", b"5\r\nhello\r\n1", True),
    ("ends before the CRLF after data", b"5\r\nhello\r", True),
    ("ends before the last chunk", b"5\r\nhello\r\n", True),
    ("ends inside the trailers", b"5\r\nhello\r\n0\r\nX: y\r\n", True),
    ("ends before the trailers' end", b"5\r\nhello\r\n0\r\n", True),
    ("nothing at all", b"", True),
    # Valid, some only because h11 is lenient: the decoder takes what h11 takes.
    ("extension holding a bare CR", b"5;a\rb\r\nhello\r\n" + LAST, False),
    ("extension of any bytes", b"5;\x00\x7f\xff\"\r\nhello\r\n" + LAST, False),
    ("whitespace after the size", b"5 \t\r\nhello\r\n" + LAST, False),
    ("whitespace after an extension", b"5;a=\"b c\" \r\nhello\r\n" + LAST, False),
    ("20 hex digits", b"0" * 19 + b"5\r\nhello\r\n" + LAST, False),
    ("upper-case hex", b"0A\r\n0123456789\r\n" + LAST, False),
    ("CRLF inside chunk data", b"4\r\n\r\n\r\n\r\n" + LAST, False),
    ("trailer lines ending in bare LF", b"5\r\nhello\r\n0\r\nX: y\nZ: w\n\n", False),
    ("blank line as a bare LF", b"5\r\nhello\r\n0\r\n\n", False),
    ("folded trailer", b"0\r\nX: a\r\n  b\r\n\tc\r\n\r\n", False),
    ("control bytes in a trailer value", b"0\r\nX: \x01\x7f\x80\r\n\r\n", False),
    ("empty trailer value", b"0\r\nX:\r\n\r\n", False),
    ("agreeing Content-Length trailers", b"0\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n", False),
    ("Content-Length trailer of 20 digits", b"0\r\nContent-Length: " + b"1" * 20 + b"\r\n\r\n", False),
    ("Transfer-Encoding: chunked trailer", b"0\r\nTransfer-Encoding: Chunked\r\n\r\n", False),
    ("bytes after the body", b"5\r\nhello\r\n" + LAST + b"HTTP/1.1 200", False),
]


@pytest.mark.parametrize(("wire", "refused"), [(w, r) for _, w, r in CASES], ids=[c[0] for c in CASES])
def test_each_rule_matches_h11_at_every_cut(wire, refused):
    expected = h11_decode([wire])
    assert expected.failed == refused
    for cut in range(len(wire) + 1):
        pieces = [wire[:cut], wire[cut:]]
        assert h11_decode(pieces) == expected
        assert decode(pieces) == expected, f"cut at {cut}"
    assert decode(bytewise(wire)) == expected


def test_missing_crlf_after_data_is_refused_even_for_a_size_seen_before():
    # The decoder remembers chunk-size lines it has checked; a line that follows a chunk's
    # data without its CRLF must not pass for one of them.
    warm = b"12\r\n" + b"a" * 18 + b"\r\n12\r\n" + b"b" * 18 + b"\r\n" + LAST
    assert decode([warm]) == Outcome(b"a" * 18 + b"b" * 18, True, b"", False)
    wire = b"3\r\nabc12\r\n" + b"c" * 18 + b"\r\n" + LAST
    got = decode([wire])
    assert got.failed and got.body == b"abc"
    assert h11_decode([wire]) == got


# --- bounds -------------------------------------------------------------------------------


def long_size_line(length: int) -> bytes:
    """A chunk-size line of `length` bytes, CRLF included (an extension pads it)."""
    line = b"5;x=" + b"y" * (length - 6) + b"\r\n"
    assert len(line) == length
    return line


@pytest.mark.parametrize("length", range(60, 69))
def test_a_size_line_longer_than_max_line_is_refused_however_cut(length):
    wire = long_size_line(length) + b"hello\r\n" + LAST
    cuttings = [[wire], bytewise(wire)] + [[wire[:c], wire[c:]] for c in range(1, length + 2)]
    for pieces in cuttings:
        got = decode(pieces, max_line=64)
        assert got.failed == (length > 64)
        # Where h11 differs it is the more lenient one: it bounds only the part of a line it
        # holds unfinished when it runs out of data (max_incomplete_event_size), so a long
        # line arriving in one read passes there, and the verdict hangs on the cutting.
        if h11_decode(pieces, max_size=64).failed:
            assert got.failed
    assert not h11_decode([wire], max_size=64).failed


@pytest.mark.parametrize("total", range(60, 69))
def test_a_trailer_section_longer_than_max_line_is_refused_however_cut(total):
    # Short lines, long section: h11 holds the whole section before parsing it, so the
    # bound is on the section, blank line included.
    short = (total - 6) // 10
    pad = total - 2 - 10 * short  # 4 to 13 bytes: "B:", padding, CRLF
    section = b"A: 12345\r\n" * short + b"B:" + b"x" * (pad - 4) + b"\r\n" + b"\r\n"
    assert len(section) == total
    wire = b"5\r\nhello\r\n0\r\n" + section
    cuttings = [[wire], bytewise(wire)] + [[wire[:c], wire[c:]] for c in range(len(wire) + 1)]
    for pieces in cuttings:
        got = decode(pieces, max_line=64)
        assert got.failed == (total > 64)
        if h11_decode(pieces, max_size=64).failed:  # as above: h11 is the more lenient
            assert got.failed


def test_an_unfinished_line_is_refused_as_soon_as_it_reaches_max_line():
    # No LF yet, but 1000 bytes of line can only end in a line of 1001 or more.
    decoder = ChunkedDecoder(max_line=1000)
    decoder.feed(b"5;")
    fed = 2
    with pytest.raises(ChunkedError, match="longer than 1000 bytes"):
        while fed < 2000:
            decoder.feed(b"x")
            fed += 1
    assert fed + 1 == 1000


def test_an_unfinished_line_is_searched_once():
    # 16 MiB of one extension in 4 KiB reads: searching the held line again on every read
    # is ~8 GiB of searching (seconds); searching each byte once is milliseconds.
    decoder = ChunkedDecoder(max_line=32 * 1024 * 1024)
    decoder.feed(b"5;x=")
    piece = b"y" * 4096
    started = time.perf_counter()
    for _ in range(16 * 256):
        assert decoder.feed(piece) == b""
    assert decoder.feed(b"\r\nhello\r\n" + LAST) == b"hello"
    elapsed = time.perf_counter() - started
    assert decoder.done
    assert elapsed < 1.0, f"{elapsed:.2f}s to hold 16 MiB of one line: it is searched again"


def test_max_line_below_a_plain_size_line_is_refused():
    with pytest.raises(ValueError):
        ChunkedDecoder(max_line=31)


# --- the API as a reader of the socket sees it --------------------------------------------


def test_chunk_data_split_across_reads_is_returned_as_it_arrives():
    decoder = ChunkedDecoder()
    data = bytes(range(256)) * 2
    assert decoder.feed(b"200\r\n" + data[:100]) == data[:100]
    middle = data[100:400]
    assert decoder.feed(middle) is middle  # a read that is all chunk data is not copied
    assert decoder.feed(data[400:] + b"\r\n" + LAST) == data[400:]
    assert decoder.done and decoder.extra == b""


def test_several_chunks_in_one_read_come_back_as_one_bytes():
    events = [b"data: {\"n\": %d}\n\n" % i for i in range(10)]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    decoder = ChunkedDecoder()
    out = decoder.feed(wire)
    assert type(out) is bytes and out == b"".join(events)
    assert not decoder.done


def test_bytes_after_the_body_are_kept_not_decoded():
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\n5\r\nhello\r\n") == b"abc"
    assert decoder.done and decoder.extra == b"5\r\nhello\r\n"
    assert decoder.feed(b"0\r\n\r\n") == b""
    assert decoder.extra == b"5\r\nhello\r\n0\r\n\r\n"
    decoder.close()  # done: the end of input is no error


def test_a_clean_end_leaves_no_extra():
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\nX: y\r\n\r\n") == b"abc"
    assert decoder.done and decoder.extra == b""


def test_close_inside_the_body_raises():
    decoder = ChunkedDecoder()
    decoder.feed(b"a\r\nhello")
    with pytest.raises(ChunkedError, match="ended inside the body"):
        decoder.close()


def test_an_error_hands_on_the_body_decoded_before_it_and_spends_the_decoder():
    decoder = ChunkedDecoder()
    with pytest.raises(ChunkedError) as info:
        decoder.feed(b"3\r\nabc\r\n2\r\nde\r\nzz\r\n")
    assert info.value.data == b"abcde"
    with pytest.raises(ChunkedError):
        decoder.feed(b"3\r\nabc\r\n")
    assert not decoder.done


def test_error_messages_quote_at_most_40_bytes():
    junk = b"Q" * 5000
    for wire in (junk + b"\r\n", b"5\r\nhello" + junk, b"0\r\n" + junk + b"\r\n\r\n", b"5" * 5000 + b"\r\n"):
        with pytest.raises(ChunkedError) as info:
            ChunkedDecoder().feed(wire)
        message = str(info.value)
        assert "Q" * 41 not in message and "5" * 41 not in message
        assert len(message) < 160
