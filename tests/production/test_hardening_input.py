"""Malformed request bodies: every wrong type, bad number, lone surrogate or absurd nesting
is a 400 in the client's dialect naming the field, never a 5xx, a dropped connection or a
traceback in the log; and a property test throws wrong-typed values at every field the
proxy reads, on every route, streaming and not, against both upstream formats."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawproxy import kimi

from ..conftest import Proxy, start_proxy
from .support import ENV_WITHOUT_PROXIES

FORMATS = ("anthropic", "openai")

# Rich bodies that pass everywhere: every field the proxy reads is present, so mutating
# one of them reaches the translators (both directions) and the repairs (both dialects).
TURN_ID = "abcdefghij0123456789"
ANTHROPIC_BASE: dict[str, Any] = {
    "model": "kimi-k2.5",
    "max_tokens": 2000,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "List the files"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "document", "title": "notes.txt",
             "source": {"type": "text", "media_type": "text/plain", "data": "some notes"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I will run ls.", "signature": "sig-1"},
            {"type": "text", "text": "Running ls."},
            {"type": "tool_use", "id": f"toolu_{TURN_ID}_0", "name": "Bash", "input": {"command": "ls"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{TURN_ID}_0", "is_error": False, "content": [
                {"type": "text", "text": "a.txt"},
                {"type": "tool_reference", "tool_name": "Bash"},
            ]},
            {"type": "text", "text": "Now what?"},
        ]},
        {"role": "system", "content": [{"type": "text", "text": "Answer in English."}]},
    ],
    "tools": [{"name": "Bash", "description": "Run a command", "strict": False, "input_schema": {
        "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
    "metadata": {"user_id": "user-1"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stop_sequences": ["STOP"],
    "temperature": 1.0,
    "top_p": 0.95,
    "top_k": 40,
    "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
}
OPENAI_BASE: dict[str, Any] = {
    "model": "kimi-k2.5",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "name": "me", "content": [
            {"type": "text", "text": "List the files"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}},
        ]},
        {"role": "assistant", "content": "Running ls.", "reasoning_content": "I will run ls.", "tool_calls": [
            {"id": f"call_{TURN_ID}_0", "type": "function",
             "function": {"name": "Bash", "arguments": "{\"command\": \"ls\"}"}},
        ]},
        {"role": "tool", "tool_call_id": f"call_{TURN_ID}_0", "content": "a.txt"},
        {"role": "user", "content": "Now what?"},
    ],
    "tools": [{"type": "function", "function": {"name": "Bash", "description": "Run a command", "strict": False,
               "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "max_tokens": 2000,
    "max_completion_tokens": 2000,
    "temperature": 1.0,
    "top_p": 0.95,
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "stop": ["STOP"],
    "user": "user-1",
    "stream_options": {"include_usage": True},
    "thinking": {"type": "enabled"},
    "reasoning_effort": "high",
    "response_format": {"type": "text"},
    "logprobs": False,
    "modalities": ["text"],
}
# (path, stream) per dialect: every route, streaming and not.
ROUTES = {
    "anthropic": [("/v1/messages", False), ("/v1/messages", True), ("/v1/messages/count_tokens", False)],
    "openai": [("/v1/chat/completions", False), ("/v1/chat/completions", True)],
}


@pytest.fixture(scope="module")
def proxies(simulator, tmp_path_factory) -> Iterator[dict[str, Proxy]]:
    logs = tmp_path_factory.mktemp("hardening")
    started = {fmt: start_proxy(simulator, fmt, str(logs / f"proxy-{fmt}.log"), env=ENV_WITHOUT_PROXIES)
               for fmt in FORMATS}
    yield started
    for p in started.values():
        p.process.stop()


@pytest.fixture(scope="module")
def clients(proxies) -> Iterator[dict[str, httpx.Client]]:
    opened = {fmt: httpx.Client(base_url=p.url, timeout=30, trust_env=False) for fmt, p in proxies.items()}
    yield opened
    for c in opened.values():
        c.close()


def _post(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return client.post(path, content=content, headers={"content-type": "application/json"})


def _error_message(response: httpx.Response, dialect: str) -> str:
    """The message of an error body, checked to be in the client's dialect."""
    doc = response.json()
    if dialect == "anthropic":
        assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error", doc
    else:
        assert doc["error"]["type"] == "invalid_request_error", doc
    return doc["error"]["message"]


