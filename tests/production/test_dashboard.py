"""GET /dashboard in a real headless browser (Debian's chromium, driven by Playwright),
with traffic flowing through the proxy: the figures it shows are the /metrics figures,
the last requests fill in, nothing leaves for another origin, no console errors, and
neither prompts, reasoning nor keys ever reach the page. Also /dashboard.json under the
access keys and under --workers."""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.request
from collections import defaultdict

import httpx
import pytest

from .support import ENV_WITHOUT_PROXIES, eventually, fsim, metric, proxies, sim
from .test_workers import WORKER, Workers

_ = (fsim, sim, proxies)  # fixtures

ACCESS_KEY = "dash-access-key-0123456789"
AUTH = {"authorization": f"Bearer {ACCESS_KEY}"}
PROMPT_MARKER = "PROMPT-TEXT-7f3a9c"  # in every prompt: must never reach the page
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
# Predicates as functions: a string expression would be eval'd, which the page's CSP forbids.
RECENT_ROWS = "() => document.querySelectorAll('tr[data-recent]').length >= 5"
CHART_DRAWN = """() => (document.querySelector('#trafficchart polyline.s0')?.getAttribute('points') || '')
    .split(' ').length >= 4"""
ALL_FIGURES = """() => Array.from(document.querySelectorAll("[data-figure]")).map(
    (e) => ({...e.dataset, text: e.textContent}))"""


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's package "
                    "(or run `apt-get install -y chromium` as root)")
    return found


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]' (it drives the system chromium; "
                    "no browser download is needed)")
    return start()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """/metrics as {(name, labels): value}."""
    req = urllib.request.Request(url + "/metrics", headers=AUTH)
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        out[(name, pairs)] = float(value)
    return out


def total(metrics: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


def quantile_bucket(metrics: dict, name: str, q: float) -> tuple[float, float]:
    """The (lower, upper) bounds of the bucket holding the q-quantile of a histogram."""
    buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in metrics.items() if n == name + "_bucket"
                     and dict(ls).get("le") not in (None, "+Inf") and len(ls) == 1)
    count = total(metrics, name + "_count")
    lower = 0.0
    for bound, cumulative in buckets:
        if cumulative >= q * count:
            return lower, bound
        lower = bound
    return lower, float("inf")


