"""The OpenAI Responses API (`POST /v1/responses`) through the proxy, with the real openai SDK.

Multi-turn function-tool loops on both upstream formats (the simulator speaks no
Responses API: the proxy translates), streamed and not, with the reasoning items sent
back, dropped, or left to `previous_response_id`; each shows that the simulator received
the model's real reasoning for every replayed tool-call turn.
"""

from __future__ import annotations

import json
import sys

import httpx
import openai
import pytest

from ..conftest import Process, free_port, wait_http
from .reasoning_checks import assert_real_reasoning_replayed

TOOLS = [
    {"type": "function", "name": "list_files", "description": "List files in a folder",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"type": "function", "name": "read_file", "description": "Read a file",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"type": "web_search"},  # hosted: no Kimi upstream runs it; Codex offers it by default
]
MAX_TURNS = 6
TASK = "Look at the project and summarise it."


def turn(client: openai.OpenAI, stream: bool, **params):
    if not stream:
        return client.responses.create(**params)
    kinds = []
    with client.responses.stream(**params) as events:
        for event in events:
            kinds.append(event.type)
        final = events.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert sum(k in ("response.completed", "response.failed", "response.incomplete") for k in kinds) == 1
    return final


def responses_loop(client: openai.OpenAI, *, stream: bool, history: str, **extra):
    """history: "kept" (output items sent back whole), "dropped" (reasoning items left
    out, as a client that keeps only messages and calls does), "previous" (only the new
    items, with previous_response_id)."""
    conversation: list = [{"role": "user", "content": TASK}]
    pending = list(conversation)
    previous = None
    outputs: list[str] = []
    for _ in range(MAX_TURNS):
        params = dict(model="kimi-k2.5", tools=TOOLS, reasoning={"summary": "auto"}, **extra)
        if history == "previous":
            params["input"] = pending
            if previous:
                params["previous_response_id"] = previous
        else:
            params["input"] = conversation
        response = turn(client, stream, **params)
        assert response.status == "completed"
        assert response.usage is not None and response.usage.output_tokens > 0
        kinds = [item.type for item in response.output]
        assert kinds == sorted(kinds, key=["reasoning", "message", "function_call"].index), kinds
        previous = response.id
        sent_back = [item.model_dump(exclude_none=True) for item in response.output
                     if history == "kept" or item.type != "reasoning"]
        calls = [item for item in response.output if item.type == "function_call"]
        conversation += sent_back
        pending = []
        if not calls:
            return response.output_text, outputs
        for call in calls:
            assert call.call_id.startswith("call_") and json.loads(call.arguments)
            outputs.append(f"output-{call.name}-{len(outputs)}")
            result = {"type": "function_call_output", "call_id": call.call_id, "output": outputs[-1]}
            conversation.append(result)
            pending.append(result)
    raise AssertionError("tool loop did not finish")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("history", ["kept", "dropped", "previous"])
def test_responses_tool_loop(proxy, sim, stream, history):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-key", max_retries=0)
    final, outputs = responses_loop(client, stream=stream, history=history)
    assert len(outputs) >= 3 and all(o in final for o in outputs), (final, outputs)
    assert assert_real_reasoning_replayed(sim) >= 2


def test_codex_style_stateless_request(proxy, sim):
    """What Codex sends: store false, encrypted reasoning included, reasoning items kept."""
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-key", max_retries=0)
    final, outputs = responses_loop(client, stream=True, history="kept", store=False,
                                    include=["reasoning.encrypted_content"], parallel_tool_calls=True)
    assert all(o in final for o in outputs)
    assert_real_reasoning_replayed(sim)


def test_hosted_tools_are_left_out_and_said_so(proxy, sim):
    r = httpx.post(proxy.url + "/v1/responses", headers={"authorization": "Bearer client-key"},
                   json={"model": "kimi-k2.5", "input": "hello", "tools": TOOLS}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-rawproxy-dropped-tools"] == "web_search"
    sent = sim.requests()[-1]["body"]
    names = [t.get("name") or t.get("function", {}).get("name") for t in sent["tools"]]
    assert names == ["list_files", "read_file"]


def test_unknown_previous_response_id_is_a_400(proxy, sim):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-key", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="kimi-k2.5", input="go on", previous_response_id="resp_" + "0" * 32)
    assert "unknown or has expired" in str(err.value)


def test_store_false_responses_are_not_remembered(proxy, sim):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-key", max_retries=0)
    first = client.responses.create(model="kimi-k2.5", input="hello", store=False)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="kimi-k2.5", input="go on", previous_response_id=first.id)


