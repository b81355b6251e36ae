"""Large JSON texts, parsed and searched in short steps; and what a parsed text weighs.

`json.loads` runs in C from the first character to the last and holds the GIL all the
while, so even in a worker thread it stops the event loop's thread for the whole parse
(1.7 s for 31 MiB of `{}`). `loads` here drives the same C scanner over pieces of at
most `step` characters from Python, so the interpreter hands the GIL to the loop's
thread between two pieces. It returns what `json.loads` returns and refuses what it
refuses (a ValueError; RecursionError for absurd nesting), with the same hooks. It only
helps in a worker thread, and costs more than `json.loads` for a short text: callers
use it above STEPPED_ABOVE bytes.

How the pieces are found: a value that ends inside a window of `step` characters is
parsed by one C call; a longer string is decoded piece by piece, never cutting an
escape; a longer array or object is walked member by member, many small members at a
time (a window cut at its last comma parses, or it does not: a comma inside a string or
a deeper value leaves the piece unbalanced).
"""

from __future__ import annotations

import codecs
import json
import re
from _json import make_scanner, scanstring  # the C scanner json.loads uses
from collections.abc import Callable
from json import JSONDecodeError
from typing import Any, cast

STEPPED_ABOVE = 256 * 1024   # bytes; below it json.loads holds the GIL a few ms at most
DEFAULT_STEP = 64 * 1024     # characters per C call: about 4 ms of the densest JSON
_DECODE_STEP = 1 << 20       # bytes decoded to text per call
_SEARCH_STEP = 256 * 1024

# A string's characters up to its closing quote or the window's end, in whole escapes
# (\uXXXX is one), so a piece never ends inside an escape.
_STRING_RUN = re.compile(r'[^"\\]*(?:\\(?:u[0-9a-fA-F]{4}|[^u])[^"\\]*)*')
_NUMBER_GOES_ON = frozenset("0123456789.eE+-")
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's four
_CONTAINERS = (list, dict)
# Searched in a reversed window: the last comma right after a closing bracket, a
# likelier end of a member than a comma in prose.
_LAST_COMMA_AFTER_CLOSE = re.compile(r',[ \t\n\r]*[}\]]')

# What parsing builds beyond the text, per character that opens or separates a value
# (CPython 3.11, 64-bit): an empty dict 64 bytes, an empty list 56, a string about 50
# (two quotes), a list slot and a small number about 24.
_WEIGHTS = ((b"{", 64), (b"[", 56), (b'"', 25), (b",", 24))


def structure_weight(data: bytes, step: int = _DECODE_STEP) -> int:
    """About how many bytes parsing `data` builds beyond its text: its objects, lists,
    strings and slots, counted by the bytes that open them (some inside strings count
    too: an estimate from above). `{}` repeated weighs 29 times its bytes."""
    total = 0
    for start in range(0, len(data), step):
        end = start + step
        for char, weight in _WEIGHTS:
            total += weight * data.count(char, start, end)
        total -= 25 * data.count(b'\\"', start, end + 1)  # an escaped quote opens nothing
    return max(total, 0)


def search(pattern: re.Pattern, data: Any, reach: int = 16, step: int = _SEARCH_STEP) -> re.Match | None:
    """`pattern.search(data)`, one piece of `step` at a time; each piece reaches `reach`
    further, so a match (no longer than `reach`) across two pieces is found."""
    if len(data) <= step:
        return pattern.search(data)
    for start in range(0, len(data), step):
        found = pattern.search(data, start, start + step + reach)
        if found is not None:
            return found
    return None


def loads(data: str | bytes | bytearray, *, parse_float: Callable[[str], Any] | None = None,
          parse_int: Callable[[str], Any] | None = None, parse_constant: Callable[[str], Any] | None = None,
          step: int = DEFAULT_STEP) -> Any:
    """`json.loads(data, ...)`, in steps of at most `step` characters (at least 16)."""
    text = _text(data)
    if text.startswith("\ufeff"):
        raise JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    decoder = json.JSONDecoder(parse_float=parse_float, parse_int=parse_int, parse_constant=parse_constant)
    scan = make_scanner(cast(Any, decoder))  # typeshed types its argument oddly
    parser = _Parser(text, scan, max(step, 16))  # room for a surrogate pair
    value, end = parser.value(parser.skip(0))
    end = parser.skip(end)
    if end != len(text):
        raise JSONDecodeError("Extra data", text, end)
    return value