def _refused(clients: dict[str, httpx.Client], path: str, raw: bytes) -> list[str]:
    """Send `raw` to `path` through both proxies; each must refuse it with a 400 in the
    client's dialect. The messages, one per upstream format."""
    dialect = "anthropic" if "/messages" in path else "openai"
    messages = []
    for fmt in FORMATS:
        r = _post(clients[fmt], path, raw)
        assert r.status_code == 400, (fmt, r.status_code, r.text)
        messages.append(_error_message(r, dialect))
    return messages


def _with(base: dict, path: tuple, value: Any) -> dict:
    body = copy.deepcopy(base)
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


def _raw(body: dict) -> bytes:
    return json.dumps(body).encode()


def _assert_no_traceback(proxies: dict[str, Proxy]) -> None:
    for p in proxies.values():
        log = p.process.output()
        assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]


# ---------------------------------------------------------------- the base bodies pass


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_the_rich_base_bodies_pass_on_every_route(clients, proxies, dialect):
    base = ANTHROPIC_BASE if dialect == "anthropic" else OPENAI_BASE
    for fmt in FORMATS:
        for path, stream in ROUTES[dialect]:
            body = dict(base, stream=True) if stream else base
            r = _post(clients[fmt], path, _raw(body))
            if path.endswith("count_tokens") and fmt == "openai":
                assert r.status_code == 404, r.text
                continue
            assert r.status_code == 200, (fmt, path, stream, r.text)
    _assert_no_traceback(proxies)


# ---------------------------------------------------------------- one test per reported case


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions"])
def test_a_hundred_thousand_nested_brackets_is_nested_too_deeply(clients, proxies, path):
    for raw in (b"[" * 100_000 + b"]" * 100_000,
                b'{"model": "kimi-k2.5", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        for message in _refused(clients, path, raw):
            assert "nested too deeply" in message
    _assert_no_traceback(proxies)


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_nesting_that_parses_but_is_absurd_is_nested_too_deeply(clients, proxies, dialect):
    # 500 levels parse, but would blow the stack of a translator, the encoder or the upstream.
    deep = "[" * 500 + "]" * 500
    base = ANTHROPIC_BASE if dialect == "anthropic" else OPENAI_BASE
    path = "/v1/messages" if dialect == "anthropic" else "/v1/chat/completions"
    tool_path = ("messages", 1, "content", 2, "input") if dialect == "anthropic" else ("tools", 0, "function", "parameters")
    raw = _raw(_with(base, tool_path, {"deep": "@@"})).replace(b'"@@"', deep.encode())
    for message in _refused(clients, path, raw):
        assert "nested too deeply" in message
        assert ("messages[1].content[2].input" if dialect == "anthropic" else "tools[0].function.parameters") in message
    _assert_no_traceback(proxies)


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_lone_surrogate_in_content_is_refused_naming_the_field(clients, proxies, dialect):
    body = {"model": "kimi-k2.5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi @@ there"}]}
    raw = _raw(body).replace(b"@@", b"\\ud800")
    path = "/v1/messages" if dialect == "anthropic" else "/v1/chat/completions"
    for message in _refused(clients, path, raw):
        assert "messages[0].content" in message and "surrogate" in message
    _assert_no_traceback(proxies)


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_lone_surrogate_in_the_model_is_refused_naming_the_field(clients, proxies, dialect):
    body = {"model": "kimi-@@", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    raw = _raw(body).replace(b"@@", b"\\udfff")
    path = "/v1/messages" if dialect == "anthropic" else "/v1/chat/completions"
    for message in _refused(clients, path, raw):
        assert message.startswith("model ") and "surrogate" in message
    _assert_no_traceback(proxies)


def test_a_surrogate_pair_escape_is_a_character_not_an_error(clients, proxies):
    body = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "smile \U0001F600"}]}
    raw = json.dumps(body, ensure_ascii=True).encode()  # the emoji as "\ud83d\ude00"
    for fmt in FORMATS:
        assert _post(clients[fmt], "/v1/chat/completions", raw).status_code == 200


