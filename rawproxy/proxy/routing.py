"""Which upstream answers a request, and the next one when it cannot.

A `Router` serves one client dialect. It holds one `Completion` per upstream, picks the
upstreams whose model globs match the request's model (after the model map), in the
config file's order, and runs them one after the other while each fails in a way another
can make good: no connection, a timeout before the first byte, or a status in
`FAILOVER_STATUSES`. All of that happens before the client is sent a byte; once an
upstream has answered, its answer (or its broken stream) is the client's. The last
candidate answers as a single upstream always did, error bodies included.

Each upstream has a `Breaker`: after `failures` failures in a row it is skipped for
`cooldown` seconds, then one request probes it; a success closes it again.
"""

from __future__ import annotations

import copy
import logging
import time

from ..core.errors import ClientError
from ..core.metrics import Metrics
from ..core.reasoning import ReasoningStore
from ..core.settings import UpstreamConfig
from ..server.http import Request, Response
from .outcome import Outcome
from .pipeline import FAILOVER_STATUSES, Completion, Failover

log = logging.getLogger("rawproxy")


class Breaker:
    """closed -> (failures in a row) -> open -> (cooldown) -> half-open: one probe."""

    def __init__(self, failures: int, cooldown: float) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.probing or time.monotonic() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def admits(self) -> bool:
        """Whether a request may go to this upstream now; the first after the cool-down is the probe."""
        if self.opened_at is None:
            return True
        if self.probing or time.monotonic() - self.opened_at < self.cooldown:
            return False
        self.probing = True
        return True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at, self.probing = time.monotonic(), False


class Route:
    """One upstream as a router sees it: its completion and its breaker (shared by the
    routers of every client dialect, since it is the upstream that is up or down)."""

    def __init__(self, config: UpstreamConfig, completion: Completion, breaker: Breaker) -> None:
        self.config = config
        self.completion = completion
        self.breaker = breaker


class Router:
    """The completion route for one client dialect over every configured upstream; it
    offers what `Completion` offers to the routes above it."""

    def __init__(self, routes: list[Route], metrics: Metrics | None = None) -> None:
        if not routes:
            raise ValueError("a router needs at least one upstream")
        self.routes = routes
        self.metrics = metrics
        first = routes[0].completion
        self.client = first.client
        self.settings = first.settings

    def tenant_for(self, request: Request) -> str:
        return self.routes[0].completion.tenant_for(request)

    def store_for(self, request: Request) -> ReasoningStore:
        return self.routes[0].completion.store_for(request)

    def candidates(self, client_model: object) -> list[Route]:
        """Upstreams serving the model, in file order; those whose breaker is open go last
        rather than nowhere (when every one is open, the request still gets an answer)."""
        if len(self.routes) == 1:
            return self.routes
        model = self.settings.model_map.map(client_model) if isinstance(client_model, str) else ""
        serving = [r for r in self.routes if r.config.serves(model)]
        if not serving:
            raise ClientError(f"no configured upstream serves the model {model!r}", 404)
        admitted = [r for r in serving if r.breaker.admits()]
        return admitted or serving[:1]

    async def __call__(self, request: Request, body: dict, outcome: Outcome) -> Response:
        candidates = self.candidates(body.get("model"))
        for i, route in enumerate(candidates):
            last = i == len(candidates) - 1
            # The pipeline rewrites the body it is given (model, repair): a later upstream
            # needs the client's own.
            attempt = body if last else copy.deepcopy(body)
            started = time.perf_counter()
            try:
                response = await route.completion(request, attempt, outcome, last=last)
            except Failover as exc:
                self._observe(route, exc.reason, started, failed=True)
                log.warning("upstream %s failed (%s); trying %s", route.config.name, exc.message,
                            candidates[i + 1].config.name)
                outcome.upstream_status = None
                continue
            except ClientError:
                raise
            except Exception:
                self._observe(route, "error", started, failed=True)
                raise
            failed = outcome.upstream_status in FAILOVER_STATUSES
            self._observe(route, str(outcome.upstream_status or "error"), started, failed=failed)
            return response
        raise AssertionError("the last candidate answers or raises")

    async def count_tokens(self, request: Request, body: dict, outcome: Outcome) -> Response:
        """No failover: a count is cheap to ask again, and Claude Code falls back to its own."""
        candidates = self.candidates(body.get("model"))
        anthropic = [r for r in candidates if r.config.format == "anthropic"]
        return await (anthropic or candidates)[0].completion.count_tokens(request, body, outcome)

    def _observe(self, route: Route, result: str, started: float, *, failed: bool) -> None:
        if failed:
            route.breaker.failed()
        else:
            route.breaker.succeeded()
        if self.metrics is not None:
            name = route.config.name
            self.metrics.upstream_requests.inc(name, result)
            if failed:
                self.metrics.upstream_failures.inc(name)
            self.metrics.upstream_latency.observe(time.perf_counter() - started, name)
            self.metrics.upstream_breaker_open.set(1 if route.breaker.opened_at is not None else 0, name)
