"""The reasoning store under a shared service: tenants, a locked SQLite file, a store that
cannot be opened or that fails while serving.

Conversations are real SDK calls (openai, anthropic) through the proxy to the Kimi
simulator, which records what it received: the tests read there which reasoning reached
the upstream for each replayed tool-call turn.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import anthropic
import openai
import pytest
import trio

from rawproxy.core.reasoning import Reasoning
from rawproxy.store import MemoryReasoningStore
from rawproxy.store.keeper import ReasoningKeeper

from ..conftest import ROOT, UPSTREAM_KEY, free_port
from ..integration.reasoning_checks import replayed_reasoning
from ..integration.test_sdk_tool_loops import TOOLS_ANTHROPIC, TOOLS_OPENAI, openai_turn, tool_output
from .support import ENV_WITHOUT_PROXIES, eventually, fsim, metric, proxies, sim, start_raw_proxy

_ = (fsim, sim, proxies)  # fixtures

KEY_A = "tenant-a-access-key-7f3e9c1d5b"
KEY_B = "tenant-b-access-key-52ab0e44c9"
PROMPT = "Look at the project and summarise it."


# ---------------------------------------------------------------- conversation helpers


def openai_tool_turn(url: str, key: str, stream: bool = False) -> list[dict]:
    """A first turn that calls tools; the history a client sends next, reasoning dropped."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)
    messages: list[dict] = [{"role": "user", "content": PROMPT}]
    content, calls = openai_turn(client, stream, model="kimi-k2.5", messages=messages, tools=TOOLS_OPENAI)
    assert calls and all(c["id"].startswith("call_") for c in calls)
    messages.append({"role": "assistant", "content": content, "tool_calls": calls})
    for c in calls:
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": tool_output(c["function"]["name"], 0)})
    return messages


def openai_replay(url: str, key: str, messages: list[dict], stream: bool = False) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)
    openai_turn(client, stream, model="kimi-k2.5", messages=messages, tools=TOOLS_OPENAI)


def last_replayed(sim) -> list[str | None]:
    """The reasoning each assistant tool-call turn of the simulator's last request carried."""
    record = sim.requests()[-1]
    assert record["status"] == 200, record
    return replayed_reasoning(record["body"], record["dialect"])


def fallback(history: list[dict]) -> list[str]:
    """What the repair sends for the replayed turn when nothing is recalled: its own text, else " "."""
    content = history[1]["content"]
    if isinstance(content, list):
        content = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    return [content or " "]


def emitted_reasoning(sim) -> list[str]:
    return [t["reasoning"] for t in sim.turns() if t["tool_calls"]]


def assert_no_key_in(text: str | bytes) -> None:
    raw = text.encode() if isinstance(text, str) else text
    for key in (KEY_A, KEY_B):
        assert key.encode() not in raw


# ---------------------------------------------------------------- 3: tenants


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_another_tenant_replaying_a_tool_call_id_gets_none_of_its_reasoning(sim, proxies, tmp_path, store):
    path = str(tmp_path / "reasoning.sqlite3")
    flags = ("--store", f"sqlite:{path}") if store == "sqlite" else ()
    proxy = proxies("openai", *flags, sim=sim, env={"PROXY_API_KEYS": f"{KEY_A},{KEY_B}"})

    history = openai_tool_turn(proxy.url, KEY_A)
    [a_reasoning] = emitted_reasoning(sim)

    openai_replay(proxy.url, KEY_B, history)  # B presents A's tool-call ids
    b_sent = sim.requests()[-1]
    assert last_replayed(sim) == fallback(history), "B's request must carry the fallback, not A's reasoning"
    assert a_reasoning not in json.dumps(b_sent["body"])

    openai_replay(proxy.url, KEY_A, history)
    assert last_replayed(sim) == [a_reasoning], "A's own replay still gets A's reasoning"

    assert_no_key_in(proxy.process.output())
    if store == "sqlite":
        for name in os.listdir(tmp_path):
            if name.startswith("reasoning.sqlite3"):
                with open(tmp_path / name, "rb") as f:
                    assert_no_key_in(f.read())


