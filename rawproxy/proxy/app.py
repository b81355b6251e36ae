"""The proxy as an app: routes by path (query ignored) to its handlers, checks access
keys (from the request head, before the server reads a body: `admit`), and writes one
access-log line and the metrics of each request. A body is weighed before it is parsed
and a large one is parsed off the event loop."""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import trio

from .. import __version__
from ..core import json_steps
from ..core.dialects import ANTHROPIC, OPENAI, Dialect, error_event
from ..core.errors import ClientError, StatusError
from ..core.metrics import Metrics, store_collector
from ..core.reasoning import ReasoningStore
from ..core.seal import ReasoningSeal
from ..core.settings import Settings
from ..core.urls import without_userinfo
from ..server.http import Request, RequestHead, Response, json_response
from ..store.keeper import ReasoningKeeper
from ..store.memory import MemoryReasoningStore
from ..upstream import RetryPolicy, Upstream
from . import access_log, dashboard
from .models import ModelList
from .outcome import Outcome
from .peers import WorkerPeers
from .pipeline import Completion
from .requests import (
    client_key,
    dialect_of_path,
    dialect_of_request,
    error_response,
    parse_body,
    validate_anthropic,
    validate_openai,
    validate_responses,
)
from .responses import ResponsesRoute
from .routing import Breaker, Route, Router

Handler = Callable[[Request, Outcome], Awaitable[Response]]
_MIB = 1024 * 1024


class _NoRoom(StatusError):
    """Other requests hold the memory a body needs: a 503 to retry in a second."""

    default_status = 503

log = logging.getLogger("rawproxy")


