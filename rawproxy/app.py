"""The proxy as an app: routes by path (query ignored) to its handlers."""

from __future__ import annotations

import json
import logging
import time

from . import __version__
from .config import Settings
from .dialects import (
    ANTHROPIC, OPENAI, dialect_of_path, dialect_of_request, error_response, parse_body,
    validate_anthropic, validate_openai,
)
from .errors import ClientError, upstream_error_message
from .http_types import Request, Response, json_response
from .pipeline import Completion, Outcome, upstream_headers
from .reasoning import MemoryReasoningStore
from .upstream import Upstream, UpstreamError

log = logging.getLogger("rawproxy")
access_log = logging.getLogger("rawproxy.access")


class ProxyApp:
    def __init__(self, settings: Settings, upstream: Upstream | None = None, store=None) -> None:
        self.settings = settings
        self.upstream = upstream or Upstream(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=settings.upstream_connections,
        )
        self.store = store or MemoryReasoningStore(settings.store_max_bytes, settings.store_ttl)
        self.messages = Completion(settings, self.upstream, self.store, ANTHROPIC)
        self.chat = Completion(settings, self.upstream, self.store, OPENAI)
        self._routes = {
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/models": ("GET", self._models),
            "/health": ("GET", self._health),
        }

    def error_response(self, path: str, status: int, message: str) -> Response:
        return error_response(dialect_of_path(path), status, message)

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        outcome = Outcome()
        path = request.path.rstrip("/") or "/"
        route = self._routes.get(path)
        if route is None:
            response = self.error_response(path, 404, f"no route for {request.method} {path}")
        elif route[0] != request.method:
            response = self.error_response(path, 405, f"{path} takes {route[0]}, not {request.method}")
            response.headers.append((b"allow", route[0].encode()))
        else:
            try:
                response = await route[1](request, outcome)
            except ClientError as exc:
                response = self.error_response(path, exc.status, exc.message)
            except UpstreamError as exc:
                response = self.error_response(path, exc.status, exc.message)
        if path != "/health":
            access_log.info(
                "%s %s %d %.1fms upstream=%s model=%s repairs=%s",
                request.method, path, response.status, (time.perf_counter() - started) * 1000,
                outcome.upstream_status, outcome.model or "-", ",".join(outcome.repairs) or "-",
            )
        return response

    async def _messages(self, request: Request, outcome: Outcome) -> Response:
        body = parse_body(request)
        validate_anthropic(body)
        return await self.messages(request, body, outcome)

    async def _chat(self, request: Request, outcome: Outcome) -> Response:
        body = parse_body(request)
        validate_openai(body)
        return await self.chat(request, body, outcome)

    async def _count_tokens(self, request: Request, outcome: Outcome) -> Response:
        body = parse_body(request)
        validate_anthropic(body, count_tokens=True)
        if self.settings.upstream_format != ANTHROPIC:
            # Claude Code falls back to its own estimate on a non-2xx answer; a made-up
            # {"input_tokens": 0} would break its compaction (protocols.md section 1).
            raise ClientError("count_tokens is not offered by the OpenAI-format upstream", 404)
        body["model"] = self.settings.model_map.map(body["model"])
        outcome.model = body["model"]
        if self.settings.is_kimi(body["model"]):
            await self.messages._repair(body, outcome)
        url = self.messages.url + "/count_tokens"
        headers = upstream_headers(request, ANTHROPIC, self.settings.api_key, False)
        up = await self.upstream.send("POST", url, headers, json.dumps(body).encode())
        outcome.upstream_status = up.status
        raw = await up.read()
        if up.status >= 400:
            return error_response(ANTHROPIC, up.status, upstream_error_message(raw))
        return json_response(up.status, raw)

    async def _models(self, request: Request, outcome: Outcome) -> Response:
        dialect = dialect_of_request(request)
        base = self.settings.upstream
        url = f"{base}/v1/models" if self.settings.upstream_format == ANTHROPIC else f"{base}/models"
        headers = upstream_headers(request, self.settings.upstream_format, self.settings.api_key, False)
        up = await self.upstream.send("GET", url, headers, b"")
        outcome.upstream_status = up.status
        raw = await up.read()
        if up.status >= 400:
            return error_response(dialect, up.status, upstream_error_message(raw))
        try:
            ids = [m["id"] for m in json.loads(raw).get("data", []) if isinstance(m, dict) and "id" in m]
        except (ValueError, AttributeError, TypeError):
            raise UpstreamError(502, "upstream model list is not JSON") from None
        if dialect == ANTHROPIC:
            data = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"} for i in ids]
            doc = {"data": data, "has_more": False, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}
        else:
            doc = {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "moonshot"} for i in ids]}
        return json_response(200, json.dumps(doc).encode())

    async def _health(self, request: Request, outcome: Outcome) -> Response:
        doc = {
            "status": "ok",
            "version": __version__,
            "upstream": self.settings.upstream,
            "upstream_format": self.settings.upstream_format,
        }
        return json_response(200, json.dumps(doc).encode())

    async def aclose(self) -> None:
        await self.upstream.aclose()
