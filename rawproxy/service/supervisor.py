"""--workers N: N copies of the proxy accepting on one port, kept alive by this process.

Stdlib only, no event loop: the supervisor sleeps in select() on a self-pipe that the
signal handlers write to (signal.set_wakeup_fd), so a dead worker (SIGCHLD) or a stop
request (SIGTERM, SIGINT) wakes it at once and nothing polls.

- Each worker is `python -m rawproxy <same arguments> --worker-id I` with
  PROXY_WORKER_ID=I in its environment; it listens with SO_REUSEPORT and the kernel
  spreads connections between the workers.
- The supervisor itself binds the address with SO_REUSEPORT but never listens: that
  keeps the port reserved while workers restart (no connection is ever queued to a
  socket that does not listen), turns port 0 into one port all workers share, and fails
  at once, with a clear message, when someone else holds the port.
- A worker that dies is started again: at once when it had run for a while, else after a
  delay that doubles with each quick death (0.5 s up to 30 s), so a crash loop does not spin.
- SIGTERM or SIGINT: SIGTERM to every worker (each stops accepting and drains its
  in-flight requests up to --graceful-timeout), a wait of that long plus a margin, SIGKILL
  for stragglers, exit 0. A second signal during the wait (a second or more after the
  first) kills the stragglers at once.
- A worker whose supervisor died (SIGKILL, OOM) notices and stops too (see
  `supervisor_gone`), so no orphan keeps the port.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from ..core.settings import Settings
from ..server.sockets import reuse_port_socket

log = logging.getLogger("rawproxy.supervisor")

STABLE_AFTER = 10.0      # a worker that ran this long before dying is restarted at once
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
KILL_MARGIN = 5.0        # beyond the graceful timeout, before stragglers get SIGKILL


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) so the workers can share the port: it stays ours while they restart."""
    return reuse_port_socket(host, port)


def supervisor_gone(parent_pid: int) -> bool:
    """In a worker: true once the process that started it has died (we were re-parented)."""
    return os.getppid() != parent_pid


class Supervisor:
    def __init__(self, argv: list[str], workers: int, grace: float, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.workers = [_Worker(i) for i in range(workers)]
        self.grace = grace
        self.env = dict(os.environ if env is None else env)
        self._stopping = False

    # ---------------------------------------------------------------- workers

    def _start(self, w: _Worker) -> None:
        cmd = [sys.executable, "-m", "rawproxy", *self.argv, "--worker-id", str(w.index)]
        env = {**self.env, "PROXY_WORKER_ID": str(w.index)}
        try:
            w.proc = subprocess.Popen(cmd, env=env)
        except OSError as exc:
            log.error("worker %d could not start: %s", w.index, exc)
            w.proc = None
            self._schedule_restart(w, time.monotonic())
            return
        w.started = time.monotonic()
        w.restart_at = None
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)

    def _schedule_restart(self, w: _Worker, now: float) -> None:
        if now - w.started >= STABLE_AFTER:
            w.quick_deaths = 0
            delay = 0.0
        else:
            w.quick_deaths += 1
            delay = min(FIRST_BACKOFF * 2 ** (w.quick_deaths - 1), MAX_BACKOFF)
        w.restart_at = now + delay
        if delay:
            log.warning("worker %d restarts in %.1fs (%d quick death(s) in a row)", w.index, delay, w.quick_deaths)

    def _reap(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.proc is None:
                continue
            code = w.proc.poll()
            if code is None:
                continue
            how = f"code {code}" if code >= 0 else f"signal {_signal_name(-code)}"
            pid, w.proc = w.proc.pid, None
            if self._stopping:
                log.info("worker %d (pid %d) exited with %s", w.index, pid, how)
                continue
            log.error("worker %d (pid %d) died with %s", w.index, pid, how)
            self._schedule_restart(w, now)

    def _live(self) -> list[_Worker]:
        return [w for w in self.workers if w.proc is not None]

    def _live_procs(self) -> list[tuple[_Worker, subprocess.Popen]]:
        return [(w, w.proc) for w in self.workers if w.proc is not None]

    # ---------------------------------------------------------------- main loop

    def run(self) -> int:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        previous_fd = signal.set_wakeup_fd(wfd)
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in wanted}
        selector = selectors.DefaultSelector()
        selector.register(rfd, selectors.EVENT_READ)
        try:
            for w in self.workers:
                self._start(w)
            while True:
                stop = self._wait(selector, rfd)
                self._reap()
                if stop:
                    break
                now = time.monotonic()
                for w in self.workers:
                    if w.proc is None and w.restart_at is not None and w.restart_at <= now:
                        self._start(w)
            self._shutdown(selector, rfd)
            return 0
        finally:
            for _, proc in self._live_procs():  # only on an unexpected error: never leave workers behind
                proc.kill()
            selector.close()
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(rfd)
            os.close(wfd)

    def _wait(self, selector: selectors.BaseSelector, rfd: int, until: float | None = None) -> bool:
        """Sleep until a signal, the next scheduled restart or `until`; True on SIGTERM/SIGINT."""
        now = time.monotonic()
        due = [w.restart_at for w in self.workers if w.proc is None and w.restart_at is not None]
        if until is not None:
            due.append(until)
        timeout = max(0.0, min(due) - now) if due else None
        selector.select(timeout)
        try:
            signals = os.read(rfd, 512)
        except BlockingIOError:
            signals = b""
        return any(s in (signal.SIGTERM, signal.SIGINT) for s in signals)

    def _shutdown(self, selector: selectors.BaseSelector, rfd: int) -> None:
        self._stopping = True
        live = self._live()
        log.info("stopping: SIGTERM to %d worker(s), waiting up to %.0fs", len(live), self.grace + KILL_MARGIN)
        for _, proc in self._live_procs():
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        started = time.monotonic()
        deadline = started + self.grace + KILL_MARGIN
        while self._live() and time.monotonic() < deadline:
            # A repeat within a second is the same request sent twice (a wrapper and a
            # process group both passing it on), not an impatient operator.
            if self._wait(selector, rfd, until=deadline) and time.monotonic() - started >= 1.0:
                log.warning("second stop signal: killing the remaining workers now")
                break
            self._reap()
        for w, proc in self._live_procs():
            log.warning("worker %d (pid %d) still running: SIGKILL", w.index, proc.pid)
            proc.kill()
            proc.wait()
            w.proc = None


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run settings.workers workers with the command line `argv`; returns the exit code."""
    try:
        reservation = reserve_port(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    with reservation:
        port = reservation.getsockname()[1]
        # Flags given last win: the shared port (port 0 resolved once) and the store every
        # worker must open, spelled out so no worker works them out on its own.
        worker_argv = [*argv, "--port", str(port), "--store", settings.store]
        note = " (the default for --workers > 1; choose with --store)" if settings.store_default else ""
        log.info("supervising %d workers on %s:%d; reasoning store %s%s",
                 settings.workers, settings.host, port, settings.store, note)
        return Supervisor(worker_argv, settings.workers, settings.graceful_timeout).run()
