"""JSON on the hot paths: orjson when it is installed (the `fast` extra), else the stdlib.

The two give the same results for what the proxy reads and writes here:

- `loads` tries orjson and, on any input orjson refuses (NaN/Infinity, lone surrogates, UTF-16/32 bytes, nesting past its limit, bad syntax), parses
  again with the stdlib, so what is accepted, the values and the errors raised are the
  stdlib's. Only malformed or unusual input pays for the second parse. A text holding a
  run of 19 or more digits goes to the stdlib directly: orjson reads an integer past 64
  bits as a float, the stdlib keeps it exact.
- `loads_unchecked` skips that check, which costs a small event most of what orjson's
  parse does: for readers of strings and structure only, who read the text again with
  `loads` when a number or anything unusual matters. Where it parses, it agrees with
  `loads` but for integers past 64 bits (floats there); what it refuses, `loads` refuses
  with the same error.
- `dumps_bytes` is the stdlib's `ensure_ascii=False, separators=(",", ":")` form encoded
  as UTF-8, which is what orjson writes by default (control characters escaped the same
  way, lower-case hex). What orjson will not write (non-string keys, big integers, lone
  surrogates, unknown types) goes through the stdlib, errors included. The one
  difference left is the spelling of a float orjson writes without the stdlib's "+" in
  an exponent ("1e16" for "1e+16"): the same number.

Not for client bodies: those go through core/client_json.py, whose strict checks stay.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # the stdlib alone: same results, slower
    _orjson = None  # type: ignore[assignment]

FAST = _orjson is not None

_std_loads = json.loads
_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What json.dumps(value, ensure_ascii=False) writes (the stdlib's spacing, which the
# translators' output keeps), without building an encoder per call.
dumps_text = json.JSONEncoder(ensure_ascii=False).encode
# Every digit as "0", everything else as " ": a run of 19 zeros in the translation is a
# run of 19 digits in the text (found in C at memory speed; a regex is 50 times slower).
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def loads(data: bytes | str) -> Any:
    """A JSON text parsed (bytes or str), with the stdlib's acceptance and errors."""
    if _orjson is not None:
        try:
            text = data if isinstance(data, bytes) else data.encode()
        except UnicodeEncodeError:  # a lone surrogate: the stdlib's to judge
            return _std_loads(data)
        if text.translate(_DIGITS).find(_LONG_RUN) < 0:  # `in` would first try the needle as an int: twice the cost
            try:
                return _orjson.loads(text)
            except ValueError:  # orjson.JSONDecodeError: let the stdlib decide
                pass
    return _std_loads(data)


def loads_unchecked(data: str) -> Any:
    """`loads` without the check for integers past 64 bits, which may come back as floats."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except ValueError:  # also a lone surrogate in `data`: let the stdlib decide
            pass
    return _std_loads(data)


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII characters as they are."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError: let the stdlib write it or fail
            pass
    return _std_dumps(value).encode()
