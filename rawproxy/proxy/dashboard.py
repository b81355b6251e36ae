"""The live page: GET /dashboard (one self-contained HTML file, no data in it) and
GET /dashboard.json (the figures it draws, behind the access keys like every route).

The figures are the /metrics families, merged across workers the same way a scrape
merges them (`merge_snapshots`), plus the last requests each process keeps in a small
ring. Nothing here holds prompt text, reasoning or keys: a request is remembered by its
route, a client label (the User-Agent's product and a short digest of its key), model,
status, timing, repairs and token counts.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import deque
from collections.abc import Iterable
from importlib import resources
from typing import Any

from ..core.metrics import Counter, Family, Histogram, merge_snapshots
from ..server.http import RequestHead
from .outcome import Outcome
from .requests import client_key

# Routes that are looked at, not used: left out of the access log, the recent requests
# and the dashboard's route table (the page's own polling would fill them).
PROBES = frozenset({"/health", "/metrics", "/dashboard", "/dashboard.json"})
COMPLETION_ROUTES = frozenset({"/v1/messages", "/v1/chat/completions", "/chat/completions", "/v1/responses"})
RECENT_SIZE = 50
# Repairs that put reasoning back into a replayed tool-call turn: the real reasoning (from
# the store, or the client's own `reasoning` field), or a stand-in for it.
RESTORED = ("reasoning_restored", "reasoning_from_reasoning_field")
FALLBACK = ("reasoning_from_text", "reasoning_placeholder")

# The browser may load nothing but this page and ask nothing but this origin.
PAGE_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                 b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                                 b"frame-ancestors 'none'"),
]

_PRODUCT = re.compile(rb"[A-Za-z0-9._-]{1,24}")
_page: bytes | None = None


def page() -> bytes:
    """The HTML, read from the package once."""
    global _page
    if _page is None:
        _page = resources.files(__package__).joinpath("dashboard.html").read_bytes()
    return _page


def client_label(head: RequestHead) -> str:
    """Who sent a request, as far as a person watching needs: the User-Agent's product
    (`claude-cli`, `codex_exec`, `OpenAI`) and six hex digits of a one-way digest of the
    key it presented, so two keys tell apart and none can be read back."""
    agent = head.header(b"user-agent") or b""
    found = _PRODUCT.match(agent)
    product = found.group().decode() if found else ""
    key = client_key(head)
    tag = "#" + hashlib.blake2b(key, digest_size=3, person=b"rawproxy-client").hexdigest() if key else "no key"
    return f"{product} {tag}" if product else tag


class RecentRequests:
    """The last RECENT_SIZE finished requests of this process (probes left out)."""

    def __init__(self, size: int = RECENT_SIZE) -> None:
        self._ring: deque[dict] = deque(maxlen=size)

    def add(self, method: str, route: str, status: int, seconds: float, outcome: Outcome, worker: str) -> None:
        usage = outcome.usage.reported() if outcome.usage is not None else {}
        self._ring.append({
            "t": round(time.time(), 3), "method": method, "route": route, "client": outcome.client,
            "model": outcome.model or None, "status": status, "ms": round(seconds * 1000, 1),
            "upstream_status": outcome.upstream_status, "repairs": list(outcome.repairs),
            "tokens": usage, "stream": outcome.stream, "worker": worker,
        })

    def snapshot(self) -> list[dict]:
        return list(self._ring)


def quantile(hist: Histogram, q: float, keep=lambda labels: True) -> float | None:
    """The q-quantile of the label sets `keep` accepts, interpolated inside its bucket as
    Prometheus' histogram_quantile does; past the last finite bound, that bound."""
    counts = [0] * (len(hist.buckets) + 1)
    for labels, (per_bucket, _total) in hist.values.items():
        if keep(labels):
            for i, n in enumerate(per_bucket):
                counts[i] += n
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    below = 0
    for i, n in enumerate(counts):
        if n and below + n >= rank:
            if i == len(hist.buckets):
                return hist.buckets[-1]
            low = hist.buckets[i - 1] if i else 0.0
            return low + (hist.buckets[i] - low) * (rank - below) / n
        below += n
    return hist.buckets[-1]


def _latency(hist: Family | None, keep=lambda labels: True) -> dict[str, Any]:
    if not isinstance(hist, Histogram):
        return {"count": 0, "p50": None, "p99": None}
    count = sum(sum(c) for labels, (c, _t) in hist.values.items() if keep(labels))
    return {"count": count, "p50": quantile(hist, 0.5, keep), "p99": quantile(hist, 0.99, keep)}


def _by(family: Family | None, label: str) -> dict[str, float]:
    """A counter's values summed by one of its labels."""
    out: dict[str, float] = {}
    if isinstance(family, Counter) and label in family.label_names:
        at = family.label_names.index(label)
        for labels, value in family.values.items():
            out[labels[at]] = out.get(labels[at], 0.0) + value
    return out