def test_stream_options_as_a_string_is_refused(clients, proxies):
    raw = _raw(dict(OPENAI_BASE, stream=True, stream_options="yes"))
    for message in _refused(clients, "/v1/chat/completions", raw):
        assert message == "stream_options must be an object, not a string"
    _assert_no_traceback(proxies)


def test_stream_options_from_an_anthropic_client_is_not_read(clients, proxies):
    # Not an Anthropic field: the proxy must not trip over it either.
    body = {"model": "kimi-k2.5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
            "stream": True, "stream_options": "yes"}
    for fmt in FORMATS:
        r = _post(clients[fmt], "/v1/messages", _raw(body))
        assert r.status_code == 200, r.text
        assert "message_stop" in r.text
    _assert_no_traceback(proxies)


@pytest.mark.parametrize("tool_calls", ["call it", {"id": "x"}, [1, "two"]], ids=["string", "dict", "non-objects"])
def test_openai_tool_calls_that_are_not_a_list_of_objects_are_refused(clients, proxies, tool_calls):
    raw = _raw(_with(OPENAI_BASE, ("messages", 3, "tool_calls"), tool_calls))
    for message in _refused(clients, "/v1/chat/completions", raw):
        assert message.startswith("messages[3].tool_calls must be a list of objects")
    _assert_no_traceback(proxies)


def test_a_tool_call_function_as_a_string_is_refused(clients, proxies):
    raw = _raw(_with(OPENAI_BASE, ("messages", 3, "tool_calls", 0, "function"), "Bash"))
    for message in _refused(clients, "/v1/chat/completions", raw):
        assert message == "messages[3].tool_calls[0].function must be an object, not a string"
    _assert_no_traceback(proxies)


@pytest.mark.parametrize("tools", [{"name": "Bash"}, ["Bash", "Read"]], ids=["dict", "strings"])
@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_tools_that_are_not_a_list_of_objects_are_refused(clients, proxies, dialect, tools):
    base = ANTHROPIC_BASE if dialect == "anthropic" else OPENAI_BASE
    path = "/v1/messages" if dialect == "anthropic" else "/v1/chat/completions"
    for message in _refused(clients, path, _raw(dict(base, tools=tools))):
        assert message.startswith("tools must be a list of objects")
    _assert_no_traceback(proxies)


def test_stop_as_a_number_is_refused(clients, proxies):
    for message in _refused(clients, "/v1/chat/completions", _raw(dict(OPENAI_BASE, stop=7))):
        assert message == "stop must be a string or a list of strings, not a number"
    _assert_no_traceback(proxies)


def test_a_system_block_whose_text_is_a_number_is_refused(clients, proxies):
    raw = _raw(dict(ANTHROPIC_BASE, system=[{"type": "text", "text": 42}]))
    for message in _refused(clients, "/v1/messages", raw):
        assert message == "system[0].text must be a string, not a number"
    _assert_no_traceback(proxies)


def test_a_thinking_block_whose_thinking_is_a_number_is_refused(clients, proxies):
    raw = _raw(_with(ANTHROPIC_BASE, ("messages", 1, "content", 0, "thinking"), 3.5))
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        for message in _refused(clients, path, raw):
            assert message == "messages[1].content[0].thinking must be a string, not a number"
    _assert_no_traceback(proxies)


def test_metadata_as_a_string_is_refused(clients, proxies):
    for message in _refused(clients, "/v1/messages", _raw(dict(ANTHROPIC_BASE, metadata="user-1"))):
        assert message == "metadata must be an object, not a string"
    _assert_no_traceback(proxies)


def test_an_image_source_as_a_string_is_refused(clients, proxies):
    raw = _raw(_with(ANTHROPIC_BASE, ("messages", 0, "content", 1, "source"), "https://example.com/a.png"))
    for message in _refused(clients, "/v1/messages", raw):
        assert message == "messages[0].content[1].source must be an object, not a string"
    _assert_no_traceback(proxies)


