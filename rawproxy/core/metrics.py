"""Counters, gauges and histograms, rendered in the Prometheus text format (0.0.4).

Hand-written so the runtime needs no client library. Recording is a dict update (a
counter) or a bisect plus two updates (a histogram), done per request, never per
streamed event. Each worker process counts for itself; its `/health` names the worker.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

# Upstream answers run from milliseconds (errors) to many minutes (long thinking streams).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0, 1800.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Counter:
    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def samples(self) -> Iterable[str]:
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Gauge(Counter):
    kind = "gauge"

    def dec(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) - by

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS,
                 labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self.buckets = buckets
        # per label set: [count per bucket (+Inf last, not cumulative), sum]
        self.values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect_left(self.buckets, value)] += 1
        entry[1][0] += value

    def samples(self) -> Iterable[str]:
        for labels, (counts, total) in sorted(self.values.items()):
            running = 0
            for bound, count in zip(self.buckets, counts):
                running += count
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {running}"
            running += counts[-1]
            inf = _labels(self.label_names, labels, 'le="+Inf"')
            yield f"{self.name}_bucket{inf} {running}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total[0])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {running}"


class Metrics:
    """Everything the proxy records; one instance per process."""

    def __init__(self, *, version: str = "", worker: str = "") -> None:
        self.info = Gauge("rawproxy_info", "Version and worker of this process.", ("version", "worker"))
        self.info.set(1, version, worker)
        self.requests = Counter("rawproxy_requests_total", "Requests answered, by route and status.",
                                ("route", "status"))
        self.request_seconds = Histogram("rawproxy_request_duration_seconds",
                                         "Time from request head to the response's last byte.", labels=("route",))
        self.streams = Counter("rawproxy_streams_total",
                               "Streamed answers by how they ended: complete, error (the client got an "
                               "error event) or cancelled (the client left or the proxy cut it).",
                               ("route", "result"))
        self.open_streams = Gauge("rawproxy_open_streams", "Streams being relayed now.")
        self.upstream_ttfb = Histogram("rawproxy_upstream_ttfb_seconds",
                                       "Time from sending a request upstream to its response head.")
        self.upstream_seconds = Histogram("rawproxy_upstream_duration_seconds",
                                          "Time from sending a request upstream to the end of its answer.")
        self.upstream_errors = Counter("rawproxy_upstream_errors_total",
                                       "Upstream requests that failed without an answer, by kind.", ("kind",))
        self.retries = Counter("rawproxy_upstream_retries_total",
                               "Upstream requests sent again, by what the previous attempt got.", ("reason",))
        self.repairs = Counter("rawproxy_repairs_total", "Kimi repairs applied, by kind.", ("kind",))
        self.open_streams.set(0)
        self._all: list[Counter | Histogram] = [self.info, self.requests, self.request_seconds, self.streams, self.open_streams,
                     self.upstream_ttfb, self.upstream_seconds, self.upstream_errors, self.retries, self.repairs]
        self._collectors: list[Callable[[], Iterable[str]]] = []

    def add_collector(self, collect: Callable[[], Iterable[str]]) -> None:
        """A callable that yields finished exposition lines at scrape time (store counters)."""
        self._collectors.append(collect)

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._all:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.samples())
        for collect in self._collectors:
            lines.extend(collect())
        return ("\n".join(lines) + "\n").encode()


def store_collector(store) -> Callable[[], Iterable[str]]:
    """Reasoning-store hits and misses, read from the store's own counters at scrape time."""

    def collect() -> Iterable[str]:
        for name, attr, help in (
            ("rawproxy_reasoning_hits_total", "hits", "Replayed tool-call turns whose reasoning the store had."),
            ("rawproxy_reasoning_misses_total", "misses", "Replayed tool-call turns whose reasoning the store lacked."),
        ):
            value = getattr(store, attr, None)
            if value is None:
                continue
            yield f"# HELP {name} {help}"
            yield f"# TYPE {name} counter"
            yield f"{name} {_number(float(value))}"

    return collect