def release(value: Any, step: int = 16384) -> None:
    """Empty a parsed value, `step` members at a time, innermost last. Freeing millions of
    objects at once is one C loop holding the GIL as long as making them did (half a
    second for ten million); in a worker thread, this lets the event loop's thread in
    between. The containers are emptied in place: only for a value nothing else holds."""
    stack = [value]
    del value
    while stack:
        node = stack.pop()
        if type(node) is list:
            while node:
                piece = node[-step:]
                del node[-step:]
                stack.extend(item for item in piece if type(item) in _CONTAINERS and item)
                del piece  # what is left in it: strings, numbers and empty containers
        elif type(node) is dict:
            while node:
                if len(node) <= step:
                    piece = list(node.values())
                    node.clear()
                else:
                    piece = [node.popitem()[1] for _ in range(step)]
                stack.extend(item for item in piece if type(item) in _CONTAINERS and item)
                del piece


def _text(data: str | bytes | bytearray) -> str:
    """The text json.loads would parse: bytes decoded as it does (UTF-8, -16 or -32 by
    their first bytes, surrogates let through), a megabyte per call."""
    if isinstance(data, str):
        return data
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(data).__name__}")
    decoder = codecs.getincrementaldecoder(json.detect_encoding(data))("surrogatepass")
    parts = [decoder.decode(data[start:start + _DECODE_STEP]) for start in range(0, len(data), _DECODE_STEP)]
    parts.append(decoder.decode(b"", True))
    return "".join(parts)


