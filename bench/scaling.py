"""What one replica costs Redis, and what it serves: the numbers behind docs/scaling.md.

Runs, on loopback only and bounded in time: a redis-server of its own (no persistence),
the bench's mock Kimi upstream, and one rawproxy process (one core), first with the
in-memory store and then with Redis. Agent sessions (closed loop, one keep-alive
connection each) run OpenAI-format tool loops: every request replays the conversation's
earlier tool-call turns without their reasoning (as LangChain and most apps do), so each
turn is one recall of the turns before it and one remembered turn. Reported: turns per
second and latency for each store, Redis commands and network bytes per turn (INFO
commandstats / stats), and the memory one remembered turn takes (MEMORY USAGE) for
reasoning of several sizes.

    python -m bench.scaling [--seconds 10] [--sessions 32] [--turns 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = {"role": "user", "content": "List the files and tell me what this project is. " + "Context. " * 60}
TOOLS = [{"type": "function", "function": {"name": "Bash", "description": "Run a shell command",
                                           "parameters": {"type": "object",
                                                          "properties": {"command": {"type": "string"}}}}}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


class Redis:
    def __init__(self, folder: str, cluster: bool = False) -> None:
        server, self.cli_path = shutil.which("redis-server"), shutil.which("redis-cli")
        if not server or not self.cli_path:
            raise SystemExit("redis-server and redis-cli are needed (apt-get install redis-server)")
        self.port = free_port()
        while cluster and self.port > 55535:  # the cluster bus listens on port + 10000
            self.port = free_port()
        self.follow = ["-c"] if cluster else []  # redis-cli follows a cluster's MOVED answers
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"] if cluster else []
        self.proc = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", folder, *extra], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("ping").strip() != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        return subprocess.run([self.cli_path, *self.follow, "-p", str(self.port), *args], capture_output=True, text=True,
                              timeout=10).stdout

    def info(self, section: str) -> dict[str, str]:
        out = {}
        for line in self.cli("info", section).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key] = value.strip()
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Nodes:
    """One Redis, or three masters made a Redis Cluster; figures summed over the nodes."""

    def __init__(self, folder: str, cluster: bool) -> None:
        self.nodes = [Redis(folder, cluster) for _ in range(3 if cluster else 1)]
        self.cluster = cluster
        if cluster:
            out = subprocess.run([self.nodes[0].cli_path, "--cluster", "create",
                                  *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", "0",
                                  "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if out.returncode:
                raise RuntimeError(out.stdout + out.stderr)
            deadline = time.monotonic() + 20
            while not all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not form")
                time.sleep(0.1)

    @property
    def url(self) -> str:
        if self.cluster:
            return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def cli_all(self, *args: str) -> None:
        for n in self.nodes:
            n.cli(*args)

    def total(self, section: str, key: str) -> int:
        return sum(int(n.info(section)[key]) for n in self.nodes)

    def dbsize(self) -> int:
        return sum(int(n.cli("dbsize").strip()) for n in self.nodes)

    def commands(self) -> dict[str, int]:
        calls: dict[str, int] = {}
        for n in self.nodes:
            for k, v in n.info("commandstats").items():
                name = k.removeprefix("cmdstat_")
                calls[name] = calls.get(name, 0) + int(v.split(",")[0].split("=")[1])
        return calls

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: bytes) -> dict:
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                 b"authorization: Bearer bench\r\ncontent-length: %d\r\n\r\n%s" % (port, len(body), body))
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    payload = await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"status {status}: {payload[:200]!r}")
    return json.loads(payload)


async def _session(port: int, turns: int, deadline: float, latencies: list[float], counts: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            messages: list[dict] = [USER]
            for _ in range(turns):
                if time.monotonic() >= deadline:
                    return
                body = json.dumps({"model": "kimi-k2.5", "messages": messages, "tools": TOOLS}).encode()
                started = time.perf_counter()
                answer = await _request(reader, writer, port, body)
                latencies.append(time.perf_counter() - started)
                counts["turns"] += 1
                message = answer["choices"][0]["message"]
                calls = message.get("tool_calls") or []
                counts["replayed"] += sum(1 for m in messages if m.get("tool_calls"))
                # The reasoning dropped, as most apps send a turn back.
                messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
                for call in calls:
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "README.md\nsrc\n"})
    finally:
        writer.close()


async def _load(port: int, sessions: int, turns: int, seconds: float) -> dict:
    latencies: list[float] = []
    counts = {"turns": 0, "replayed": 0}
    started = time.monotonic()
    await asyncio.gather(*(_session(port, turns, started + seconds, latencies, counts) for _ in range(sessions)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {"turns": counts["turns"], "replayed_turns": counts["replayed"], "seconds": round(elapsed, 2),
            "turns_per_s": round(counts["turns"] / elapsed, 1),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)}


def _proxy(upstream: int, store: str, folder: str, name: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(os.path.join(folder, f"{name}.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "rawproxy", "--port", str(port), "--upstream",
                             f"http://127.0.0.1:{upstream}/v1", "--upstream-format", "openai", "--api-key", "bench",
                             "--store", store], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}/health", proc)
    return proc, port


def _reasoning_counters(port: int) -> dict[str, float]:
    """The replica's own view: turns restored, missed, not written, store failures."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.split()[0].removeprefix("rawproxy_reasoning_"): float(line.split()[1])
            for line in text.splitlines() if line.startswith("rawproxy_reasoning_")}


