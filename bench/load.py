"""Load generators: closed-loop non-streaming load (own raw-socket client, or wrk) and a
streaming client that timestamps every event.

Why raw asyncio protocols: the load generator shares a core with the mock upstream, so it
must cost little per request; it pre-encodes the request bytes and parses only the status
line and the framing of the answer. Every loop is bounded by a deadline and a hard timeout.
Latencies are in nanoseconds here; the report converts them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from array import array
from dataclasses import dataclass, field

STAMP_RE = re.compile(rb"t=(\d+) ")   # the mock writes "t=<monotonic ns> " in every delta
CLEN_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.I)

# ---- request bodies: a compact but realistic agent turn (system, tools, a tool loop whose
# assistant turn has no thinking block / reasoning_content, so the proxies must repair it,
# and parameters Kimi rejects). ~3 KB (Target.pad grows it to a Claude Code-sized ~50 KB),
# so parsing and re-encoding cost something real.
_SYSTEM = "You are a coding agent. Use the tools to inspect and change the repository. " * 12
_TOOLS = [("Bash", "Run a shell command", {"command": {"type": "string"}}),
          ("Read", "Read a file", {"path": {"type": "string"}, "offset": {"type": "integer"}}),
          ("Edit", "Replace text in a file", {"path": {"type": "string"}, "old": {"type": "string"},
                                              "new": {"type": "string"}})]


def anthropic_body(stream: bool, prompt: str = "List the files.") -> dict:
    return {
        "model": "kimi-k2.5", "max_tokens": 32000, "stream": stream, "temperature": 0.7,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "system": [{"type": "text", "text": _SYSTEM}],
        "tools": [{"name": n, "description": d, "input_schema": {"type": "object", "properties": p}}
                  for n, d, p in _TOOLS],
        "messages": [
            {"role": "user", "content": "What is in this repository? " + "Context line. " * 40},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_prev_0", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_prev_0", "content": "README.md\nsrc\ntests\n" * 20}]},
            {"role": "user", "content": prompt}],
    }


def openai_body(stream: bool, prompt: str = "List the files.") -> dict:
    body = {
        "model": "kimi-k2.5", "max_tokens": 32000, "stream": stream, "temperature": 0.7,
        "tools": [{"type": "function", "function": {"name": n, "description": d,
                                                    "parameters": {"type": "object", "properties": p}}}
                  for n, d, p in _TOOLS],
        "messages": [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": "What is in this repository? " + "Context line. " * 40},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_prev_0", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\": \"ls\"}"}}]},
            {"role": "tool", "tool_call_id": "call_prev_0", "content": "README.md\nsrc\ntests\n" * 20},
            {"role": "user", "content": prompt}],
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class Target:
    """Where a route sends its requests: a dialect and a URL on 127.0.0.1."""
    dialect: str   # "anthropic" | "openai"
    port: int
    path: str      # "/v1/messages" or "/v1/chat/completions"
    headers: dict = field(default_factory=dict)
    pad: int = 0   # grow the tool result by about this many bytes (50 KB: a Claude Code-sized turn)

    def body(self, stream: bool, prompt: str = "List the files.") -> bytes:
        make = anthropic_body if self.dialect == "anthropic" else openai_body
        body = make(stream, prompt)
        if self.pad:
            line = "src/module.py:12: def handler(request): return respond(request, status=200)\n"
            text = line * (self.pad // len(line) + 1)
            result = body["messages"][-2]
            if isinstance(result["content"], list):
                result["content"][0]["content"] += text
            else:
                result["content"] += text
        return json.dumps(body).encode()

    def request(self, stream: bool, prompt: str = "List the files.") -> bytes:
        body = self.body(stream, prompt)
        auth = ({"x-api-key": "bench-key", "anthropic-version": "2023-06-01"} if self.dialect == "anthropic"
                else {"authorization": "Bearer bench-key"})
        hdrs = {"host": f"127.0.0.1:{self.port}", "content-type": "application/json", **auth, **self.headers,
                "content-length": str(len(body))}
        head = f"POST {self.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        return head.encode() + body


def _percentile(sorted_vals, q: float):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(round(q / 100 * (len(sorted_vals) - 1))))]


def summarize(vals) -> dict:
    s = sorted(vals)
    return {"n": len(s), "p50": _percentile(s, 50), "p99": _percentile(s, 99), "max": s[-1] if s else None}


def _nodelay(tr):
    sock = tr.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Response:
    """Incremental HTTP/1.1 response framing: returns the status once the answer is complete."""
    __slots__ = ("buf", "status", "need", "chunked", "pos")

    def __init__(self):
        self.buf, self.status, self.need, self.chunked, self.pos = bytearray(), 0, -1, False, 0

    def feed(self, data: bytes) -> bool:
        buf = self.buf
        buf += data
        if not self.status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(buf[:end])
            self.status = int(head[9:12])
            m = CLEN_RE.search(head)
            self.chunked = m is None and CHUNKED_RE.search(head) is not None
            self.pos = end + 4
            self.need = self.pos + int(m.group(1)) if m else -1
        if not self.chunked:
            return self.need >= 0 and len(buf) >= self.need
        while True:   # walk chunk headers; complete at the zero chunk
            eol = buf.find(b"\r\n", self.pos)
            if eol < 0:
                return False
            size = int(bytes(buf[self.pos:eol]).split(b";")[0], 16)
            if size == 0:
                return buf.find(b"\r\n\r\n", eol) == eol or buf.endswith(b"\r\n\r\n")
            if len(buf) < eol + 2 + size + 2:
                return False
            self.pos = eol + 2 + size + 2


class _NSConn(asyncio.Protocol):
    def __init__(self, run: "_NSRun"):
        self.run, self.tr, self.resp, self.t0, self.ttfb = run, None, None, 0, 0

    def connection_made(self, tr):
        self.tr = tr
        _nodelay(tr)
        self.send()

    def send(self):
        self.resp = _Response()
        self.t0, self.ttfb = time.perf_counter_ns(), 0
        self.tr.write(self.run.req)

    def data_received(self, data):
        if not self.ttfb:
            self.ttfb = time.perf_counter_ns()
        if not self.resp.feed(data):
            return
        now = time.perf_counter_ns()
        run = self.run
        if run.measuring:
            run.lat.append(now - self.t0)
            run.ttfb.append(self.ttfb - self.t0)
            run.done += 1
            if self.resp.status != 200:
                run.errors += 1
                run.last_error = bytes(self.resp.buf[:300])
        if time.monotonic() < run.deadline:
            self.send()
        else:
            self.tr.close()

    def connection_lost(self, exc):
        self.run.open -= 1
        if self.run.open == 0 and not self.run.finished.done():
            self.run.finished.set_result(None)


class _NSRun:
    def __init__(self, req: bytes, deadline: float, measuring: bool):
        self.req, self.deadline, self.measuring = req, deadline, measuring
        self.lat, self.ttfb = array("q"), array("q")
        self.done = self.errors = self.open = 0
        self.last_error = b""
        self.finished = asyncio.get_running_loop().create_future()


async def nonstream_own(target: Target, concurrency: int, duration: float, warmup: float = 0.0) -> dict:
    """Closed loop: `concurrency` keep-alive connections, each sending the next request as
    soon as the previous answer is complete, for `duration` seconds (after `warmup`)."""
    loop = asyncio.get_running_loop()
    req = target.request(stream=False)
    result = None
    for measuring, secs in ((False, warmup), (True, duration)):
        if secs <= 0:
            continue
        run = _NSRun(req, time.monotonic() + secs, measuring)
        t0 = time.perf_counter()
        for _ in range(concurrency):
            await loop.create_connection(lambda run=run: _NSConn(run), "127.0.0.1", target.port)
            run.open += 1
        try:
            await asyncio.wait_for(asyncio.shield(run.finished), secs + 15)
        except TimeoutError:
            run.errors += 1
            run.last_error = b"timeout: answers still missing 15 s after the deadline"
        elapsed = time.perf_counter() - t0
        result = {"tool": "own", "concurrency": concurrency, "requests": run.done, "errors": run.errors,
                  "rps": run.done / elapsed, "latency": summarize(run.lat), "ttfb": summarize(run.ttfb),
                  "last_error": run.last_error.decode("latin-1")[:300] or None}
    return result


WRK_LUA = """
wrk.method = "POST"
wrk.body = io.open("%(body)s", "rb"):read("*a")
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"p50":%%d,"p99":%%d,"max":%%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def nonstream_wrk(target: Target, concurrency: int, duration: float, cpu: int | None) -> dict:
    """The same closed loop with wrk (C, one thread); latencies from wrk's histogram (us)."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path = os.path.join(tmp, "body.json")
        with open(body_path, "wb") as f:
            f.write(target.body(stream=False))
        auth = ({"x-api-key": "bench-key", "anthropic-version": "2023-06-01"} if target.dialect == "anthropic"
                else {"authorization": "Bearer bench-key"})
        hdrs = {"content-type": "application/json", **auth, **target.headers}
        lua = WRK_LUA % {"body": body_path, "headers": "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in hdrs.items())}
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write(lua)
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", script,
               f"http://127.0.0.1:{target.port}{target.path}"]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    d = json.loads(line[8:])
    us = 1000  # wrk reports microseconds
    return {"tool": "wrk", "concurrency": concurrency, "requests": d["requests"], "errors": d["errors"],
            "rps": d["requests"] / (d["duration_us"] / 1e6),
            "latency": {"n": d["requests"], "p50": d["p50"] * us, "p99": d["p99"] * us, "max": d["max"] * us},
            "ttfb": None, "last_error": None}


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


# ---- streaming ----
class _StreamConn(asyncio.Protocol):
    def __init__(self, run: "_StreamRun"):
        self.run, self.tr, self.tail, self.t_send, self.got_first = run, None, b"", 0, False
        self.stamps = 0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, tr):
        self.tr = tr
        _nodelay(tr)
        self.t_send = time.monotonic_ns()
        tr.write(self.run.req)

    def data_received(self, data):
        now = time.monotonic_ns()   # one clock read per read(): every stamp in it arrived now
        run = self.run
        if not self.got_first:
            self.got_first = True
            run.ttfb.append(now - self.t_send)
            run.last_first_byte = now
            if not data.startswith(b"HTTP/1.1 200") and not data.startswith(b"HTTP/1.0 200"):
                run.errors += 1
                run.last_error = data[:300]
        buf = self.tail + data
        last = found = 0
        for m in STAMP_RE.finditer(buf):
            sent = int(m.group(1))
            run.sent.append(sent)
            run.delays.append(now - sent)
            last = m.end()
            found += 1
        if found and not self.stamps and run.first_stamp is not None:
            run.first_stamp()
        self.stamps += found
        self.tail = buf[max(last, len(buf) - 48):]
        # End of stream: Anthropic message_stop, OpenAI [DONE], or the zero chunk.
        if b"message_stop" in buf or b"[DONE]" in buf or buf.endswith(b"\r\n0\r\n\r\n"):
            self.tr.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


class _StreamRun:
    def __init__(self, req: bytes):
        self.req = req
        self.delays, self.ttfb, self.sent = array("q"), array("q"), array("q")
        self.last_first_byte = 0
        self.errors = 0
        self.last_error = b""
        self.first_stamp = None


async def streams(target: Target, n_streams: int, events: int, rate: float, timeout: float,
                  hold=None, cpu=None) -> dict:
    """Open n_streams concurrent streams of `events` events at `rate`/s each; record the
    delay of every event (client receipt - mock send, monotonic ns) and the TTFB.

    With `hold` (an async callable), once every stream has received its first stamped event
    (or after `timeout`), call hold() while all streams are open, then abort them all:
    used to read RSS with many open streams.

    With `cpu` (a callable giving the system's CPU seconds so far), the CPU it used per
    event is measured from the moment every stream has its first event to the end (the
    connection ramp is left out, as for the delays)."""
    loop = asyncio.get_running_loop()
    # Encoded once: every stream writes the same bytes (a 50 KB body costs one json.dumps).
    run = _StreamRun(target.request(stream=True, prompt=f"Go on. bench events={events} rate={rate:g}"))
    started = asyncio.Event()
    first = {"n": 0}

    def on_first():
        first["n"] += 1
        if first["n"] >= n_streams:
            started.set()
    run.first_stamp = on_first
    conns = []
    t0 = time.monotonic()
    for i in range(n_streams):   # open in small batches: no SYN bursts past a listen backlog
        try:
            _, proto = await loop.create_connection(lambda: _StreamConn(run), "127.0.0.1", target.port)
            conns.append(proto)
        except OSError as exc:
            run.errors += 1
            run.last_error = repr(exc).encode()
        if i % 50 == 49:
            await asyncio.sleep(0.005)
    t_opened = time.monotonic_ns()
    held = cpu_window = None
    if hold is not None:
        try:
            await asyncio.wait_for(started.wait(), timeout)
        except TimeoutError:
            pass
        held = await hold()
        for c in conns:
            if c.tr is not None:
                c.tr.abort()
    else:
        # Until every stream has its first event the window starts at the last connect
        # (the ramp included: a system that cannot open them all still gets a figure).
        mark = {"cpu": cpu(), "n": len(run.delays)} if cpu is not None else {}

        async def sample():
            await started.wait()
            mark["cpu"], mark["n"] = cpu(), len(run.delays)
        sampler = asyncio.ensure_future(sample()) if cpu is not None else None
        pending = [c.done for c in conns]
        _, not_done = await asyncio.wait(pending, timeout=timeout) if pending else (None, [])
        if sampler is not None:
            sampler.cancel()
            if len(run.delays) > mark["n"]:
                cpu_window = {"cpu_s": cpu() - mark["cpu"], "events": len(run.delays) - mark["n"]}
        if not_done:
            run.errors += len(not_done)
            run.last_error = f"{len(not_done)} streams unfinished at the timeout".encode()
            for c in conns:
                if c.tr is not None:
                    c.tr.abort()
    elapsed = time.monotonic() - t0
    delivered = len(run.delays)
    # Steady state only: events sent after the last stream got its first byte (the ramp
    # of opening hundreds of connections at once is not what a stream feels later); for a
    # system so slow that some streams wait seconds for their first byte, from 2 s after
    # the last connect.
    start = min(run.last_first_byte or t_opened, t_opened + 2_000_000_000)
    steady = [d for d, s in zip(run.delays, run.sent) if s >= start]
    return {"streams": n_streams, "events_per_stream": events, "rate": rate,
            "body_bytes": len(run.req) - run.req.index(b"\r\n\r\n") - 4,
            "expected_events": n_streams * events, "delivered_events": delivered,
            "streams_started": first["n"], "events_per_s": delivered / elapsed if elapsed else 0.0,
            "delay": summarize(steady), "ttfb": summarize(run.ttfb), "errors": run.errors,
            "last_error": run.last_error.decode("latin-1")[:300] or None, "held": held, "elapsed_s": elapsed, "cpu_window": cpu_window}
