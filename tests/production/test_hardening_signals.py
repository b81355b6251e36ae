"""Signals on a running service: SIGHUP never stops anything (one process, or the
supervisor and its workers); a second SIGTERM under --workers cuts in-flight streams with
an error event in the client's dialect, as one process does, rather than killing them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from .support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    connect,
    dechunk,
    fsim,
    health_ok,
    proxies,
    raw_request,
    sim,
    split_response,
)
from .test_workers import Workers as _Workers

_ = (fsim, sim, proxies)  # fixtures

HUP_LINE = "SIGHUP: configuration reload is not supported yet; ignored"


class Workers(_Workers):
    """The supervisor of test_workers, killed whole when it never comes up."""

    def __init__(self, simulator, store: str, log_path: str) -> None:
        try:
            super().__init__(simulator, store, log_path)
        except BaseException:
            if getattr(self, "proc", None) is not None and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            raise


class Stream:
    """One raw streaming request on its own connection, read to the end in a thread."""

    def __init__(self, url: str, path: str, body: dict) -> None:
        payload = json.dumps({**body, "stream": True}).encode()
        self.sock = connect(url, timeout=40)
        self.sock.sendall(raw_request(url, "POST", path, payload, {"content-type": "application/json"}))
        self.head = self.sock.recv(65536)  # the head and the first events: the stream is open
        assert self.head.startswith(b"HTTP/1.1 200"), self.head
        self.worker = split_response(self.head)[1].get("x-rawproxy-worker")
        self.raw = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        """Until the body's last chunk (the connection stays open for the next request) or
        until the server closes the connection."""
        raw, deadline = self.head, time.monotonic() + 40
        while time.monotonic() < deadline and not dechunk(raw.partition(b"\r\n\r\n")[2])[1]:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not data:
                break
            raw += data
        self.raw = raw
        self.sock.close()

    def result(self) -> tuple[bytes, bool, dict]:
        """(payload, complete, headers) once the server closed the connection."""
        self.thread.join(45)
        status, headers, rest = split_response(self.raw)
        assert status == 200
        payload, complete = dechunk(rest)
        return payload, complete, headers


def test_sighup_is_logged_and_ignored_while_a_stream_is_in_flight(sim, proxies):
    proxy = proxies("anthropic", sim=sim)
    sim.fault("stall-after=3;seconds=2")
    stream = Stream(proxy.url, "/v1/messages", ANTHROPIC_BODY)
    proc = proxy.process.proc
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    proc.send_signal(signal.SIGHUP)

    payload, complete, _ = stream.result()
    assert complete and payload.rstrip().endswith(b'data: {"type": "message_stop"}')
    assert proc.poll() is None and health_ok(proxy.url)
    assert proxy.process.output().count(HUP_LINE) == 2


def test_sighup_under_workers_reaches_no_stream_and_no_process(sim, tmp_path):
    workers = Workers(sim, str(tmp_path / "reasoning.sqlite3"), str(tmp_path / "proxy.log"))
    try:
        pids = workers.pids()
        sim.fault("stall-after=3;seconds=2")
        streams = [Stream(workers.url, "/v1/chat/completions", OPENAI_BODY) for _ in range(4)]
        for pid in (workers.proc.pid, *pids):  # the supervisor, and each worker as a terminal would
            os.kill(pid, signal.SIGHUP)

        for s in streams:
            payload, complete, _ = s.result()
            assert complete and payload.rstrip().endswith(b"data: [DONE]")
        assert workers.proc.poll() is None and sorted(workers.pids()) == sorted(pids), "nothing restarted"
        assert health_ok(workers.url)
        workers.wait_all_serving()
        assert workers.output().count(HUP_LINE) == 3
    finally:
        assert workers.stop() == 0


def test_a_second_sigterm_under_workers_cuts_streams_with_an_error_event(sim, tmp_path):
    workers = Workers(sim, str(tmp_path / "reasoning.sqlite3"), str(tmp_path / "proxy.log"))
    try:
        sim.fault("stall-after=3;seconds=30")  # longer than the graceful timeout (30 s): still open
        streams: list[Stream] = []
        while {s.worker for s in streams} != {"0", "1"}:  # a stream in flight on each worker
            assert len(streams) < 20
            streams.append(Stream(workers.url, "/v1/chat/completions", OPENAI_BODY))
        signalled = time.monotonic()
        workers.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        workers.proc.send_signal(signal.SIGTERM)

        for s in streams:
            payload, complete, _ = s.result()
            assert not complete, "a cut stream never looks complete"
            assert b'data: {"error"' in payload and b"shutting down" in payload, payload[-400:]
            assert b"[DONE]" not in payload
        assert workers.proc.wait(15) == 0
        assert time.monotonic() - signalled < 12
        log = workers.output()
        assert "second stop signal: passing it on" in log and "SIGKILL" not in log, log
    finally:
        workers.stop()
