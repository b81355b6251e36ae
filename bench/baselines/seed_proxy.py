"""The seed project's design, as a benchmark baseline: FastAPI + uvicorn + httpx.

Written for the benchmark from the seed README's description (not its code): a FastAPI
app, one shared httpx.AsyncClient, uvicorn with one worker, StreamingResponse over the
upstream's lines. It does the same kind of work as rawproxy: parse the request JSON, repair
it for Kimi (thinking blocks / reasoning_content on assistant tool-call turns, adaptive ->
enabled, drop temperature & co.), forward it, and translate Anthropic <-> OpenAI when the
upstream speaks the other dialect, plainly, as the seed would.

Settings, from the seed README's environment: ZENMUX_API_KEY, MOONSHOT_BASE_URL, PROXY_HOST,
PROXY_PORT; the upstream dialect is inferred from the base (a path ending in /v1 is OpenAI)
or set with UPSTREAM_FORMAT. Run: uvicorn seed_proxy:app --app-dir bench/baselines
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

API_KEY = os.environ.get("ZENMUX_API_KEY", "")
BASE_URL = os.environ.get("MOONSHOT_BASE_URL", "https://zenmux.ai/api/anthropic").rstrip("/")
UPSTREAM_FORMAT = os.environ.get("UPSTREAM_FORMAT") or ("openai" if BASE_URL.endswith("/v1") else "anthropic")
DROP_PARAMS = ("temperature", "top_p", "top_k", "n", "presence_penalty", "frequency_penalty", "reasoning_effort")
PLACEHOLDER = " "   # the smallest reasoning Kimi accepts
FINISH_TO_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
STOP_TO_FINISH = {v: k for k, v in FINISH_TO_STOP.items()}

client: httpx.AsyncClient


@asynccontextmanager
async def lifespan(_app):
    global client
    # One pooled client for the app's life. Limits raised from httpx's default 100 so the
    # baseline is not starved at 200-500 concurrent streams (a fair, not a naive, seed).
    client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0),
                               limits=httpx.Limits(max_connections=1000, max_keepalive_connections=500))
    yield
    await client.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health():
    return {"status": "ok"}


# ---- Kimi repairs ----
def fix_anthropic(body: dict) -> None:
    for key in DROP_PARAMS:
        body.pop(key, None)
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") in ("adaptive", "disabled"):
        body["thinking"] = {"type": "enabled", "budget_tokens": max(1024, min(body.get("max_tokens", 16000) - 1, 16000))}
    for msg in body.get("messages", []):
        content = msg.get("content")
        if msg.get("role") != "assistant" or not isinstance(content, list):
            continue
        if any(b.get("type") == "tool_use" for b in content) and not any(b.get("type") == "thinking" for b in content):
            content.insert(0, {"type": "thinking", "thinking": PLACEHOLDER, "signature": "seed-proxy"})


def fix_openai(body: dict) -> None:
    for key in DROP_PARAMS:
        body.pop(key, None)
    body["thinking"] = {"type": "enabled"}
    for msg in body.get("messages", []):
        if msg.get("role") == "assistant" and msg.get("tool_calls") and not msg.get("reasoning_content"):
            msg["reasoning_content"] = PLACEHOLDER
            if not msg.get("content"):
                msg.pop("content", None)


# ---- request translation ----
def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


def anthropic_to_openai(body: dict) -> dict:
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"])})
    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, str) or msg["role"] == "system":
            messages.append({"role": msg["role"], "content": _text_of(content)})
        elif msg["role"] == "user":
            for b in content:   # tool results first, as their own messages
                if b.get("type") == "tool_result":
                    c = b.get("content")
                    messages.append({"role": "tool", "tool_call_id": b["tool_use_id"],
                                     "content": c if isinstance(c, str) else _text_of(c)})
            text = _text_of(content)
            if text:
                messages.append({"role": "user", "content": text})
        else:
            out = {"role": "assistant", "content": _text_of(content) or None}
            reasoning = "".join(b.get("thinking", "") for b in content if b.get("type") == "thinking")
            if reasoning:
                out["reasoning_content"] = reasoning
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))}}
                     for b in content if b.get("type") == "tool_use"]
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
    out = {"model": body["model"], "messages": messages, "max_tokens": body.get("max_tokens"),
           "stream": bool(body.get("stream"))}
    if body.get("tools"):
        out["tools"] = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                                          "parameters": t.get("input_schema", {})}}
                        for t in body["tools"]]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}
    return out


def openai_to_anthropic(body: dict) -> dict:
    system, messages = [], []
    for msg in body.get("messages", []):
        role, content = msg["role"], msg.get("content")
        if role in ("system", "developer"):
            system.append(content if isinstance(content, str) else _text_of(content))
        elif role == "tool":
            block = {"type": "tool_result", "tool_use_id": msg["tool_call_id"], "content": content or ""}
            if messages and messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], list):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        elif role == "assistant":
            blocks = []
            if msg.get("reasoning_content"):
                blocks.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": "seed-proxy"})
            if content:
                blocks.append({"type": "text", "text": content if isinstance(content, str) else _text_of(content)})
            for call in msg.get("tool_calls") or []:
                blocks.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                               "input": json.loads(call["function"].get("arguments") or "{}")})
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append({"role": "user", "content": content if isinstance(content, str) else _text_of(content)})
    out = {"model": body["model"], "messages": messages, "stream": bool(body.get("stream")),
           "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens") or 16000}
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("tools"):
        out["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                         "input_schema": t["function"].get("parameters", {"type": "object"})} for t in body["tools"]]
    return out


# ---- response translation ----
def safe_id(raw: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", raw)


def openai_to_anthropic_response(data: dict) -> dict:
    choice = data["choices"][0]
    msg, content = choice["message"], []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": "seed-proxy"})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or []:
        content.append({"type": "tool_use", "id": safe_id(call["id"]), "name": call["function"]["name"],
                        "input": json.loads(call["function"]["arguments"] or "{}")})
    usage = data.get("usage") or {}
    return {"id": "msg_" + data.get("id", uuid.uuid4().hex), "type": "message", "role": "assistant",
            "model": data.get("model"), "content": content, "stop_sequence": None,
            "stop_reason": FINISH_TO_STOP.get(choice.get("finish_reason"), "end_turn"),
            "usage": {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)}}


def anthropic_to_openai_response(data: dict) -> dict:
    msg = {"role": "assistant", "content": "".join(b["text"] for b in data["content"] if b["type"] == "text") or None}
    thinking = "".join(b.get("thinking", "") for b in data["content"] if b["type"] == "thinking")
    if thinking:
        msg["reasoning_content"] = thinking
    calls = [{"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": json.dumps(b["input"])}}
             for b in data["content"] if b["type"] == "tool_use"]
    if calls:
        msg["tool_calls"] = calls
    usage = data.get("usage", {})
    return {"id": data["id"], "object": "chat.completion", "created": int(time.time()), "model": data.get("model"),
            "choices": [{"index": 0, "message": msg, "finish_reason": STOP_TO_FINISH.get(data.get("stop_reason"), "stop")}],
            "usage": {"prompt_tokens": usage.get("input_tokens", 0), "completion_tokens": usage.get("output_tokens", 0),
                      "total_tokens": usage.get("input_tokens", 0) + usage.get("output_tokens", 0)}}


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def openai_stream_to_anthropic(lines, model: str):
    """OpenAI chunks -> Anthropic events, one block open at a time."""
    yield sse("message_start", {"type": "message_start", "message": {
        "id": "msg_" + uuid.uuid4().hex, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})
    index, kind, stop, usage = -1, None, "end_turn", {}

    def switch(new_kind, block):
        nonlocal index, kind
        out = ""
        if kind == "thinking":
            out += sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "signature_delta", "signature": "seed-proxy"}})
        if kind is not None:
            out += sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index, kind = index + 1, new_kind
        return out + sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})

    async for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        chunk = json.loads(payload)
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices", []):
            usage = choice.get("usage") or usage
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                if kind != "thinking":
                    yield switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "thinking_delta", "thinking": delta["reasoning_content"]}})
            if delta.get("content"):
                if kind != "text":
                    yield switch("text", {"type": "text", "text": ""})
                yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "text_delta", "text": delta["content"]}})
            for call in delta.get("tool_calls") or []:
                if call.get("id"):
                    yield switch(("tool", call.get("index", 0)), {"type": "tool_use", "id": safe_id(call["id"]),
                                                                  "name": call["function"]["name"], "input": {}})
                args = (call.get("function") or {}).get("arguments")
                if args:
                    yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                      "delta": {"type": "input_json_delta", "partial_json": args}})
            if choice.get("finish_reason"):
                stop = FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
    if kind is not None:
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                                          "output_tokens": usage.get("completion_tokens", 0)}})
    yield sse("message_stop", {"type": "message_stop"})


async def anthropic_stream_to_openai(lines, model: str):
    """Anthropic events -> OpenAI chunks."""
    base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}
    tool_index = -1

    def chunk(delta, finish=None):
        return "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"
    async for line in lines:
        if not line.startswith("data:"):
            continue
        ev = json.loads(line[5:].strip())
        t = ev.get("type")
        if t == "content_block_start" and ev["content_block"]["type"] == "tool_use":
            tool_index += 1
            b = ev["content_block"]
            yield chunk({"tool_calls": [{"index": tool_index, "id": b["id"], "type": "function",
                                         "function": {"name": b["name"], "arguments": ""}}]})
        elif t == "content_block_delta":
            d = ev["delta"]
            if d["type"] == "thinking_delta":
                yield chunk({"reasoning_content": d["thinking"]})
            elif d["type"] == "text_delta":
                yield chunk({"content": d["text"]})
            elif d["type"] == "input_json_delta":
                yield chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": d["partial_json"]}}]})
        elif t == "message_delta":
            yield chunk({}, STOP_TO_FINISH.get(ev["delta"].get("stop_reason"), "stop"))
    yield "data: [DONE]\n\n"


# ---- forwarding ----
def upstream_request(fmt: str, body: dict) -> httpx.Request:
    if fmt == "anthropic":
        url, headers = f"{BASE_URL}/v1/messages", {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    else:
        url, headers = f"{BASE_URL}/chat/completions", {"authorization": f"Bearer {API_KEY}"}
    return client.build_request("POST", url, json=body, headers=headers)


async def forward(body: dict, translate_body, translate_stream):
    resp = await client.send(upstream_request(UPSTREAM_FORMAT, body), stream=True)
    if resp.status_code != 200:
        content = await resp.aread()
        await resp.aclose()
        return JSONResponse(json.loads(content or b"{}"), status_code=resp.status_code)
    if not body.get("stream"):
        data = json.loads(await resp.aread())
        await resp.aclose()
        return JSONResponse(translate_body(data) if translate_body else data)

    async def lines():
        try:
            async for line in resp.aiter_lines():
                yield line
        finally:
            await resp.aclose()

    async def passthrough():
        async for line in lines():
            yield line + "\n"

    gen = translate_stream(lines(), body.get("model")) if translate_stream else passthrough()
    return StreamingResponse(gen, media_type="text/event-stream")


@app.post("/v1/messages")
async def messages(request: Request):
    body = await request.json()
    if UPSTREAM_FORMAT == "anthropic":
        fix_anthropic(body)
        return await forward(body, None, None)
    out = anthropic_to_openai(body)
    fix_openai(out)
    return await forward(out, openai_to_anthropic_response, openai_stream_to_anthropic)


@app.post("/v1/chat/completions")
async def chat_completions(request: Request):
    body = await request.json()
    if UPSTREAM_FORMAT == "openai":
        fix_openai(body)
        return await forward(body, None, None)
    out = openai_to_anthropic(body)
    fix_anthropic(out)
    return await forward(out, anthropic_to_openai_response, anthropic_stream_to_openai)


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host=os.environ.get("PROXY_HOST", "0.0.0.0"), port=int(os.environ.get("PROXY_PORT", "8000")))
