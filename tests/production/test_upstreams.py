"""Several upstreams from a config file: routing by model, failover before the client's
first byte, the circuit breaker, reload on SIGHUP, and refusing a bad file.

Two simulators stand in for two upstreams, one per format: `door_a` is spoken to in the
Anthropic format, `door_b` in the OpenAI format, so a conversation that moves from one to
the other is translated as it goes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import anthropic
import httpx
import openai
import pytest

from ..conftest import ROOT, free_port, start_simulator
from ..integration.reasoning_checks import replayed_reasoning
from .support import ENV_WITHOUT_PROXIES, FaultySimulator, metric, start_raw_proxy

ACCESS_KEY = "upstreams-test-access-key"
AUTH = {"authorization": f"Bearer {ACCESS_KEY}"}
KEY_A = "sk-door-a-0123456789abcdef"
KEY_B = "sk-door-b-0123456789abcdef"
TOOLS = [{"name": "list_files", "description": "List files in a folder",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
         {"name": "read_file", "description": "Read a file",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]
OPENAI_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"]}} for t in TOOLS]


@pytest.fixture(scope="module")
def doors(tmp_path_factory):
    a = start_simulator(tmp_path_factory, FaultySimulator)
    b = start_simulator(tmp_path_factory, FaultySimulator)
    yield a, b
    a.process.stop()
    b.process.stop()


@pytest.fixture
def door_a(doors):
    doors[0].reset()
    yield doors[0]
    doors[0].reset()


@pytest.fixture
def door_b(doors):
    doors[1].reset()
    yield doors[1]
    doors[1].reset()


def config_text(a_base: str, b_base: str, *, a_models: str = '["*"]', b_models: str = '["*"]',
                extra: str = "") -> str:
    return f"""
retries = 0
read_timeout = 2
proxy_api_keys = ["{ACCESS_KEY}"]
{extra}

[[upstreams]]
name = "door-a"
base_url = "{a_base}"
key_env = "DOOR_A_KEY"
models = {a_models}

[[upstreams]]
name = "door-b"
base_url = "{b_base}"
format = "openai"
key_env = "DOOR_B_KEY"
models = {b_models}
"""


def start(tmp_path, text: str, name: str = "proxy") -> tuple[str, object]:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return start_raw_proxy(tmp_path, "--config", str(path), name=name,
                           env={"DOOR_A_KEY": KEY_A, "DOOR_B_KEY": KEY_B})


def answered(sim) -> list[dict]:
    return [r for r in sim.requests() if r["method"] == "POST"]


def health(url: str) -> dict:
    req = urllib.request.Request(url + "/health", headers={"authorization": f"Bearer {ACCESS_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def breaker_of(url: str, name: str) -> str:
    return next(u["breaker"] for u in health(url)["upstreams"] if u["name"] == name)


def test_each_model_goes_to_the_upstreams_that_serve_it(tmp_path, door_a, door_b):
    url, proc = start(tmp_path, config_text(door_a.base("anthropic"), door_b.base("openai"),
                                            a_models='["kimi-k2.5"]', b_models='["kimi-k2.6", "kimi-b=kimi-k2.7-code"]'))
    try:
        client = anthropic.Anthropic(base_url=url, api_key=ACCESS_KEY, max_retries=0)
        client.messages.create(model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
        client.messages.create(model="kimi-k2.6", max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
        answer = client.messages.create(model="kimi-b", max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
        assert answer.model == "kimi-b"  # the client hears its own name for the model

        # Each door in its own format, with a key (the simulator records keys redacted).
        assert [(r["dialect"], r["body"]["model"], "x-api-key" in r["headers"]) for r in answered(door_a)] == [
            ("anthropic", "kimi-k2.5", True)]
        assert [(r["dialect"], r["body"]["model"], "authorization" in r["headers"]) for r in answered(door_b)] == [
            ("openai", "kimi-k2.6", True), ("openai", "kimi-k2.7-code", True)]

        with pytest.raises(anthropic.NotFoundError, match="no configured upstream serves the model 'kimi-k3'"):
            client.messages.create(model="kimi-k3", max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
    finally:
        proc.stop()


def _tool_loop_anthropic(url: str, after_first_turn) -> int:
    """Claude-style loop (streamed, thinking dropped from the history); returns its turns."""
    client = anthropic.Anthropic(base_url=url, api_key=ACCESS_KEY, max_retries=0)
    messages: list[dict] = [{"role": "user", "content": "Look at the project and summarise it."}]
    for turn in range(1, 7):
        with client.messages.stream(model="claude-opus-5-5", max_tokens=16000, messages=messages, tools=TOOLS) as s:
            message = s.get_final_message()
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content
                                                          if b.type != "thinking"]})
        if message.stop_reason != "tool_use":
            return turn
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": b.id, "content": f"output-{b.name}"}
            for b in message.content if b.type == "tool_use"]})
        if turn == 1:
            after_first_turn()
    raise AssertionError("the loop never ended")


def _tool_loop_openai(url: str, after_first_turn) -> int:
    """An OpenAI-SDK loop that, like LangChain, sends no reasoning back."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    messages: list[dict] = [{"role": "user", "content": "Look at the project and summarise it."}]
    for turn in range(1, 7):
        choice = client.chat.completions.create(model="kimi-k2.5", messages=messages, tools=OPENAI_TOOLS).choices[0]
        calls = choice.message.tool_calls or []
        messages.append({"role": "assistant", "content": choice.message.content or "",
                         **({"tool_calls": [c.model_dump() for c in calls]} if calls else {})})
        if choice.finish_reason != "tool_calls":
            return turn
        messages += [{"role": "tool", "tool_call_id": c.id, "content": f"output-{c.function.name}"} for c in calls]
        if turn == 1:
            after_first_turn()
    raise AssertionError("the loop never ended")


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
@pytest.mark.parametrize("failure", ["refused", "status=429", "status=503", "slow-first-byte=4"])
def test_a_tool_loop_moves_to_the_second_upstream_with_its_real_reasoning(tmp_path, tmp_path_factory, door_b,
                                                                         failure, sdk):
    door_a = start_simulator(tmp_path_factory, FaultySimulator)  # its own: one case stops it
    url, proc = start(tmp_path, config_text(door_a.base("anthropic"), door_b.base("openai")))
    first_door_turns: list[dict] = []
    try:
        def first_door_fails() -> None:
            first_door_turns.extend(door_a.turns())  # a stopped simulator cannot say them
            if failure == "refused":
                door_a.process.stop()
            else:
                door_a.fault(failure)

        loop = _tool_loop_anthropic if sdk == "anthropic" else _tool_loop_openai
        turns = loop(url, first_door_fails)
        assert turns >= 3

        # The second door answered every turn after the first, and each one carried the
        # reasoning the model really gave, the first door's turn included.
        emitted = [t["reasoning"] for t in first_door_turns + door_b.turns() if t["tool_calls"]]
        second = [r for r in answered(door_b) if r["status"] == 200]
        assert len(second) == turns - 1
        for record in second:
            replayed = replayed_reasoning(record["body"], record["dialect"])
            assert replayed and replayed == emitted[: len(replayed)], (replayed, emitted)
        assert metric(url, 'rawproxy_upstream_failures_total{upstream="door-a"}', AUTH) >= 1
    finally:
        proc.stop()
        door_a.process.stop()


