"""The stepped JSON parser gives exactly what json.loads gives, refuses what it refuses,
and never runs one C call over more than a step; the weight estimate and the stepped
search."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawproxy.core import json_steps

scalars = (st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=40) | st.text(alphabet="\"\\\n\t\u00e9\U0001f600,{}[]:", max_size=40))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=12) | st.dictionaries(
    st.text(alphabet='ab"\\,{', max_size=4), inner, max_size=8), max_leaves=120)


def _same(text: str | bytes, step: int) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            json_steps.loads(text, step=step)
        return
    got = json_steps.loads(text, step=step)
    assert got == expected
    assert json.dumps(got) == json.dumps(expected)  # key order and duplicates too


@settings(max_examples=400, deadline=None)
@given(values, st.sampled_from([16, 17, 23, 40, 64, 1000]), st.sampled_from([None, 0, 1, 3]), st.booleans())
def test_any_value_parses_as_json_loads_parses_it(value, step, indent, ascii_only):
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    _same(text, step)
    _same(text.encode(), step)
    _same(text.encode("utf-16"), step)


@settings(max_examples=400, deadline=None)
@given(values, st.sampled_from([16, 29, 64]), st.data())
def test_a_damaged_text_is_refused_as_json_loads_refuses_it(value, step, data):
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    at = data.draw(st.integers(0, len(text)))
    how = data.draw(st.sampled_from(["drop", "insert", "cut"]))
    if how == "drop":
        text = text[:at] + text[at + 1:]
    elif how == "insert":
        text = text[:at] + data.draw(st.sampled_from(list(',:"\\{}[]x\x01 '))) + text[at:]
    else:
        text = text[:at]
    _same(text, step)


@pytest.mark.parametrize("text", [
    '{"a": 1, "a": 2, "b": 3, "a": 4}',                   # duplicates: last value, first place
    '"' + "\\ud83d\\ude00" * 40 + '"',                     # pairs never split between pieces
    '"' + "x" * 15 + "\\ud83d\\ude00" + "y" * 40 + '"',
    '"' + "\\ud800" + "x" * 60 + '"',                     # a lone escape stays lone
    "[" + "1" * 100 + "]",                                # a number longer than a step
    "[" + ", ".join(["1.5e3"] * 40) + "]",
    " " * 100 + "[" + " " * 100 + "]" + " " * 100,
    "\ufeff[]", "[1,]", '{"a" 1}', "[1 2]", '"\\x"', '"\\u12"', '"abc', "[" * 30 + "]" * 29, "",
])
def test_edges(text):
    _same(text, 16)


def test_hooks_reach_every_value():
    text = json.dumps({"a": [1.5] * 200, "b": {"c": 2.25}, "d": "x" * 100})
    seen = []

    def note(raw: str) -> float:
        seen.append(raw)
        return float(raw)

    assert json_steps.loads(text, parse_float=note, step=16) == json.loads(text)
    assert len(seen) >= 201  # every number through the hook; some twice (a piece tried, then dropped)
    with pytest.raises(ZeroDivisionError):  # what a hook raises comes out as from json.loads
        json_steps.loads(text, parse_float=lambda raw: 1 / 0, step=16)


def test_absurd_nesting_is_a_recursion_error_like_json_loads():
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(text)
    with pytest.raises(RecursionError):
        json_steps.loads(text, step=1024)


def _idle_worst_gap(seconds: float = 0.3) -> float:
    """The longest the main thread's 1 ms sleeps overshoot with no worker running: what
    the machine's own load costs, so the checks below judge only what a worker adds."""
    worst, last = 0.0, time.perf_counter()
    end = last + seconds
    while last < end:
        time.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    return worst


def test_a_thread_parsing_31_mib_of_empty_objects_lets_the_main_thread_run():
    body = b'{"messages": [' + b",".join([b"{}"] * (10 * 1024 * 1024)) + b"]}"
    result: list = []
    worker = threading.Thread(target=lambda: result.append(json_steps.loads(body)))
    idle = _idle_worst_gap()
    worst, last = 0.0, time.perf_counter()
    worker.start()
    while worker.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    assert len(result[0]["messages"]) == 10 * 1024 * 1024
    # Unstepped, one json.loads of this body holds the GIL for over a second.
    assert worst < 0.1 + idle, f"the main thread waited {worst * 1000:.0f} ms for the GIL (idle: {idle * 1000:.0f} ms)"


def test_the_weight_of_empty_objects_is_many_times_their_bytes_and_of_text_little():
    empty = b"[" + b",".join([b"{}"] * 100_000) + b"]"
    assert json_steps.structure_weight(empty) > 25 * len(empty)
    prose = json.dumps({"messages": [{"role": "user", "content": "word " * 200_000}]}).encode()
    assert json_steps.structure_weight(prose) < 0.01 * len(prose)
    assert json_steps.structure_weight(empty, step=1000) == json_steps.structure_weight(empty)


def test_search_in_steps_finds_a_match_across_two_steps():
    pattern = re.compile(rb"\\u[dD][89a-fA-F]")
    data = b"x" * 99 + b"\\ud8" + b"y" * 300
    found = json_steps.search(pattern, data, step=100)
    assert found is not None and found.start() == 99
    assert json_steps.search(pattern, b"x" * 1000, step=100) is None


def test_release_empties_a_value_and_lets_the_main_thread_run_meanwhile():
    value = json_steps.loads(b'{"a": [' + b",".join([b'{"b": [1, {"c": "x"}]}'] * 400_000) + b'], "d": {"e": []}}')
    inner = value["a"][0]
    idle = _idle_worst_gap()
    worst, last = 0.0, time.perf_counter()
    worker = threading.Thread(target=json_steps.release, args=(value,))
    worker.start()
    while worker.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    assert value == {} and inner == {}
    # Unstepped, one json.loads of this body holds the GIL for over a second.
    assert worst < 0.1 + idle, f"the main thread waited {worst * 1000:.0f} ms for the GIL (idle: {idle * 1000:.0f} ms)"