class _Parser:
    __slots__ = ("text", "end", "scan", "step", "win", "win_start")

    def __init__(self, text: str, scan: Callable[[str, int], tuple[Any, int]], step: int) -> None:
        self.text = text
        self.end = len(text)
        self.scan = scan
        self.step = step
        # A copy of text[win_start:win_start + step] that small values are parsed from,
        # slid forward when half used.
        self.win = ""
        self.win_start = 0

    def skip(self, i: int) -> int:
        """The index of the first non-whitespace character from i."""
        if i < self.end and self.text[i] not in " \t\n\r":
            return i
        while True:
            stop = min(i + self.step, self.end)
            i = _match_end(_WHITESPACE, self.text, i, stop)
            if i < stop or stop == self.end:
                return i

    def value(self, i: int) -> tuple[Any, int]:
        """The value starting at i, and the index after it."""
        small = self._small(i)
        if small is not None:
            return small
        char = self.text[i:i + 1]
        if char == '"':
            return self._string(i + 1)
        if char == "{":
            return self._object(i + 1)
        if char == "[":
            return self._array(i + 1)
        try:  # a number or a literal, short or wrong: in place
            return self.scan(self.text, i)
        except StopIteration as err:
            raise JSONDecodeError("Expecting value", self.text, err.value) from None

    def _small(self, i: int) -> tuple[Any, int] | None:
        """The value at i if it ends within the window (one C call), else None."""
        for fresh in (False, True):
            off = i - self.win_start
            if fresh or not 0 <= off < len(self.win) or len(self.win) - off < self.step // 2:
                if fresh and off == 0:
                    return None  # it was tried from a whole window already
                self.win_start, off = i, 0
                self.win = self.text[i:i + self.step]
            last = self.win_start + len(self.win) == self.end  # errors here are real ones
            try:
                value, end = self.scan(self.win, off)
            except StopIteration as err:
                if last:
                    raise JSONDecodeError("Expecting value", self.text, self.win_start + err.value) from None
                continue
            except JSONDecodeError as err:
                if last:
                    raise JSONDecodeError(err.msg, self.text, self.win_start + err.pos) from None
                continue
            # A number cut by the window's edge ends there, or just before a fraction or an
            # exponent it could not finish: the text may go on.
            if last or (end < len(self.win) and self.win[end] not in _NUMBER_GOES_ON):
                return value, self.win_start + end
        return None

    def _string(self, i: int) -> tuple[str, int]:
        """The string whose characters start at i (after its quote), a piece at a time."""
        text = self.text
        pieces = []
        while True:
            stop = min(i + self.step, self.end)
            run_end = _match_end(_STRING_RUN, text, i, stop)
            if run_end < stop and text[run_end] == '"':  # ends in this window: in place
                piece, after = self._scanstring(text, i, 0)
                pieces.append(piece)
                return "".join(pieces), after
            cut = run_end
            if cut > i:
                piece = self._scanstring(text[i:cut] + '"', 0, i)[0]
                if piece and "\ud800" <= piece[-1] <= "\udbff" and text[cut - 1] != piece[-1]:
                    # A \uD8xx escape that may pair with the next one: left for the next piece.
                    piece, cut = piece[:-1], cut - 6
            if cut <= i:  # a wrong escape or the end of the text: scanstring says which
                piece, after = self._scanstring(text, i, 0)
                pieces.append(piece)
                return "".join(pieces), after
            pieces.append(piece)
            i = cut

    def _scanstring(self, text: str, i: int, offset: int) -> tuple[str, int]:
        try:
            return scanstring(text, i, True)
        except JSONDecodeError as err:
            raise JSONDecodeError(err.msg, self.text, offset + err.pos) from None

    def _batch(self, i: int, opening: str, closing: str) -> tuple[Any, int] | None:
        """Many members from i at once: the window up to its last comma, as one array or
        object; None when that is not a run of whole members."""
        stop = i + self.step
        if stop >= self.end:
            return None
        window = self.text[i:stop]
        cuts = [window.rfind(",")]
        after_close = _LAST_COMMA_AFTER_CLOSE.search(window[::-1])
        if after_close is not None and len(window) - 1 - after_close.start() != cuts[0]:
            cuts.append(len(window) - 1 - after_close.start())
        for cut in cuts:
            if cut <= 0:
                continue
            piece = opening + window[:cut] + closing
            try:
                value, end = self.scan(piece, 0)
            except (JSONDecodeError, StopIteration):
                continue
            if end == len(piece):
                return value, i + cut + 1
        return None

    def _array(self, i: int) -> tuple[list, int]:
        text = self.text
        items: list = []
        i = self.skip(i)
        if text[i:i + 1] == "]":
            return items, i + 1
        batch_from = i  # after a failed batch, the next try waits a window
        while True:
            if i >= batch_from:
                batch = self._batch(i, "[", "]")
                if batch is not None:
                    items.extend(batch[0])
                    i = self.skip(batch[1])
                    continue
                batch_from = i + self.step
            item, i = self.value(i)
            items.append(item)
            i = self.skip(i)
            char = text[i:i + 1]
            if char == ",":
                i = self.skip(i + 1)
            elif char == "]":
                return items, i + 1
            else:
                raise JSONDecodeError("Expecting ',' delimiter", text, i)

    def _object(self, i: int) -> tuple[dict, int]:
        text = self.text
        members: dict = {}
        i = self.skip(i)
        if text[i:i + 1] == "}":
            return members, i + 1
        batch_from = i
        while True:
            if i >= batch_from:
                batch = self._batch(i, "{", "}")
                if batch is not None:
                    members.update(batch[0])  # later duplicates win, as in json.loads
                    i = self.skip(batch[1])
                    continue
                batch_from = i + self.step
            if text[i:i + 1] != '"':
                raise JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
            key, i = self._string(i + 1)
            i = self.skip(i)
            if text[i:i + 1] != ":":
                raise JSONDecodeError("Expecting ':' delimiter", text, i)
            members[key], i = self.value(self.skip(i + 1))
            i = self.skip(i)
            char = text[i:i + 1]
            if char == ",":
                i = self.skip(i + 1)
            elif char == "}":
                return members, i + 1
            else:
                raise JSONDecodeError("Expecting ',' delimiter", text, i)


def _match_end(pattern: re.Pattern[str], text: str, start: int, stop: int) -> int:
    """Where a match of `pattern`, which also matches nothing, ends from `start`."""
    matched = pattern.match(text, start, stop)
    return start if matched is None else matched.end()