def test_no_failover_once_the_client_has_a_byte(tmp_path, door_a, door_b):
    url, proc = start(tmp_path, config_text(door_a.base("anthropic"), door_b.base("openai")))
    try:
        door_a.fault("reset-after=3")  # the first door breaks off its stream mid-way
        client = anthropic.Anthropic(base_url=url, api_key=ACCESS_KEY, max_retries=0)
        with pytest.raises(anthropic.APIError):
            with client.messages.stream(model="claude-opus-5-5", max_tokens=100,
                                        messages=[{"role": "user", "content": "Hi"}]) as s:
                s.get_final_message()
        assert len(answered(door_a)) == 1 and answered(door_b) == []  # not sent twice
    finally:
        proc.stop()


def test_the_breaker_skips_a_failing_upstream_and_readmits_it_once_it_recovers(tmp_path, door_a, door_b):
    url, proc = start(tmp_path, config_text(door_a.base("anthropic"), door_b.base("openai"),
                                            extra="breaker_failures = 2\nbreaker_cooldown = 2"))
    client = openai.OpenAI(base_url=url + "/v1", api_key=ACCESS_KEY, max_retries=0)

    def ask() -> None:
        answer = client.chat.completions.create(model="kimi-k2.5", messages=[{"role": "user", "content": "Hi"}])
        assert answer.choices[0].finish_reason == "stop"

    try:
        door_a.fault("status=503")
        for _ in range(5):
            ask()
        assert len(answered(door_a)) == 2, "after two failures in a row the first door is skipped"
        assert len(answered(door_b)) == 5
        assert breaker_of(url, "door-a") == "open" and breaker_of(url, "door-b") == "closed"
        assert metric(url, 'rawproxy_upstream_breaker_open{upstream="door-a"}', AUTH) == 1
        assert metric(url, 'rawproxy_upstream_requests_total{upstream="door-a",result="503"}', AUTH) == 2

        door_a.fault("")  # it recovers; after the cool-down one request probes it
        time.sleep(2.2)
        ask()
        ask()
        assert len(answered(door_a)) == 4 and len(answered(door_b)) == 5
        assert breaker_of(url, "door-a") == "closed"
        assert metric(url, 'rawproxy_upstream_breaker_open{upstream="door-a"}', AUTH) == 0
    finally:
        proc.stop()


