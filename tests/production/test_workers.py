"""--workers: processes on one port sharing the SQLite store, under the supervisor.

The conversations are the openai SDK's own tool loop (dropping the model's reasoning from
every reply, as most apps do) against the Kimi simulator, which records what it was sent:
`assert_real_reasoning_replayed` then proves each replayed tool-call turn carried the
reasoning the simulator produced for it, even when the turn that produced it was served
by another worker or by a proxy that has since been killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import openai
import pytest

from ..conftest import ROOT, UPSTREAM_KEY, free_port, wait_http
from ..integration.reasoning_checks import assert_real_reasoning_replayed
from ..integration.test_sdk_tool_loops import MAX_TURNS, TOOLS_OPENAI, openai_turn, tool_output

WORKER = "x-rawproxy-worker"


class Workers:
    """`python -m rawproxy --workers N` in a session of its own, so the test can kill it whole."""

    def __init__(self, simulator, store: str, log_path: str, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        self._log = open(log_path, "w")
        args = [sys.executable, "-m", "rawproxy", "--port", str(self.port), "--upstream", simulator.base("openai"),
                "--upstream-format", "openai", "--api-key", UPSTREAM_KEY, "--workers", str(workers),
                "--store", f"sqlite:{store}"]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_http(self.url + "/health", self.proc)
        self.wait_all_serving()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def worker_of_new_connection(self) -> int:
        with httpx.Client() as c:
            r = c.get(self.url + "/health")
            assert r.status_code == 200
            return int(r.headers[WORKER])

    def wait_all_serving(self, timeout: float = 20.0) -> None:
        """New connections until every worker has answered (the kernel spreads them by hash)."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while seen != set(range(self.workers)):
            assert time.monotonic() < deadline, f"only workers {seen} answered:\n{self.output()}"
            try:
                seen.add(self.worker_of_new_connection())
            except httpx.TransportError:
                time.sleep(0.05)

    def client_on(self, worker: int, served: list[tuple[str, int]]) -> httpx.Client:
        """A client whose one pooled connection was accepted by `worker`; records who served what."""
        def record(response: httpx.Response) -> None:
            served.append((response.request.url.path, int(response.headers[WORKER])))

        for _ in range(200):
            c = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=1))
            if int(c.get(self.url + "/health").headers[WORKER]) == worker:
                c.event_hooks["response"] = [record]
                return c
            c.close()
        raise AssertionError(f"no connection reached worker {worker}")

    def pids(self) -> list[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [int(p) for p in f.read().split()]

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every worker at once: nothing gets to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def workers(simulator, tmp_path_factory):
    d = tmp_path_factory.mktemp("workers")
    w = Workers(simulator, str(d / "reasoning.sqlite3"), str(d / "proxy.log"))
    yield w
    w.stop()


def conversation_turn(proxy: Workers, worker: int, messages: list, outputs: list, served: list, stream: bool) -> bool:
    """One turn of the openai SDK's tool loop on a fresh connection to `worker`; False when done."""
    http = proxy.client_on(worker, served)
    try:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="client-key", max_retries=0, http_client=http)
        content, calls = openai_turn(client, stream, model="kimi-k2.5", messages=messages, tools=TOOLS_OPENAI)
    finally:
        http.close()
    assistant = {"role": "assistant", "content": content}  # the model's reasoning dropped
    if calls:
        assistant["tool_calls"] = calls
    messages.append(assistant)
    for c in calls:
        outputs.append(tool_output(c["function"]["name"], len(outputs)))
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": outputs[-1]})
    return bool(calls)


def new_conversation() -> list[dict]:
    return [{"role": "user", "content": "Look at the project and summarise it."}]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_turns_on_different_workers_get_their_real_reasoning(workers, sim, stream):
    messages, outputs, served = new_conversation(), [], []
    for turn in range(MAX_TURNS):
        if not conversation_turn(workers, turn % 2, messages, outputs, served, stream):
            break
    completions = [w for path, w in served if path.endswith("/chat/completions")]
    assert completions == [0, 1, 0], "each turn on the other worker than the one before"
    assert len(outputs) >= 3 and all(o in messages[-1]["content"] for o in outputs)
    # Turn 2 (worker 1) replayed turn 1 (worker 0); turn 3 (worker 0) replayed both.
    assert assert_real_reasoning_replayed(sim) == 3


def _dead(pid: int) -> bool:
    """Gone or a zombie; the supervisor may reap it between any two looks at /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(workers):
    before = workers.pids()
    assert len(before) == 2
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not _dead(victim):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # While it is down (the supervisor waits before restarting a worker that died young),
    # every new connection is served by the other one.
    for _ in range(5):
        assert workers.worker_of_new_connection() in (0, 1)
    deadline = time.monotonic() + 15
    while not (len(now := workers.pids()) == 2 and victim not in now):
        assert time.monotonic() < deadline, workers.output()
        time.sleep(0.05)
    workers.wait_all_serving()
    assert "died with signal SIGKILL" in workers.output()


def _rows(store: str) -> int:
    with contextlib.closing(sqlite3.connect(store)) as db:
        return db.execute("SELECT count(*) FROM reasoning").fetchone()[0]


def test_a_conversation_spans_a_restart_of_the_whole_proxy(simulator, sim, tmp_path):
    store = str(tmp_path / "reasoning.sqlite3")
    messages, outputs, served = new_conversation(), [], []
    first = Workers(simulator, store, str(tmp_path / "first.log"))
    assert conversation_turn(first, 0, messages, outputs, served, stream=True)
    # Reasoning is written off the client's path, moments after the answer: the crash
    # comes once it is on disk (a crash sooner costs that one turn its restoration).
    deadline = time.monotonic() + 5
    while not _rows(store):
        assert time.monotonic() < deadline, "the first turn's reasoning never reached the store"
        time.sleep(0.01)
    first.kill_all()

    second = Workers(simulator, store, str(tmp_path / "second.log"))
    try:
        for turn in range(1, MAX_TURNS):
            if not conversation_turn(second, turn % 2, messages, outputs, served, stream=False):
                break
    finally:
        second.stop()
    assert len(outputs) >= 3 and all(o in messages[-1]["content"] for o in outputs)
    assert assert_real_reasoning_replayed(sim) == 3


def test_sigterm_stops_the_supervisor_and_its_workers_with_exit_0(simulator, tmp_path):
    proxy = Workers(simulator, str(tmp_path / "reasoning.sqlite3"), str(tmp_path / "proxy.log"))
    pids = proxy.pids()
    started = time.monotonic()
    assert proxy.stop() == 0, proxy.output()
    assert time.monotonic() - started < 30
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), "a worker outlived its supervisor"
    assert "stopping: SIGTERM to 2 worker(s)" in proxy.output()
