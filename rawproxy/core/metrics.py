"""Counters, gauges and histograms, rendered in the Prometheus text format (0.0.4).

Hand-written so the runtime needs no client library. Recording is a dict update (a
counter) or a bisect plus two updates (a histogram), done per request, never per
streamed event. Each worker process counts for itself; a scrape under --workers merges
every worker's `snapshot()` (`render(peers)`): counters and histograms add up, and a
figure that belongs to one process (open streams, whether its store answers) keeps a
`worker` label. Merging happens at scrape time only: recording costs the same.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

# Upstream answers run from milliseconds (errors) to many minutes (long thinking streams).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0, 1800.0)
# What the proxy itself adds before the upstream sees a request: well under a millisecond
# for a small body, tens of milliseconds for a large one or a slow store recall.
ADDED_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), *, per_worker: bool = False) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self.per_worker = per_worker  # merged across workers with a worker label, not summed
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def samples(self) -> Iterable[str]:
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"

    def snapshot(self) -> dict:
        return {"name": self.name, "kind": self.kind, "help": self.help, "labels": list(self.label_names),
                "per_worker": self.per_worker, "values": [[list(k), v] for k, v in self.values.items()]}

    def absorb(self, values: list, extra: tuple[str, ...] = ()) -> None:
        """Adds a snapshot's values (another worker's), each label set extended by `extra`."""
        for labels, value in values:
            key = (*labels, *extra)
            self.values[key] = self.values.get(key, 0.0) + float(value)


class Gauge(Counter):
    kind = "gauge"

    def dec(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) - by

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value


class Histogram:
    kind = "histogram"

    per_worker = False

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

    def snapshot(self) -> dict:
        return {"name": self.name, "kind": self.kind, "help": self.help, "labels": list(self.label_names),
                "buckets": list(self.buckets), "values": [[list(k), c, t[0]] for k, (c, t) in self.values.items()]}

    def absorb(self, values: list, extra: tuple[str, ...] = ()) -> None:
        for labels, counts, total in values:
            if len(counts) != len(self.buckets) + 1:
                continue  # another version's buckets: not addable
            key = (*labels, *extra)
            entry = self.values.get(key)
            if entry is None:
                entry = self.values[key] = ([0] * (len(self.buckets) + 1), [0.0])
            for i, count in enumerate(counts):
                entry[0][i] += int(count)
            entry[1][0] += float(total)


Family = Counter | Histogram


def _family_from(doc: dict, label_worker: bool) -> Family:
    """An empty family shaped like a snapshot's, a `worker` label added when it is per worker."""
    labels = tuple(doc["labels"])
    if label_worker and "worker" not in labels:
        labels = (*labels, "worker")
    if doc["kind"] == "histogram":
        return Histogram(doc["name"], doc["help"], tuple(doc["buckets"]), labels)
    family = Gauge(doc["name"], doc["help"], labels) if doc["kind"] == "gauge" else Counter(doc["name"], doc["help"], labels)
    family.per_worker = bool(doc.get("per_worker"))
    return family


def merge_snapshots(snapshots: Iterable[dict]) -> list[Family]:
    """Several workers' snapshots as one set of families: counters and histograms added up,
    per-worker figures kept apart by a `worker` label. A family whose shape differs between
    workers (a rolling upgrade changed it) takes the first worker's shape; the others'
    samples of it are left out rather than mislabelled."""
    merged: dict[str, Family] = {}
    shapes: dict[str, tuple] = {}
    for snap in snapshots:
        worker = str(snap.get("worker", ""))
        for doc in snap.get("families", ()):
            try:
                per_worker = bool(doc.get("per_worker"))
                shape = (doc["kind"], tuple(doc["labels"]), per_worker, tuple(doc.get("buckets", ())))
                family = merged.get(doc["name"])
                if family is None:
                    family = merged[doc["name"]] = _family_from(doc, per_worker)
                    shapes[doc["name"]] = shape
                elif shapes[doc["name"]] != shape:
                    continue
                extra = (worker,) if per_worker and "worker" not in doc["labels"] else ()
                family.absorb(doc["values"], extra)
            except (KeyError, TypeError, ValueError):
                continue  # a family this version cannot read: left out, never the whole scrape
    return list(merged.values())


def _exposition(families: Iterable[Family]) -> bytes:
    lines: list[str] = []
    for metric in families:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        lines.extend(metric.samples())
    return ("\n".join(lines) + "\n").encode()


