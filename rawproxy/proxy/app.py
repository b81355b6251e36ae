"""The proxy as an app: routes by path (query ignored) to its handlers, checks access
keys, and writes one access-log line and the metrics of each request."""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable

from .. import __version__
from ..core.dialects import ANTHROPIC, OPENAI, error_event
from ..core.errors import StatusError
from ..core.metrics import Metrics, store_collector
from ..core.reasoning import ReasoningStore
from ..core.settings import Settings
from ..core.urls import without_userinfo
from ..server.http import Request, Response, json_response
from ..store.memory import MemoryReasoningStore
from ..upstream import RetryPolicy, Upstream
from .models import ModelList
from .outcome import Outcome
from .pipeline import Completion
from .requests import (
    client_key,
    dialect_of_path,
    dialect_of_request,
    error_response,
    parse_body,
    validate_anthropic,
    validate_openai,
)

Handler = Callable[[Request, Outcome], Awaitable[Response]]

log = logging.getLogger("rawproxy")
access_log = logging.getLogger("rawproxy.access")


class ProxyApp:
    def __init__(self, settings: Settings, upstream: Upstream | None = None,
                 store: ReasoningStore | None = None) -> None:
        self.settings = settings
        # The worker id the supervisor gave, else the pid: what /health and /metrics name.
        self.worker = str(settings.worker_id) if settings.worker_id is not None else str(os.getpid())
        self.metrics = Metrics(version=__version__, worker=self.worker)
        self.upstream = upstream or Upstream(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=settings.upstream_connections,
            proxy=settings.outbound_proxy or None,
            retry=RetryPolicy(retries=settings.retries, max_wait=settings.retry_max_wait),
            metrics=self.metrics,
        )
        # Access keys as bytes, compared in constant time against what the client sent.
        self._access_keys = tuple(k.encode() for k in settings.access_keys)
        # `is None`, not `or`: a store with no entries yet has len() 0 and is falsy.
        self.store: ReasoningStore = store if store is not None else MemoryReasoningStore(settings.store_max_bytes, settings.store_ttl)
        # Under --workers, every answer names the worker that gave it (cheap; tests and
        # operators see how connections spread).
        self._worker_header = (None if settings.worker_id is None
                               else (b"x-rawproxy-worker", str(settings.worker_id).encode()))
        self.metrics.add_collector(store_collector(self.store))
        self.messages = Completion(settings, self.upstream, self.store, ANTHROPIC, self.metrics)
        self.chat = Completion(settings, self.upstream, self.store, OPENAI, self.metrics)
        self._model_list = ModelList(settings, self.upstream)
        self._routes: dict[str, tuple[str, Handler]] = {
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/models": ("GET", self._model_list),
            "/health": ("GET", self._health),
            "/metrics": ("GET", self._metrics),
        }

    def error_response(self, path: str, status: int, message: str) -> Response:
        return error_response(dialect_of_path(path), status, message)

    def stream_error(self, path: str, status: int, message: str) -> bytes:
        """The error event for a stream the server cuts (request ceiling, shutdown)."""
        return error_event(dialect_of_path(path), status, message)

    def _authorized(self, request: Request) -> bool:
        presented = client_key(request)
        if not presented:
            return False
        ok = False
        for key in self._access_keys:  # every key compared: the time taken names none
            ok |= hmac.compare_digest(presented, key)
        return ok

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        outcome = Outcome()
        path = request.path.rstrip("/") or "/"
        route = self._routes.get(path)
        if self._access_keys and path != "/health" and not self._authorized(request):
            dialect = dialect_of_request(request) if path == "/v1/models" else dialect_of_path(path)
            response = error_response(dialect, 401, "a valid proxy access key is required "
                                                    "(x-api-key or Authorization: Bearer)")
        elif route is None:
            response = self.error_response(path, 404, f"no route for {request.method} {path}")
        elif route[0] != request.method:
            response = self.error_response(path, 405, f"{path} takes {route[0]}, not {request.method}")
            response.headers.append((b"allow", route[0].encode()))
        else:
            try:
                response = await route[1](request, outcome)
            except StatusError as exc:
                response = self.error_response(path, exc.status, exc.message)
        route_label = path if route is not None else "other"  # unknown paths: one label, not one each
        if outcome.streaming and response.stream is not None:
            status = response.status  # logged when the stream ends, with how it ended
            outcome.on_end = lambda o: self._record(request.method, path, route_label, status, started, o)
        else:
            self._record(request.method, path, route_label, response.status, started, outcome)
        if self._worker_header is not None:
            response.headers.append(self._worker_header)
        return response

    def _record(self, method: str, path: str, route: str, status: int, started: float, outcome: Outcome) -> None:
        """Metrics and the access-log line for one finished request."""
        seconds = time.perf_counter() - started
        metrics = self.metrics
        metrics.requests.inc(route, str(status))
        metrics.request_seconds.observe(seconds, route)
        for kind in outcome.repairs:
            metrics.repairs.inc(kind)
        if outcome.stream is not None:
            metrics.streams.inc(route, outcome.stream)
        if path in ("/health", "/metrics"):
            return  # probes and scrapes would drown the log
        repairs = ",".join(outcome.repairs) or "-"
        access_log.info(
            "%s %s %d %.1fms upstream=%s model=%s repairs=%s%s",
            method, path, status, seconds * 1000, outcome.upstream_status, outcome.model or "-", repairs,
            f" stream={outcome.stream}" if outcome.stream else "",
            extra={"fields": {
                "method": method, "route": route, "path": path, "status": status,
                "duration_ms": round(seconds * 1000, 1), "upstream_status": outcome.upstream_status,
                "model": outcome.model or None, "repairs": outcome.repairs, "stream": outcome.stream,
            }},
        )

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
        return await self.messages.count_tokens(request, body, outcome)

    async def _health(self, request: Request, outcome: Outcome) -> Response:
        doc = {
            "status": "ok",
            "version": __version__,
            "upstream": without_userinfo(self.settings.upstream),
            "upstream_format": self.settings.upstream_format,
            "worker": self.worker,
        }
        return json_response(200, json.dumps(doc).encode())

    async def _metrics(self, request: Request, outcome: Outcome) -> Response:
        return Response(200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")], self.metrics.render())

    async def aclose(self) -> None:
        await self.upstream.aclose()