def test_a_null_where_a_reader_needs_a_value_is_refused(clients, proxies):
    # Found by the property test: `image_url.url: null` reached the translator as None.
    raw = _raw(_with(OPENAI_BASE, ("messages", 2, "content", 1, "image_url", "url"), None))
    for message in _refused(clients, "/v1/chat/completions", raw):
        assert message == "messages[2].content[1].image_url.url must be a string, not null"
    raw = _raw(_with(ANTHROPIC_BASE, ("messages", 1, "content", 2, "id"), None))
    for message in _refused(clients, "/v1/messages", raw):
        assert message == "messages[1].content[2].id must be a string, not null"
    _assert_no_traceback(proxies)


def test_reasoning_effort_as_an_object_is_refused_for_k3(clients, proxies):
    body = dict(OPENAI_BASE, model="kimi-k3", reasoning_effort={"effort": "high"})
    del body["thinking"]
    for message in _refused(clients, "/v1/chat/completions", _raw(body)):
        assert message == "reasoning_effort must be a string, not an object"
    _assert_no_traceback(proxies)


def test_the_k3_repair_drops_a_reasoning_effort_it_cannot_read():
    # The repair is pure and may be handed a body no one validated: a value it cannot map
    # is dropped like an unknown effort, never a TypeError.
    body = {"model": "kimi-k3", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": {"effort": "high"}}
    assert "reasoning_effort_dropped" in kimi.repair_openai(body, {})
    assert "reasoning_effort" not in body


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_non_finite_numbers_are_refused_not_forwarded(clients, proxies, simulator, dialect, constant):
    base = ANTHROPIC_BASE if dialect == "anthropic" else OPENAI_BASE
    path = "/v1/messages" if dialect == "anthropic" else "/v1/chat/completions"
    simulator.reset()
    raw = _raw(dict(base, temperature="@@")).replace(b'"@@"', constant)
    for message in _refused(clients, path, raw):
        assert constant.decode() in message and "finite" in message
        assert ("not valid JSON" if constant[-1:].isalpha() else "out of range") in message
    assert simulator.requests() == []  # nothing reached the upstream
    _assert_no_traceback(proxies)


def test_tool_call_arguments_are_read_as_strictly_as_the_body(clients, proxies):
    # Translating to an Anthropic upstream parses the arguments string: what is inside it
    # gets the same refusals as the body, naming the arguments.
    at = ("messages", 3, "tool_calls", 0, "function", "arguments")
    for arguments, needle in (('{"n": NaN}', "NaN"), ('{"n": 1e999}', "out of range"),
                              ('{"s": "\\ud800"}', "surrogate"), ('{"d": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                                                  "nested too deeply")):
        r = _post(clients["anthropic"], "/v1/chat/completions", _raw(_with(OPENAI_BASE, at, arguments)))
        assert r.status_code == 400, r.text
        message = _error_message(r, "openai")
        assert "messages[3].tool_calls[0].function.arguments" in message and needle in message
    _assert_no_traceback(proxies)


# ---------------------------------------------------------------- the property test

_SLOT = "@@slot{}@@"
_DELETE = "<delete the field>"
# Names a generated object may use: the fields the proxy reads, so wrong shapes nest in
# places a reader might look.
_KEYS = ["type", "text", "content", "source", "function", "name", "arguments", "id", "input", "thinking",
         "tool_calls", "url", "data", "include_usage", "budget_tokens", "user_id", "image_url", "format"]
_plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4),
                                                                inner, max_size=3),
    max_leaves=8,
).map(json.dumps)
# Values of a plausible shape in the wrong place: what a confused client really sends.
_lookalikes = st.sampled_from([
    "", "text", "auto", "enabled", "tool_use", "function", 0, -1, 1.5, True, [], {}, [""], [[]], [None], [1, "two"],
    {"type": "text"}, {"type": "text", "text": 1}, {"type": "tool_use", "input": "x"}, {"type": "image", "source": "x"},
    {"type": "function", "function": "Bash"}, {"type": "tool_result", "content": {"a": 1}}, [{"type": 5}],
    [{"type": "thinking", "thinking": 3}], {"include_usage": "yes"}, {"url": 7}, {"function": {"name": []}},
]).map(json.dumps)
_specials = st.sampled_from([
    '"\\ud800"', '"tail \\udfff"', '{"\\udbff": 1}', '["ok", "\\udc00"]', '"\\ud83d\\ude00"',
    "NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1e308",
    "[" * 100_000 + "]" * 100_000, '{"a":' * 300 + "1" + "}" * 300, "[" * 101 + "]" * 101, "[" * 90 + "]" * 90,
])
_nested_lists = st.integers(1, 200).map(lambda n: "[" * n + "]" * n)
fragments = st.one_of(_plain_values, _lookalikes, _specials, _nested_lists, st.just(_DELETE))
models = st.sampled_from(["kimi-k2.5", "kimi-k3", "kimi-k2-thinking", "kimi-k2.7-code", "moonshot-v1-8k"])


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """The path of every field and item in `value`."""
    out: list[tuple] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        out.append(prefix + (key,))
        out.extend(_paths(item, prefix + (key,)))
    return out