def _total(family: Family | None) -> float | None:
    if not isinstance(family, Counter):
        return None
    return sum(family.values.values())


def _failed(entry: dict) -> bool:
    """A request the upstream failed (not one the client got wrong)."""
    up = entry.get("upstream_status")
    if entry.get("stream") == "error":
        return True
    if up is None:
        return entry["status"] >= 500
    return up >= 500 or up in (401, 403, 429)


def upstream_state(recent: list[dict]) -> str:
    """idle (no completion yet), failing (the last three failed), degraded (one of the
    last twenty did) or ok; `recent` newest first."""
    completions = [e for e in recent if e.get("route") in COMPLETION_ROUTES][:20]
    if not completions:
        return "idle"
    if all(_failed(e) for e in completions[:3]):
        return "failing"
    return "degraded" if any(_failed(e) for e in completions) else "ok"


def stats(snapshots: list[dict], *, version: str, upstream: str, upstream_format: str,
          store: dict[str, str]) -> dict[str, Any]:
    """The dashboard's JSON from the workers' snapshots (`Metrics.snapshot()` plus their
    `recent` rings): the same totals /metrics gives, and the last requests of all."""
    families = {f.name: f for f in merge_snapshots(snapshots)}
    recent = sorted((e for s in snapshots for e in _entries(s)), key=lambda e: e.get("t", 0), reverse=True)
    recent = recent[:RECENT_SIZE]

    routes: dict[str, dict[str, float]] = {}
    requests = families.get("rawproxy_requests_total")
    if isinstance(requests, Counter):
        for (route, status), value in requests.values.items():
            if route in PROBES:
                continue
            line = routes.setdefault(route, {"requests": 0, "client_errors": 0, "errors": 0})
            line["requests"] += value
            if status.startswith("4"):
                line["client_errors"] += value
            elif status.startswith("5"):
                line["errors"] += value

    tokens: dict[str, dict[str, float]] = {}
    token_family = families.get("rawproxy_tokens_total")
    if isinstance(token_family, Counter):
        for (model, kind), value in token_family.values.items():
            row = tokens.setdefault(model, {})
            row[kind] = row.get(kind, 0) + value

    repairs = _by(families.get("rawproxy_repairs_total"), "kind")
    up_gauge = families.get("rawproxy_reasoning_store_up")
    workers_down = sum(1 for v in up_gauge.values.values() if v == 0) if isinstance(up_gauge, Counter) else 0
    hits, misses = _total(families.get("rawproxy_reasoning_hits_total")), _total(families.get("rawproxy_reasoning_misses_total"))
    looked = (hits or 0) + (misses or 0)
    open_streams = families.get("rawproxy_open_streams")

    def api(labels: tuple[str, ...]) -> bool:
        return labels[0] not in PROBES

    return {
        "version": version,
        "generated_at": round(time.time(), 3),
        "workers": len(snapshots),
        "routes": routes,
        "latency": {
            "added": _latency(families.get("rawproxy_added_latency_seconds")),
            "ttfb": _latency(families.get("rawproxy_upstream_ttfb_seconds")),
            "upstream": _latency(families.get("rawproxy_upstream_duration_seconds")),
            "request": _latency(families.get("rawproxy_request_duration_seconds"), api),
        },
        "open_streams": _total(open_streams) or 0,
        "streams": _by(families.get("rawproxy_streams_total"), "result"),
        "tokens": tokens,
        "repairs": repairs,
        "reasoning": {"restored": sum(repairs.get(k, 0) for k in RESTORED),
                      "fallback": sum(repairs.get(k, 0) for k in FALLBACK)},
        "store": {
            "kind": store.get("kind", ""),
            "state": "down" if store.get("state") == "down" or workers_down else "ok",
            "hits": hits or 0, "misses": misses or 0, "hit_rate": (hits or 0) / looked if looked else None,
            "errors": _total(families.get("rawproxy_reasoning_store_errors_total")) or 0,
            "dropped": _total(families.get("rawproxy_reasoning_dropped_total")) or 0,
        },
        "upstream": {
            "url": upstream, "format": upstream_format, "state": upstream_state(recent),
            "errors": _by(families.get("rawproxy_upstream_errors_total"), "kind"),
            "retries": _by(families.get("rawproxy_upstream_retries_total"), "reason"),
        },
        "recent": recent,
    }


def _entries(snapshot: dict) -> Iterable[dict]:
    entries = snapshot.get("recent")
    if isinstance(entries, list):
        yield from (e for e in entries if isinstance(e, dict) and isinstance(e.get("status"), int))
