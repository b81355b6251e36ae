"""Token usage: `rawproxy_tokens_total{model, kind}` and the access log's `tokens_*` fields
carry exactly what the upstream reported, for both upstream formats, streamed and not,
on all three completion routes."""

from __future__ import annotations

import json

import httpx
import pytest

from .support import ENV_WITHOUT_PROXIES, eventually, fsim, metric, proxies, sim

_ = (fsim, sim, proxies)  # fixtures

# Long enough that the simulator reports part of a follow-up turn's prompt as cached.
LONG = "Please keep this context in mind. " * 60
HISTORY = [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Noted."},
           {"role": "user", "content": "Now say hello."}]


def _requests() -> list[tuple[str, dict]]:
    """(path, body) for every route, streamed and not."""
    out: list[tuple[str, dict]] = []
    for stream in (False, True):
        out.append(("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 500, "stream": stream,
                                     "messages": HISTORY}))
        out.append(("/v1/chat/completions", {"model": "kimi-k2.5", "stream": stream, "messages": HISTORY}))
        out.append(("/v1/responses", {"model": "kimi-k2.5", "stream": stream, "input": HISTORY}))
    return out


def _send(url: str, path: str, body: dict) -> None:
    headers = {"authorization": "Bearer client-key", "content-type": "application/json"}
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=30) as r:
        data = r.read()
    assert r.status_code == 200, data[:500]
    if body["stream"]:  # a whole stream, ended the way its dialect ends one
        assert b"message_stop" in data or b"[DONE]" in data or b"response.completed" in data, data[-500:]


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_tokens_match_what_the_upstream_reported(sim, proxies, fmt):
    proxy = proxies(fmt, "--log-format", "json", sim=sim, env=ENV_WITHOUT_PROXIES)
    requests = _requests()
    for path, body in requests:
        _send(proxy.url, path, body)

    turns = sim.turns()
    assert len(turns) == len(requests)
    reported = [t["usage"] for t in turns]
    assert all(u["cached_tokens"] > 0 for u in reported), reported  # the cached kind is exercised
    expected = {
        "input": sum(u["prompt_tokens"] for u in reported),
        "output": sum(u["completion_tokens"] for u in reported),
        "cached_input": sum(u["cached_tokens"] for u in reported),
    }
    # Streams are counted when the relay ends, a moment after the client read the end.
    model = 'rawproxy_tokens_total{model="kimi-k2.5",kind="%s"}'
    assert eventually(lambda: metric(proxy.url, model % "input") == expected["input"])
    for kind, total in expected.items():
        assert metric(proxy.url, model % kind) == total, kind
    # The simulator reports no reasoning tokens: none are made up.
    assert metric(proxy.url, model % "reasoning") == 0
    assert "kind=\"reasoning\"" not in httpx.get(proxy.url + "/metrics").text
    # Every sample is the upstream model's, after the map (Claude's name is not a label).
    assert metric(proxy.url, "rawproxy_tokens_total") == sum(expected.values())

    def access() -> list[dict]:
        return [json.loads(line) for line in proxy.process.output().splitlines()
                if line.startswith("{") and '"rawproxy.access"' in line]

    lines = eventually(lambda: len(access()) == len(requests) and access())
    assert lines, proxy.process.output()[-2000:]
    for line, usage, (path, body) in zip(lines, reported, requests):
        assert line["path"] == path and bool(line["stream"]) == body["stream"], line
        assert (line["tokens_input"], line["tokens_output"], line["tokens_cached_input"]) == \
            (usage["prompt_tokens"], usage["completion_tokens"], usage["cached_tokens"]), (path, body["stream"])
        assert line["tokens_reasoning"] is None


def test_requests_without_an_answer_count_no_tokens(sim, proxies):
    proxy = proxies("openai", "--log-format", "json", sim=sim, env=ENV_WITHOUT_PROXIES)
    sim.fault("status=500;times=10")
    r = httpx.post(proxy.url + "/v1/chat/completions", json={"model": "kimi-k2.5", "messages": HISTORY},
                   headers={"authorization": "Bearer k"})
    assert r.status_code == 500
    r = httpx.post(proxy.url + "/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert metric(proxy.url, "rawproxy_tokens_total") == 0
    lines = [json.loads(line) for line in proxy.process.output().splitlines()
             if line.startswith("{") and '"rawproxy.access"' in line]
    assert len(lines) == 2 and all(line["tokens_input"] is None and line["tokens_output"] is None for line in lines)
