"""SimulatorApp: a strict simulated Kimi upstream behind the shared app interface.

Routes on the path suffix, so every relay-style prefix works (`/anthropic/v1/messages`,
`/api/anthropic/v1/messages`, `/coding/v1/chat/completions`):
  POST .../chat/completions          OpenAI dialect
  POST .../messages                  Anthropic dialect
  POST .../messages/count_tokens     Anthropic dialect, {"input_tokens": N}
  GET  .../models                    either dialect (Anthropic when its headers are sent)
  GET  /_sim/requests, GET /_sim/turns, POST /_sim/reset   control, no auth
  POST /_sim/fault {"fault": "<x-sim-fault syntax>"}      a fault for every later request
       that carries no x-sim-fault header of its own (for clients that cannot set the
       header, e.g. behind the proxy); "" or /_sim/reset clears it
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import trio

from ..server.http import EVENT_STREAM, Request, Response, json_response
from . import render
from .agent import Agent, conversation_anthropic, conversation_openai
from .faults import HEADER as FAULT_HEADER
from .faults import FaultBook, body_fault, paced, parse_fault, split_body
from .models import KNOWN_MODELS, family_of
from .rules import (
    SimError,
    check_anthropic,
    check_common,
    check_openai,
    parse_json,
    thinking_requested,
)

_SECRET_HEADERS = {b"authorization", b"x-api-key", b"api-key", b"proxy-authorization", b"cookie"}
_MAX_RECORDS = 10_000


class SimulatorApp:
    def __init__(self, *, api_key: str | None = None, event_delay: float = 0.0) -> None:
        self.api_key = api_key  # None: any non-empty key is accepted
        self.event_delay = event_delay
        self.agent = Agent()
        self.records: deque[dict] = deque(maxlen=_MAX_RECORDS)
        self.faults = FaultBook()
        self.standing_fault: str | None = None  # set by POST /_sim/fault

    def reset(self) -> None:
        self.agent.reset()
        self.records.clear()
        self.faults.reset()
        self.standing_fault = None

    @property
    def turns(self) -> list[dict]:
        return self.agent.turns

    async def __call__(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_sim/"):
            return self._control(request, path)
        if path.endswith("/chat/completions"):
            dialect, handler, method = "openai", self._chat, "POST"
        elif path.endswith("/messages/count_tokens"):
            dialect, handler, method = "anthropic", self._count_tokens, "POST"
        elif path.endswith("/messages"):
            dialect, handler, method = "anthropic", self._messages, "POST"
        elif path.endswith("/models"):
            anthropic = request.header(b"anthropic-version") or request.header(b"x-api-key")
            dialect, handler, method = ("anthropic" if anthropic else "openai"), self._models, "GET"
        else:
            dialect = "anthropic" if "anthropic" in path or request.header(b"x-api-key") else "openai"
            handler, method = None, request.method
        record = self._record(request, dialect)
        response = await self._serve(request, dialect, handler, method)
        record["status"] = response.status
        return response

    async def _serve(self, request: Request, dialect: str, handler, method: str) -> Response:
        if handler is None:
            return self._error(dialect, SimError(404, f"no route for {request.method} {request.path}", "not_found_error"))
        if request.method != method:
            return self._error(dialect, SimError(405, f"method {request.method} not allowed", "invalid_request_error"))
        if not self._authorized(request, dialect):
            # Moonshot's own text and type for a bad key.
            return self._error(dialect, SimError(401, "Invalid Authentication", "invalid_authentication_error"))
        fault = None
        raw_fault = request.header(FAULT_HEADER)
        if raw_fault is not None:
            try:
                fault = parse_fault(raw_fault.decode("latin-1"))
            except ValueError as exc:
                return self._error(dialect, SimError(400, str(exc)))
            if not self.faults.active(raw_fault.decode("latin-1"), fault):
                fault = None
        elif self.standing_fault is not None:
            # Counted apart from header faults, so `times` means "the next K requests".
            fault = parse_fault(self.standing_fault)  # checked when it was set
            if not self.faults.active("\0standing:" + self.standing_fault, fault):
                fault = None
        if fault is not None:
            if fault.slow_first_byte:
                await trio.sleep(fault.slow_first_byte)
            if fault.status is not None:
                extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
                err = SimError(fault.status, f"simulated fault: status {fault.status}", _fault_type(fault.status))
                response = self._error(dialect, err)
                response.headers.extend(extra)
                return response
        return await handler(request, fault)

    # ------------------------------------------------------------ endpoints

    async def _chat(self, request: Request, fault) -> Response:
        body, err = parse_json(request.body)
        err = err or check_openai(body)
        if err:
            return self._error("openai", err)
        family = family_of(body["model"])
        assert family is not None  # the checks above refuse a model of no known family
        thinking = family.thinking_on(thinking_requested(body))
        answer = self.agent.answer(conversation_openai(body, thinking))
        usage = render.usage_for(len(request.body), answer, len(body["messages"]))
        self._note_usage(usage)
        msg_id = f"chatcmpl-sim{self.agent.requests:06d}"
        created = int(time.time())
        if body.get("stream") is True:
            options = body.get("stream_options") or {}
            include = isinstance(options, dict) and options.get("include_usage") is True
            events = render.openai_events(answer, body["model"], usage, msg_id, created, include)
            return self._stream(events, fault)
        doc = render.openai_json(answer, body["model"], usage, msg_id, created)
        return self._body(json.dumps(doc).encode(), fault)

    async def _messages(self, request: Request, fault) -> Response:
        body, err = parse_json(request.body)
        err = err or check_anthropic(body)
        if err:
            return self._error("anthropic", err)
        family = family_of(body["model"])
        assert family is not None  # the checks above refuse a model of no known family
        thinking = family.thinking_on(thinking_requested(body))
        answer = self.agent.answer(conversation_anthropic(body, thinking))
        usage = render.usage_for(len(request.body), answer, len(body["messages"]))
        self._note_usage(usage)
        msg_id = f"msg_sim{self.agent.requests:06d}"
        if body.get("stream") is True:
            return self._stream(render.anthropic_events(answer, body["model"], usage, msg_id), fault)
        doc = render.anthropic_json(answer, body["model"], usage, msg_id)
        return self._body(json.dumps(doc).encode(), fault)

    async def _count_tokens(self, request: Request, fault) -> Response:
        # Counting runs no model: only the basic checks apply (JSON, model, messages).
        body, err = parse_json(request.body)
        err = err or check_common(body, "not_found_error")[1]
        if err:
            return self._error("anthropic", err)
        counted = {k: body.get(k) for k in ("system", "messages", "tools")}
        size = len(json.dumps(counted, ensure_ascii=False).encode())
        return json_response(200, json.dumps({"input_tokens": render.estimate_tokens(size)}).encode())

    async def _models(self, request: Request, fault) -> Response:
        if request.header(b"anthropic-version") or request.header(b"x-api-key"):
            data: list[dict[str, Any]] = [{"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"} for m in KNOWN_MODELS]
            doc: dict[str, Any] = {"data": data, "has_more": False, "first_id": KNOWN_MODELS[0], "last_id": KNOWN_MODELS[-1]}
        else:
            data = [{"id": m, "object": "model", "created": 1767225600, "owned_by": "moonshot"} for m in KNOWN_MODELS]
            doc = {"object": "list", "data": data}
        return json_response(200, json.dumps(doc).encode())

    # ------------------------------------------------------------ helpers

    def _control(self, request: Request, path: str) -> Response:
        if path == "/_sim/requests" and request.method == "GET":
            return json_response(200, json.dumps(list(self.records)).encode())
        if path == "/_sim/turns" and request.method == "GET":
            return json_response(200, json.dumps(self.agent.turns).encode())
        if path == "/_sim/reset" and request.method == "POST":
            self.reset()
            return json_response(200, b'{"ok": true}')
        if path == "/_sim/fault" and request.method == "POST":
            return self._set_fault(request)
        return json_response(404, json.dumps({"error": f"no control route {request.method} {path}"}).encode())

    def _set_fault(self, request: Request) -> Response:
        body, err = parse_json(request.body)
        value = body.get("fault") if isinstance(body, dict) else None
        if err is not None or not isinstance(value, str):
            return json_response(400, b'{"error": "body must be {\\"fault\\": \\"<x-sim-fault syntax>\\"}"}')
        value = value.strip()
        if value:
            try:
                parse_fault(value)
            except ValueError as exc:
                return json_response(400, json.dumps({"error": str(exc)}).encode())
        self.standing_fault = value or None
        self.faults.forget("\0standing:" + value)  # a fault set again starts counting again
        return json_response(200, json.dumps({"ok": True, "fault": self.standing_fault}).encode())

    def _authorized(self, request: Request, dialect: str) -> bool:
        keys = []
        auth = request.header(b"authorization") or b""
        if auth[:7].lower() == b"bearer ":
            keys.append(auth[7:].strip())
        x_api_key = request.header(b"x-api-key")
        if dialect == "anthropic" and x_api_key:
            keys.append(x_api_key.strip())
        presented = [k.decode("latin-1") for k in keys if k]
        return bool(presented) and (self.api_key is None or self.api_key in presented)

    def _note_usage(self, usage: render.Usage) -> None:
        """The usage an answer reports, kept with its turn (GET /_sim/turns), so tests can
        hold a proxy's token counts against what the upstream said."""
        self.agent.turns[-1]["usage"] = {"prompt_tokens": usage.prompt, "completion_tokens": usage.completion,
                                         "cached_tokens": usage.cached}

    def _record(self, request: Request, dialect: str) -> dict:
        headers = {}
        for name, value in request.headers:
            name = name.lower()
            headers[name.decode("latin-1")] = "<redacted>" if name in _SECRET_HEADERS else value.decode("latin-1")
        body, err = parse_json(request.body) if request.body else (None, None)
        if err is not None:
            body = request.body.decode("utf-8", "replace")
        record = {"dialect": dialect, "method": request.method, "path": request.path, "query": request.query,
                  "headers": headers, "body": body, "status": None}
        self.records.append(record)
        return record

    def _error(self, dialect: str, err: SimError) -> Response:
        return json_response(err.status, render.error_body(dialect, err))

    def _stream(self, events: list[bytes], fault) -> Response:
        headers = [EVENT_STREAM, (b"cache-control", b"no-cache")]
        return Response(200, headers, stream=paced(events, fault, self.event_delay))

    def _body(self, body: bytes, fault) -> Response:
        parts = split_body(body, fault) if fault is not None else None
        if parts is None:
            return json_response(200, body)
        return Response(200, [(b"content-type", b"application/json")], stream=paced(parts, body_fault(fault), 0))


def _fault_type(status: int) -> str:
    # Moonshot's types for the OpenAI envelope; the Anthropic one maps by status.
    return {429: "rate_limit_reached_error", 401: "invalid_authentication_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error")
