"""Reading JSON a client wrote, stricter than Python's `json` where its leniency would hurt.

Python accepts `NaN` and `Infinity` (and turns `1e400` into infinity), which it would
later write back out as invalid JSON for the upstream; it keeps lone surrogates
(`"\\ud800"`), which no UTF-8 encoder can write; and it parses nesting deep enough to
exhaust the stack of whatever walks the value next (a translator, the encoder, the
upstream's parser). Each of these is refused here as a `ClientError` naming where it is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from . import json_steps
from .errors import ClientError

# Real requests stay far below this (a tool's JSON schema rarely passes 20 levels); much
# deeper values exhaust the stack of the code that walks them after the parse.
MAX_DEPTH = 100

# Text that may decode to a lone surrogate: a \uD800-\uDFFF escape, or surrogate code
# points encoded as UTF-8 (json.loads of bytes lets both through). A valid pair written
# as two escapes (how ensure_ascii encoders write every emoji) matches too; the walk
# that follows finds nothing wrong with it.
_MAYBE_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_MAYBE_SURROGATE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTAINERS = frozenset((dict, list))
_PIECE = 1 << 16  # list items glanced at per C call: a few ms at most
_SHOWN_SEGMENTS = 6  # a path to a deep value is cut after this many steps


class _NotFinite(Exception):
    """Raised from inside the parser; not a ValueError, so no syntax-error path takes it."""


def _refuse_constant(name: str) -> float:
    raise _NotFinite(f"is not valid JSON: {name} is not a number JSON allows (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(f"has a number out of range: {text[:40]} is too large to be a finite number")
    return value


def loads(raw: bytes | str, what: str, root: str = "") -> Any:
    """`raw` parsed, or a ClientError. `what` names the text in messages ("request body");
    `root` is the path of the parsed value inside the request, prefixed to the path of
    anything refused in it. Syntax errors stay ValueError (UnicodeDecodeError for bytes
    that are not text), for the caller to word."""
    # A long text is parsed and searched in short steps, so a worker thread doing it lets
    # the event loop's thread have the GIL in between (json_steps).
    parse = json_steps.loads if len(raw) > json_steps.STEPPED_ABOVE else json.loads
    try:
        value = parse(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotFinite as exc:
        raise ClientError(f"{what} {exc}") from None
    except RecursionError:
        raise ClientError(f"{what} is nested too deeply (over {MAX_DEPTH} levels)") from None
    if isinstance(raw, bytes):
        strings = (not json.detect_encoding(raw).startswith("utf-8")
                   or json_steps.search(_MAYBE_SURROGATE_BYTES, raw) is not None)
    else:
        strings = json_steps.search(_MAYBE_SURROGATE_TEXT, raw) is not None
    if isinstance(value, (dict, list)):
        check_structure(value, root, strings)
    elif strings and isinstance(value, str) and _SURROGATE.search(value):
        raise ClientError(f"{root or what} {_surrogate_problem(value)}")
    return value


def check_structure(value: dict | list, root: str = "", strings: bool = True) -> None:
    """Refuse nesting deeper than MAX_DEPTH below `value` and, when `strings`, any string
    or key holding a lone surrogate. One depth-first pass over the containers (and, when
    `strings`, the strings), holding one iterator per level: cheap next to the parse that
    made them, in time and in memory, whatever the width."""
    # Each level: its items, its depth, and its place as a linked list (parent, key),
    # turned into a path only when something is refused.
    stack: list[tuple[Iterator[tuple[Any, Any]], int, tuple | None]] = [(_items(value), 1, None)]
    while stack:
        items, depth, place = stack[-1]
        for key, item in items:
            if strings and type(key) is str and not key.isascii() and _SURROGATE.search(key):
                raise ClientError(f"{_path(root, place)} has a key that {_surrogate_problem(key)}")
            kind = type(item)
            if kind is dict or kind is list:
                if depth >= MAX_DEPTH:
                    raise ClientError(f"{_path(root, (place, key))} is nested too deeply (over {MAX_DEPTH} levels)")
                if item and (kind is dict or _list_needs_walk(item, depth + 1, strings, root, (place, key))):
                    stack.append((_items(item), depth + 1, (place, key)))
                    break
            elif strings and kind is str and not item.isascii() and _SURROGATE.search(item):
                raise ClientError(f"{_path(root, (place, key))} {_surrogate_problem(item)}")
        else:
            stack.pop()


def _list_needs_walk(node: list, depth: int, strings: bool, root: str, place: tuple) -> bool:
    """False when a glance at the item types (C-speed, no Python step per item) shows a
    list holds nothing to check: a long flat list is common, a walk of it item by item
    would cost more than its parse. A long list is glanced at in pieces, so a worker
    thread doing this lets the event loop's thread have the GIL in between."""
    kinds: set[type] = set()
    for piece in _pieces(node):
        kinds.update(map(type, piece))
    if dict not in kinds and list not in kinds:
        return strings and str in kinds
    if kinds <= _CONTAINERS and not any(any(piece) for piece in _pieces(node)):  # only empty containers
        if depth >= MAX_DEPTH:
            raise ClientError(f"{_path(root, (place, 0))} is nested too deeply (over {MAX_DEPTH} levels)")
        return False
    return True


def _pieces(node: list) -> Iterator[Iterable]:
    if len(node) <= _PIECE:
        yield node
        return
    items = iter(node)
    for _ in range(0, len(node), _PIECE):
        yield islice(items, _PIECE)


def _items(node: dict | list) -> Iterator[tuple[Any, Any]]:
    return iter(node.items()) if type(node) is dict else enumerate(node)


def _surrogate_problem(text: str) -> str:
    found = _SURROGATE.search(text)
    code = ord(found.group()) if found else 0xD800
    return (f"contains a lone surrogate (\\u{code:04x}), which is not valid Unicode; "
            "write the character itself or a complete surrogate pair")


def _path(root: str, place: tuple | None) -> str:
    """`root` and the keys of `place` as `messages[2].content[0].text`, cut when long."""
    keys: list[Any] = []
    while place is not None:
        place, key = place
        keys.append(key)
    keys.reverse()
    out = root
    for key in keys[:_SHOWN_SEGMENTS]:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            shown = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)
            out += f".{shown}" if out else shown
    if len(keys) > _SHOWN_SEGMENTS:
        out += "..."
    return out or "request body"
