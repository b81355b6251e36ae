"""core/jsonfast: orjson when installed, with the stdlib's results either way."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawproxy.core import jsonfast

# Floats whose shortest spelling has no exponent: the one place orjson spells a number
# differently ("1e16" for "1e+16"), the same value either way.
_floats = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f == 0 or 1e-4 < abs(f) < 1e15)
_leaves = st.none() | st.booleans() | st.integers() | st.text() | _floats
_docs = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                     max_leaves=30)


def _stdlib_compact(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.fixture(params=["fast", "stdlib"])
def mode(request, monkeypatch):
    if request.param == "stdlib":
        monkeypatch.setattr(jsonfast, "_orjson", None)
    elif not jsonfast.FAST:
        pytest.skip("orjson is not installed")
    return request.param


@settings(max_examples=300, deadline=None)
@given(value=_docs, as_text=st.booleans())
def test_same_bytes_and_values_as_the_stdlib(value, as_text):
    for orjson in (jsonfast._orjson, None):  # both paths, whatever is installed
        saved, jsonfast._orjson = jsonfast._orjson, orjson
        try:
            try:
                expected = _stdlib_compact(value)
            except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it, either way
                with pytest.raises(UnicodeEncodeError):
                    jsonfast.dumps_bytes(value)
            else:
                assert jsonfast.dumps_bytes(value) == expected
                text = expected.decode() if as_text else expected
                assert repr(jsonfast.loads(text)) == repr(json.loads(text))
            escaped = json.dumps(value)  # ASCII: lone surrogates as \ud800 escapes
            assert repr(jsonfast.loads(escaped)) == repr(json.loads(escaped))
        finally:
            jsonfast._orjson = saved


@pytest.mark.parametrize("text", [
    '{"a": NaN}', "[1e400, -Infinity]", '"\\ud800"', "\ud800", "[-9223372036854775809]",
    "123456789012345678901234567890", "[18446744073709551616]", '{"a": 1, "a": 2}',
    b"\xff\xfe[\x001\x00]\x00", "[" * 5000 + "]" * 5000, "{bad", "", "[1,]", b"\xc3(",
])
def test_unusual_input_is_judged_as_the_stdlib_judges_it(text, mode):
    def outcome(parse):
        try:
            return repr(parse(text))
        except RecursionError:
            return "RecursionError"
        except ValueError as exc:
            return type(exc).__name__
    assert outcome(jsonfast.loads) == outcome(json.loads)


def test_what_orjson_will_not_write_goes_through_the_stdlib(mode):
    for value in ({1: "a"}, [2**70], {"k": (1, 2)}):
        assert jsonfast.dumps_bytes(value) == _stdlib_compact(value)
    with pytest.raises(TypeError):
        jsonfast.dumps_bytes({"k": object()})
