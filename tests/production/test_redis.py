"""The Redis store, against a real redis-server (and a real 3-node Redis Cluster).

Replicas are separate proxy processes on one Redis behind a round-robin balancer, and
every client opens a new connection per request, so consecutive turns of one
conversation land on different replicas: a turn one replica answered is restored by
another. The conversations are the anthropic SDK's, the openai SDK's and LangChain's
own tool loops with the model's reasoning dropped from every replayed turn;
`assert_real_reasoning_replayed` proves the simulator received the reasoning it produced
for each of them, not the repair's fallback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import anthropic
import httpx
import openai
import pytest

from ..conftest import ROOT, UPSTREAM_KEY, Process, free_port, start_proxy, wait_http
from ..integration.reasoning_checks import assert_real_reasoning_replayed, replayed_reasoning
from ..integration.test_sdk_tool_loops import TOOLS_OPENAI, anthropic_loop, langchain_loop, openai_loop, openai_turn
from .redis_support import RedisCluster, RedisServer, Replicas, fresh_connections, fresh_connections_anthropic
from .support import ENV_WITHOUT_PROXIES, eventually, fsim, metric, sim

LOOPS = ["anthropic-create", "anthropic-stream", "openai-create", "openai-stream", "langchain-invoke",
         "langchain-stream"]
FORMATS = pytest.mark.parametrize("fmt", ["anthropic", "openai"], ids=["up-anthropic", "up-openai"])
OUTAGE_WARNING = "reasoning store unavailable"


def run_loop(kind: str, url: str, sim) -> int:
    """One client's tool loop through `url`, a new connection per request; returns how many
    replayed turns carried their real reasoning (it fails on any that did not)."""
    sim.reset()
    stream = kind.endswith("stream")
    if kind.startswith("anthropic"):
        with fresh_connections_anthropic() as ahttp:
            client = anthropic.Anthropic(base_url=url, api_key="client-key", max_retries=0, http_client=ahttp)
            _, _, outputs = anthropic_loop(client, stream=stream, keep_thinking=False)
        assert len(outputs) >= 3, kind
        return assert_real_reasoning_replayed(sim)
    with fresh_connections() as http:
        if kind.startswith("openai"):
            oclient = openai.OpenAI(base_url=url + "/v1", api_key="client-key", max_retries=0, http_client=http)
            _, _, outputs = openai_loop(oclient, stream=stream)
        else:
            _, _, outputs = langchain_loop(url + "/v1", stream, http_client=http)
    assert len(outputs) >= 3, kind
    return assert_real_reasoning_replayed(sim)


class Conversation:
    """An openai SDK tool loop taken one turn at a time (the reasoning dropped, as most
    apps do), so a test can act between two turns."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.client = openai.OpenAI(base_url=url + "/v1", api_key="client-key", max_retries=0, http_client=http)
        self.messages: list[dict] = [{"role": "user", "content": "Look at the project and summarise it."}]

    def turn(self) -> bool:
        """One request; True when the model called tools (their results are appended)."""
        content, calls = openai_turn(self.client, False, model="kimi-k2.5", messages=self.messages, tools=TOOLS_OPENAI)
        self.messages.append({"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})})
        for c in calls:
            self.messages.append({"role": "tool", "tool_call_id": c["id"], "content": f"output-{len(self.messages)}"})
        return bool(calls)

    def replay(self) -> float:
        """Sends the same history again (the tool-call turns replayed); returns the seconds it took."""
        started = time.monotonic()
        self.client.chat.completions.create(model="kimi-k2.5", messages=self.messages, tools=TOOLS_OPENAI)
        return time.monotonic() - started


def last_replay(sim) -> tuple[list[str | None], list[str]]:
    """(the reasoning each tool-call turn carried in the simulator's last request, the
    reasoning the simulator produced for those turns)."""
    record = sim.requests()[-1]
    replayed = replayed_reasoning(record["body"], record["dialect"])
    emitted = [t["reasoning"] for t in sim.turns() if t["tool_calls"]]
    return replayed, emitted[:len(replayed)]


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=5).json()


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(str(tmp_path / "redis")).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path):
    nodes = RedisCluster(str(tmp_path / "cluster"))
    try:
        yield nodes.start()
    finally:
        nodes.stop()


