"""Sans-IO decoder for HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1).

An upstream's streamed (SSE) answer is read straight from the socket, in whole reads, and
fed here; the decoded bytes go on to the SSE framer. h11 (through httpcore) decoded it
before, one chunk per event: an event object, a receive-buffer copy and a trip through its
state machine for each chunk, which made it the largest per-event cost of the stream path.
Here a chunk costs a `bytes.find` for the line after it, a table lookup for its size and a
slice of its data; a read's chunks are joined once, and a read that is all chunk data is
handed on as is.

What is accepted and refused is h11 0.16's ChunkedReader, rule for rule (the tests run both
on the same bytes):

- a chunk-size line is 1 to 20 hex digits, then either `;` and anything but LF (extensions:
  skipped unread) or spaces and tabs, then CRLF (a bare LF is an error);
- a chunk's data is followed by exactly CRLF;
- the last chunk (size 0) is followed by the trailer section: field lines ending in CRLF or
  a bare LF, obs-fold continuation lines, up to the first empty line. Fields are checked
  (name, value bytes) and dropped; a Content-Length trailer must be digits agreeing with any
  other, a Transfer-Encoding trailer must say `chunked`, once.

One rule is the decoder's own: `max_line` bounds every chunk-size line and the trailer
section as a whole (line ends included), whether they arrive in one read or in many. h11
bounds only what it still holds incomplete when it needs more data, so a long line that
happens to arrive whole passes there: the verdict would hang on how the socket cut the reads.
"""

from __future__ import annotations

import re

DEFAULT_MAX_LINE = 65536

_HEX = b"0123456789abcdefABCDEF"
_CR = b"\r"
_MAX_SIZE_DIGITS = 20  # h11's cap: 80 bits, more than any body needs and still a small int
# max_line leaves room for any chunk-size line of bare digits (21 bytes and LF): those found
# in the tables below skip the length check.
_MIN_MAX_LINE = 32

# Chunk-size lines of bare digits (LF cut off) -> their size: a lookup costs a fraction of
# checking the digits and int(), and an upstream's chunk sizes repeat. _AFTER_DATA keys also
# start with the CRLF that ends the chunk before: found there, that CRLF is checked too. Two
# tables, never one: a line after a chunk's data missing its CRLF must not find a bare line's
# entry. Shared by all decoders; only lines that passed every check go in, and each table
# stops growing at a few thousand short keys.
_LINES: dict[bytes, int] = {}
_AFTER_DATA: dict[bytes, int] = {}
_TABLE_MAX = 4096
_line_size = _LINES.get
_after_data_size = _AFTER_DATA.get
# Field value bytes: any but NUL, CR, LF, VT and FF (h11's field-vchar plus SP and HTAB).
_FIELD_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+):([^\x00\n\r\x0b\x0c]*)")
_CONTINUATION = re.compile(rb"[ \t][^\x00\n\r\x0b\x0c]*")

# States. _CRLF and _LF: a chunk's data has ended, its CRLF (or the LF of it) is due.
_SIZE, _DATA, _CRLF, _LF, _TRAILER, _DONE, _FAILED = range(7)


def _show(data: bytes | bytearray) -> str:
    # An error message quotes at most 40 bytes of what the peer sent.
    if len(data) <= 40:
        return repr(bytes(data))
    return f"{bytes(data[:40])!r}... ({len(data)} bytes)"


