"""Running the proxy: command line -> Settings -> serve (or the supervisor for
--workers N), signals, graceful drain."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import trio

from ..core.settings import ConfigError, Settings
from ..core.urls import without_userinfo
from ..proxy import ProxyApp
from ..server import Server, ServerLimits, serve
from ..store import ReasoningStore, StoreUnavailable, open_store
from .cli import load_settings, program_name
from .launcher import split_command
from .logs import setup as setup_logging
from .supervisor import HUP_IGNORED

log = logging.getLogger("rawproxy")


def _limits(settings: Settings) -> ServerLimits:
    return ServerLimits(
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        request_timeout=settings.request_timeout,
        max_connections=settings.max_connections,
        max_inflight_body_bytes=settings.max_inflight_body_bytes,
    )


async def run(settings: Settings, store: ReasoningStore | None = None) -> None:
    # Signals are taken from the start, so a SIGTERM during start-up drains too.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        await _run(settings, signals, store)


async def _run(settings: Settings, signals: AsyncIterator[int], store: ReasoningStore | None = None) -> None:
    async with trio.open_nursery() as nursery:
        if settings.simulator:
            from ..simulator.app import SimulatorApp

            sim_port = await nursery.start(serve, SimulatorApp(), "127.0.0.1", 0)
            fmt = settings.upstream_format
            base = f"http://127.0.0.1:{sim_port}" + ("/v1" if fmt == "openai" else "/anthropic")
            settings = replace(settings, upstream=base, api_key="simulator-key", outbound_proxy="")
            log.info("no upstream key configured: serving against the built-in Kimi simulator "
                     "(%s format, %s); answers are scripted, not a real model.", fmt, base)
        worker = settings.worker_id is not None
        app = ProxyApp(settings, store=store if store is not None else open_store(settings))
        await nursery.start(app.run)  # writes remembered reasoning in the background
        if app.peers is not None:
            await nursery.start(app.peers.serve)  # answers the other workers' metrics scrapes
        server = Server(app, limits=_limits(settings), on_error=app.error_response,
                        on_stream_error=app.stream_error, admit=app.admit)
        port = await nursery.start(lambda task_status: server.serve(
            settings.host, settings.port, reuse_port=worker, task_status=task_status))
        if worker:
            nursery.start_soon(_stop_without_supervisor, os.getppid())
        elif settings.store != "memory":
            log.info("reasoning store %s", without_userinfo(settings.store))
        log.info(
            "%slistening on http://%s:%d -> %s (%s format)%s",
            f"worker {settings.worker_id} " if worker else "", settings.host, port,
            without_userinfo(settings.upstream), settings.upstream_format,
            f" via outbound proxy {without_userinfo(settings.outbound_proxy)}" if settings.outbound_proxy else "",
            extra={"fields": {"event": "listening", "port": port}},
        )
        if settings.access_keys and not settings.api_key:
            log.warning("access keys are set but no upstream key (--api-key): clients' keys are access "
                        "keys and are not forwarded, so upstream requests carry no key")
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.warning(HUP_IGNORED)  # a closed terminal or a reload request: never a stop
                continue
            log.info("%s: draining (up to %gs for in-flight requests)", signal.Signals(signum).name,
                     settings.graceful_timeout)
            break
        await _drain(server, signals, settings.graceful_timeout)
        await app.aclose()  # queued reasoning written (bounded), the store closed
        nursery.cancel_scope.cancel()  # the built-in simulator, the supervisor watch


async def _drain(server: Server, signals: AsyncIterator[int], grace: float) -> None:
    """Stop accepting and wait for in-flight requests up to `grace` seconds; a second
    signal (a second or more after the first) or the end of the grace cuts the rest,
    each client told in its dialect."""
    server.drain()
    started = trio.current_time()
    with trio.move_on_after(grace):
        async with trio.open_nursery() as waiting:
            async def impatient() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.warning(HUP_IGNORED)
                        continue
                    if trio.current_time() - started >= 1.0:
                        log.warning("second stop signal: cutting in-flight requests")
                        waiting.cancel_scope.cancel()
                        return

            waiting.start_soon(impatient)
            await server.wait_closed()
            waiting.cancel_scope.cancel()
    if len(server.connections):
        log.warning("cutting %d connection(s) still open", len(server.connections))
    server.abort()
    with trio.move_on_after(5.0):
        await server.wait_closed()


async def _stop_without_supervisor(parent: int) -> None:
    """A worker whose supervisor died stops as on SIGTERM (draining), not left holding the port."""
    from .supervisor import supervisor_gone

    while not supervisor_gone(parent):
        await trio.sleep(1.0)
    log.warning("supervisor (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    command = split_command(sys.argv[1:] if argv is None else argv)
    if command is not None:  # `rawproxy [FLAGS] claude|codex|env ...`: the launcher, not a server
        from .launcher import main as launch

        return launch(*command)
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"{program_name()}: {exc}", file=sys.stderr)  # logging is not set up yet
        return 2
    setup_logging(settings.debug, settings.log_format)
    # Until the signal receivers take over, a SIGHUP (a closing terminal) must not kill.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _raise_fd_limit()
    _large_buffers_from_mmap()
    if settings.workers > 1 and settings.worker_id is None:
        from .supervisor import supervise

        return supervise(settings, list(sys.argv[1:] if argv is None else argv))
    try:
        store = open_store(settings)
    except StoreUnavailable as exc:
        log.error("%s", exc)  # one line, the cause included; exit 2 like any setting that cannot work
        return 2
    try:
        trio.run(run, settings, store)
    except KeyboardInterrupt:
        pass
    return 0


def _raise_fd_limit() -> None:
    """Each proxied request holds two sockets: take every descriptor the hard limit allows."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
    except (ImportError, ValueError, OSError):
        pass


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _large_buffers_from_mmap() -> None:
    """Buffers of 128 KiB and up (request bodies and their copies) straight from mmap, so
    their memory goes back to the system as each is freed. glibc otherwise raises that
    threshold to the size of every large buffer freed (up to 32 MiB) and serves later
    ones from its heaps, which fragment: after bursts of uploads of mixed sizes the
    process stayed tens of MB above idle. Setting it once stops that. Not glibc: nothing."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
