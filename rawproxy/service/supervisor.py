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
  first) is passed on: each worker cuts its in-flight requests, every client told in its
  dialect, and exits; a third kills the stragglers at once.
- SIGHUP, with a config file in use, is passed to every worker, each of which reloads
  it; without one it is logged and ignored, here and in the workers.
- Before any worker starts, the reasoning store is opened once: a store that cannot
  serve stops everything with one line and exit code 2. A worker that exits with code 2
  soon after it started (it could not start: the same store, a setting) is not restarted
  forever: the supervisor stops and exits 2.
- A worker whose supervisor died (SIGKILL, OOM) notices and stops too (see
  `supervisor_gone`), so no orphan keeps the port.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ..core.settings import Settings
from ..core.urls import without_userinfo
from ..server.sockets import reuse_port_socket
from ..store import StoreUnavailable, check_store

log = logging.getLogger("rawproxy.supervisor")

STABLE_AFTER = 10.0      # a worker that ran this long before dying is restarted at once
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
KILL_MARGIN = 5.0        # beyond the graceful timeout, before stragglers get SIGKILL
# A worker takes a repeat within a second of the first stop signal for the same one sent
# twice: a second signal is passed on no sooner than this after the first.
REPEAT_AFTER = 1.2
START_FAILED = 2         # a worker's exit code for "cannot start" (a setting, the store)
HUP_IGNORED = "SIGHUP: configuration reload is not supported yet; ignored"


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
        self._failed: int | None = None  # the exit code once a worker could not start
        self.reloads = False  # a config file is in use: SIGHUP goes on to the workers

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
            if code == START_FAILED and now - w.started < STABLE_AFTER:
                # Its own log says why; starting it again would fail the same way.
                log.error("worker %d (pid %d) could not start (exit code %d): stopping", w.index, pid, code)
                self._failed = code
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
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in wanted}
        selector = selectors.DefaultSelector()
        selector.register(rfd, selectors.EVENT_READ)
        try:
            for w in self.workers:
                self._start(w)
            while True:
                stop = self._wait(selector, rfd)
                self._reap()
                if stop or self._failed is not None:
                    break
                now = time.monotonic()
                for w in self.workers:
                    if w.proc is None and w.restart_at is not None and w.restart_at <= now:
                        self._start(w)
            self._shutdown(selector, rfd)
            return self._failed or 0
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
        if signal.SIGHUP in signals and not self.reloads:
            log.warning(HUP_IGNORED)
        elif signal.SIGHUP in signals:
            # Each worker reloads the config file itself (and keeps its settings if the new file is bad).
            live = self._live_procs()
            log.info("SIGHUP: passed to %d worker(s) to reload the configuration", len(live))
            for _, proc in live:
                proc.send_signal(signal.SIGHUP)
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
        started = last = time.monotonic()
        deadline = started + self.grace + KILL_MARGIN
        passed_on = False
        while self._live() and time.monotonic() < deadline:
            # A repeat within a second is the same request sent twice (a wrapper and a
            # process group both passing it on), not an impatient operator.
            if self._wait(selector, rfd, until=deadline) and time.monotonic() - last >= 1.0:
                if passed_on:
                    log.warning("third stop signal: killing the remaining workers now")
                    break
                # The workers cut their in-flight requests, each client told in its dialect
                # (a SIGKILL would leave them with a connection that just ends).
                passed_on = True
                time.sleep(max(0.0, started + REPEAT_AFTER - time.monotonic()))
                last = time.monotonic()
                log.warning("second stop signal: passing it on; the workers cut their in-flight requests")
                for _, proc in self._live_procs():
                    try:
                        proc.send_signal(signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                deadline = max(deadline, last + KILL_MARGIN)
            self._reap()
        for w, proc in self._live_procs():
            log.warning("worker %d (pid %d) still running: SIGKILL", w.index, proc.pid)
            proc.kill()
            proc.wait()
            w.proc = None


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run settings.workers workers with the command line `argv`; returns the exit code."""
    try:
        check_store(settings)  # once here: a broken store would make every worker die at start
    except StoreUnavailable as exc:
        log.error("%s", exc)
        return START_FAILED
    try:
        reservation = reserve_port(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    # The workers' private meeting place (mode 0700): each answers the others' metrics
    # scrapes on a socket there, so one scrape adds up every worker.
    with reservation, tempfile.TemporaryDirectory(prefix="rawproxy-workers-") as worker_dir:
        port = reservation.getsockname()[1]
        # Flags given last win: the shared port (port 0 resolved once) and the store every
        # worker must open, spelled out so no worker works them out on its own.
        worker_argv = [*argv, "--port", str(port), "--worker-dir", worker_dir]
        shown = without_userinfo(settings.store)
        if shown == settings.store:
            worker_argv += ["--store", settings.store]
        # else a password: kept off the workers' command lines (any local user's `ps` shows
        # those); each worker reads it where this process did, its flag or PROXY_STORE.
        note = " (the default for --workers > 1; choose with --store)" if settings.store_default else ""
        log.info("supervising %d workers on %s:%d; reasoning store %s%s",
                 settings.workers, settings.host, port, shown, note)
        env = dict(os.environ)
        if not settings.secret:
            # One sealing secret for all workers (through the environment, never argv), so a
            # Responses client's sealed reasoning opens on whichever worker it reaches.
            env["PROXY_SECRET"] = secrets.token_hex(32)
        supervisor = Supervisor(worker_argv, settings.workers, settings.graceful_timeout, env)
        supervisor.reloads = bool(settings.config_path)
        return supervisor.run()
