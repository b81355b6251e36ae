"""python -m rawproxy: flags and environment -> Settings -> serve."""

from __future__ import annotations

import logging
import os
import signal
import sys

import trio

from .app import ProxyApp
from .config import ConfigError, Settings, load_settings
from .reasoning import open_store
from .server import Server, ServerLimits, serve

log = logging.getLogger("rawproxy")


def _limits(settings: Settings) -> ServerLimits:
    return ServerLimits(
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        request_timeout=settings.request_timeout,
        max_connections=settings.max_connections,
    )


async def run(settings: Settings) -> None:
    # Signals are taken from the start, so a SIGTERM during start-up drains too.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await _run(settings, signals)


async def _run(settings: Settings, signals) -> None:
    async with trio.open_nursery() as nursery:
        if settings.simulator:
            from .simulator.app import SimulatorApp

            sim_port = await nursery.start(serve, SimulatorApp(), "127.0.0.1", 0)
            fmt = settings.upstream_format
            base = f"http://127.0.0.1:{sim_port}" + ("/v1" if fmt == "openai" else "/anthropic")
            settings = _replace(settings, upstream=base, api_key="simulator-key", outbound_proxy="")
            print(
                f"rawproxy: no upstream key configured: serving against the built-in Kimi simulator "
                f"({fmt} format, {base}); answers are scripted, not a real model.",
                flush=True,
            )
        worker = settings.worker_id is not None
        app = ProxyApp(settings, store=open_store(settings))
        server = Server(app, limits=_limits(settings), on_error=app.error_response,
                        on_stream_error=app.stream_error)
        port = await nursery.start(lambda task_status: server.serve(
            settings.host, settings.port, reuse_port=worker, task_status=task_status))
        if worker:
            nursery.start_soon(_stop_without_supervisor, os.getppid())
        elif settings.store != "memory":
            print(f"rawproxy: reasoning store {settings.store}", flush=True)
        print(
            f"rawproxy{f' worker {settings.worker_id}' if worker else ''} listening on "
            f"http://{settings.host}:{port} -> {settings.upstream} "
            f"({settings.upstream_format} format)"
            + (f" via outbound proxy {_proxy_host(settings.outbound_proxy)}" if settings.outbound_proxy else ""),
            flush=True,
        )
        if settings.access_keys and not settings.api_key:
            log.warning("access keys are set but no upstream key (--api-key): clients' keys are access "
                        "keys and are not forwarded, so upstream requests carry no key")
        async for signum in signals:
            log.info("%s: draining (up to %gs for in-flight requests)", signal.Signals(signum).name,
                     settings.graceful_timeout)
            break
        await _drain(server, signals, settings.graceful_timeout)
        nursery.cancel_scope.cancel()  # the built-in simulator, the supervisor watch
    await app.aclose()


async def _drain(server: Server, signals, grace: float) -> None:
    """Stop accepting and wait for in-flight requests up to `grace` seconds; a second
    signal (a second or more after the first) or the end of the grace cuts the rest,
    each client told in its dialect."""
    server.drain()
    started = trio.current_time()
    with trio.move_on_after(grace):
        async with trio.open_nursery() as waiting:
            async def impatient() -> None:
                async for _ in signals:
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


def _proxy_host(url: str) -> str:
    """The outbound proxy as start-up prints it: never its credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


async def _stop_without_supervisor(parent: int) -> None:
    """A worker whose supervisor died stops as on SIGTERM (draining), not left holding the port."""
    from .supervisor import supervisor_gone

    while not supervisor_gone(parent):
        await trio.sleep(1.0)
    log.warning("supervisor (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def _replace(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"rawproxy: {exc}", file=sys.stderr)
        return 2
    from .logs import setup

    setup(settings.debug, settings.log_format)
    _raise_fd_limit()
    if settings.workers > 1 and settings.worker_id is None:
        from .supervisor import supervise

        return supervise(settings, list(sys.argv[1:] if argv is None else argv))
    try:
        trio.run(run, settings)
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


if __name__ == "__main__":
    sys.exit(main())