@pytest.fixture
def replicas(sim, tmp_path):
    """make(fmt, store, *flags) -> three replicas behind a round-robin balancer; all stopped afterwards."""
    made: list[Replicas] = []

    def make(fmt: str, store: str, *extra: str, count: int = 3) -> Replicas:
        group = Replicas(sim, fmt, store, str(tmp_path), extra)
        made.append(group)
        return group.start(count)

    yield make
    for group in made:
        group.close()


@pytest.fixture
def single(sim, tmp_path):
    """start(store, *flags) -> one proxy (OpenAI-format upstream), stopped afterwards."""
    started = []

    def start(store: str, *extra: str):
        p = start_proxy(sim, "openai", str(tmp_path / f"proxy-{len(started)}.log"), "--store", store, *extra,
                        env=ENV_WITHOUT_PROXIES)
        started.append(p)
        return p

    yield start
    for p in started:
        p.process.stop()


# --------------------------------------------------------------------------- replicas


@FORMATS
def test_three_replicas_on_one_redis_restore_every_turn_then_one_is_killed(fmt, sim, redis, replicas):
    group = replicas(fmt, redis.url)
    for kind in LOOPS:
        assert run_loop(kind, group.url, sim) >= 3, kind
    served = dict(group.balancer.served)
    assert all(served[p.url] >= 5 for p in group.proxies), served  # every replica answered turns
    keys = redis.keys()
    assert keys and all(k.startswith("rawproxy:") for k in keys), keys

    victim = group.proxies[0]
    victim.process.proc.kill()
    victim.process.proc.wait()
    for kind in LOOPS:
        assert run_loop(kind, group.url, sim) >= 3, kind
    after = group.balancer.served
    assert after[victim.url] == served[victim.url]
    assert all(after[p.url] >= served[p.url] + 5 for p in group.proxies[1:]), after


@FORMATS
def test_a_conversation_keeps_its_reasoning_across_a_restart_of_every_replica(fmt, sim, redis, replicas):
    group = replicas(fmt, redis.url)
    sim.reset()
    with fresh_connections() as http:
        talk = Conversation(group.url, http)
        assert talk.turn(), "the first turn calls tools"
        old = {p.process.proc.pid for p in group.proxies}
        group.stop_all()  # SIGTERM: each drains and writes what it has queued
        group.start(3)
        assert old.isdisjoint(p.process.proc.pid for p in group.proxies)
        turns = 1
        while talk.turn():
            turns += 1
            assert turns < 8, "tool loop did not finish"
    assert assert_real_reasoning_replayed(sim) >= 3


@FORMATS
def test_tool_loops_on_a_three_node_redis_cluster(fmt, sim, cluster, replicas):
    group = replicas(fmt, cluster.url)
    for kind in LOOPS:
        assert run_loop(kind, group.url, sim) >= 3, kind
    holding = [n.port for n in cluster.nodes if int(n.cli("dbsize").strip()) > 0]
    assert len(holding) >= 2, "the turns spread over the cluster's nodes"


def test_busy_replicas_remember_every_turn_in_time_for_the_next_one(sim, redis, replicas):
    """Many agents at once over three replicas: the turns queued while a write is in
    flight go to Redis together, so every turn is there before its conversation's next
    request reaches another replica; none is dropped or missed."""
    group = replicas("openai", redis.url)
    sessions, errors = 24, []

    def agent() -> None:
        try:
            with fresh_connections() as http:
                talk = Conversation(group.url, http)
                while talk.turn():
                    pass
        except Exception as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=agent) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads), errors

    def total(name: str) -> float:
        return sum(metric(p.url, name) for p in group.proxies)

    assert total("rawproxy_reasoning_hits_total") >= sessions * 2, [total(n) for n in ("rawproxy_reasoning_hits_total", "rawproxy_reasoning_misses_total")]  # each conversation replays its turns
    assert total("rawproxy_reasoning_misses_total") == 0
    assert total("rawproxy_reasoning_dropped_total") == 0


