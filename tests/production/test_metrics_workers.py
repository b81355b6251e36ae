"""--workers N: one scrape of /metrics gives the totals of every worker, whichever worker
the scrape's connection reached; a figure that belongs to one process (open streams,
whether its store answers) keeps a `worker` label."""

from __future__ import annotations

import re
import threading

import httpx

from .support import OPENAI_BODY, eventually, fsim, metric, sim
from .test_workers import WORKER, Workers

ROUTE = 'rawproxy_requests_total{route="/v1/chat/completions",status="200"}'


def test_one_scrape_sums_every_worker(sim, tmp_path):
    proxy = Workers(sim, str(tmp_path / "reasoning.sqlite3"), str(tmp_path / "proxy.log"), workers=2)
    try:
        n = 40
        served: dict[int, int] = {}
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(proxy.url + "/v1/chat/completions", json=OPENAI_BODY, headers={"authorization": "Bearer k"})
            assert r.status_code == 200
            served[int(r.headers[WORKER])] = served.get(int(r.headers[WORKER]), 0) + 1
        assert set(served) == {0, 1}, served  # both workers counted some: a single worker's figure is < n

        scrapes = []
        for _ in range(6):  # scrapes on new connections reach either worker: each gives the total
            r = httpx.get(proxy.url + "/metrics")
            scrapes.append((int(r.headers[WORKER]), r.text))
        assert {w for w, _ in scrapes} == {0, 1}
        for worker, text in scrapes:
            assert _value(text, ROUTE) == n, (worker, text)
            assert _value(text, "rawproxy_upstream_ttfb_seconds_count") == n
            assert _value(text, 'rawproxy_upstream_ttfb_seconds_bucket{le="+Inf"}') == n
            for w in ("0", "1"):  # per-worker figures, one line per worker
                assert re.search(rf'^rawproxy_info\{{version="[^"]+",worker="{w}"\}} 1$', text, re.M)
                assert f'rawproxy_open_streams{{worker="{w}"}} 0' in text
                assert f'rawproxy_reasoning_store_up{{worker="{w}"}} 1' in text
            assert text.count("# TYPE rawproxy_requests_total counter") == 1

        # A stream held open on worker 1 shows as worker 1's, not as a total.
        sim.fault("stall-after=2;seconds=3;times=1")
        http = proxy.client_on(1, [])
        opened = threading.Event()

        def stream() -> None:
            with http.stream("POST", proxy.url + "/v1/chat/completions", json={**OPENAI_BODY, "stream": True},
                             headers={"authorization": "Bearer k"}) as r:
                opened.set()
                for _ in r.iter_bytes():
                    pass

        reader = threading.Thread(target=stream)
        reader.start()
        try:
            assert opened.wait(10)
            text = eventually(lambda: (t := httpx.get(proxy.url + "/metrics").text)
                              and 'rawproxy_open_streams{worker="1"} 1' in t and t)
            assert text and 'rawproxy_open_streams{worker="0"} 0' in text, text
        finally:
            reader.join(20)
            http.close()
        assert eventually(lambda: metric(proxy.url, ROUTE) == n + 1)
    finally:
        proxy.stop()


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {sample} in the scrape")
