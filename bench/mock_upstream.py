"""A fast mock Kimi upstream for load tests (both dialects, streaming and not).

Why it is written this way: the mock shares a core with the load generator and must
serve several times the rate of the proxy under test, so it is a raw asyncio.Protocol
with pre-encoded responses, keep-alive and TCP_NODELAY, and parses only what it needs
(request line, Content-Length / chunked, a few regexes on the body).

Routes (on the path suffix, any prefix such as /anthropic or /v1 works):
  .../v1/messages        Anthropic shape (thinking, text, tool_use, usage)
  .../chat/completions   OpenAI shape as Kimi streams it (reasoning_content, content,
                         tool_calls with ids like functions.Bash:0, usage inside the last
                         choice, optional include_usage chunk, data: [DONE])
  GET .../health         200
A body containing "stream": true gets a stream. Its length and pace come from
`events=N` / `rate=R` written anywhere in the body (the prompt text survives every
proxy and translation), else from the query string or x-mock-events / x-mock-rate
headers. Every delta event carries the monotonic send time as text "t=<ns> " (taken just
before the write), so a client can compute per-event delay through any proxy.

Run: python -m bench.mock_upstream --port 9100 [--cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import time

STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
# Each starts with a literal, which `re` finds with a fast substring search: an alternation
# such as (?:events=|x-mock-events:) is tried at every offset, ~0.6 ms per 50 KB body.
EVENTS_RE = re.compile(rb'events=(\d+)')
RATE_RE = re.compile(rb'rate=(\d+(?:\.\d+)?)')
EVENTS_HDR_RE = re.compile(rb'x-mock-events:\s*(\d+)')
RATE_HDR_RE = re.compile(rb'x-mock-rate:\s*(\d+(?:\.\d+)?)')
CLEN_RE = re.compile(rb'\r\ncontent-length:\s*(\d+)', re.I)
CHUNKED_RE = re.compile(rb'\r\ntransfer-encoding:[^\r]*chunked', re.I)
CLOSE_RE = re.compile(rb'\r\nconnection:\s*close', re.I)

MODEL = "kimi-k2.5"
USAGE_OAI = {"prompt_tokens": 1200, "completion_tokens": 150, "total_tokens": 1350, "cached_tokens": 1000}


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _full(status: bytes, ctype: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


# ---- pre-encoded non-streaming answers (shaped like Kimi's) ----
ANTH_BODY = _dumps({
    "id": "msg_bench0001", "type": "message", "role": "assistant", "model": MODEL,
    "content": [
        {"type": "thinking", "thinking": "The user wants the file list; run ls.", "signature": "sig" * 20},
        {"type": "text", "text": "I will list the files."},
        {"type": "tool_use", "id": "toolu_bench_0", "name": "Bash", "input": {"command": "ls -la"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 200, "output_tokens": 150, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 1000}})
OAI_BODY = _dumps({
    "id": "cmpl-bench0001", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "I will list the files.",
        "reasoning_content": "The user wants the file list; run ls.",
        "tool_calls": [{"id": "functions.Bash:0", "type": "function",
                        "function": {"name": "Bash", "arguments": "{\"command\": \"ls -la\"}"}}]},
        "finish_reason": "tool_calls"}],
    "usage": USAGE_OAI})
RESP_ANTH = _full(b"200 OK", b"application/json", ANTH_BODY)
RESP_OAI = _full(b"200 OK", b"application/json", OAI_BODY)
RESP_HEALTH = _full(b"200 OK", b"application/json", b'{"status":"ok"}')
RESP_404 = _full(b"404 Not Found", b"application/json", b'{"error":"not found"}')
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
               b"transfer-encoding: chunked\r\n\r\n")
MARK = "@@STAMP@@"  # replaced by the send time; split templates around it once, at import


def _anth(etype: str, data: dict) -> bytes:
    return b"event: " + etype.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def _oai(data: dict) -> bytes:
    return b"data: " + _dumps(data) + b"\n\n"


def _split(template: bytes) -> tuple[bytes, bytes]:
    pre, _, post = template.partition(MARK.encode())
    return pre, post


def _anth_delta(index: int, delta: dict) -> bytes:
    return _anth("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


# Anthropic stream pieces. Stamped deltas are (prefix, suffix) around the stamp digits.
A_START = _anth("message_start", {"type": "message_start", "message": {
    "id": "msg_bench0001", "type": "message", "role": "assistant", "model": MODEL, "content": [],
    "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 200, "output_tokens": 1}}})
A_THINK_OPEN = _anth("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
A_THINK = _split(_anth_delta(0, {"type": "thinking_delta", "thinking": f"t={MARK} "}))
A_THINK_CLOSE = (_anth_delta(0, {"type": "signature_delta", "signature": "sig" * 20})
                 + _anth("content_block_stop", {"type": "content_block_stop", "index": 0}))
A_TEXT_OPEN = _anth("content_block_start", {"type": "content_block_start", "index": 1,
                                            "content_block": {"type": "text", "text": ""}})
A_TEXT = _split(_anth_delta(1, {"type": "text_delta", "text": f"t={MARK} "}))
A_TEXT_CLOSE = _anth("content_block_stop", {"type": "content_block_stop", "index": 1})
A_TOOL_OPEN = _anth("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
    "type": "tool_use", "id": "toolu_bench_0", "name": "Bash", "input": {}}})
A_ARGS_FIRST = _split(_anth_delta(2, {"type": "input_json_delta", "partial_json": f'{{"command":"t={MARK} '}))
A_ARGS = _split(_anth_delta(2, {"type": "input_json_delta", "partial_json": f"t={MARK} "}))
A_ARGS_LAST = _split(_anth_delta(2, {"type": "input_json_delta", "partial_json": f't={MARK} "}}'}))
A_ARGS_ONLY = _split(_anth_delta(2, {"type": "input_json_delta", "partial_json": f'{{"command":"t={MARK} "}}'}))
A_END = (_anth("content_block_stop", {"type": "content_block_stop", "index": 2})
         + _anth("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                   "usage": {"output_tokens": 150}})
         + _anth("message_stop", {"type": "message_stop"}))

# OpenAI (Kimi) stream pieces.
_CH = {"id": "cmpl-bench0001", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL}


def _chunk(delta: dict, finish=None, **extra) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return _oai({**_CH, "choices": [choice]})


def _tc(args: str, first: bool = False) -> dict:
    call = {"index": 0, "function": {"arguments": args}}
    if first:
        call = {"index": 0, "id": "functions.Bash:0", "type": "function", "function": {"name": "Bash", "arguments": args}}
    return {"tool_calls": [call]}


O_START = _chunk({"role": "assistant", "content": ""})
O_THINK = _split(_chunk({"reasoning_content": f"t={MARK} "}))
O_TEXT = _split(_chunk({"content": f"t={MARK} "}))
O_ARGS_FIRST = _split(_chunk(_tc(f'{{"command":"t={MARK} ', True)))
O_ARGS = _split(_chunk(_tc(f"t={MARK} ")))
O_ARGS_LAST = _split(_chunk(_tc(f't={MARK} "}}')))
O_ARGS_ONLY = _split(_chunk(_tc(f'{{"command":"t={MARK} "}}', True)))
O_FINISH = _chunk({}, "tool_calls", usage=USAGE_OAI)
O_USAGE = _oai({**_CH, "choices": [], "usage": USAGE_OAI})
O_DONE = b"data: [DONE]\n\n"


def plan(n: int, anthropic: bool) -> list[tuple[bytes, tuple[bytes, bytes]]]:
    """The n stamped events of one stream: (structural bytes sent just before, stamped template).

    40% reasoning, 30% text, the rest tool-call argument fragments (at least one each when
    n >= 3), in Kimi's order: reasoning -> text -> tool call."""
    n = max(1, n)
    n_think = max(1, n * 4 // 10) if n >= 3 else 0
    n_text = max(1, n * 3 // 10) if n >= 3 else 0
    n_args = n - n_think - n_text
    out = []
    if anthropic:
        think, text, first, mid, last, only = A_THINK, A_TEXT, A_ARGS_FIRST, A_ARGS, A_ARGS_LAST, A_ARGS_ONLY
        pre_think, pre_text, pre_tool = A_THINK_OPEN, A_THINK_CLOSE + A_TEXT_OPEN, A_TEXT_CLOSE + A_TOOL_OPEN
        if n_think == 0:
            pre_tool = A_TOOL_OPEN
    else:
        think, text, first, mid, last, only = O_THINK, O_TEXT, O_ARGS_FIRST, O_ARGS, O_ARGS_LAST, O_ARGS_ONLY
        pre_think = pre_text = pre_tool = b""
    out += [(pre_think if i == 0 else b"", think) for i in range(n_think)]
    out += [(pre_text if i == 0 else b"", text) for i in range(n_text)]
    for i in range(n_args):
        tpl = only if n_args == 1 else first if i == 0 else last if i == n_args - 1 else mid
        out.append((pre_tool if i == 0 else b"", tpl))
    return out


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class MockConn(asyncio.Protocol):
    def __init__(self, default_events: int, default_rate: float):
        self.buf = bytearray()
        self.tr: asyncio.Transport | None = None
        self.busy = False  # a stream is running on this connection; later requests wait in buf
        self.handle: asyncio.TimerHandle | None = None
        self.defaults = (default_events, default_rate)

    def connection_made(self, tr):
        self.tr = tr
        sock = tr.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc):
        if self.handle is not None:
            self.handle.cancel()
        self.tr = None

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self._serve()

    def _serve(self):
        buf = self.buf
        while not self.busy and self.tr is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            start = end + 4
            m = CLEN_RE.search(head)
            if m:
                stop = start + int(m.group(1))
                if len(buf) < stop:
                    return
                body = bytes(buf[start:stop])
            elif CHUNKED_RE.search(head):
                parsed = _dechunk(buf, start)
                if parsed is None:
                    return
                body, stop = parsed
            else:
                body, stop = b"", start
            del buf[:stop]
            self._answer(head, body)
            if CLOSE_RE.search(head) and not self.busy and self.tr is not None:
                self.tr.close()

    def _answer(self, head: bytes, body: bytes):
        target = head[: head.find(b"\r\n")].split(b" ")[1]
        path, _, query = target.partition(b"?")
        anthropic = path.endswith(b"/v1/messages")
        if not anthropic and not path.endswith(b"/chat/completions"):
            self.tr.write(RESP_HEALTH if path.endswith(b"/health") else RESP_404)
            return
        if not STREAM_RE.search(body):
            self.tr.write(RESP_ANTH if anthropic else RESP_OAI)
            return
        # Parameters: body text first (survives proxies), then query, then headers.
        where = body + b" " + query.replace(b"&", b" ") + b" " + head.lower()
        me = EVENTS_RE.search(where) or EVENTS_HDR_RE.search(where)
        mr = RATE_RE.search(where) or RATE_HDR_RE.search(where)
        events = int(me.group(1)) if me else self.defaults[0]
        rate = float(mr.group(1)) if mr else self.defaults[1]
        self._stream(anthropic, events, rate, bool(USAGE_RE.search(body)))

    def _stream(self, anthropic: bool, events: int, rate: float, include_usage: bool):
        self.busy = True
        loop = asyncio.get_running_loop()
        steps = plan(events, anthropic)
        tail = A_END if anthropic else O_FINISH + (O_USAGE if include_usage else b"") + O_DONE
        self.tr.write(STREAM_HEAD + _chunked(A_START if anthropic else O_START))
        interval = 1.0 / rate if rate > 0 else 0.0
        # A random phase spreads many concurrent streams over the interval, as real ones are.
        t0 = loop.time() + random.random() * interval
        state = {"i": 0}

        def tick():
            tr = self.tr
            if tr is None or tr.is_closing():
                return
            i = state["i"]
            # Send every event that is due (catch up after a stall rather than drift).
            now = loop.time()
            out = []
            while i < len(steps) and (interval == 0 or t0 + i * interval <= now + 0.0002):
                pre, (a, b) = steps[i]
                out.append(_chunked(pre + a + str(time.monotonic_ns()).encode() + b))
                i += 1
                if interval == 0 and len(out) >= 64:
                    break
            state["i"] = i
            if i >= len(steps):
                out.append(_chunked(tail) + b"0\r\n\r\n")
            tr.write(b"".join(out))
            if i >= len(steps):
                self.busy, self.handle = False, None
                if self.buf:
                    self._serve()
                return
            self.handle = loop.call_at(t0 + i * interval, tick) if interval else loop.call_soon(tick)

        self.handle = loop.call_at(t0, tick)


def _dechunk(buf: bytearray, pos: int):
    """Decode a chunked request body starting at pos: (body, end) or None if incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)
            if trailer_end == eol:
                return bytes(out), eol + 4
            if trailer_end < 0:
                return None
            return bytes(out), trailer_end + 4
        if len(buf) < eol + 2 + size + 2:
            return None
        out += buf[eol + 2: eol + 2 + size]
        pos = eol + 2 + size + 2


async def serve(host: str, port: int, events: int, rate: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockConn(events, rate), host, port, backlog=4096, reuse_address=True)
    print(f"mock upstream on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--cpu", type=int, help="pin to this core")
    ap.add_argument("--events", type=int, default=20, help="default events per stream")
    ap.add_argument("--rate", type=float, default=50.0, help="default events/s per stream (0: as fast as possible)")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        asyncio.run(serve(args.host, args.port, args.events, args.rate))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
