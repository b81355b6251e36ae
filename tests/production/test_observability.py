"""/metrics (Prometheus text), /health, and the access log in text and JSON."""

from __future__ import annotations

import json
import re

import httpx
import openai

from rawproxy.core.ids import new_turn_key, tool_call_id

from .support import ENV_WITHOUT_PROXIES, OPENAI_BODY, eventually, fsim, metric, proxies, sim

_ = (fsim, sim, proxies)  # fixtures

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}]
_SAMPLE = re.compile(r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+(Inf)?$')


def test_metrics_health_and_json_access_log(sim, proxies):
    proxy = proxies("openai", "--log-format", "json", sim=sim, env=ENV_WITHOUT_PROXIES)
    health = httpx.get(proxy.url + "/health").json()
    assert health["status"] == "ok" and health["version"] and health["upstream"] == sim.base("openai")
    assert health["worker"] == str(proxy.process.proc.pid)  # not under a supervisor: the pid

    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="any", max_retries=0)
    # A tool-call turn, then its replay without the reasoning (as most apps send it back):
    # the store has it (a hit). A replayed id the proxy never stored is a miss.
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="kimi-k2.5", messages=messages, tools=TOOLS, temperature=0.3)
    call = first.choices[0].message.tool_calls[0]
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    client.chat.completions.create(model="kimi-k2.5", messages=messages, tools=TOOLS)
    unknown = tool_call_id(new_turn_key(), 0, "call")
    client.chat.completions.create(model="kimi-k2.5", tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": unknown, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": unknown, "content": "rain"}])
    list(client.chat.completions.create(**OPENAI_BODY, stream=True))
    # The stream is counted when the relay ends, a moment after the client read [DONE].
    assert eventually(lambda: metric(proxy.url, "rawproxy_streams_total") == 1)
    httpx.post(proxy.url + "/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"})
    httpx.get(proxy.url + "/no/such/path")

    r = httpx.get(proxy.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    for line in text.splitlines():  # every line is a comment or a well-formed sample
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or _SAMPLE.match(line), line
    for family in ("rawproxy_requests_total", "rawproxy_request_duration_seconds", "rawproxy_upstream_ttfb_seconds",
                   "rawproxy_upstream_duration_seconds", "rawproxy_open_streams", "rawproxy_repairs_total",
                   "rawproxy_reasoning_hits_total", "rawproxy_reasoning_misses_total",
                   "rawproxy_upstream_retries_total", "rawproxy_streams_total"):
        assert f"# TYPE {family} " in text, family
    url = proxy.url
    assert metric(url, 'rawproxy_requests_total{route="/v1/chat/completions",status="200"}') == 4
    assert metric(url, 'rawproxy_requests_total{route="/v1/chat/completions",status="400"}') == 1
    assert metric(url, 'rawproxy_requests_total{route="other",status="404"}') == 1  # one label for all unknown paths
    assert metric(url, "rawproxy_upstream_ttfb_seconds_count") == 4
    assert metric(url, 'rawproxy_upstream_ttfb_seconds_bucket{le="+Inf"}') == 4
    assert metric(url, 'rawproxy_repairs_total{kind="sampling_dropped"}') == 1
    assert metric(url, "rawproxy_reasoning_hits_total") == 1 and metric(url, "rawproxy_reasoning_misses_total") == 1
    assert metric(url, 'rawproxy_streams_total{route="/v1/chat/completions",result="complete"}') == 1
    assert metric(url, "rawproxy_open_streams") == 0
    assert 'rawproxy_info{version="' in text and 'worker="' in text

    def access_lines():
        return [json.loads(line) for line in proxy.process.output().splitlines()
                if line.startswith("{") and '"rawproxy.access"' in line]

    access = eventually(lambda: len(access_lines()) == 6) and access_lines()
    assert len(access) == 6  # one line per request; /health and /metrics are not logged
    by_status = {a["status"] for a in access}
    assert by_status == {200, 400, 404}
    stream = next(a for a in access if a["stream"])
    assert stream["stream"] == "complete" and stream["route"] == "/v1/chat/completions"
    assert all(isinstance(a["duration_ms"], float) and "upstream_status" in a and "repairs" in a for a in access)
    assert any("sampling_dropped" in a["repairs"] for a in access)


def test_start_up_messages_follow_the_log_format(tmp_path):
    """Under --log-format json every line the process writes, start-up included, is JSON."""
    import sys

    from ..conftest import Process, free_port, wait_http

    port = free_port()
    proc = Process([sys.executable, "-m", "rawproxy", "--simulator", "--port", str(port), "--log-format", "json"],
                   str(tmp_path / "proxy.log"), env=ENV_WITHOUT_PROXIES)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc.proc)
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=OPENAI_BODY,
                   headers={"authorization": "Bearer any"})
        lines = eventually(lambda: len(proc.output().splitlines()) >= 3) and proc.output().splitlines()
    finally:
        proc.stop()
    docs = [json.loads(line) for line in lines]  # a plain-text line fails here
    messages = " | ".join(d["msg"] for d in docs)
    assert "serving against the built-in Kimi simulator" in messages
    assert any(d.get("event") == "listening" and d.get("port") == port for d in docs), messages


def test_help_names_the_command_it_was_invoked_by():
    import subprocess
    import sys

    from rawproxy.service.cli import program_name

    out = subprocess.run([sys.executable, "-m", "rawproxy", "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: python -m rawproxy ")
    assert program_name("/usr/local/bin/rawproxy") == "rawproxy"
    assert program_name("/venv/lib/python3.11/site-packages/rawproxy/__main__.py") == "python -m rawproxy"
