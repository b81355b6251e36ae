"""The Kimi simulator: every rule of docs/kimi.md sections 1-2 with its exact text, the
scripted agent, Kimi's stream shapes (section 3), faults and the control endpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest
import trio

from rawproxy.core.sse import SSEParser
from rawproxy.server.http import Request
from rawproxy.simulator import SimulatedReset, SimulatorApp, check_anthropic, check_openai
from rawproxy.simulator.models import family_of

from ..conftest import CLAUDE_CODE_FIXTURES

FIXTURES = CLAUDE_CODE_FIXTURES
MISSING = "thinking is enabled but reasoning_content is missing in assistant tool call message at index {}"
ONLY_ENABLED = "invalid thinking: only type=enabled is allowed for this model"
INCOMPATIBLE = "tool_choice specified is incompatible with thinking enabled"
OA_HEADERS = [(b"authorization", b"Bearer sk-test")]
AN_HEADERS = [(b"x-api-key", b"sk-test"), (b"anthropic-version", b"2023-06-01")]
SCHEMA_BASH = {"type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}}, "required": ["command"]}
SCHEMA_READ = {"type": "object", "properties": {"file_path": {"type": "string"}, "mode": {"enum": ["r", "rb"]},
                                               "n": {"type": "integer"}, "all": {"type": "boolean"}},
               "required": ["file_path", "mode", "n", "all"]}
OA_TOOLS = [{"type": "function", "function": {"name": n, "parameters": s}} for n, s in (("Bash", SCHEMA_BASH), ("Read", SCHEMA_READ))]
AN_TOOLS = [{"name": n, "input_schema": s} for n, s in (("Bash", SCHEMA_BASH), ("Read", SCHEMA_READ))]


def oa(messages=None, model="kimi-k2.5", **kw):
    return {"model": model, "messages": messages or [{"role": "user", "content": "hi"}], **kw}


def an(messages=None, model="kimi-k2.5", **kw):
    return {"model": model, "max_tokens": 32000, "messages": messages or [{"role": "user", "content": "hi"}], **kw}


def call_msg(rc=None, content=None, name="Bash"):
    msg = {"role": "assistant", "content": content,
           "tool_calls": [{"id": "anything-goes", "type": "function", "function": {"name": name, "arguments": "{}"}}]}
    if rc is not None:
        msg["reasoning_content"] = rc
    return msg


def tool_msg(text="ok"):
    return {"role": "tool", "tool_call_id": "anything-goes", "content": text}


def tool_use_turn(*blocks):
    return {"role": "assistant", "content": [*blocks, {"type": "tool_use", "id": "x.y:0", "name": "Bash", "input": {}}]}


def tool_result(content="ok"):
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x.y:0", "content": content}]}


def thinking(text="because"):
    return {"type": "thinking", "thinking": text, "signature": "not-checked-by-kimi"}


def err_text(err):
    return None if err is None else err.message


# ---------------------------------------------------------------- OpenAI rules

HISTORY = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}]


@pytest.mark.parametrize("bad, message, fixed", [
    # docs/kimi.md 1: index counts the system message; "" is missing, " " passes.
    (oa(HISTORY + [call_msg(), tool_msg()]), MISSING.format(2), oa(HISTORY + [call_msg(" "), tool_msg()])),
    (oa(HISTORY + [call_msg("real"), tool_msg(), call_msg(""), tool_msg()]), MISSING.format(4),
     oa(HISTORY + [call_msg("real"), tool_msg(), call_msg("more"), tool_msg()])),
    (oa(HISTORY + [call_msg("r", content=""), tool_msg()]), "text content is empty", oa(HISTORY + [call_msg("r"), tool_msg()])),
    (oa(HISTORY + [call_msg("r", content=[]), tool_msg()]), "text content is empty", oa(HISTORY + [call_msg("r", content="x"), tool_msg()])),
    (oa(HISTORY + [{"role": "assistant", "content": ""}, {"role": "user", "content": "u"}]), "assistant message must not be empty",
     oa(HISTORY + [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}])),
    (oa(model="kimi-k2.7-code", thinking={"type": "disabled"}), ONLY_ENABLED, oa(model="kimi-k2.7-code", thinking={"type": "enabled"})),
    (oa(model="kimi-k2-thinking-turbo", thinking={"type": "disabled"}), ONLY_ENABLED, oa(model="kimi-k2-thinking-turbo")),
    (oa(model="kimi-for-coding", thinking={"type": "disabled"}), ONLY_ENABLED, oa(model="k2p5")),
    (oa(model="kimi-k3", thinking={"type": "enabled"}), "invalid thinking: this model does not accept the thinking parameter, use reasoning_effort",
     oa(model="kimi-k3", reasoning_effort="high")),
    (oa(model="kimi-k3", reasoning_effort="medium"), "invalid reasoning_effort: only low, high, max are allowed for this model",
     oa(model="kimi-k3", reasoning_effort="max")),
    (oa(reasoning_effort="high"), "cannot specify both 'thinking' and 'reasoning_effort'", oa()),
    (oa(temperature=0.7), "invalid temperature: only 1 is allowed for this model", oa(temperature=1.0)),
    (oa(temperature=1.0, thinking={"type": "disabled"}), "invalid temperature: only 0.6 is allowed for this model",
     oa(temperature=0.6, thinking={"type": "disabled"})),
    (oa(model="kimi-k2.6", temperature=0.6, thinking={"type": "disabled"}), "invalid temperature: only 1 is allowed for this model",
     oa(model="kimi-k2.6", temperature=1, thinking={"type": "disabled"})),
    (oa(top_p=0.9), "invalid top_p: only 0.95 is allowed for this model", oa(top_p=0.95)),
    (oa(n=2), "invalid n: only 1 is allowed for this model", oa(n=1)),
    (oa(presence_penalty=0.5), "invalid presence_penalty: only 0 is allowed for this model", oa(presence_penalty=0)),
    (oa(frequency_penalty=1), "invalid frequency_penalty: only 0 is allowed for this model", oa()),
    (oa(tools=OA_TOOLS, tool_choice="required"), INCOMPATIBLE, oa(tools=OA_TOOLS, tool_choice="auto")),
    (oa(tools=OA_TOOLS, tool_choice={"type": "function", "function": {"name": "Bash"}}), INCOMPATIBLE,
     oa(tools=OA_TOOLS, tool_choice="required", thinking={"type": "disabled"})),
    (oa(tools=OA_TOOLS * 65), "too many tools: at most 128 tools are allowed, got 130", oa(tools=OA_TOOLS)),
    (oa(HISTORY + [call_msg("r", content=[{"type": "text", "text": ""}]), tool_msg()]), "text content is empty",
     oa(HISTORY + [call_msg("r", content=[{"type": "text", "text": "t"}]), tool_msg()])),
    (oa([{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}]), "role 'developer' is not allowed",
     oa([{"role": "system", "content": "d"}, {"role": "user", "content": "u"}])),
    (oa([{"role": "user", "content": [{"type": "tool_reference", "tool_name": "x"}]}]),
     "the message at position 0 with role 'user' contains an invalid part type: tool_reference",
     oa([{"role": "user", "content": [{"type": "text", "text": "x"}]}])),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model is required", oa()),
    ({"model": "kimi-k2.5"}, "messages is required and must be a non-empty array", oa()),
])
def test_openai_rule(bad, message, fixed):
    err = check_openai(bad)
    assert (err.status, err.message, err.type) == (400, message, "invalid_request_error")
    assert check_openai(fixed) is None


def test_openai_thinking_off_allows_tool_calls_without_reasoning():
    assert check_openai(oa(HISTORY + [call_msg(), tool_msg()], thinking={"type": "disabled"})) is None
    assert check_openai(oa(HISTORY + [call_msg(), tool_msg()], model="moonshot-v1-8k")) is None  # thinks only when asked


@pytest.mark.parametrize("name, family", [
    ("kimi-k2.5", "k2.5"), ("moonshotai/kimi-k2.5", "k2.5"), ("Pro/moonshotai/Kimi-K2.5", "k2.5"), ("kimi-k2.6", "k2.6"),
    ("kimi-k2.7-code", "k2.7-code"), ("kimi-k2-thinking", "k2-thinking"), ("kimi-k2-thinking-turbo", "k2-thinking"),
    ("kimi-for-coding", "kimi-for-coding"), ("k2p5", "kimi-for-coding"), ("kimi-k3", "k3"), ("moonshot-v1-8k", "kimi"),
    ("claude-opus-5-5", None), ("gpt-4o", None),
])
def test_model_families(name, family):
    got = family_of(name)
    assert (got.name if got else None) == family


# ---------------------------------------------------------------- Anthropic rules

BUDGET = {"type": "enabled", "budget_tokens": 2048}


@pytest.mark.parametrize("bad, message, fixed", [
    (an([{"role": "user", "content": "go"}, tool_use_turn(), tool_result()]), MISSING.format(1),
     an([{"role": "user", "content": "go"}, tool_use_turn(thinking()), tool_result()])),
    (an([{"role": "user", "content": "go"}, tool_use_turn(thinking("")), tool_result()]), MISSING.format(1),
     an([{"role": "user", "content": "go"}, tool_use_turn(thinking(" ")), tool_result()])),
    (an([{"role": "user", "content": "go"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "a", "name": "Bash", "input": {}}, thinking()]}, tool_result()]), MISSING.format(1),
     an([{"role": "user", "content": "go"}, tool_use_turn({"type": "text", "text": "t"}, thinking()), tool_result()])),
    (an(thinking={"type": "adaptive", "display": "omitted"}), "invalid thinking: type 'adaptive' is not supported, use enabled or disabled",
     an(thinking=BUDGET)),
    (an(thinking={"type": "enabled"}), "thinking.budget_tokens: must be an integer >= 1024 when thinking is enabled", an(thinking=BUDGET)),
    (an(model="kimi-k2.7-code", thinking={"type": "disabled"}), ONLY_ENABLED, an(model="kimi-k2.7-code", thinking=BUDGET)),
    (an(model="kimi-k3", thinking=BUDGET), "invalid thinking: this model does not accept the thinking parameter, use reasoning_effort",
     an(model="kimi-k3")),
    (an([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]),
     "role 'system' is not allowed in messages (at index 0); use the top-level system parameter",
     an([{"role": "user", "content": "u"}], system="s")),
    (an([{"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "u"}]}]),
     "text content blocks must be non-empty", an([{"role": "user", "content": [{"type": "text", "text": "u"}]}])),
    (an(system=[{"type": "text", "text": ""}]), "text content blocks must be non-empty", an(system=[{"type": "text", "text": "s"}])),
    (an([{"role": "user", "content": "go"}, tool_use_turn(thinking()), tool_result([{"type": "text", "text": ""}])]),
     "text content blocks must be non-empty",
     an([{"role": "user", "content": "go"}, tool_use_turn(thinking()), tool_result([{"type": "text", "text": "r"}])])),
    (an([{"role": "user", "content": "go"}, tool_use_turn(thinking()), tool_result([{"type": "tool_reference", "tool_name": "Bash"}])]),
     "the message at position 2 with role 'user' contains an invalid part type: tool_reference",
     an([{"role": "user", "content": "go"}, tool_use_turn(thinking()), tool_result("found Bash")])),
    (an([{"role": "user", "content": [{"type": "tool_reference", "tool_name": "Bash"}]}]),
     "the message at position 0 with role 'user' contains an invalid part type: tool_reference", an()),
    (an([{"role": "user", "content": "u"}, {"role": "assistant", "content": []}, {"role": "user", "content": "v"}]),
     "assistant message must not be empty",
     an([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "v"}])),
    (an([{"role": "user", "content": "go"}, tool_use_turn(thinking()), {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]),
     "tool_result block in message at index 2 needs content", an([{"role": "user", "content": "go"}, tool_use_turn(thinking()), tool_result([])])),
    (an(tools=AN_TOOLS, tool_choice={"type": "any"}), INCOMPATIBLE, an(tools=AN_TOOLS, tool_choice={"type": "auto"})),
    (an(tools=AN_TOOLS, tool_choice={"type": "tool", "name": "Bash"}), INCOMPATIBLE,
     an(tools=AN_TOOLS, tool_choice={"type": "tool", "name": "Bash"}, thinking={"type": "disabled"})),
    (an(tools=[{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(129)]),
     "too many tools: at most 128 tools are allowed, got 129", an(tools=[{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(128)])),
    (an(temperature=0.5), "invalid temperature: only 1 is allowed for this model", an(temperature=1)),
    ({"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens: Field required (a positive integer)", an()),
])
def test_anthropic_rule(bad, message, fixed):
    err = check_anthropic(bad)
    assert (err.status, err.message) == (400, message)
    assert check_anthropic(fixed) is None


def test_unknown_model_is_404_in_each_shape():
    assert check_openai(oa(model="gpt-4o")).status == 404
    err = check_anthropic(an(model="claude-opus-5-5"))
    assert (err.status, err.message) == (404, "Not found the model claude-opus-5-5 or Permission denied")


@pytest.mark.parametrize("name", ["2.1.331-first-turn.json", "2.1.331-after-tool-use.json"])
def test_claude_code_fixtures_are_rejected_as_sent(name):
    body = json.loads((FIXTURES / name).read_text())
    assert check_anthropic(body).status == 404  # claude-* model names are not Kimi's
    body["model"] = "kimi-k2.5"
    assert "adaptive" in err_text(check_anthropic(body))
    body["thinking"] = {"type": "enabled", "budget_tokens": 31999}
    index = next(i for i, m in enumerate(body["messages"]) if m["role"] == "system")
    assert err_text(check_anthropic(body)).startswith(f"role 'system' is not allowed in messages (at index {index})")
    # What the proxy must do: move the system message out; then Kimi accepts the request.
    body["system"].append({"type": "text", "text": json.dumps(body["messages"].pop(index)["content"])})
    assert check_anthropic(body) is None


# ---------------------------------------------------------------- the app


async def send(app, path, body=None, headers=OA_HEADERS, method="POST"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    return await app(Request(method, path, "", list(headers), raw))


async def read(resp) -> bytes:
    if resp.stream is None:
        return resp.body
    out = b""
    async for item in resp.stream:
        out += item
    return out


async def test_errors_use_each_dialects_envelope_and_auth():
    app = SimulatorApp()
    bad = oa(HISTORY + [call_msg(), tool_msg()])
    resp = await send(app, "/v1/chat/completions", bad)
    assert resp.status == 400
    assert json.loads(resp.body)["error"] == {"message": MISSING.format(2), "type": "invalid_request_error", "param": None, "code": None}
    resp = await send(app, "/anthropic/v1/messages", an([{"role": "user", "content": "go"}, tool_use_turn(), tool_result()]), AN_HEADERS)
    assert json.loads(resp.body) == {"type": "error", "error": {"type": "invalid_request_error", "message": MISSING.format(1)}}
    resp = await send(app, "/v1/chat/completions", b"{not json")
    assert resp.status == 400 and json.loads(resp.body)["error"]["message"].startswith("invalid JSON body")
    assert (await send(app, "/v1/chat/completions", oa(), headers=[])).status == 401
    assert (await send(app, "/v1/chat/completions", oa(), headers=[(b"x-api-key", b"k")])).status == 401  # OpenAI wants Bearer
    resp = await send(app, "/v1/messages", an(), headers=[])
    assert resp.status == 401 and json.loads(resp.body)["error"]["type"] == "authentication_error"
    assert (await send(app, "/api/anthropic/v1/messages", an(), headers=[(b"authorization", b"Bearer k")])).status == 200
    assert (await send(SimulatorApp(api_key="right"), "/v1/messages", an(), AN_HEADERS)).status == 401
    resp = await send(app, "/v1/messages", an(model="claude-opus-5-5"), AN_HEADERS)
    assert resp.status == 404 and json.loads(resp.body)["error"]["type"] == "not_found_error"


async def test_openai_agent_loop_and_turn_log():
    app = SimulatorApp()
    messages = [{"role": "user", "content": "do it"}]
    first = json.loads((await send(app, "/chat/completions", oa(messages, tools=OA_TOOLS))).body)
    msg = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["id"] for c in msg["tool_calls"]] == ["functions.Bash:0", "functions.Read:1"]
    assert [json.loads(c["function"]["arguments"]) for c in msg["tool_calls"]] == [
        {"command": "echo step-1"}, {"file_path": "sim", "mode": "r", "n": 1, "all": True}]
    assert msg["reasoning_content"].startswith("Sim reasoning 1 [")
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == first["usage"]["cached_tokens"]
    messages += [msg, tool_msg("out-A"), tool_msg("out-B")]
    second = json.loads((await send(app, "/v1/chat/completions", oa(messages, tools=OA_TOOLS))).body)["choices"][0]["message"]
    assert [c["id"] for c in second["tool_calls"]] == ["functions.Bash:0"]  # ids repeat, as Kimi's do
    assert second["reasoning_content"] != msg["reasoning_content"]
    assert second["content"] == ""  # as Kimi answers: echoed back unchanged, it is a 400
    echoed = await send(app, "/v1/chat/completions", oa(messages + [second, tool_msg("out-C")], tools=OA_TOOLS))
    assert json.loads(echoed.body)["error"]["message"] == "text content is empty"
    messages += [{k: v for k, v in second.items() if k != "content"}, tool_msg("out-C")]
    third = json.loads((await send(app, "/v1/chat/completions", oa(messages, tools=OA_TOOLS))).body)["choices"][0]
    assert third["finish_reason"] == "stop" and "tool_calls" not in third["message"]
    assert all(r in third["message"]["content"] for r in ("out-A", "out-B", "out-C"))
    turns = json.loads((await send(app, "/_sim/turns", method="GET")).body)
    assert [len(t["tool_calls"]) for t in turns] == [2, 1, 0]  # the rejected request gave no answer
    assert turns[1]["tool_calls"][0] == {"id": "functions.Bash:0", "name": "Bash", "arguments": {"command": "echo step-2"}}
    # A new user text starts a new loop; parallel_tool_calls false gives one call.
    messages += [third["message"], {"role": "user", "content": "again"}]
    fourth = json.loads((await send(app, "/v1/chat/completions", oa(messages, tools=OA_TOOLS, parallel_tool_calls=False))).body)
    assert len(fourth["choices"][0]["message"]["tool_calls"]) == 1


async def test_anthropic_agent_loop():
    app = SimulatorApp()
    body = an([{"role": "user", "content": "go"}], tools=AN_TOOLS, thinking=BUDGET)
    first = json.loads((await send(app, "/v1/messages", body, AN_HEADERS)).body)
    assert [b["type"] for b in first["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert first["stop_reason"] == "tool_use" and len(first["content"][0]["signature"]) > 100
    assert first["content"][2]["id"] == "functions.Bash:0"
    ids = [b["id"] for b in first["content"] if b["type"] == "tool_use"]
    body["messages"] += [{"role": "assistant", "content": first["content"]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": i, "content": f"res-{i}"} for i in ids]
                          + [{"type": "text", "text": "<system-reminder>not a new question</system-reminder>"}]}]
    second = json.loads((await send(app, "/v1/messages", body, AN_HEADERS)).body)
    assert [b["type"] for b in second["content"]] == ["thinking", "tool_use"]
    body["messages"] += [{"role": "assistant", "content": second["content"]}, tool_result([{"type": "text", "text": "res-last"}])]
    body["messages"][-1]["content"][0]["tool_use_id"] = "functions.Bash:0"
    third = json.loads((await send(app, "/v1/messages", body, AN_HEADERS)).body)
    assert third["stop_reason"] == "end_turn" and "res-last" in third["content"][-1]["text"]
    assert "res-functions.Read:1" in third["content"][-1]["text"]
    single = an(tools=AN_TOOLS, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    single_answer = json.loads((await send(app, "/v1/messages", single, AN_HEADERS)).body)
    assert sum(b["type"] == "tool_use" for b in single_answer["content"]) == 1


async def test_openai_stream_shape_and_sdk_accumulation():
    app = SimulatorApp()
    body = oa(tools=OA_TOOLS, stream=True, stream_options={"include_usage": True})
    raw = await read(await send(app, "/v1/chat/completions", body))
    events = SSEParser().feed(raw)
    assert events[-1].data == "[DONE]" and all(e.event is None for e in events)
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    last = chunks[-2]["choices"][0]
    assert last["finish_reason"] == "tool_calls" and last["usage"]["prompt_tokens"] > 0
    kinds = []
    for chunk in chunks[:-2]:
        choice = chunk["choices"][0]
        assert choice["finish_reason"] is None and "usage" not in choice
        kinds += [k for k in ("reasoning_content", "content", "tool_calls") if k in choice["delta"]]
    order = {"reasoning_content": 0, "content": 1, "tool_calls": 2}
    assert kinds == sorted(kinds, key=order.get) and kinds.count("reasoning_content") >= 2
    firsts = [tc for c in chunks[:-2] for tc in c["choices"][0]["delta"].get("tool_calls", []) if "id" in tc]
    assert [(t["index"], t["id"], t["function"]) for t in firsts] == [
        (0, "functions.Bash:0", {"name": "Bash", "arguments": ""}), (1, "functions.Read:1", {"name": "Read", "arguments": ""})]
    client = openai.OpenAI(api_key="x", base_url="http://sim/v1", http_client=httpx.Client(transport=httpx.MockTransport(
        lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw))))
    with client.chat.completions.stream(model="kimi-k2.5", messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.id for c in calls] == ["functions.Bash:0", "functions.Read:1"]
    assert json.loads(calls[0].function.arguments) == {"command": "echo step-1"}
    assert final.choices[0].message.model_extra["reasoning_content"].startswith("Sim reasoning 1 [")
    no_usage = [json.loads(e.data) for e in SSEParser().feed(await read(await send(app, "/v1/chat/completions", oa(stream=True))))[:-1]]
    assert no_usage[-1]["choices"][0]["usage"]["completion_tokens"] > 0  # Kimi puts usage in the choice regardless


async def test_anthropic_stream_order_and_sdk_accumulation():
    app = SimulatorApp()
    raw = await read(await send(app, "/v1/messages", an(tools=AN_TOOLS, stream=True), AN_HEADERS))
    events = SSEParser().feed(raw)
    datas = [json.loads(e.data) for e in events]
    assert all(e.event == d["type"] for e, d in zip(events, datas))
    types = [d["type"] for d in datas]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"] and "ping" in types
    open_block, next_index = None, 0
    for d in datas:
        if d["type"] == "content_block_start":
            assert open_block is None and d["index"] == next_index
            open_block, next_index = d, next_index + 1
        elif d["type"] == "content_block_delta":
            expected = {"thinking": ("thinking_delta", "signature_delta"), "text": ("text_delta",), "tool_use": ("input_json_delta",)}
            assert d["delta"]["type"] in expected[open_block["content_block"]["type"]]
        elif d["type"] == "content_block_stop":
            open_block = None
    sig_at = types.index("content_block_stop") - 1
    assert datas[sig_at]["delta"]["type"] == "signature_delta"  # just before the thinking block stops
    client = anthropic.Anthropic(api_key="x", base_url="http://sim", http_client=httpx2.Client(transport=httpx2.MockTransport(
        lambda r: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw))))
    with client.messages.stream(model="kimi-k2.5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[0].thinking.startswith("Sim reasoning 1 [") and final.content[0].signature
    assert final.content[2].input == {"command": "echo step-1"} and final.stop_reason == "tool_use"
    assert final.usage.output_tokens > 1


async def test_faults():
    app = SimulatorApp()
    fault = [(b"x-sim-fault", b"status=429;retry-after=1;times=1"), *OA_HEADERS]
    first = await send(app, "/v1/chat/completions", oa(), fault)
    assert first.status == 429 and (b"retry-after", b"1") in first.headers
    assert json.loads(first.body)["error"]["type"] == "rate_limit_reached_error"
    assert (await send(app, "/v1/chat/completions", oa(), fault)).status == 200
    resp = await send(app, "/v1/messages", an(stream=True), [(b"x-sim-fault", b"reset-after=2"), *AN_HEADERS])
    got = []
    with pytest.raises(SimulatedReset):
        async for item in resp.stream:
            got.append(item)
    assert len(got) == 2
    resp = await send(app, "/v1/chat/completions", oa(), [(b"x-sim-fault", b"reset-after=1"), *OA_HEADERS])
    with pytest.raises(SimulatedReset):
        await read(resp)  # a plain body cut half-way
    assert (await send(app, "/v1/chat/completions", oa(), [(b"x-sim-fault", b"bogus"), *OA_HEADERS])).status == 400


async def test_stall_and_slow_first_byte(autojump_clock):
    app = SimulatorApp()
    start = trio.current_time()
    resp = await send(app, "/v1/chat/completions", oa(stream=True), [(b"x-sim-fault", b"slow-first-byte=5"), *OA_HEADERS])
    assert trio.current_time() - start == pytest.approx(5)
    await read(resp)
    resp = await send(app, "/v1/chat/completions", oa(stream=True), [(b"x-sim-fault", b"stall-after=2;seconds=30"), *OA_HEADERS])
    start = trio.current_time()
    items = [item async for item in resp.stream]
    assert trio.current_time() - start == pytest.approx(30) and items[-1] == b"data: [DONE]\n\n"


async def test_routes_control_endpoints_and_records():
    app = SimulatorApp()
    resp = await send(app, "/anthropic/v1/messages/count_tokens", {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "x" * 400}]}, AN_HEADERS)
    assert resp.status == 200 and json.loads(resp.body)["input_tokens"] >= 100
    models = json.loads((await send(app, "/v1/models", headers=AN_HEADERS, method="GET")).body)
    assert models["data"][0]["type"] == "model" and "has_more" in models
    models = json.loads((await send(app, "/v1/models", method="GET")).body)
    assert models["object"] == "list" and "kimi-k2.5" in [m["id"] for m in models["data"]]
    assert (await send(app, "/v1/messages", an(), AN_HEADERS, method="GET")).status == 405
    assert (await send(app, "/v1/nothing", oa())).status == 404
    records = json.loads((await send(app, "/_sim/requests", method="GET")).body)
    assert [r["status"] for r in records] == [200, 200, 200, 405, 404]
    assert records[0]["dialect"] == "anthropic" and records[0]["headers"]["x-api-key"] == "<redacted>"
    assert records[0]["body"]["model"] == "kimi-k2.5" and records[2]["headers"]["authorization"] == "<redacted>"
    await send(app, "/_sim/reset")
    assert json.loads((await send(app, "/_sim/requests", method="GET")).body) == []


async def test_served_over_http_with_the_anthropic_sdk():
    serve = pytest.importorskip("rawproxy.server").serve
    app = SimulatorApp()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, app, "127.0.0.1", 0)

        def run():
            client = anthropic.Anthropic(api_key="k", base_url=f"http://127.0.0.1:{port}", max_retries=0)
            with client.messages.stream(model="kimi-k2.5", max_tokens=4000, messages=[{"role": "user", "content": "hi"}],
                                        tools=copy.deepcopy(AN_TOOLS)) as stream:
                return stream.get_final_message()

        final = await trio.to_thread.run_sync(run)
        nursery.cancel_scope.cancel()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]


def test_agent_calls_the_tool_the_user_names_ignoring_system_reminders():
    from rawproxy.simulator.agent import Agent, conversation_anthropic

    tools = [{"name": n, "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                          "required": ["command"]}} for n in ("Agent", "Bash", "Read")]
    body = {"model": "kimi-k2.5", "max_tokens": 2000, "tools": tools, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>Use the Agent tool for research.</system-reminder>"},
        {"type": "text", "text": "Use the Bash tool to run a command."}]}]}
    answer = Agent().answer(conversation_anthropic(body, True))
    assert [c.name for c in answer.tool_calls] == ["Bash"]


def test_agent_gives_codex_exec_command_a_harmless_shell_command():
    """Codex's shell tool takes `cmd`: the scripted agent fills it as it does Bash's `command`."""
    from rawproxy.simulator.agent import Agent, conversation_openai

    tool = {"type": "function", "function": {"name": "exec_command", "parameters": {
        "type": "object", "properties": {"cmd": {"type": "string"}, "login": {"type": "boolean"}},
        "required": ["cmd"]}}}
    body = {"model": "kimi-k2.5", "tools": [tool],
            "messages": [{"role": "user", "content": "Use exec_command to run a command."}]}
    answer = Agent().answer(conversation_openai(body, True))
    assert [c.arguments for c in answer.tool_calls] == [{"cmd": "echo step-1"}]