def test_sighup_reloads_the_file_under_load_without_a_failed_request(tmp_path, door_a, door_b):
    only_a = config_text(door_a.base("anthropic"), door_b.base("openai"), b_models='["nothing-*"]')
    only_b = config_text(door_a.base("anthropic"), door_b.base("openai"), a_models='["nothing-*"]')
    url, proc = start(tmp_path, only_a)
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=20) as http:
            while not stop.is_set():
                r = http.post(url + "/v1/chat/completions", headers=AUTH,
                              json={"model": "kimi-k2.5", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
                statuses.append(r.status_code if r.text.rstrip().endswith("data: [DONE]") else -r.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        (tmp_path / "proxy.toml").write_text(only_b)
        proc.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        (tmp_path / "proxy.toml").write_text(only_b + "\nunknown_setting = 1\n")  # a bad file: refused
        proc.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        on_b = len(answered(door_b))
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
        assert statuses and set(statuses) == {200}, statuses
        assert answered(door_a) and len(answered(door_b)) > on_b > 0  # the new file holds, the bad one is refused
        log = proc.output()
        assert "configuration reloaded: upstreams door-a" in log
        assert "configuration not reloaded" in log and "unknown_setting" in log
    finally:
        stop.set()
        proc.stop()


BAD_FILES = [
    ("prot = 8000\n", "prot", "a known setting"),
    ('port = "8000"\n', "port", "a whole number from 0 to 65535"),
    ("read_timeout = -1\n", "read_timeout", "a number of seconds above 0"),
    ('upstream = "ftp://example.com"\n', "upstream", "an http:// or https:// URL"),
    ('[[upstreams]]\nname = "x"\nbase_url = "moonshot.ai"\n', "upstreams[0].base_url", "an http:// or https:// URL"),
    ('[[upstreams]]\nname = "x"\nbase_url = "https://api.moonshot.ai/v1"\nkey = "k"\n', "upstreams[0].key",
     "a known upstream setting"),
    ('[[upstreams]]\nbase_url = "https://api.moonshot.ai/v1"\n', "upstreams[0].name", "a string"),
    ('[[upstreams]]\nname = "x"\nbase_url = "https://api.moonshot.ai/v1"\nformat = "gemini"\n',
     "upstreams[0].format", '"anthropic" or "openai"'),
    ('[[upstreams]]\nname = "x"\nbase_url = "https://api.moonshot.ai/v1"\nkey_env = "NOT_SET_ANYWHERE"\n',
     "upstreams[0].key_env", "NOT_SET_ANYWHERE"),
    ('[[upstreams]]\nname = "x"\nbase_url = "https://api.moonshot.ai/v1"\nconnections = 0\n',
     "upstreams[0].connections", "a whole number above 0"),
    ('[[upstreams]]\nname = "x"\nbase_url = "https://a.example/v1"\n[[upstreams]]\nname = "x"\n'
     'base_url = "https://b.example/v1"\n', "upstreams", "a different name"),
    ('api_key = 12345678\n', "api_key", "a string, got a number"),
]


@pytest.mark.parametrize(("text", "key", "expected"), BAD_FILES, ids=[b[1] for b in BAD_FILES])
@pytest.mark.parametrize("command", [[], ["check-config"]], ids=["start", "check-config"])
def test_a_bad_config_file_is_refused_naming_the_file_and_the_key(tmp_path, text, key, expected, command):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "rawproxy", *command, "--config", str(path),
                           "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=20, env={**_clean_env()})
    assert done.returncode == 2, done.stderr
    assert f"config file {path}: {key}: expected" in done.stderr and expected in done.stderr, done.stderr
    assert "12345678" not in done.stderr  # a secret's value is never repeated


def test_check_config_prints_the_resolved_settings_with_secrets_masked(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text('port = 9100\nmodel_map = { "claude-*" = "kimi-k2.5" }\nsecret = "a-sealing-secret-of-length"\n'
                    '[[upstreams]]\nname = "moonshot"\nbase_url = "https://api.moonshot.ai/v1"\nkey_env = "DOOR_A_KEY"\n'
                    'models = ["kimi-*", "claude-*=kimi-k2.5"]\n')
    env = {**_clean_env(), "DOOR_A_KEY": KEY_A, "PROXY_PORT": "9200"}
    done = subprocess.run([sys.executable, "-m", "rawproxy", "check-config", "--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=20, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "port = 9200" in out  # the environment beats the file
    assert "name = 'moonshot'" in out and "format = 'openai'" in out and "api_key = ***" in out
    assert "models = kimi-*,claude-*=kimi-k2.5" in out
    assert KEY_A not in out and "a-sealing-secret-of-length" not in out


def _clean_env() -> dict[str, str]:
    import os

    return {**os.environ, **ENV_WITHOUT_PROXIES, "MOONSHOT_BASE_URL": "", "ZENMUX_API_KEY": "", "RAWPROXY_CONFIG": ""}