class Traffic:
    """Requests of every kind in a loop (bounded in count and time) until stopped: plain
    and streamed answers on all three routes, tool-call turns replayed without their
    reasoning (store hits), a replay of an id never seen (a miss), a malformed body."""

    def __init__(self, url: str, limit: int = 2000, seconds: float = 90.0) -> None:
        self.url, self.limit, self.seconds = url, limit, seconds
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _post(self, client: httpx.Client, path: str, body: dict | bytes) -> httpx.Response:
        self.sent += 1
        if isinstance(body, bytes):
            return client.post(path, content=body, headers={"content-type": "application/json"})
        return client.post(path, json=body)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        user = {"role": "user", "content": f"{PROMPT_MARKER}: weather in Paris?"}
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=30) as client:
            while not self._stop.is_set() and self.sent < self.limit and time.monotonic() < deadline:
                try:
                    first = self._post(client, "/v1/chat/completions", {"model": "kimi-k2.5", "messages": [user], "tools": TOOLS})
                    call = first.json()["choices"][0]["message"]["tool_calls"][0]
                    replay = [user, {"role": "assistant", "content": None, "tool_calls": [call]},
                              {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
                    self._post(client, "/v1/chat/completions", {"model": "kimi-k2.5", "messages": replay, "tools": TOOLS})
                    unknown = [user, {"role": "assistant", "content": None, "tool_calls": [{**call, "id": "call_" + "z" * 20 + "_0"}]},
                               {"role": "tool", "tool_call_id": "call_" + "z" * 20 + "_0", "content": "rain"}]
                    self._post(client, "/v1/chat/completions", {"model": "kimi-k2.5", "messages": unknown, "tools": TOOLS})
                    self._post(client, "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 300, "stream": True,
                                                        "messages": [user]})
                    self._post(client, "/v1/responses", {"model": "kimi-k2.5", "input": user["content"], "stream": True})
                    self._post(client, "/v1/responses", {"model": "kimi-k2.5", "input": user["content"]})
                    self._post(client, "/v1/chat/completions", b"{not json")
                except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                    self.errors.append(repr(exc))
                    return
                time.sleep(0.25)  # a steady trickle, not a flood: the charts show a rate that holds


def test_the_dashboard_shows_what_metrics_count(sim, proxies, tmp_path):
    proxy = proxies("anthropic", sim=sim, env={**ENV_WITHOUT_PROXIES, "PROXY_API_KEYS": ACCESS_KEY})
    console_errors: list[str] = []
    requested: list[str] = []
    with sync_playwright() as pw, Traffic(proxy.url) as traffic:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), headless=True, args=BROWSER_FLAGS,
            viewport={"width": 1280, "height": 900}, color_scheme="light")
        try:
            context.on("request", lambda r: requested.append(r.url))
            page = context.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(proxy.url + "/dashboard")
            # The page holds no data: it asks for an access key first, once.
            page.wait_for_selector("#keyform.shown", timeout=15000)
            assert page.locator("#conn").inner_text() == "key needed"
            page.fill("#key", ACCESS_KEY)
            page.click("#keyform button")
            page.wait_for_function(RECENT_ROWS, timeout=20000)
            page.wait_for_function("() => parseFloat(document.getElementById('rps').textContent) > 0", timeout=20000)
            assert page.locator("#conn").inner_text() == "live"
            page.reload()  # the key is kept for the session: no second prompt
            page.wait_for_function(RECENT_ROWS, timeout=20000)
            assert not page.locator("#keyform.shown").count()
            # The pictures while traffic flows, once the charts have a few seconds of it.
            page.wait_for_function(CHART_DRAWN, timeout=30000)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            phone = context.new_page()
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.emulate_media(color_scheme="dark")
            phone.goto(proxy.url + "/dashboard")
            phone.fill("#key", ACCESS_KEY)  # a new tab is a new session: asked once more
            phone.click("#keyform button")
            phone.wait_for_function(RECENT_ROWS, timeout=20000)
            phone.wait_for_function(CHART_DRAWN, timeout=30000)
            phone_shot = tmp_path / "dashboard-phone-dark.png"
            phone.screenshot(path=str(phone_shot), full_page=True)

            traffic.stop()
            assert not traffic.errors, traffic.errors
            assert traffic.sent >= 7
            assert eventually(lambda: metric(proxy.url, "rawproxy_open_streams", AUTH) == 0, timeout=10)
            metrics = scrape(proxy.url)
            api_requests = sum(v for (n, ls), v in metrics.items()
                               if n == "rawproxy_requests_total" and dict(ls)["route"].startswith("/v1"))
            assert api_requests == traffic.sent
            # The page refreshes by itself: wait until it shows the totals after the traffic.
            page.wait_for_function(
                "(n) => Array.from(document.querySelectorAll('[data-figure=route-requests]'))"
                ".reduce((a, e) => a + Number(e.dataset.value), 0) === n", arg=api_requests, timeout=10000)
            figures = page.evaluate(ALL_FIGURES)
            page_text = page.content() + phone.content()
        finally:
            context.close()
    print(f"\ndashboard screenshots: {shot} and {phone_shot}")
    assert shot.stat().st_size > 10_000 and phone_shot.stat().st_size > 10_000

    by_figure: dict[str, list[dict]] = defaultdict(list)
    for f in figures:
        by_figure[f["figure"]].append(f)

    def shown(f: dict) -> float:
        """What the person reads (digits of the text), checked against the raw value."""
        digits = re.sub(r"[^\d]", "", f["text"])
        assert digits and float(digits) == float(f["value"]), f
        return float(digits)

    # Requests and errors by route.
    routes = {f["route"]: shown(f) for f in by_figure["route-requests"]}
    assert routes == {r: total(metrics, "rawproxy_requests_total", route=r)
                      for r in ("/v1/chat/completions", "/v1/messages", "/v1/responses")}
    for f in by_figure["route-4xx"]:
        assert shown(f) == sum(v for (n, ls), v in metrics.items() if n == "rawproxy_requests_total"
                               and dict(ls)["route"] == f["route"] and dict(ls)["status"].startswith("4"))
    assert {f["route"]: shown(f) for f in by_figure["route-4xx"]}["/v1/chat/completions"] > 0  # the malformed bodies
    assert all(shown(f) == 0 for f in by_figure["route-5xx"])
    # Tokens per model and kind, repairs by kind, reasoning restored versus fallback.
    tokens = {(f["model"], f["kind"]): shown(f) for f in by_figure["tokens"] if f["value"]}
    assert tokens == {(dict(ls)["model"], dict(ls)["kind"]): v for (n, ls), v in metrics.items()
                      if n == "rawproxy_tokens_total"}
    assert tokens[("kimi-k2.5", "input")] > 0 and tokens[("kimi-k2.5", "output")] > 0
    repairs = {f["kind"]: shown(f) for f in by_figure["repairs"]}
    assert repairs == {dict(ls)["kind"]: v for (n, ls), v in metrics.items() if n == "rawproxy_repairs_total"}
    [restored] = by_figure["reasoning-restored"]
    [fallback] = by_figure["reasoning-fallback"]
    assert shown(restored) == total(metrics, "rawproxy_repairs_total", kind="reasoning_restored") > 0
    assert shown(fallback) == sum(total(metrics, "rawproxy_repairs_total", kind=k)
                                  for k in ("reasoning_from_text", "reasoning_placeholder")) > 0
    # Streams, the store.
    [open_streams] = by_figure["open-streams"]
    assert shown(open_streams) == total(metrics, "rawproxy_open_streams") == 0
    [hits] = by_figure["store-hits"]
    [misses] = by_figure["store-misses"]
    assert shown(hits) == total(metrics, "rawproxy_reasoning_hits_total") > 0
    assert shown(misses) == total(metrics, "rawproxy_reasoning_misses_total") > 0
    [rate] = by_figure["store-hit-rate"]
    assert float(rate["value"]) == pytest.approx(shown(hits) / (shown(hits) + shown(misses)))
    # Latency: each p50/p99 lies in the bucket /metrics puts that quantile in.
    histograms = {"added": "rawproxy_added_latency_seconds", "ttfb": "rawproxy_upstream_ttfb_seconds",
                  "upstream": "rawproxy_upstream_duration_seconds"}
    for f in by_figure["latency"]:
        if f["which"] in histograms:
            low, high = quantile_bucket(metrics, histograms[f["which"]], 0.5 if f["q"] == "p50" else 0.99)
            assert low <= float(f["value"]) <= high, (f, low, high)
    for f in by_figure["latency-count"]:
        if f["which"] in histograms:
            assert shown(f) == total(metrics, histograms[f["which"]] + "_count") > 0

    # No prompt text, reasoning or key ever reached the page; nothing left for another origin.
    assert PROMPT_MARKER not in page_text and "Sim reasoning" not in page_text and ACCESS_KEY not in page_text
    assert requested and all(u.startswith(proxy.url + "/") or u.startswith("data:") for u in requested), requested
    assert not console_errors, console_errors