class ChunkedError(ValueError):
    """Malformed chunked coding, or input that ended inside the body.

    `data` is the body the failing `feed` decoded before the fault (the chunks of the same
    read that came before it): that feed returns nothing, so it is handed on here."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class ChunkedDecoder:
    """Feed it the body's bytes as they are read; it returns the decoded body bytes.

    Only the unfinished part of a chunk-size line or of the trailer section is held between
    feeds, up to `max_line` bytes (at least 32); a chunk's data is returned as soon as it
    arrives."""

    __slots__ = ("done", "extra", "_state", "_remaining", "_line", "_section", "_max_line",
                 "_field", "_value", "_length", "_te")

    done: bool
    extra: bytes

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < _MIN_MAX_LINE:
            raise ValueError(f"max_line must be at least {_MIN_MAX_LINE}")
        self._max_line = max_line
        self.done = False
        self.extra = b""
        self._state = _SIZE
        self._remaining = 0  # bytes of the current chunk's data still to come
        self._line = bytearray()  # the unfinished line, when a read ends inside one
        # Bytes of the trailer section taken so far (complete lines); 0 outside it, so the
        # held line's bound is `_section + len(_line)` in either state.
        self._section = 0
        self._field: bytes | None = None  # lowercased name of the open trailer field
        self._value = b""  # its raw value, continuation lines folded in
        self._length: bytes | None = None  # a Content-Length trailer's value, to compare
        self._te = False  # a Transfer-Encoding trailer was seen

    def feed(self, data: bytes) -> bytes:
        """Decode what `data` completes; returns the body bytes it yields (b"" if none).
        Raises ChunkedError on malformed input (and the decoder is then spent). Data after
        the end of the body is kept in `extra`, not decoded. An empty `data` is no input
        (end of input is `close()`)."""
        state = self._state
        if state == _DATA:
            remaining = self._remaining
            if len(data) < remaining:
                # All of it is chunk data: no slicing, no copy.
                self._remaining = remaining - len(data)
                return data
        elif state >= _DONE:
            if state == _DONE:
                self.extra += data
                return b""
            raise ChunkedError("the chunked decoder is spent: it failed or ended inside the body")
        out: list[bytes] = []
        n = len(data)
        pos = 0
        size: int | None
        try:
            if self._line and n:
                # The read finishes (or extends) a line an earlier read began: search only
                # the new bytes, the held ones are known to hold no LF.
                nl = data.find(b"\n")
                if nl < 0:
                    self._hold(data, 0, state)
                    return b""
                self._line += data[:nl]
                line = bytes(self._line)
                self._line.clear()
                pos = nl + 1
                if state == _SIZE:
                    size = self._size_line(line, False)
                    if size:
                        self._remaining = size
                        state = _DATA
                    else:
                        state = _TRAILER
                else:
                    state = self._trailer_line(line)
            while pos < n:
                if state == _CRLF:
                    if pos + 2 >= n:
                        # The read ends with (or inside) the CRLF: the usual end of a read.
                        if pos + 2 == n and data.endswith(b"\r\n"):
                            state = _SIZE
                        else:
                            state = self._crlf_tail(data, pos)
                        break
                    # Else this CRLF and the next chunk-size line are taken as one line: a
                    # single find and a single lookup for the usual chunk.
                    nl = data.find(b"\n", pos + 2)
                    if nl < 0:
                        state = self._crlf_tail(data, pos)
                        break
                    line = data[pos:nl]
                    size = _after_data_size(line)
                    if size is None:
                        size = self._size_line(line, True)
                    pos = nl + 1
                elif state == _DATA:
                    end = pos + self._remaining
                    if end > n:
                        out.append(data[pos:])
                        self._remaining = end - n
                        break
                    out.append(data[pos:end])
                    pos = end
                    state = _CRLF
                    continue
                elif state == _SIZE:
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        self._hold(data, pos, state)
                        break
                    line = data[pos:nl]
                    size = _line_size(line)
                    if size is None:
                        size = self._size_line(line, False)
                    pos = nl + 1
                elif state == _LF:
                    if data[pos] != 10:
                        raise ChunkedError(f"a chunk's data is not followed by CRLF but by {_show(_CR + data[pos:pos + 1])}")
                    pos += 1
                    state = _SIZE
                    continue
                elif state == _TRAILER:
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        self._hold(data, pos, state)
                        break
                    state = self._trailer_line(data[pos:nl])
                    pos = nl + 1
                    continue
                else:  # _DONE
                    break
                # A chunk-size line was read: `size` bytes of data follow, or the trailers.
                if not size:
                    state = _TRAILER
                    continue
                end = pos + size
                if end > n:
                    if pos < n:
                        out.append(data[pos:])
                    self._remaining = end - n
                    state = _DATA
                    break
                out.append(data[pos:end])
                pos = end
                state = _CRLF
        except ChunkedError as exc:
            self._state = _FAILED
            self._line.clear()
            exc.data = b"".join(out)
            raise
        self._state = state
        if state == _DONE:
            self.done = True
            if pos < n:
                self.extra += data[pos:]
        if not out:
            return b""
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def close(self) -> None:
        """End of input: raises ChunkedError("... ended inside the body") unless done."""
        state = self._state
        if state == _DONE:
            return
        if state == _FAILED:
            raise ChunkedError("the chunked stream ended inside the body (after the decoder failed)")
        self._state = _FAILED
        if state == _DATA:
            where = f"{self._remaining} bytes of a chunk's data missing"
        elif state in (_CRLF, _LF):
            where = "before the CRLF after a chunk's data"
        elif state == _TRAILER:
            where = "inside the trailer section"
        elif self._line:
            where = f"inside a chunk-size line: {_show(self._line)}"
        else:
            where = "before a chunk-size line"
        self._line.clear()
        raise ChunkedError(f"the chunked stream ended inside the body ({where})")

    def _hold(self, data: bytes, pos: int, state: int) -> None:
        # Keep the unfinished line's bytes for the next read, and no more than max_line of
        # them: a line that long is refused whole anyway, whatever comes next.
        self._line += memoryview(data)[pos:]
        if self._section + len(self._line) >= self._max_line:
            what = "trailer section" if state == _TRAILER else "chunk-size line"
            raise ChunkedError(f"a {what} is longer than {self._max_line} bytes")

    def _crlf_tail(self, data: bytes, pos: int) -> int:
        # The read ends before the line after a chunk's CRLF does: check the CRLF (or the CR
        # of it) now, hold what there is of the line. The state after it.
        tail = data[pos:pos + 2]
        if tail == b"\r\n":
            if pos + 2 < len(data):
                self._hold(data, pos + 2, _SIZE)
            return _SIZE
        if tail == b"\r":
            return _LF
        raise ChunkedError(f"a chunk's data is not followed by CRLF but by {_show(tail)}")

    def _size_line(self, line: bytes, after_data: bool) -> int:
        """The size a whole chunk-size line (LF cut off) gives, or ChunkedError. After a
        chunk's data the line starts with that data's CRLF."""
        key = line
        if after_data:
            if not line.startswith(b"\r\n"):
                raise ChunkedError(f"a chunk's data is not followed by CRLF but by {_show(line[:2])}")
            line = line[2:]
        if len(line) >= self._max_line:
            raise ChunkedError(f"a chunk-size line is longer than {self._max_line} bytes")
        if not line.endswith(b"\r"):
            raise ChunkedError(f"a chunk-size line ends in a bare LF: {_show(line)}")
        body = line[:-1]
        rest = body.lstrip(_HEX)
        digits = len(body) - len(rest)
        if not digits:
            raise ChunkedError(f"a chunk size is not hex: {_show(body)}")
        if digits > _MAX_SIZE_DIGITS:
            raise ChunkedError(f"a chunk size has more than {_MAX_SIZE_DIGITS} hex digits: {_show(body)}")
        # After the digits: `;` and extensions (anything but LF, as h11 has it), or only
        # whitespace; whitespace before the `;` is refused, again as in h11.
        if rest and rest[0] != 0x3B and rest.strip(b" \t"):
            raise ChunkedError(f"junk after a chunk size: {_show(body)}")
        size = int(body[:digits], 16)
        if not rest:
            table = _AFTER_DATA if after_data else _LINES
            if len(table) < _TABLE_MAX:
                table[bytes(key)] = size
        return size

    def _trailer_line(self, line: bytes) -> int:
        """Take one whole line of the trailer section (LF cut off); the state after it."""
        section = self._section + len(line) + 1
        if section > self._max_line:
            raise ChunkedError(f"a trailer section is longer than {self._max_line} bytes")
        self._section = section
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._end_field()
            return _DONE
        if line[0] == 0x20 or line[0] == 0x09:
            if self._field is None:
                raise ChunkedError(f"the trailer section starts with a continuation line: {_show(line)}")
            if _CONTINUATION.fullmatch(line) is None:
                raise ChunkedError(f"malformed trailer continuation line: {_show(line)}")
            self._value += b" " + line.lstrip(b" \t")
            return _TRAILER
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            raise ChunkedError(f"malformed trailer field line: {_show(line)}")
        self._end_field()
        self._field = match[1].lower()
        self._value = match[2]
        return _TRAILER

    def _end_field(self) -> None:
        # Framing fields have no business in trailers; h11 still validates the two it knows,
        # and refusing what it refuses keeps the verdicts the same.
        name = self._field
        if name == b"content-length":
            values = {v.strip() for v in self._value.split(b",")}
            if len(values) != 1:
                raise ChunkedError("conflicting Content-Length values in the trailers")
            (value,) = values
            if not value.isdigit() or len(value) > 20:
                raise ChunkedError(f"a bad Content-Length trailer: {_show(value)}")
            if self._length is not None and self._length != value:
                raise ChunkedError("conflicting Content-Length trailers")
            self._length = value
        elif name == b"transfer-encoding":
            if self._te:
                raise ChunkedError("more than one Transfer-Encoding trailer")
            if self._value.strip(b" \t").lower() != b"chunked":
                raise ChunkedError(f"a Transfer-Encoding trailer other than chunked: {_show(self._value)}")
            self._te = True
