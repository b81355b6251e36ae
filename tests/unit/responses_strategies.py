"""Hypothesis strategies and harness for the Responses API translator tests.

Answers come from translate_strategies (Kimi-shaped Chat answers), with custom-tool and
namespaced calls added. The client side is read three ways: the event payloads checked
against the protocol's invariants, each event validated by the SDK's own event types, and
the whole stream accumulated by the real openai SDK (`client.responses.stream`) over an
httpx2 MockTransport.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx2
import openai
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from rawproxy.core.ids import tool_call_id
from rawproxy.translate.responses_api import AnswerContext
from tests.unit.translate_strategies import MODEL, TURN, Answer, Call, answers, parse_client, texts, tool_inputs

CUSTOM = "apply_patch"  # a freeform (custom) tool
SCOPED = "collab__spawn_agent"  # the flat name of `spawn_agent` in namespace `collab`
NAMESPACED = {SCOPED: ("collab", "spawn_agent")}
RESPONSE_ID = "resp_0123456789abcdef"
CREATED = 1_700_000_000
# What Codex sends and a Response echoes back.
CODEX_ECHO = {
    "tools": [
        {"type": "function", "name": "shell", "description": "Run a command", "strict": False,
         "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}},
        {"type": "custom", "name": CUSTOM, "description": "Apply a patch",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "web_search"},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "text": {"verbosity": "medium"},
    "prompt_cache_key": "thread-1",
}

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
# failure codes Codex acts on that the SDK's ResponseError literal does not list
CODES_BEYOND_SDK = ("context_length_exceeded", "insufficient_quota")


def seal(text: str, turn_key: str | None) -> str:
    """A stand-in for the proxy's sealing: reversible, and marked as ours."""
    return f"test-seal.{turn_key or '-'}." + base64.urlsafe_b64encode(text.encode()).decode()


def unseal(token: str) -> str | None:
    prefix, _, rest = token.partition(".")
    if prefix != "test-seal":
        return None
    _, _, data = rest.partition(".")
    try:
        return base64.urlsafe_b64decode(data.encode()).decode()
    except ValueError:
        return None


# ---------------------------------------------------------------- strategies


@st.composite
def responses_answers(draw: Any) -> Answer:
    """A Kimi answer whose calls may include a custom tool and a namespaced one."""
    a = draw(answers())
    for kind in draw(st.lists(st.sampled_from(["custom", "scoped"]), max_size=2)):
        k = len(a.calls)
        if kind == "custom":
            a.calls.append(Call(tool_call_id(TURN, k, "call"), CUSTOM, {"input": draw(texts)}))
        else:
            a.calls.append(Call(tool_call_id(TURN, k, "call"), SCOPED, draw(tool_inputs)))
        a.finish = draw(st.sampled_from(["tool_calls", "length"]))
    return a


@st.composite
def contexts(draw: Any) -> AnswerContext:
    return AnswerContext(
        custom_tools=frozenset({CUSTOM}) if draw(st.booleans()) else frozenset(),
        namespaced=NAMESPACED if draw(st.booleans()) else {},
        summary=draw(st.booleans()),
        raw_reasoning=draw(st.booleans()),
        encrypted_reasoning=draw(st.booleans()),
        echo=CODEX_ECHO if draw(st.booleans()) else {},
    )


# ---------------------------------------------------------------- protocol invariants

_EVENT = TypeAdapter(ResponseStreamEvent)
_ITEM_EVENTS = {
    "reasoning": {
        "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.content_part.added", "response.content_part.done",
    },
    "message": {"response.content_part.added", "response.output_text.delta", "response.output_text.done",
                "response.content_part.done"},
    "function_call": {"response.function_call_arguments.delta", "response.function_call_arguments.done"},
    "custom_tool_call": {"response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"},
}
_DELTA_FIELD = {  # delta event -> (where its text accumulates, the done event that repeats it, its field)
    "response.reasoning_summary_text.delta": ("summary", "response.reasoning_summary_text.done", "text"),
    "response.reasoning_text.delta": ("content", "response.reasoning_text.done", "text"),
    "response.output_text.delta": ("text", "response.output_text.done", "text"),
    "response.function_call_arguments.delta": ("arguments", "response.function_call_arguments.done", "arguments"),
    "response.custom_tool_call_input.delta": ("input", "response.custom_tool_call_input.done", "input"),
}


def validate_event(payload: dict) -> None:
    """The payload parses as the SDK's own event type (strict pydantic validation)."""
    if payload["type"] == "response.failed" and payload["response"]["error"]["code"] in CODES_BEYOND_SDK:
        payload = json.loads(json.dumps(payload))
        payload["response"]["error"]["code"] = "server_error"
    _EVENT.validate_python(payload)


def _done_text(item: dict, where: str) -> str:
    if where == "summary":
        return "".join(p["text"] for p in item["summary"])
    if where == "content":
        return "".join(p["text"] for p in item.get("content") or [])
    if where == "text":
        return "".join(p["text"] for p in item["content"])
    return item[where]