def test_the_page_needs_no_key_and_its_data_does(sim, proxies):
    proxy = proxies("openai", sim=sim, env={**ENV_WITHOUT_PROXIES, "PROXY_API_KEYS": ACCESS_KEY})
    page = httpx.get(proxy.url + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # One self-contained file: nothing it loads, nowhere else it could send anything.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    assert httpx.get(proxy.url + "/dashboard.json").status_code == 401
    assert httpx.get(proxy.url + "/dashboard.json", headers={"authorization": "Bearer wrong"}).status_code == 401
    r = httpx.post(proxy.url + "/v1/chat/completions", headers=AUTH,
                   json={"model": "kimi-k2.5", "messages": [{"role": "user", "content": PROMPT_MARKER}]})
    assert r.status_code == 200
    doc = httpx.get(proxy.url + "/dashboard.json", headers=AUTH)
    assert doc.status_code == 200
    [entry] = doc.json()["recent"]
    assert entry["route"] == "/v1/chat/completions" and entry["status"] == 200 and entry["model"] == "kimi-k2.5"
    assert entry["client"].startswith("python-httpx #") and len(entry["client"]) == len("python-httpx #") + 6
    assert entry["tokens"]["input"] > 0 and entry["tokens"]["output"] > 0
    assert PROMPT_MARKER not in doc.text and "Sim reasoning" not in doc.text and ACCESS_KEY not in doc.text


def test_under_workers_the_data_is_every_workers_total(sim, tmp_path):
    proxy = Workers(sim, str(tmp_path / "reasoning.sqlite3"), str(tmp_path / "proxy.log"), workers=2)
    try:
        n = 30
        served = set()
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(proxy.url + "/v1/chat/completions", headers={"authorization": "Bearer k"},
                           json={"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            served.add(r.headers[WORKER])
        assert served == {"0", "1"}
        tokens = metric(proxy.url, 'rawproxy_tokens_total{model="kimi-k2.5",kind="output"}')
        assert tokens > 0
        answered = set()
        for asked in range(40):  # new connections until both workers answered (the kernel spreads them)
            if len(answered) == 2 and asked >= 6:
                break
            r = httpx.get(proxy.url + "/dashboard.json")
            answered.add(r.headers[WORKER])
            doc = r.json()
            assert doc["workers"] == 2
            assert doc["routes"]["/v1/chat/completions"]["requests"] == n
            assert doc["tokens"]["kimi-k2.5"]["output"] == tokens
            assert doc["latency"]["ttfb"]["count"] == n
            assert len(doc["recent"]) == n and {e["worker"] for e in doc["recent"]} == {"0", "1"}
            times = [e["t"] for e in doc["recent"]]
            assert times == sorted(times, reverse=True)  # newest first, across workers
        assert answered == {"0", "1"}
    finally:
        proxy.stop()