class ProxyApp:
    def __init__(self, settings: Settings, upstream: Upstream | None = None,
                 store: ReasoningStore | None = None) -> None:
        self.settings = settings
        # The worker id the supervisor gave, else the pid: what /health and /metrics name.
        self.worker = str(settings.worker_id) if settings.worker_id is not None else str(os.getpid())
        self.metrics = Metrics(version=__version__, worker=self.worker)
        self._given_upstream = upstream  # a test's: every upstream then goes through it
        # Access keys as bytes, compared in constant time against what the client sent.
        self._access_keys = tuple(k.encode() for k in settings.access_keys)
        # Large bodies are parsed one at a time in a worker thread: each more thread
        # contending for the GIL delays the event loop's thread further.
        self._parsing = trio.CapacityLimiter(1)
        # `is None`, not `or`: a store with no entries yet has len() 0 and is falsy.
        self.store: ReasoningStore = store if store is not None else MemoryReasoningStore(settings.store_max_bytes, settings.store_ttl)
        # Under --workers, every answer names the worker that gave it (cheap; tests and
        # operators see how connections spread).
        self._worker_header = (None if settings.worker_id is None
                               else (b"x-rawproxy-worker", str(settings.worker_id).encode()))
        # The one way to the store: tenants, writes off the client's path, bounded recalls.
        self.reasoning = ReasoningKeeper(self.store, name=without_userinfo(settings.store))
        self.metrics.add_collector(store_collector(self.reasoning))
        self.recent = dashboard.RecentRequests()
        # Under --workers: a scrape answers for every worker (run.py starts peers.serve);
        # the snapshot carries this worker's recent requests too, for the dashboard.
        self.peers = (WorkerPeers(settings.worker_dir, self.worker, self._snapshot)
                      if settings.worker_dir else None)
        self._seal = ReasoningSeal(settings.secret.encode() or os.urandom(32))
        self.pools: list[Upstream] = []
        self._wire(settings)
        self._routes: dict[str, tuple[str, Handler]] = {
            "/v1/messages": ("POST", self._messages),
            "/v1/messages/count_tokens": ("POST", self._count_tokens),
            "/v1/chat/completions": ("POST", self._chat),
            "/chat/completions": ("POST", self._chat),
            "/v1/responses": ("POST", self._responses),
            "/v1/models": ("GET", self._model_list),
            "/health": ("GET", self._health),
            "/metrics": ("GET", self._metrics),
            "/dashboard": ("GET", self._dashboard_page),
            "/dashboard.json": ("GET", self._dashboard_json),
        }

    def _wire(self, settings: Settings) -> None:
        """One pool per upstream (its own connection limit and outbound proxy) and, per
        client dialect, a router over a completion per upstream. Called again by `reload`:
        a request already running keeps the router it started with."""
        configs = settings.upstream_list()
        pools = [self._given_upstream or Upstream(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=config.connections,
            proxy=config.outbound_proxy or None,
            retry=RetryPolicy(retries=settings.retries, max_wait=settings.retry_max_wait),
            metrics=self.metrics,
        ) for config in configs]
        # A breaker per upstream, shared by the dialects' routers: it is the upstream that is down.
        breakers = [Breaker(settings.breaker_failures, settings.breaker_cooldown) for _ in configs]

        def router(client: Dialect) -> Router:
            return Router([Route(config, Completion(settings, pool, self.reasoning, client, self.metrics, config), breaker)
                           for config, pool, breaker in zip(configs, pools, breakers)], self.metrics)

        self.settings = settings
        self.pools = pools
        self.upstream = pools[0]
        self.messages = router(ANTHROPIC)
        self.chat = router(OPENAI)
        self.responses = ResponsesRoute(self.chat, self._seal)
        self._model_list = ModelList(settings, self.upstream)

    def reload(self, settings: Settings) -> list[Upstream]:
        """Route new requests by `settings` (upstreams, model map, Kimi globs, retries,
        timeouts of upstream requests, the breaker); returns the old pools, for the caller
        to close once the requests still using them are done. Listening address, limits,
        store, access keys and secret stay as started."""
        old = self.pools
        self._wire(settings)
        return [pool for pool in old if pool is not self._given_upstream]

    def upstream_health(self) -> list[dict[str, object]]:
        return [{"name": r.config.name, "url": without_userinfo(r.config.base_url), "format": r.config.format,
                 "breaker": r.breaker.state, "failures": r.breaker.failures} for r in self.messages.routes]

    def error_response(self, path: str, status: int, message: str) -> Response:
        return error_response(dialect_of_path(path), status, message)

    def stream_error(self, path: str, status: int, message: str) -> bytes:
        """The error event for a stream the server cuts (request ceiling, shutdown)."""
        return error_event(dialect_of_path(path), status, message)

    def _authorized(self, request: RequestHead) -> bool:
        presented = client_key(request)
        if not presented:
            return False
        ok = False
        for key in self._access_keys:  # every key compared: the time taken names none
            ok |= hmac.compare_digest(presented, key)
        return ok

    def _denied(self, head: RequestHead, path: str) -> Response | None:
        """The 401 of a request without a valid access key (any route but /health and the
        dashboard's page, which holds no data: its figures come from /dashboard.json)."""
        if not self._access_keys or path in ("/health", "/dashboard") or self._authorized(head):
            return None
        dialect = dialect_of_request(head) if path == "/v1/models" else dialect_of_path(path)
        return error_response(dialect, 401, "a valid proxy access key is required "
                                            "(x-api-key or Authorization: Bearer)")

    def admit(self, head: RequestHead) -> Response | None:
        """The server's hook, called with the head before the body is read: a client
        without a valid key gets its 401 at once (no `100 Continue`, no body read)."""
        started = time.perf_counter()
        path = head.path.rstrip("/") or "/"
        response = self._denied(head, path)
        if response is not None:
            route_label = path if path in self._routes else "other"
            self._record(head.method, path, route_label, response.status, started,
                         Outcome(client=dashboard.client_label(head)))
            if self._worker_header is not None:
                response.headers.append(self._worker_header)
        return response

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        outcome = Outcome(client=dashboard.client_label(request))
        path = request.path.rstrip("/") or "/"
        route = self._routes.get(path)
        method = request.method
        denied = self._denied(request, path)
        if denied is not None:
            response = denied
        elif route is None:
            response = self.error_response(path, 404, f"no route for {method} {path}")
        elif route[0] != method and not (method == "HEAD" and route[0] == "GET"):
            allowed = "GET, HEAD" if route[0] == "GET" else route[0]
            response = self.error_response(path, 405, f"{path} takes {allowed}, not {method}")
            response.headers.append((b"allow", allowed.encode()))
        else:  # HEAD runs as GET: the server sends the head alone
            try:
                response = await route[1](request, outcome)
            except StatusError as exc:
                response = self.error_response(path, exc.status, exc.message)
                if isinstance(exc, _NoRoom):
                    response.headers.append((b"retry-after", b"1"))
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
        if outcome.sent_upstream_at is not None:
            metrics.added_seconds.observe(outcome.sent_upstream_at - started)
        tokens = outcome.usage.reported() if outcome.usage is not None else {}
        for kind, count in tokens.items():
            metrics.tokens.inc(outcome.model, kind, by=count)
        if path in dashboard.PROBES:
            return  # probes, scrapes and the dashboard's polling would drown the log
        self.recent.add(method, route, status, seconds, outcome, self.worker)
        access_log.write(method, path, route, status, seconds, outcome, tokens)

    async def _messages(self, request: Request, outcome: Outcome) -> Response:
        body = await self._read(request, validate_anthropic)
        return await self.messages(request, body, outcome)

    async def _chat(self, request: Request, outcome: Outcome) -> Response:
        body = await self._read(request, validate_openai)
        return await self.chat(request, body, outcome)

    async def _responses(self, request: Request, outcome: Outcome) -> Response:
        body = await self._read(request, validate_responses)
        return await self.responses(request, body, outcome)

    async def _count_tokens(self, request: Request, outcome: Outcome) -> Response:
        body = await self._read(request, _validate_count_tokens)
        return await self.messages.count_tokens(request, body, outcome)

    async def _read(self, request: Request, validate: Callable[[dict], None]) -> dict:
        """The body, parsed and validated. What parsing will build is counted against the
        server's in-flight bound first: a 413 when it could never fit, a 503 while other
        requests hold the room. A large body is parsed in a worker thread, in steps
        (core.json_steps), so the event loop goes on serving everyone else meanwhile."""
        raw = request.body
        large = len(raw) > json_steps.STEPPED_ABOVE
        if large:
            weight = await trio.to_thread.run_sync(json_steps.structure_weight, raw, limiter=self._parsing)
        else:
            weight = json_steps.structure_weight(raw)
        if request.reserve is not None and not request.reserve(weight):
            limit = self.settings.max_inflight_body_bytes
            if len(raw) + weight > limit:
                raise ClientError(f"request body would take about {(len(raw) + weight) // _MIB} MB of memory once "
                                  f"parsed (many small JSON values), over the proxy's limit of {limit // _MIB} MB "
                                  "for request bodies in flight", 413)
            raise _NoRoom("the proxy is holding as many request bodies as its memory limit allows; retry shortly")

        if not large:
            body = parse_body(request)
            validate(body)
            return body

        def parsed() -> dict | StatusError:
            # Millions of fresh containers would each trigger the cyclic collector, which
            # runs holding the GIL and stalls the loop's thread; parsed JSON has no cycles.
            collecting = gc.isenabled()
            gc.disable()
            try:
                return parse_and_check()
            finally:
                if collecting:
                    gc.enable()

        def parse_and_check() -> dict | StatusError:
            try:
                body = parse_body(request)
            except StatusError as exc:
                # Returned bare, not raised across threads: a traceback carried to the
                # loop's thread would keep what the parse built (frames of this thread)
                # alive in a reference cycle, and free it there, all at once, later.
                exc.__traceback__ = exc.__context__ = None
                return exc
            try:
                validate(body)
            except StatusError as exc:
                exc.__traceback__ = exc.__context__ = None
                json_steps.release(body)  # here, a piece at a time, not all at once
                return exc
            return body

        result = await trio.to_thread.run_sync(parsed, limiter=self._parsing)
        if isinstance(result, StatusError):
            try:
                raise result
            finally:
                del result  # else this frame and the error's traceback hold each other
        return result

    async def _health(self, request: Request, outcome: Outcome) -> Response:
        """Open to every probe; where the upstream is and which worker answered only for a
        client with an access key (or for anyone when the proxy has no access keys)."""
        doc: dict[str, object] = {"status": "ok", "version": __version__}
        if self._access_keys and not self._authorized(request):
            return json_response(200, json.dumps(doc).encode())
        doc |= {
            "upstream": without_userinfo(self.settings.upstream),
            "upstream_format": self.settings.upstream_format,
            "upstreams": self.upstream_health(),
            "worker": self.worker,
            "store": await self._store_health(),
        }
        return json_response(200, json.dumps(doc).encode())

    async def _store_health(self) -> dict[str, str]:
        """The store's kind and whether it answers; a store that is down never fails /health
        (requests go on without remembered reasoning)."""
        kind = getattr(self.store, "kind", None) or self.settings.store.partition(":")[0]
        status = getattr(self.store, "status", None)  # a network store checks itself (bounded)
        down = self.reasoning.outage.down or (status is not None and await status() != "ok")
        return {"kind": kind, "state": "down" if down else "ok"}

    async def _metrics(self, request: Request, outcome: Outcome) -> Response:
        peers = await self.peers.gather() if self.peers is not None else None
        return Response(200, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                        self.metrics.render(peers))

    def _snapshot(self) -> dict:
        """This process's figures and its recent requests (what a peer's scrape reads)."""
        return {**self.metrics.snapshot(), "recent": self.recent.snapshot()}

    async def _dashboard_page(self, request: Request, outcome: Outcome) -> Response:
        return Response(200, list(dashboard.PAGE_HEADERS), dashboard.page())

    async def _dashboard_json(self, request: Request, outcome: Outcome) -> Response:
        """The page's figures: every worker's, merged as a /metrics scrape merges them."""
        peers = await self.peers.gather() if self.peers is not None else []
        upstream = urlsplit(without_userinfo(self.settings.upstream))._replace(query="", fragment="").geturl()
        doc = dashboard.stats([self._snapshot(), *peers], version=__version__, upstream=upstream,
                              upstream_format=self.settings.upstream_format, store=await self._store_health())
        return json_response(200, json.dumps(doc, separators=(",", ":")).encode(), [(b"cache-control", b"no-store")])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The app's background work (writing remembered reasoning) until `aclose()`:
        `await nursery.start(app.run)`. An app never run writes each turn as it comes."""
        await self.reasoning.run(task_status=task_status)

    async def aclose(self) -> None:
        await self.reasoning.aclose()  # queued writes first (bounded), then the store
        for pool in self.pools:
            await pool.aclose()


def _validate_count_tokens(body: dict) -> None:
    validate_anthropic(body, count_tokens=True)