def _value_memory(redis: Redis) -> dict[str, int]:
    """MEMORY USAGE of one key shaped like the store's, for reasoning of several sizes."""
    sizes = {}
    key = "rawproxy:" + "0" * 32 + ":" + "k" * 20
    for text_bytes in (40, 1000, 4000, 16000):
        value = json.dumps(["r" * text_bytes], separators=(",", ":"))
        redis.cli("set", key, value, "px", "60000")
        sizes[str(text_bytes)] = int(redis.cli("memory", "usage", key, "samples", "0").strip())
    redis.cli("del", key)
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each load run (bounded)")
    ap.add_argument("--sessions", type=int, default=32, help="concurrent agent sessions")
    ap.add_argument("--turns", type=int, default=8, help="tool-call turns per conversation")
    ap.add_argument("--cluster", action="store_true", help="a 3-node Redis Cluster instead of one node")
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="rawproxy-scaling-")
    mock_port = free_port()
    mock = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", "--port", str(mock_port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = Nodes(folder, args.cluster)
    results: dict = {"sessions": args.sessions, "turns_per_conversation": args.turns, "cluster": args.cluster}
    try:
        wait_ready(f"http://127.0.0.1:{mock_port}/v1/health", mock)
        for store in ("memory", redis.url):
            kind = store.partition(":")[0]
            proc, port = _proxy(mock_port, store, folder, kind)
            try:
                asyncio.run(_load(port, 4, args.turns, 1.0))  # warm up: connections, caches
                redis.cli_all("config", "resetstat")
                before = redis.total("memory", "used_memory")
                keys_before = redis.dbsize()
                run = asyncio.run(_load(port, args.sessions, args.turns, args.seconds))
                run["proxy"] = _reasoning_counters(port)
                if kind != "memory":
                    calls = redis.commands()
                    keys = redis.dbsize() - keys_before
                    run["redis"] = {
                        "commands": calls,
                        "commands_per_turn": {c: round(n / run["turns"], 3) for c, n in calls.items()},
                        "net_in_bytes_per_turn": round(redis.total("stats", "total_net_input_bytes") / run["turns"]),
                        "net_out_bytes_per_turn": round(redis.total("stats", "total_net_output_bytes") / run["turns"]),
                        "keys": keys,
                        "used_memory_per_key": round((redis.total("memory", "used_memory") - before) / max(1, keys)),
                    }
                results[kind] = run
            finally:
                proc.terminate()
                proc.wait(40)
        results["memory_usage_by_reasoning_bytes"] = _value_memory(redis.nodes[0])
    finally:
        redis.stop()
        mock.terminate()
        mock.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
