"""Sans-IO server-sent events: a framer for any chunking, and a writer.

Framing follows the WHATWG HTML rules (docs/protocols.md section 4): lines end in CRLF, LF or
a lone CR; a blank line ends a block; `:` starts a comment; one optional space after the
field's colon is removed; data lines join with LF; a block without a data field is not
dispatched; a last block without its blank line is discarded; one leading BOM is dropped.

Each block keeps its exact bytes in `raw`, so a proxy forwards what it does not change
without re-serialising it. Fields are parsed once, as their line completes; the bytes of
the open block stay buffered until its blank line arrives, up to `max_event_bytes`: a
peer that never ends an event cannot make the parser hold (and search) without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
# Generous: one event can carry a whole tool call's arguments, megabytes of them.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventTooLarge(Exception):
    """One event grew past the parser's limit. `events` are the whole events of the same
    feed before it, still to be delivered; the parser is spent."""

    def __init__(self, limit: int, events: list[SSEEvent]) -> None:
        super().__init__(f"a stream event is larger than {limit} bytes")
        self.limit = limit
        self.events = events


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str
    raw: bytes
    # False for blocks that carry no data (comments, keep-alives): forward, never parse.
    dispatch: bool


class SSEParser:
    __slots__ = ("_buf", "_scan", "_searched", "_bom_checked", "_event", "_data", "_has_data", "_seen_cr",
                 "_eof", "_max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._buf = bytearray()
        self._scan = 0  # offset in _buf of the first line not parsed yet
        # Offset in _buf up to which that line is known to hold no CR or LF: each byte of an
        # open line is searched once, however many reads it takes to arrive.
        self._searched = 0
        self._bom_checked = False
        self._seen_cr = False
        self._event: str | None = None
        self._data: list[str] = []
        self._has_data = False
        self._eof = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if (not self._buf and self._bom_checked and not self._seen_cr and type(chunk) is bytes
                and chunk.endswith(b"\n\n") and b"\r" not in chunk):
            return self._whole_events(chunk)
        buf = self._buf
        buf += chunk
        if not self._bom_checked:
            if len(buf) < 3 and _BOM.startswith(bytes(buf)):
                return []
            if buf.startswith(_BOM):
                del buf[:3]
            self._bom_checked = True
        if not self._seen_cr and b"\r" in chunk:
            self._seen_cr = True
        out: list[SSEEvent] = []
        pos = self._scan
        search = max(pos, self._searched)
        block_start = 0
        end = len(buf)
        # The first LF at or after `search` (-1: none before `end`; -2: not looked for yet),
        # kept across lines so lines ended by lone CRs do not each search to the end.
        next_nl = -2
        while pos < end:
            if self._seen_cr:
                if next_nl == -2 or 0 <= next_nl < search:
                    next_nl = buf.find(b"\n", search)
                nl = next_nl
                cr = buf.find(b"\r", search, nl if nl != -1 else end)
                if cr != -1:
                    if cr + 1 == end and not self._eof:
                        search = cr
                        break  # may be the first half of a CRLF: wait for the next byte
                    line_end = cr
                    nxt = cr + 2 if cr + 1 < end and buf[cr + 1] == 0x0A else cr + 1
                elif nl != -1:
                    line_end, nxt = nl, nl + 1
                else:
                    search = end
                    break
            else:
                line_end = buf.find(b"\n", search)
                if line_end == -1:
                    search = end
                    break
                nxt = line_end + 1
            if line_end == pos:
                if nxt - block_start > self._max_event_bytes:
                    raise EventTooLarge(self._max_event_bytes, out)
                out.append(self._dispatch(bytes(buf[block_start:nxt])))
                block_start = nxt
            else:
                self._field(buf, pos, line_end)
            pos = search = nxt
        if block_start:
            del buf[:block_start]
        self._scan = pos - block_start
        self._searched = search - block_start
        if len(buf) > self._max_event_bytes:  # the open block alone is past the limit
            raise EventTooLarge(self._max_event_bytes, out)
        return out

    def _whole_events(self, chunk: bytes) -> list[SSEEvent]:
        """The common read: one or more whole events framed by LF, nothing pending before
        them. Same events as the general path, without copying the read into the buffer
        and back out: a read holding one event is that event's `raw` as it is."""
        out: list[SSEEvent] = []
        start, end = 0, len(chunk)
        limit = self._max_event_bytes
        while start < end:
            if chunk[start] == 0x0A:  # a blank line with no field before it
                stop = start
            else:
                stop = chunk.find(b"\n\n", start)  # found: the read ends with one
                for line in chunk[start:stop].split(b"\n"):
                    if line.startswith(b"data:"):
                        value = line[6:] if line[5:6] == b" " else line[5:]
                        self._data.append(value.decode("utf-8", "replace"))
                        self._has_data = True
                    else:
                        self._field(line, 0, len(line))
                stop += 1
            nxt = stop + 1
            if nxt - start > limit:
                self._data = []
                raise EventTooLarge(limit, out)
            out.append(self._dispatch(chunk if nxt - start == end else chunk[start:nxt]))
            start = nxt
        return out

    def _dispatch(self, raw: bytes) -> SSEEvent:
        if self._has_data:
            event = SSEEvent(self._event, "\n".join(self._data), raw, True)
        else:
            event = SSEEvent(self._event, "", raw, False)
        self._event = None
        self._data = []
        self._has_data = False
        return event

    def _field(self, buf: bytearray | bytes, start: int, end: int) -> None:
        if buf[start] == 0x3A:  # ":" comment
            return
        colon = buf.find(b":", start, end)
        if colon == -1:
            name, value_start = bytes(buf[start:end]), end
        else:
            name = bytes(buf[start:colon])
            value_start = colon + 1
            if value_start < end and buf[value_start] == 0x20:
                value_start += 1
        if name == b"data":
            self._data.append(buf[value_start:end].decode("utf-8", "replace"))
            self._has_data = True
        elif name == b"event":
            self._event = buf[value_start:end].decode("utf-8", "replace")
        # `id` and `retry` are valid fields the proxy has no use for.

    def close(self) -> list[SSEEvent]:
        """End of stream: a CR held back as a possible CRLF half is a line end after all;
        a block without its blank line is discarded (WHATWG)."""
        self._eof = True
        out = self.feed(b"") if self._buf else []
        self._buf.clear()
        self._scan = self._searched = 0
        self._event, self._data, self._has_data = None, [], False
        return out


def encode_event(data: str, event: str | None = None) -> bytes:
    """One SSE block; multi-line data becomes several data lines."""
    if "\n" in data or "\r" in data:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body = "".join(f"data: {line}\n" for line in lines)
    else:
        body = f"data: {data}\n"
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}{body}\n".encode()