def test_a_redis_on_a_unix_socket(sim, tmp_path, single):
    folder = tmp_path / "redis-unix"
    path = str(folder / "redis.sock")
    server = RedisServer(str(folder), "--unixsocket", path, "--unixsocketperm", "700", "--databases", "4").start()
    try:
        proxy = single(f"unix://{path}?db=3")
        assert run_loop("openai-stream", proxy.url, sim) >= 3
        assert server.cli("-n", "3", "dbsize").strip() != "0" and server.cli("-n", "0", "dbsize").strip() == "0"
    finally:
        server.stop()


# --------------------------------------------------------------------------- failures


def test_redis_outage_costs_only_the_reasoning_and_heals_without_a_restart(sim, redis, single):
    proxy = single(redis.url)
    pid = proxy.process.proc.pid
    assert health(proxy.url)["store"] == {"kind": "redis", "state": "ok"}

    redis.stop()
    sim.reset()
    with fresh_connections() as http:
        talk = Conversation(proxy.url, http)
        assert talk.turn()
        seconds = [talk.replay() for _ in range(4)]
    replayed, emitted = last_replay(sim)
    assert replayed[0] and replayed[0] != emitted[0], "without Redis the turn gets the fallback"
    assert max(seconds) < 1.5, seconds  # a store that is down answers at once: no request waits for it
    assert metric(proxy.url, "rawproxy_reasoning_store_errors_total") >= 4
    assert metric(proxy.url, "rawproxy_reasoning_misses_total") >= 4
    assert metric(proxy.url, "rawproxy_reasoning_store_up") == 0
    doc = health(proxy.url)
    assert doc["status"] == "ok" and doc["store"] == {"kind": "redis", "state": "down"}
    assert proxy.process.output().count(OUTAGE_WARNING) == 1, proxy.process.output()

    redis.start()  # same port, empty: nothing remembered survived, new turns are kept again
    assert eventually(lambda: health(proxy.url)["store"]["state"] == "ok", timeout=10)
    for kind in ("openai-create", "openai-stream"):
        assert run_loop(kind, proxy.url, sim) >= 3
    assert proxy.process.proc.pid == pid and proxy.process.proc.poll() is None
    assert metric(proxy.url, "rawproxy_reasoning_store_up") == 1
    log = proxy.process.output()
    assert log.count(OUTAGE_WARNING) == 1 and log.count("recovered") == 1, log


def test_a_stalled_redis_holds_no_request_and_is_used_again_once_it_answers(sim, redis, single):
    proxy = single(redis.url)
    sim.reset()
    with fresh_connections() as http:
        talk = Conversation(proxy.url, http)
        assert talk.turn()
        assert eventually(redis.keys)  # written (a turn still queued would be recalled from the queue)
        redis.pause()  # SIGSTOP: connections open, nothing answers
        try:
            first = talk.replay()
            later = [talk.replay() for _ in range(4)]
        finally:
            redis.resume()
    # The first recall waits out the store's command timeout (0.3 s); after it the store
    # is down and fails at once, so no later request pays for it.
    assert first < 1.5, first
    assert sorted(later)[len(later) // 2] < 0.25, later
    replayed, emitted = last_replay(sim)
    assert replayed[0] != emitted[0]
    assert eventually(lambda: health(proxy.url)["store"]["state"] == "ok", timeout=10)
    assert run_loop("openai-create", proxy.url, sim) >= 3


def test_remembered_turns_expire_after_the_store_ttl(sim, redis, single):
    # Access keys: the tenant is a digest of the key the client presents.
    proxy = single(redis.url, "--store-ttl", "1.5", "--proxy-api-keys", "client-key")
    sim.reset()
    with fresh_connections() as http:
        talk = Conversation(proxy.url, http)
        assert talk.turn()
        keys = eventually(redis.keys)
        assert len(keys) == 1
        key = keys[0]
        # rawproxy:<tenant digest>:<turn key>, never the key itself; the value is the turn's reasoning, small.
        prefix, tenant, turn = key.split(":")
        assert prefix == "rawproxy" and len(tenant) == 32 and turn
        assert "client-key" not in key and UPSTREAM_KEY not in key
        assert 0 < int(redis.cli("pttl", key)) <= 1500
        value = json.loads(redis.cli("get", key))
        emitted = [t["reasoning"] for t in sim.turns() if t["tool_calls"]]
        assert value[0] == emitted[0] and len(redis.cli("get", key)) < 4096
        talk.replay()
        replayed, emitted = last_replay(sim)
        assert replayed == emitted  # before the TTL: the real reasoning

        time.sleep(1.6)
        assert redis.keys() == []
        talk.replay()
    replayed, emitted = last_replay(sim)
    assert replayed[0] and replayed[0] != emitted[0], "after the TTL the turn gets the fallback"
    assert metric(proxy.url, "rawproxy_reasoning_misses_total", {"authorization": "Bearer client-key"}) >= 1


# --------------------------------------------------------------------------- settings


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(entry))
    return children


