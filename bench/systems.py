"""The systems under test: how each starts, gets ready, is measured (RSS) and stops.

Every system listens on 127.0.0.1 only and talks only to the mock upstream. Each process is
pinned to one core from before exec (sched_setaffinity in the child, inherited by its
threads and children), so a Python proxy's single worker gets a core of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import deps
from .load import Target

ROOT = deps.ROOT
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOGS = deps.CACHE / "logs"


@dataclass
class Route:
    name: str      # row name in the report, e.g. "rawproxy same"
    route: str     # "same" | "cross" (dialect of the client vs the upstream)
    target: Target
    floor: str     # the direct row this one is compared with


@dataclass
class System:
    key: str
    label: str
    cmd: list[str] | None           # None: nothing to start (direct)
    port: int
    health: str = "/health"
    env: dict = field(default_factory=dict)
    ready_timeout: float = 15.0
    routes: list[Route] = field(default_factory=list)
    unavailable: str | None = None  # why it is skipped
    size: tuple[int | None, str] = (None, "")
    proc: subprocess.Popen | None = None
    cleanup: list = field(default_factory=list)

    def start(self, cpu: int | None) -> float:
        """Exec the system and wait for the first 200 on its health path; returns seconds."""
        if self.cmd is None:
            return 0.0
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(LOGS / f"{self.key}.log", "ab")
        pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=pre,
                                     start_new_session=True)
        log.close()
        deadline = t0 + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}: {self.log_tail()}")
            if http_status(self.port, self.health) == 200:
                return time.monotonic() - t0
            time.sleep(0.002)
        self.stop()
        raise RuntimeError(f"{self.label} not ready on :{self.port}{self.health} after {self.ready_timeout:.0f} s: "
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group we started, SIGKILL after 5 s."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def pids(self) -> list[int]:
        return [] if self.proc is None else tree(self.proc.pid)

    def rss(self) -> int | None:
        """Resident memory summed over the process and its children (bytes)."""
        pids = self.pids()
        return sum(rss_of(p) for p in pids) if pids else None

    def cpu_ticks(self) -> int:
        return sum(cpu_ticks_of(p) for p in self.pids())

    def cpu_seconds(self) -> float:
        """utime + stime of the system's processes so far, from /proc (the tick's resolution)."""
        return self.cpu_ticks() / CLK_TCK

    def log_tail(self, n: int = 600) -> str:
        try:
            return (LOGS / f"{self.key}.log").read_bytes()[-n:].decode("utf-8", "replace").strip()
        except OSError:
            return ""


def http_status(port: int, path: str, timeout: float = 0.5) -> int | None:
    """Status of a GET on 127.0.0.1:port, or None when nothing answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            return int(head[9:12]) if head.startswith(b"HTTP/") else None
    except (OSError, ValueError):
        return None


def tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_ticks_of(pid: int) -> int:
    """utime + stime in clock ticks (1/100 s)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class ForeignCPU:
    """CPU time used on this machine by processes that are not ours (other users of a
    shared machine), between start() and stop(): all busy time from /proc/stat minus this
    process, its waited-for children (systems, wrk) and the running mock."""

    def __init__(self, mock: "System"):
        self.mock = mock

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user + nice + system only: kernel work for our own loopback traffic lands in the
        # irq/softirq columns and the hypervisor's in steal, neither of which is "another user".
        return (v[0] + v[1] + v[2]) / os.sysconf("SC_CLK_TCK")

    def _ours(self) -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system + self.mock.cpu_ticks() / 100

    def start(self) -> None:
        self.t0, self.busy0, self.ours0 = time.monotonic(), self._busy(), self._ours()

    def stop(self) -> float:
        """Share of one core that other processes used meanwhile (0.0-N)."""
        wall = time.monotonic() - self.t0
        return max(0.0, (self._busy() - self.busy0) - (self._ours() - self.ours0)) / wall if wall else 0.0


def settle(procs: list["System"], max_s: float = 20.0) -> float:
    """Wait until these processes are idle (<= 1 tick of CPU in 250 ms), at most max_s.

    Why: a system that fell behind (streams aborted at a timeout, a backlog of work) would
    otherwise still be busy during the next measurement and spoil it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        before = sum(p.cpu_ticks() for p in procs)
        time.sleep(0.25)
        if sum(p.cpu_ticks() for p in procs) - before <= 1:
            break
    return time.monotonic() - t0


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _anth(port: int) -> Target:
    return Target("anthropic", port, "/v1/messages")