class Metrics:
    """Everything the proxy records; one instance per process."""

    def __init__(self, *, version: str = "", worker: str = "") -> None:
        self.worker = worker
        self.info = Gauge("rawproxy_info", "Version and worker of this process.", ("version", "worker"),
                          per_worker=True)
        self.info.set(1, version, worker)
        self.requests = Counter("rawproxy_requests_total", "Requests answered, by route and status.",
                                ("route", "status"))
        self.request_seconds = Histogram("rawproxy_request_duration_seconds",
                                         "Time from request head to the response's last byte.", labels=("route",))
        self.streams = Counter("rawproxy_streams_total",
                               "Streamed answers by how they ended: complete, error (the client got an "
                               "error event) or cancelled (the client left or the proxy cut it).",
                               ("route", "result"))
        self.open_streams = Gauge("rawproxy_open_streams", "Streams being relayed now.", per_worker=True)
        self.upstream_ttfb = Histogram("rawproxy_upstream_ttfb_seconds",
                                       "Time from sending a request upstream to its response head.")
        self.upstream_seconds = Histogram("rawproxy_upstream_duration_seconds",
                                          "Time from sending a request upstream to the end of its answer.")
        self.upstream_errors = Counter("rawproxy_upstream_errors_total",
                                       "Upstream requests that failed, by kind: no answer (connect, timeout, "
                                       "network, ...) or one the proxy could not use (malformed, "
                                       "event_too_large, redirect).", ("kind",))
        self.retries = Counter("rawproxy_upstream_retries_total",
                               "Upstream requests sent again, by what the previous attempt got.", ("reason",))
        self.repairs = Counter("rawproxy_repairs_total", "Kimi repairs applied, by kind.", ("kind",))
        self.tokens = Counter("rawproxy_tokens_total",
                              "Tokens the upstream reported, by upstream model (after the model map) and kind: "
                              "input (cached included), output, cached_input, reasoning (where reported).",
                              ("model", "kind"))
        self.added_seconds = Histogram("rawproxy_added_latency_seconds",
                                       "Time from a request's arrival (its body read) to sending it upstream: "
                                       "parsing, translation, repair, reasoning recall.", ADDED_BUCKETS)
        # Per configured upstream (by its name in the config file): what the router sent it.
        self.upstream_requests = Counter("rawproxy_upstream_requests_total",
                                         "Requests the router sent to each upstream, by result: the upstream's "
                                         "status, connect (no answer before the first byte) or error.",
                                         ("upstream", "result"))
        self.upstream_failures = Counter("rawproxy_upstream_failures_total",
                                         "Requests an upstream failed in a way that moves them to the next "
                                         "upstream (or would, had there been one).", ("upstream",))
        self.upstream_latency = Histogram("rawproxy_upstream_request_seconds",
                                          "Time from a request's start on an upstream to its response head or "
                                          "failure, by upstream.", labels=("upstream",))
        self.upstream_breaker_open = Gauge("rawproxy_upstream_breaker_open",
                                           "1 while an upstream's circuit breaker keeps requests away from it.",
                                           ("upstream",), per_worker=True)
        self.open_streams.set(0)
        self._all: list[Counter | Histogram] = [self.info, self.requests, self.request_seconds, self.streams, self.open_streams,
                     self.upstream_ttfb, self.upstream_seconds, self.upstream_errors, self.retries, self.repairs,
                     self.tokens, self.added_seconds, self.upstream_requests, self.upstream_failures,
                     self.upstream_latency, self.upstream_breaker_open]
        self._collectors: list[Callable[[], Iterable[Family]]] = []

    def add_collector(self, collect: Callable[[], Iterable[Family]]) -> None:
        """A callable that builds families at scrape time from figures kept elsewhere (store counters)."""
        self._collectors.append(collect)

    def _families(self) -> list[Family]:
        families: list[Family] = list(self._all)
        for collect in self._collectors:
            families.extend(collect())
        return families

    def snapshot(self) -> dict:
        """This process's figures as JSON-ready data, for a peer worker's scrape to merge."""
        return {"worker": self.worker, "families": [f.snapshot() for f in self._families()]}

    def render(self, peers: Iterable[dict] | None = None) -> bytes:
        """This process's figures; with `peers` (the other workers' snapshots) one set of
        totals for all of them (`merge_snapshots`)."""
        if peers is None:
            return _exposition(self._families())
        return _exposition(merge_snapshots([self.snapshot(), *peers]))


def store_collector(store) -> Callable[[], Iterable[Family]]:
    """Reasoning-store counters, read from the store (or its keeper) at scrape time; a
    counter the object does not keep is left out. `rawproxy_reasoning_store_up` says
    whether this process's store answers (1) or is in an outage (0)."""

    def collect() -> Iterable[Family]:
        for name, attr, help in (
            ("rawproxy_reasoning_hits_total", "hits", "Replayed tool-call turns whose reasoning the store had."),
            ("rawproxy_reasoning_misses_total", "misses", "Replayed tool-call turns whose reasoning the store lacked."),
            ("rawproxy_reasoning_dropped_total", "dropped",
             "Tool-call turns not remembered: the write queue was full (a slow or locked store)."),
            ("rawproxy_reasoning_recall_timeouts_total", "recall_timeouts",
             "Recalls that gave up waiting for the store; the request went on with the fallback."),
            ("rawproxy_reasoning_store_errors_total", "errors",
             "Reads and writes the reasoning store failed; requests went on without it."),
        ):
            value = getattr(store, attr, None)
            if value is None:
                continue
            counter = Counter(name, help)
            counter.values[()] = float(value)
            yield counter
        outage = getattr(store, "outage", None)
        if outage is not None:
            up = Gauge("rawproxy_reasoning_store_up",
                       "1 while this process's reasoning store answers, 0 during an outage.", per_worker=True)
            up.set(0.0 if outage.down else 1.0)
            yield up

    return collect