def test_the_redis_password_never_shows_in_logs_health_metrics_or_command_lines(sim, tmp_path, single):
    password = "s3cret-Redis-pass"
    server = RedisServer(str(tmp_path / "redis"), password=password).start()
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = Process([sys.executable, "-m", "rawproxy", "--port", str(port), "--upstream", sim.base("openai"),
                        "--upstream-format", "openai", "--api-key", UPSTREAM_KEY, "--workers", "2"],
                       str(tmp_path / "workers.log"), env={**ENV_WITHOUT_PROXIES, "PROXY_STORE": server.url})
        try:
            wait_http(url + "/health", proc.proc)
            for kind in ("openai-create", "langchain-invoke"):
                assert run_loop(kind, url, sim) >= 3  # the password was accepted
            seen = [httpx.get(url + "/health").text for _ in range(6)] + [httpx.get(url + "/metrics").text]
            assert json.loads(seen[0])["store"] == {"kind": "redis", "state": "ok"}
            workers = _descendants(proc.proc.pid)
            assert len(workers) == 2
            for pid in [proc.proc.pid, *workers]:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    assert password.encode() not in f.read()
        finally:
            proc.stop()
        with open(proc.log_path) as f:
            log = f.read()
        assert "reasoning store redis://127.0.0.1:" in log  # the supervisor names it, without the password
        assert all(password not in text for text in [log, *seen])

        wrong = server.url.replace(password, "wrong-Redis-pass")
        proxy = single(wrong)
        sim.reset()
        with fresh_connections() as http:
            talk = Conversation(proxy.url, http)
            assert talk.turn()
            talk.replay()  # the request succeeds, with the fallback
        assert health(proxy.url)["store"]["state"] == "down"
        log = proxy.process.output()
        assert log.count(OUTAGE_WARNING) == 1 and "wrong-Redis-pass" not in log, log
    finally:
        server.stop()


def _start_up(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rawproxy", "--port", str(free_port()), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **ENV_WITHOUT_PROXIES,
                                                                           **(env or {})})


def test_a_malformed_redis_url_or_a_missing_extra_stops_start_up_with_exit_code_2(tmp_path):
    bad = _start_up(tmp_path, "--store", "redis://:hunter2@127.0.0.1:notaport/0")
    assert bad.returncode == 2, bad
    assert "port 'notaport' is not a port number" in bad.stderr and "hunter2" not in bad.stdout + bad.stderr

    cluster_db = _start_up(tmp_path, "--store", "redis+cluster://127.0.0.1:7000/3")
    assert cluster_db.returncode == 2 and "only database 0" in cluster_db.stderr

    # Without the `redis` extra: a coredis that cannot be imported shadows the installed one.
    stub = tmp_path / "without-redis-extra" / "coredis"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'coredis\'")\n')
    env = {"PYTHONPATH": str(stub.parent)}
    for extra in ([], ["--workers", "2"]):
        missing = _start_up(tmp_path, "--store", "redis://:hunter2@127.0.0.1:6399/0", *extra, env=env)
        output = missing.stdout + missing.stderr
        assert missing.returncode == 2, output
        assert "pip install 'rawproxy[redis]'" in output and "hunter2" not in output, output