def test_tenants_on_an_anthropic_upstream_stream_and_count_tokens(sim, proxies):
    proxy = proxies("anthropic", sim=sim, env={"PROXY_API_KEYS": f"{KEY_A},{KEY_B}"})
    a = anthropic.Anthropic(base_url=proxy.url, api_key=KEY_A, max_retries=0, timeout=30)
    b = anthropic.Anthropic(base_url=proxy.url, api_key=KEY_B, max_retries=0, timeout=30)
    messages: list[dict] = [{"role": "user", "content": PROMPT}]
    with a.messages.stream(model="claude-opus-5-5", max_tokens=4000, messages=messages, tools=TOOLS_ANTHROPIC) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    blocks = [blk.model_dump(exclude_none=True) for blk in first.content if blk.type != "thinking"]
    messages.append({"role": "assistant", "content": blocks})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": blk["id"], "content": "ok"}
                                                 for blk in blocks if blk["type"] == "tool_use"]})
    [a_reasoning] = emitted_reasoning(sim)

    count = dict(model="claude-opus-5-5", messages=messages, tools=TOOLS_ANTHROPIC)
    a_tokens = a.messages.count_tokens(**count).input_tokens
    b_tokens = b.messages.count_tokens(**count).input_tokens
    assert b_tokens < a_tokens, "B's count must not include A's reasoning"

    with b.messages.stream(model="claude-opus-5-5", max_tokens=4000, messages=messages, tools=TOOLS_ANTHROPIC) as s:
        s.get_final_message()
    b_sent = json.dumps(sim.requests()[-1]["body"])
    assert last_replayed(sim) == fallback(messages) and a_reasoning not in b_sent
    with a.messages.stream(model="claude-opus-5-5", max_tokens=4000, messages=messages, tools=TOOLS_ANTHROPIC) as s:
        s.get_final_message()
    assert last_replayed(sim) == [a_reasoning]


def test_forwarded_client_keys_are_tenants_and_one_upstream_key_is_one_tenant(sim, proxies, tmp_path):
    # No access keys, no upstream key: each client's own key goes upstream and names its tenant.
    url, proc = start_raw_proxy(tmp_path, "--upstream", sim.base("openai"), "--upstream-format", "openai")
    try:
        history = openai_tool_turn(url, KEY_A, stream=True)
        [a_reasoning] = emitted_reasoning(sim)
        openai_replay(url, KEY_B, history, stream=True)
        assert last_replayed(sim) == fallback(history)
        openai_replay(url, KEY_A, history, stream=True)
        assert last_replayed(sim) == [a_reasoning]
    finally:
        proc.stop()

    # The proxy's own upstream key and no access keys: every client is the same tenant.
    sim.reset()
    proxy = proxies("openai", sim=sim)
    history = openai_tool_turn(proxy.url, "anyone")
    [a_reasoning] = emitted_reasoning(sim)
    openai_replay(proxy.url, "someone-else", history)
    assert last_replayed(sim) == [a_reasoning]


# ---------------------------------------------------------------- 15: a locked SQLite file