# Fields the proxy reads that the base bodies leave out.
_ABSENT = {
    "anthropic": [("stream",), ("stream_options",), ("messages", 0, "content", 1, "source", "url"),
                  ("messages", 2, "content", 0, "content", 1, "name"), ("tools", 0, "type")],
    "openai": [("stream",), ("messages", 3, "reasoning"), ("messages", 4, "name"), ("top_logprobs",),
               ("response_format", "json_schema")],
}
PATHS = {dialect: _paths(base) + _ABSENT[dialect]
         for dialect, base in (("anthropic", ANTHROPIC_BASE), ("openai", OPENAI_BASE))}


def _mutated(base: dict, model: str, stream: bool, mutations: list[tuple[tuple, str]]) -> bytes:
    """`base` with each mutation's fragment (raw JSON text, which may be what Python's
    json would never write) at its path; paths that no longer exist are skipped."""
    body = copy.deepcopy(base)
    body["model"] = model
    body["stream"] = stream
    slots: dict[str, str] = {}
    for path, fragment in mutations:
        node: Any = body
        try:
            for key in path[:-1]:
                node = node[key]
            last = path[-1]
            if fragment == _DELETE:
                del node[last]
            elif isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node)):
                node[last] = _SLOT.format(len(slots))
                slots[_SLOT.format(len(slots))] = fragment
        except (KeyError, IndexError, TypeError):
            continue
    raw = json.dumps(body)
    for slot, fragment in slots.items():
        raw = raw.replace(json.dumps(slot), fragment)
    return raw.encode()


def _assert_answered_well(r: httpx.Response, dialect: str, stream: bool) -> None:
    """No 5xx; an error is a proper error body in the client's dialect; an answer is whole."""
    assert r.status_code < 500, r.text[:2000]
    if r.status_code >= 400:
        doc = r.json()
        assert isinstance(doc["error"]["message"], str) and (dialect == "openai" or doc["type"] == "error"), doc
    elif stream and r.headers["content-type"].startswith("text/event-stream"):
        assert ("event: message_stop" if dialect == "anthropic" else "data: [DONE]") in r.text, r.text[-2000:]
        assert "event: error" not in r.text and '"error":' not in r.text, r.text[-2000:]
    else:
        json.loads(r.content)


def _throw(clients: dict[str, httpx.Client], dialect: str, model: str, mutations: list) -> None:
    base = ANTHROPIC_BASE if dialect == "anthropic" else OPENAI_BASE
    for path, stream in ROUTES[dialect]:
        raw = _mutated(base, model, stream, mutations)
        for fmt in FORMATS:
            _assert_answered_well(_post(clients[fmt], path, raw), dialect, stream)


_PROPERTY = settings(max_examples=200, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_wrong_typed_values_anywhere_never_get_a_5xx(clients, proxies, simulator, dialect):
    @_PROPERTY
    @given(model=models, mutations=st.lists(st.tuples(st.sampled_from(PATHS[dialect]), fragments),
                                            min_size=1, max_size=3))
    def check(model: str, mutations: list) -> None:
        _throw(clients, dialect, model, mutations)

    check()
    _assert_no_traceback(proxies)
    assert "Traceback" not in simulator.process.output()