def test_sealed_reasoning_restores_on_another_replica(simulator, tmp_path):
    """Two proxies with the same secret and separate stores, as two replicas without a
    shared store: a Codex-style conversation alternating between them still replays the
    real reasoning, carried by the reasoning items' encrypted_content alone (the readable
    summary is taken off before each item goes back, so only the seal can carry it)."""
    simulator.reset()
    env = {"PROXY_SECRET": "a-shared-secret-of-enough-length", "NO_PROXY": "*"}
    replicas = []
    try:
        for i in range(2):
            port = free_port()
            proc = Process([sys.executable, "-m", "rawproxy", "--port", str(port), "--upstream",
                            simulator.base("openai"), "--upstream-format", "openai"],
                           str(tmp_path / f"replica{i}.log"), env=env)
            wait_http(f"http://127.0.0.1:{port}/health", proc.proc)
            replicas.append((port, proc))
        clients = [openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="client-key", max_retries=0)
                   for port, _ in replicas]
        conversation: list = [{"role": "user", "content": TASK}]
        for n in range(MAX_TURNS):
            response = clients[n % 2].responses.create(
                model="kimi-k2.5", input=conversation, tools=TOOLS[:2], store=False,
                include=["reasoning.encrypted_content"])
            reasoning = [item for item in response.output if item.type == "reasoning"]
            assert reasoning and reasoning[0].encrypted_content
            conversation += [_sealed_only(item.model_dump(exclude_none=True)) for item in response.output]
            calls = [item for item in response.output if item.type == "function_call"]
            if not calls:
                break
            conversation += [{"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls]
        assert assert_real_reasoning_replayed(simulator) >= 2
    finally:
        for _, proc in replicas:
            proc.stop()


def _sealed_only(item: dict) -> dict:
    if item.get("type") == "reasoning":
        return {**item, "summary": [], "content": []}
    return item


def test_a_foreign_seal_restores_nothing(proxy, sim):
    """encrypted_content made for another tenant is ignored, never trusted: the replayed
    turn then carries the placeholder, not the other tenant's text."""
    from rawproxy.core.seal import ReasoningSeal

    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-key", max_retries=0)
    first = client.responses.create(model="kimi-k2.5", input=TASK, tools=TOOLS[:2], store=False,
                                    include=["reasoning.encrypted_content"])
    calls = [item for item in first.output if item.type == "function_call"]
    forged = ReasoningSeal(b"a-secret-this-proxy-does-not-have").seal("x", "forged reasoning")
    items = [{"type": "reasoning", "summary": [], "encrypted_content": forged}]
    items += [c.model_dump(exclude_none=True) for c in calls]
    items += [{"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls]
    # New call ids the store never saw: only the (forged) seal could supply reasoning.
    renamed = {c.call_id: f"call_forged_{n}" for n, c in enumerate(calls)}
    for item in items[1:]:
        item["call_id"] = renamed[item["call_id"]]
        item.pop("id", None)
    client.responses.create(model="kimi-k2.5", input=[{"role": "user", "content": TASK}, *items],
                            tools=TOOLS[:2], store=False, include=["reasoning.encrypted_content"])
    replayed = [m for m in sim.requests()[-1]["body"]["messages"] if m.get("tool_calls")]
    text = replayed[0].get("reasoning_content") if proxy.upstream_format == "openai" else None
    if proxy.upstream_format == "anthropic":
        blocks = [m for m in sim.requests()[-1]["body"]["messages"] if m.get("role") == "assistant"]
        text = "".join(b.get("thinking", "") for b in blocks[0]["content"] if b.get("type") == "thinking")
    assert "forged" not in (text or "")


def test_seals_open_only_for_their_tenant_and_secret():
    from rawproxy.core.seal import ReasoningSeal

    seal = ReasoningSeal(b"a-shared-secret-of-enough-length")
    token_for_b = seal.seal("another-tenant", "reasoning of someone else")
    assert seal.open("another-tenant", token_for_b) == "reasoning of someone else"
    assert seal.open("this-tenant", token_for_b) is None
    assert seal.open("another-tenant", token_for_b[:-2] + "AA") is None
    assert ReasoningSeal(b"some-other-secret-16b").open("another-tenant", token_for_b) is None