def test_a_write_locked_sqlite_store_never_stalls_a_stream(sim, proxies, tmp_path):
    path = str(tmp_path / "reasoning.sqlite3")
    proxy = proxies("openai", "--store", f"sqlite:{path}", sim=sim)
    before = openai_tool_turn(proxy.url, KEY_A)  # remembered before the lock

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        took: list[float] = []
        histories: list[list[dict]] = []
        failures: list[BaseException] = []

        def one_turn() -> None:
            started = time.monotonic()
            try:
                histories.append(openai_tool_turn(proxy.url, KEY_A, stream=True))
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)
            took.append(time.monotonic() - started)

        threads = [threading.Thread(target=one_turn) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        assert len(took) == 3 and max(took) < 2.0, f"turns took {sorted(took)} s"

        # A recall while the lock is held: WAL readers are not blocked by a writer.
        started = time.monotonic()
        openai_replay(proxy.url, KEY_A, before, stream=True)
        assert time.monotonic() - started < 2.0
        assert last_replayed(sim) == [emitted_reasoning(sim)[0]]
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    # Once the lock is gone the queued writes land: the three turns are replayable.
    turns = {h[1]["tool_calls"][0]["id"].split("_")[1] for h in histories}

    def all_kept() -> bool:
        with contextlib.closing(sqlite3.connect(path)) as db:
            kept = {key.split(":")[1] for (key,) in db.execute("SELECT key FROM reasoning")}
        return turns <= kept

    assert eventually(all_kept, timeout=10), proxy.process.output()
    for history in histories:
        openai_replay(proxy.url, KEY_A, history)
        [replayed] = last_replayed(sim)
        assert replayed in emitted_reasoning(sim) and [replayed] != fallback(history)


async def test_writes_past_the_queue_bound_are_dropped_and_slow_recalls_fall_back():
    class SlowStore(MemoryReasoningStore):
        def __init__(self) -> None:
            super().__init__(1 << 20, 3600)
            self.release = trio.Event()
            self.written: list[str] = []

        async def put(self, key: str, value: Reasoning) -> None:
            await self.release.wait()
            self.written.append(key)
            await super().put(key, value)

        async def get_many(self, keys):
            await self.release.wait()
            return await super().get_many(keys)

    store = SlowStore()
    keeper = ReasoningKeeper(store, queue_entries=2, recall_timeout=0.3)
    view = keeper.scoped("tenant")
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        started = trio.current_time()
        for i in range(5):
            await view.put(f"turn{i}", Reasoning(f"thought {i}"))
        assert trio.current_time() - started < 0.1, "remembering never waits for the store"
        # Two entries wait for the store (the bound): the other three are dropped.
        assert keeper.dropped == 3
        # Waiting entries are recalled from the queue at once; the rest waits 0.3 s at most.
        started = trio.current_time()
        found = await view.get_many(["turn0", "turn1", "turn4"])
        assert found == {"turn0": Reasoning("thought 0"), "turn1": Reasoning("thought 1")}
        assert keeper.recall_timeouts == 1
        assert trio.current_time() - started < 0.5
        store.release.set()
        await keeper.aclose()
    assert store.written == ["tenant:turn0", "tenant:turn1"], "the queue is written out at close"


# ---------------------------------------------------------------- 16: an unusable store


def _corrupt(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"this is not a database, just bytes " * 200)


def _run_proxy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rawproxy", "--port", str(free_port()), "--upstream",
                           "http://127.0.0.1:9/v1", "--api-key", UPSTREAM_KEY, *args],
                          cwd=ROOT, env={**os.environ, **ENV_WITHOUT_PROXIES}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_store_that_cannot_be_opened_stops_start_up_with_one_line_and_exit_2(tmp_path, workers):
    path = str(tmp_path / "reasoning.sqlite3")
    _corrupt(path)
    started = time.monotonic()
    done = _run_proxy("--workers", workers, "--store", f"sqlite:{path}")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert time.monotonic() - started < 15
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "cannot open the reasoning store" in line]
    assert len(errors) == 1 and path in errors[0] and "not a database" in errors[0], out
    assert "worker 0 started" not in out  # the supervisor checked before starting any


def test_a_store_that_fails_while_serving_costs_the_reasoning_not_the_requests(sim, proxies, tmp_path):
    path = str(tmp_path / "reasoning.sqlite3")
    proxy = proxies("openai", "--store", f"sqlite:{path}", sim=sim)
    history = openai_tool_turn(proxy.url, KEY_A)
    with contextlib.closing(sqlite3.connect(path)) as db:  # the table vanishes under the running proxy
        db.execute("DROP TABLE reasoning")

    for stream in (False, True, False, True):
        openai_replay(proxy.url, KEY_A, history, stream=stream)  # recall fails: the fallback goes up
        assert last_replayed(sim) == fallback(history)
        openai_tool_turn(proxy.url, KEY_A, stream=stream)  # remembering fails
    assert eventually(lambda: metric(proxy.url, "rawproxy_reasoning_store_errors_total") >= 8)
    log = proxy.process.output()
    assert log.count("reasoning store unavailable") == 1, log
    assert "Traceback" not in log