def check_responses_events(out: list[bytes], ending: str) -> list[dict]:
    """Every invariant a Responses client relies on; returns the event payloads.

    `ending`: "complete" (completed or incomplete) or "failed".
    """
    payloads = []
    for name, data in parse_client(out):
        payload = json.loads(data)
        assert name == payload["type"], "every event has an event: line equal to data.type"
        validate_event(payload)
        payloads.append(payload)
    types = [p["type"] for p in payloads]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads))), "sequence numbers 0, 1, 2..."
    assert types[:2] == ["response.created", "response.in_progress"]
    assert sum(t in TERMINAL for t in types) == 1 and types[-1] in TERMINAL, "exactly one terminal event, last"
    if ending == "complete":
        assert types[-1] in ("response.completed", "response.incomplete"), types[-1]
    else:
        assert types[-1] == "response.failed", types[-1]
    response_id = payloads[0]["response"]["id"]
    for p in payloads:
        if "response" in p:
            assert p["response"]["id"] == response_id and p["response"]["object"] == "response"
    assert payloads[0]["response"]["status"] == "in_progress" and payloads[0]["response"]["output"] == []

    open_item: dict | None = None
    done_items: list[dict] = []
    accumulated: dict[str, str] = {}
    for p in payloads[2:-1]:
        kind = p["type"]
        if kind == "response.output_item.added":
            assert open_item is None, "items stream one at a time (Codex adds deltas to the last added item)"
            assert p["output_index"] == len(done_items), "output indexes 0, 1, 2... in order"
            open_item, accumulated = p["item"], {}
            assert open_item["id"]
        elif kind == "response.output_item.done":
            assert open_item is not None and p["output_index"] == len(done_items)
            item = p["item"]
            assert (item["type"], item["id"]) == (open_item["type"], open_item["id"])
            for key in ("call_id", "name", "namespace"):
                assert item.get(key) == open_item.get(key), key
            for where, text in accumulated.items():
                assert _done_text(item, where) == text, f"deltas add up to the done item's {where}"
            done_items.append(item)
            open_item = None
        else:
            assert open_item is not None, f"{kind} outside an item"
            assert p["item_id"] == open_item["id"] and p["output_index"] == len(done_items)
            assert kind in _ITEM_EVENTS[open_item["type"]], f"{kind} sent to a {open_item['type']} item"
            assert p.get("content_index", 0) == 0 and p.get("summary_index", 0) == 0
            if kind in _DELTA_FIELD:
                where, _, _ = _DELTA_FIELD[kind]
                assert p["delta"], "no empty deltas"
                accumulated[where] = accumulated.get(where, "") + p["delta"]
            for where, done_kind, key in _DELTA_FIELD.values():
                if kind == done_kind:
                    assert p[key] == accumulated.get(where, ""), f"{kind} repeats what the deltas said"
    final = payloads[-1]["response"]
    if ending == "complete":
        assert open_item is None, "every item done before the terminal event"
        assert final["status"] in ("completed", "incomplete")
        assert (final["status"] == "incomplete") == (final["incomplete_details"] is not None)
        assert final["error"] is None
    else:
        assert final["status"] == "failed" and final["error"]["code"] and final["error"]["message"]
    assert final["output"] == done_items, "the terminal response lists the items streamed"
    return payloads


# ---------------------------------------------------------------- the real SDK

_body = {"current": b""}


def _handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=_body["current"])


CLIENT = openai.OpenAI(api_key="test", base_url="http://test/v1",
                       http_client=httpx2.Client(transport=httpx2.MockTransport(_handler)), max_retries=0)


def sdk_stream(out: list[bytes]) -> tuple[list[Any], dict | None]:
    """The bytes through `client.responses.stream`: the SDK's events (with the snapshots its
    accumulator keeps) and its final response, None when there was no response.completed."""
    _body["current"] = b"".join(out)
    with CLIENT.responses.stream(model=MODEL, input="hi") as stream:
        events = list(stream)
        try:
            final = stream.get_final_response().model_dump(mode="json", exclude_none=True)
        except RuntimeError:
            final = None
    return events, final


def as_sdk(response: dict) -> dict:
    """A response object as the SDK hands it to its user (and proof the model accepts it)."""
    return Response.model_validate(response).model_dump(mode="json", exclude_none=True)


def sdk_snapshots(events: list[Any]) -> dict[int, str]:
    """Per output index, the text or arguments the SDK's accumulator built from the deltas."""
    snapshots: dict[int, str] = {}
    for event in events:
        if event.type in ("response.output_text.delta", "response.function_call_arguments.delta"):
            snapshots[event.output_index] = event.snapshot
    return snapshots


def essence(response: dict) -> dict:
    """What a client reads from a response, with items of one kind taken together: a stream
    that alternates kinds (thinking, text, thinking) splits them into several items."""
    output = response["output"]

    def texts_of(kind: str, key: str) -> str:
        return "".join(_done_text(i, key) for i in output if i["type"] == kind)

    return {
        "status": response["status"],
        "incomplete_details": response.get("incomplete_details"),
        "summary": texts_of("reasoning", "summary"),
        "text": texts_of("message", "text"),
        "calls": [
            (i["type"], i["call_id"], i["name"], i.get("namespace"),
             json.loads(i["arguments"]) if i["type"] == "function_call" else i["input"])
            for i in output if i["type"] in ("function_call", "custom_tool_call")
        ],
        "usage": response.get("usage"),
    }


__all__ = [
    "CLIENT", "CODEX_ECHO", "CREATED", "CUSTOM", "MODEL", "NAMESPACED", "RESPONSE_ID", "SCOPED", "TURN",
    "as_sdk", "check_responses_events", "contexts", "essence", "responses_answers", "sdk_snapshots",
    "sdk_stream", "seal", "unseal", "validate_event",
]
