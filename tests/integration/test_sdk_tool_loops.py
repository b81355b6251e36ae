"""Real clients through the proxy, multi-turn tool loops, on both upstream formats.

Each test runs a client's own tool loop against the Kimi simulator through the proxy, then
shows (1) that the same conversation sent straight to the simulator is refused with a
400, and (2) that through the proxy it completed and the simulator received the real
reasoning for every replayed tool-call turn.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from .reasoning_checks import assert_real_reasoning_replayed

TOOLS_ANTHROPIC = [
    {"name": "list_files", "description": "List files in a folder",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"name": "read_file", "description": "Read a file",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
]
TOOLS_OPENAI = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"]}} for t in TOOLS_ANTHROPIC]
MAX_TURNS = 6


def tool_output(name: str, n: int) -> str:
    return f"output-{name}-{n}"


# --- anthropic SDK ------------------------------------------------------------------------

def anthropic_loop(client: anthropic.Anthropic, *, stream: bool, keep_thinking: bool, **params):
    messages: list[dict] = [{"role": "user", "content": "Look at the project and summarise it."}]
    outputs: list[str] = []
    for _ in range(MAX_TURNS):
        call = dict(model=params.pop("model", "claude-opus-5-5"), max_tokens=16000, messages=messages,
                    tools=TOOLS_ANTHROPIC, **params)
        params["model"] = call["model"]
        if stream:
            with client.messages.stream(**call) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(**call)
        blocks = [b.model_dump(exclude_none=True) for b in message.content]
        if not keep_thinking:
            blocks = [b for b in blocks if b["type"] != "thinking"]
        messages.append({"role": "assistant", "content": blocks})
        if message.stop_reason != "tool_use":
            return message, messages, outputs
        results = []
        for b in message.content:
            if b.type == "tool_use":
                assert b.id.startswith("toolu_") and ":" not in b.id and "." not in b.id
                outputs.append(tool_output(b.name, len(outputs)))
                results.append({"type": "tool_result", "tool_use_id": b.id, "content": outputs[-1]})
        messages.append({"role": "user", "content": results})
    raise AssertionError("tool loop did not finish")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("keep_thinking", [True, False], ids=["thinking-kept", "thinking-dropped"])
def test_anthropic_sdk_tool_loop(proxy, sim, stream, keep_thinking):
    # Claude Code's thinking setting: strict Kimi upstreams refuse `adaptive`.
    params = {"thinking": {"type": "adaptive"}} if keep_thinking else {}
    client = anthropic.Anthropic(base_url=proxy.url, api_key="client-key", max_retries=0)
    final, history, outputs = anthropic_loop(client, stream=stream, keep_thinking=keep_thinking, **dict(params))

    text = "".join(b.text for b in final.content if b.type == "text")
    assert len(outputs) >= 3  # a parallel pair, then one more call
    assert all(o in text for o in outputs), "the final answer must quote every tool result"
    assert final.content[0].type == "thinking" and final.content[0].thinking.strip()
    assert_real_reasoning_replayed(sim)

    direct = anthropic.Anthropic(base_url=sim.base("anthropic"), api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as err:
        direct.messages.create(model="kimi-k2.5", max_tokens=16000, messages=history[:-1],
                               tools=TOOLS_ANTHROPIC, **params)
    if not keep_thinking:
        assert "reasoning_content is missing in assistant tool call message at index 1" in str(err.value)


# --- openai SDK ---------------------------------------------------------------------------

def openai_turn(client: openai.OpenAI, stream: bool, **call):
    if not stream:
        msg = client.chat.completions.create(**call).choices[0].message
        calls = [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                 for c in msg.tool_calls or []]
        return msg.content, calls
    content, calls, finish, usage = "", {}, None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **call):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                slot["id"] += tc.id or ""
                slot["function"]["name"] += (tc.function.name or "") if tc.function else ""
                slot["function"]["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = choice.finish_reason or finish
    assert finish in ("stop", "tool_calls") and usage is not None and usage.total_tokens > 0
    return content or None, [calls[k] for k in sorted(calls)]


def openai_loop(client: openai.OpenAI, *, stream: bool, **params):
    messages: list[dict] = [{"role": "user", "content": "Look at the project and summarise it."}]
    outputs: list[str] = []
    for _ in range(MAX_TURNS):
        content, calls = openai_turn(client, stream, model="kimi-k2.5", messages=messages, tools=TOOLS_OPENAI, **params)
        # What most apps send back: the message without the model's reasoning.
        assistant = {"role": "assistant", "content": content}
        if calls:
            assistant["tool_calls"] = calls
        messages.append(assistant)
        if not calls:
            return content, messages, outputs
        for c in calls:
            assert c["id"].startswith("call_") and json.loads(c["function"]["arguments"])
            outputs.append(tool_output(c["function"]["name"], len(outputs)))
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": outputs[-1]})
    raise AssertionError("tool loop did not finish")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("params", [
    {},
    {"temperature": 0.3, "tool_choice": "required", "parallel_tool_calls": True},
], ids=["plain", "temperature-required"])
def test_openai_sdk_tool_loop(proxy, sim, stream, params):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-key", max_retries=0)
    final, history, outputs = openai_loop(client, stream=stream, **params)
    assert len(outputs) >= 3
    assert all(o in final for o in outputs)
    first_tool_turn = next(m for m in history if m.get("tool_calls"))
    assert len(first_tool_turn["tool_calls"]) == 2, "the first turn calls two tools in parallel"
    assert_real_reasoning_replayed(sim)

    direct = openai.OpenAI(base_url=sim.base("openai"), api_key="k", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        direct.chat.completions.create(model="kimi-k2.5", messages=history[:-1], tools=TOOLS_OPENAI, **params)
    if not params:
        assert "reasoning_content is missing in assistant tool call message at index 1" in str(err.value)


# --- LangChain ----------------------------------------------------------------------------

def langchain_loop(base_url: str, stream: bool, http_client=None):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="kimi-k2.5", base_url=base_url, api_key="client-key", temperature=0.7, max_retries=0,
                     http_client=http_client)
    bound = llm.bind_tools(TOOLS_OPENAI)
    messages = [HumanMessage("Look at the project and summarise it.")]
    outputs: list[str] = []
    for _ in range(MAX_TURNS):
        if stream:
            reply = None
            for chunk in bound.stream(messages):
                reply = chunk if reply is None else reply + chunk
        else:
            reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return reply, messages, outputs
        for call in reply.tool_calls:
            outputs.append(tool_output(call["name"], len(outputs)))
            messages.append(ToolMessage(outputs[-1], tool_call_id=call["id"]))
    raise AssertionError("tool loop did not finish")


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_chatopenai_tool_loop(proxy, sim, stream):
    final, _, outputs = langchain_loop(proxy.url + "/v1", stream)
    assert len(outputs) >= 3 and all(o in final.content for o in outputs)
    assert_real_reasoning_replayed(sim)

    # Straight to the simulator the same client fails: temperature 0.7 on the first turn.
    with pytest.raises(openai.BadRequestError, match="temperature"):
        langchain_loop(sim.base("openai"), stream)