def _oai(port: int) -> Target:
    return Target("openai", port, "/v1/chat/completions")


def direct(mock: int) -> System:
    return System("direct", "direct (no proxy)", None, mock, routes=[
        Route("direct", "floor", _anth(mock), "direct"),
        Route("direct openai", "floor", _oai(mock), "direct openai")])


def rawproxy(mock: int, upstream: str) -> System:
    port = free_port()
    base = f"http://127.0.0.1:{mock}" + ("/anthropic" if upstream == "anthropic" else "/v1")
    cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "rawproxy", "--host", "127.0.0.1", "--port", str(port),
           "--upstream", base, "--upstream-format", upstream, "--api-key", "bench-key"]
    if upstream == "anthropic":
        routes = [Route("rawproxy same", "same", _anth(port), "direct")]
    else:
        routes = [Route("rawproxy cross", "cross", _anth(port), "direct"),
                  Route("rawproxy openai", "same", _oai(port), "direct openai")]
    why = None if (ROOT / "rawproxy" / "__main__.py").exists() else "not available: rawproxy/__main__.py missing"
    return System(f"rawproxy-{upstream}", f"rawproxy ({upstream} upstream)", cmd, port, routes=routes,
                  ready_timeout=10, unavailable=why)


def seed(mock: int, upstream: str) -> System:
    port = free_port()
    base = f"http://127.0.0.1:{mock}" + ("/anthropic" if upstream == "anthropic" else "/v1")
    # One uvicorn worker (the per-worker figure); access log off like every other system.
    cmd = [str(deps.venv_python("seed")), "-m", "uvicorn", "seed_proxy:app", "--app-dir", str(ROOT / "bench" / "baselines"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"]
    if upstream == "anthropic":
        routes = [Route("seed same", "same", _anth(port), "direct")]
    else:
        routes = [Route("seed cross", "cross", _anth(port), "direct"),
                  Route("seed openai", "same", _oai(port), "direct openai")]
    return System(f"seed-{upstream}", f"seed design ({upstream} upstream)", cmd, port, routes=routes,
                  env={"MOONSHOT_BASE_URL": base, "ZENMUX_API_KEY": "bench-key", "UPSTREAM_FORMAT": upstream})


LITELLM_CFG = """model_list:
  - model_name: kimi-k2.5
    litellm_params:
      model: hosted_vllm/kimi-k2.5
      api_base: http://127.0.0.1:{mock}/v1
      api_key: bench-key
    model_info:
      supports_reasoning: true
litellm_settings:
  use_chat_completions_url_for_anthropic_messages: true
  drop_params: true
  telemetry: false
general_settings:
  master_key: sk-bench
"""


def litellm(mock: int) -> System:
    """LiteLLM proxy as docs/clients.md configures it: hosted_vllm/ to the mock's OpenAI base."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    (tmp / "cfg.yaml").write_text(LITELLM_CFG.format(mock=mock))
    cmd = [str(deps.CACHE / "litellm" / "bin" / "litellm"), "--config", str(tmp / "cfg.yaml"),
           "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    anth, oai = _anth(port), _oai(port)
    anth.headers = {"x-api-key": "sk-bench"}
    oai.headers = {"authorization": "Bearer sk-bench"}
    return System("litellm", "LiteLLM proxy", cmd, port, health="/health/liveliness", ready_timeout=90,
                  env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},  # ERROR: no access log
                  routes=[Route("litellm cross", "cross", anth, "direct"),
                          Route("litellm openai", "same", oai, "direct openai")],
                  cleanup=[tmp])


NGINX_CONF = """worker_processes 1;
worker_rlimit_nofile 16384;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  tcp_nodelay on;
  keepalive_requests 1000000;
  upstream mock {{ server 127.0.0.1:{mock}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /health {{ return 200 "ok\\n"; }}
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"""


def nginx(mock: int) -> System:
    """Pure forwarding, no parsing: the practical limit for a forwarder."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, mock=mock, port=port))
    cmd = ["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]
    return System("nginx", "nginx proxy_pass", cmd, port, ready_timeout=10, cleanup=[tmp],
                  routes=[Route("nginx same", "same", _anth(port), "direct")])
